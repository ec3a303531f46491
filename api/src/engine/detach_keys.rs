//! Docker's detach keys: a key sequence in an attached client's input (default `ctrl-p,ctrl-q`)
//! ends the client's attachment and leaves the container running.

use crate::daemon::BackendError;

/// Docker's default sequence.
const DEFAULT: &[u8] = &[0x10, 0x11];

/// Parses Docker's format: comma-separated keys, each one character or `ctrl-X` with X in `a`–`z`,
/// `@`, `[`, `\`, `]`, `^`, `_`. None or empty: the default.
pub fn parse(spec: Option<&str>) -> Result<Vec<u8>, BackendError> {
    let Some(spec) = spec.filter(|s| !s.is_empty()) else {
        return Ok(DEFAULT.to_vec());
    };
    let bad = || BackendError::InvalidArgument(format!("Invalid detach keys ({spec}) provided"));
    spec.split(',')
        .map(|key| match key.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => match c.as_bytes()[0] {
                b @ b'a'..=b'z' => Ok(b - b'a' + 1),
                b @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_') => Ok(b - b'@'),
                _ => Err(bad()),
            },
            _ if key.len() == 1 => Ok(key.as_bytes()[0]),
            _ => Err(bad()),
        })
        .collect()
}

/// What a chunk of client input turned into.
#[derive(Debug, PartialEq, Eq)]
pub enum Scanned {
    /// Bytes for the process (a partial match is held back until it completes or breaks).
    Input(Vec<u8>),
    /// The sequence was typed: these bytes before it go to the process, then the client leaves.
    Detach(Vec<u8>),
}

/// Watches one client's input for the sequence, across chunk boundaries.
#[derive(Debug)]
pub struct Scanner {
    keys: Vec<u8>,
    matched: usize,
}

impl Scanner {
    pub fn new(keys: Vec<u8>) -> Scanner {
        Scanner { keys, matched: 0 }
    }

    pub fn scan(&mut self, chunk: &[u8]) -> Scanned {
        let mut out = Vec::with_capacity(chunk.len());
        for &b in chunk {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return Scanned::Detach(out);
                }
                continue;
            }
            // A broken partial match: what was held back is input after all.
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = usize::from(b == self.keys[0]);
            if self.matched == 0 {
                out.push(b);
            }
        }
        Scanned::Input(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_s_key_format() {
        assert_eq!(parse(None).unwrap(), vec![0x10, 0x11]);
        assert_eq!(parse(Some("ctrl-a,x")).unwrap(), vec![1, b'x']);
        assert_eq!(parse(Some("ctrl-@,ctrl-_")).unwrap(), vec![0, 0x1f]);
        for bad in ["ctrl-1", "ab", "ctrl-", ","] {
            let err = parse(Some(bad)).unwrap_err();
            assert!(
                err.to_string().contains("Invalid detach keys"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_sequence_is_found_across_chunks_and_false_starts_pass_through() {
        let mut s = Scanner::new(vec![0x10, 0x11]);
        assert_eq!(s.scan(b"ab\x10"), Scanned::Input(b"ab".to_vec()));
        assert_eq!(s.scan(b"c"), Scanned::Input(b"\x10c".to_vec()));
        assert_eq!(s.scan(b"\x10\x10"), Scanned::Input(b"\x10".to_vec()));
        assert_eq!(s.scan(b"\x11rest"), Scanned::Detach(Vec::new()));
        let mut s = Scanner::new(vec![0x10, 0x11]);
        assert_eq!(s.scan(b"ls\n\x10\x11"), Scanned::Detach(b"ls\n".to_vec()));
    }
}
