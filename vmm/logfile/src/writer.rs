//! The VMM side: appends a container's output to its log file as Docker json-file records and
//! rotates the file by size. Synchronous; the VMM calls it from the thread that owns the output.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::time::rfc3339;

/// Which of the container's output streams a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The name Docker writes in the `stream` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// How large the log may grow: it rotates at `max_bytes`, keeping `max_files` files in all.
///
/// It travels inside the VMM's JSON spec, hence serde and `deny_unknown_fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLimits {
    /// Rotate before a record would take the file past this size; `0` means never rotate.
    pub max_bytes: u64,
    /// Files kept, the live one included; `1` truncates instead of rotating (`0` acts as `1`).
    pub max_files: u32,
}

impl Default for LogLimits {
    /// 20 MiB × 5 files: the defaults of Docker's `local` log driver, so that a container
    /// left running forever cannot fill the disk (json-file's own default is unbounded).
    fn default() -> Self {
        LogLimits {
            max_bytes: 20 * 1024 * 1024,
            max_files: 5,
        }
    }
}

/// Longest line kept in memory; a longer one is written in pieces without a trailing newline,
/// as Docker's log copier does with its 16 KiB buffer.
pub const MAX_LINE: usize = 16 * 1024;

/// Appends records to one container's log file.
///
/// There is no `fsync` per record: it would cost a disk flush per line of output. Records are
/// in the page cache once `write` returns, which survives the VMM or the daemon crashing; only
/// a host crash can lose the most recent ones.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    limits: LogLimits,
    /// The partial (not yet newline-terminated) line of each stream, always `< MAX_LINE` bytes.
    partial: [Vec<u8>; 2],
    /// One encoded record, reused so that steady-state writing does not allocate.
    record: Vec<u8>,
}

impl LogWriter {
    /// Opens (creating, mode 0640) the log at `path` for appending.
    pub fn open(path: &Path, limits: LogLimits) -> io::Result<LogWriter> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            limits,
            partial: [Vec::new(), Vec::new()],
            record: Vec::new(),
        })
    }

    /// Logs `data` from `stream`: one record per complete line, stamped `now`. The tail after
    /// the last newline waits for the rest of its line (or for `flush_partial`).
    pub fn write(&mut self, stream: Stream, data: &[u8], now: SystemTime) -> io::Result<()> {
        let i = stream.index();
        let mut rest = data;
        while !rest.is_empty() {
            let buffered = self.partial[i].len();
            let newline = rest.iter().position(|&c| c == b'\n');
            let content = newline.unwrap_or(rest.len());
            if buffered + content >= MAX_LINE {
                // The line's content reaches the limit: write MAX_LINE bytes of it as a piece.
                let take = MAX_LINE - buffered;
                self.partial[i].extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                let cut = utf8_cut(&self.partial[i]);
                let piece = std::mem::take(&mut self.partial[i]);
                self.emit(stream, &piece[..cut], now)?;
                self.partial[i] = piece[cut..].to_vec();
            } else if let Some(n) = newline {
                if buffered == 0 {
                    self.emit(stream, &rest[..=n], now)?;
                } else {
                    let mut line = std::mem::take(&mut self.partial[i]);
                    line.extend_from_slice(&rest[..=n]);
                    self.emit(stream, &line, now)?;
                    line.clear();
                    self.partial[i] = line;
                }
                rest = &rest[n + 1..];
            } else {
                self.partial[i].extend_from_slice(rest);
                break;
            }
        }
        Ok(())
    }

    /// Writes out the partial lines still buffered, without a newline (at the container's exit).
    pub fn flush_partial(&mut self, now: SystemTime) -> io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let i = stream.index();
            if !self.partial[i].is_empty() {
                let line = std::mem::take(&mut self.partial[i]);
                self.emit(stream, &line, now)?;
            }
        }
        Ok(())
    }

    /// Encodes and appends one record with a single write, rotating first if it would not fit.
    /// One write keeps records whole in the file, but a reader racing it can still see the
    /// first part only; readers skip such a torn line (or the follower waits for its end).
    fn emit(&mut self, stream: Stream, log: &[u8], now: SystemTime) -> io::Result<()> {
        let mut record = std::mem::take(&mut self.record);
        record.clear();
        encode_record(&mut record, stream, log, now);
        let len = record.len() as u64;
        let result = (|| {
            let max = self.limits.max_bytes;
            if max > 0 && self.size > 0 && self.size + len > max {
                self.rotate()?;
            }
            self.file.write_all(&record)?;
            self.size += len;
            Ok(())
        })();
        self.record = record;
        result
    }

    /// Shifts `path.k` to `path.k+1` (dropping the oldest) and starts a fresh `path`.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.limits.max_files.max(1);
        // Drop the oldest kept file and any left over from a larger `max_files` earlier.
        let mut k = keep.max(2) - 1;
        loop {
            match fs::remove_file(rotated_path(&self.path, k)) {
                Ok(()) => k += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            }
        }
        if keep == 1 {
            // Nothing to keep: empty the live file in place (appends then start at 0).
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for k in (1..keep - 1).rev() {
            match fs::rename(rotated_path(&self.path, k), rotated_path(&self.path, k + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, rotated_path(&self.path, 1))?;
        self.file = open_append(&self.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }
}

/// `path.k`, the k-th most recent rotated file.
pub(crate) fn rotated_path(path: &Path, k: u32) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{k}"));
    PathBuf::from(name)
}

/// Opens (or creates) a log file, never through a symlink and never anything but a regular
/// file: the directory may be a jailed VMM's, whose next start opens the log as root.
fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(file)
}

/// Where to cut a full buffer so a UTF-8 character is not split between two pieces (Docker
/// cuts anywhere and both halves become U+FFFD); the cut is never at 0.
fn utf8_cut(buf: &[u8]) -> usize {
    for back in 1..=3.min(buf.len().saturating_sub(1)) {
        let p = buf.len() - back;
        let c = buf[p];
        if c & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let need = match c {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return buf.len(),
        };
        return if back < need { p } else { buf.len() };
    }
    buf.len()
}

/// One record exactly as Docker's json-file driver writes it (`jsonlog.JSONLogs.MarshalJSONBuf`),
/// except that the time always has nine fraction digits.
pub(crate) fn encode_record(out: &mut Vec<u8>, stream: Stream, log: &[u8], now: SystemTime) {
    out.extend_from_slice(b"{\"log\":");
    encode_go_string(out, log);
    out.extend_from_slice(b",\"stream\":\"");
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(b"\",\"time\":\"");
    out.extend_from_slice(rfc3339(now).as_bytes());
    out.extend_from_slice(b"\"}\n");
}

/// A JSON string the way Go's (and Docker's) encoder writes one: `<`, `>`, `&`, U+2028 and
/// U+2029 escaped, control bytes as `\u00XX` (except `\n` and `\r`), and each byte of invalid
/// UTF-8 as `\ufffd`.
fn encode_go_string(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut rest = s;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(v) => (v, 0),
            Err(e) => {
                let up_to = e.valid_up_to();
                let bad = e.error_len().unwrap_or(rest.len() - up_to);
                // Safe to index: from_utf8 vouched for rest[..up_to].
                let valid = std::str::from_utf8(&rest[..up_to]).unwrap_or_default();
                (valid, bad)
            }
        };
        for ch in valid.chars() {
            match ch {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\u{2028}' => out.extend_from_slice(b"\\u2028"),
                '\u{2029}' => out.extend_from_slice(b"\\u2029"),
                c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&') => {
                    let b = c as u8;
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 0xF)]);
                }
                c => {
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
            }
        }
        for _ in 0..bad {
            out.extend_from_slice(b"\\ufffd");
        }
        rest = &rest[valid.len() + bad..];
    }
    out.push(b'"');
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
