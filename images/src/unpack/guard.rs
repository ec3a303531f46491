//! A guard in front of the tar parser that bounds header extensions before anything allocates.
//!
//! The tar crate reads a GNU long name/link (`L`/`K`) and a PAX header (`x`) whole into memory,
//! however large its header says it is. This reader follows the archive's framing exactly as
//! tar 0.4 does (PAX `size` overrides, GNU sparse extension blocks, the end-of-archive block)
//! and fails the stream at the header of an oversized extension, before the parser sees it:
//! names are bounded by PATH_MAX, PAX headers in total, and each PAX path and xattr record.

use std::io::{self, Read};

/// Linux PATH_MAX: the longest path or link target an entry may name.
pub const MAX_NAME_BYTES: u64 = 4096;
/// All records of one PAX header (`x` or `g`) together.
pub const MAX_PAX_BYTES: u64 = 1 << 20;
/// Linux XATTR_SIZE_MAX and XATTR_NAME_MAX.
pub const MAX_XATTR_VALUE_BYTES: usize = 64 << 10;
pub const MAX_XATTR_NAME_BYTES: usize = 255;

const BLOCK: usize = 512;
/// Offset of the "another extension block follows" flag in a GNU sparse extension block.
const EXT_SPARSE_FLAG: usize = 504;

/// A cap of the layer format was exceeded (distinguished from malformed data by the caller).
#[derive(Debug)]
pub struct TarLimit(pub String);

impl std::fmt::Display for TarLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TarLimit {}

/// The cap a guard error reports, when `e` is one.
pub fn as_limit(e: &io::Error) -> Option<String> {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<TarLimit>())
        .map(|l| l.0.clone())
}

fn limit(msg: String) -> io::Error {
    io::Error::other(TarLimit(msg))
}

enum State {
    /// Assembling a header block (`got` bytes so far).
    Header,
    /// Assembling a GNU sparse extension block.
    SparseExt { data: u64 },
    /// Passing `left` bytes of entry data (padding included); a PAX header's are kept.
    Data { left: u64, keep: bool },
    /// After the end-of-archive block: the parser reads no further headers.
    Done,
}

pub struct ExtensionGuard<R> {
    inner: R,
    state: State,
    block: [u8; BLOCK],
    got: usize,
    /// The records of the PAX header being read, then until the entry it describes.
    pax: Vec<u8>,
    /// Length of the PAX header's data (without padding) while it is read.
    pax_len: usize,
    pax_pending: bool,
}

impl<R: Read> ExtensionGuard<R> {
    pub fn new(inner: R) -> Self {
        ExtensionGuard {
            inner,
            state: State::Header,
            block: [0; BLOCK],
            got: 0,
            pax: Vec::new(),
            pax_len: 0,
            pax_pending: false,
        }
    }

    fn advance(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Data { left, keep } => {
                    let n = bytes
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    if *keep && self.pax.len() < self.pax_len {
                        let want = (self.pax_len - self.pax.len()).min(n);
                        self.pax.extend_from_slice(&bytes[..want]);
                    }
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        if *keep {
                            check_pax_records(&self.pax)?;
                            self.pax_pending = true;
                        }
                        self.state = State::Header;
                    }
                }
                State::Header | State::SparseExt { .. } => {
                    let n = (BLOCK - self.got).min(bytes.len());
                    self.block[self.got..self.got + n].copy_from_slice(&bytes[..n]);
                    self.got += n;
                    bytes = &bytes[n..];
                    if self.got == BLOCK {
                        self.got = 0;
                        self.block_done()?;
                    }
                }
            }
        }
        Ok(())
    }

    fn block_done(&mut self) -> io::Result<()> {
        if let State::SparseExt { data } = self.state {
            self.state = if self.block[EXT_SPARSE_FLAG] == 1 {
                State::SparseExt { data }
            } else {
                data_state(data, false)
            };
            return Ok(());
        }
        if self.block.iter().all(|b| *b == 0) {
            self.state = State::Done;
            return Ok(());
        }
        let header = tar::Header::from_byte_slice(&self.block);
        let kind = header.entry_type();
        let recognized = header.as_gnu().is_some() || header.as_ustar().is_some();
        let extension_type = kind.is_gnu_longname()
            || kind.is_gnu_longlink()
            || kind.is_pax_local_extensions()
            || kind.is_pax_global_extensions();
        // The parser swallows these and applies them to the next entry it returns.
        let swallowed = recognized
            && (kind.is_gnu_longname() || kind.is_gnu_longlink() || kind.is_pax_local_extensions());
        let mut size = header.entry_size()?;
        if self.pax_pending && !extension_type {
            if let Some(s) = pax_size(&self.pax) {
                size = s;
            }
        }
        if !swallowed {
            // The returned entry took the PAX records with it.
            self.pax_pending = false;
            self.pax.clear();
        }
        let cap = if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            Some(("GNU long name", MAX_NAME_BYTES))
        } else if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            Some(("PAX header", MAX_PAX_BYTES))
        } else {
            None
        };
        if let Some((what, max)) = cap {
            if size > max {
                return Err(limit(format!(
                    "a {what} of {size} bytes (at most {max} are accepted)"
                )));
            }
        }
        let keep = swallowed && kind.is_pax_local_extensions();
        if keep {
            self.pax.clear();
            self.pax_len = size as usize;
            // An empty PAX header has no data to wait for, but still describes the next entry.
            self.pax_pending = size == 0;
        }
        let sparse_ext =
            !swallowed && kind.is_gnu_sparse() && header.as_gnu().is_some_and(|g| g.is_extended());
        self.state = if sparse_ext {
            State::SparseExt { data: size }
        } else {
            data_state(size, keep)
        };
        Ok(())
    }
}

/// Entry data of `size` bytes, padded to whole blocks. A size whose padding overflows (a PAX
/// `size` record may say anything) is the rest of the stream: no stream is that long, and the
/// unpack limits refuse the entry itself (found by the fuzzer: the padding overflowed).
fn data_state(size: u64, keep: bool) -> State {
    let padded = size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64);
    match padded {
        0 => State::Header,
        left => State::Data { left, keep },
    }
}

/// The `size` record, read the way tar 0.4 reads it (first match, unparsable = none).
fn pax_size(records: &[u8]) -> Option<u64> {
    for record in tar::PaxExtensions::new(records) {
        let record = record.ok()?;
        if record.key() == Ok("size") {
            return record.value().ok()?.parse().ok();
        }
    }
    None
}

fn check_pax_records(records: &[u8]) -> io::Result<()> {
    for record in tar::PaxExtensions::new(records).flatten() {
        let key = record.key_bytes();
        let value = record.value_bytes().len();
        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            if name.len() > MAX_XATTR_NAME_BYTES || value > MAX_XATTR_VALUE_BYTES {
                return Err(limit(format!(
                    "an xattr record of {} name and {value} value bytes (at most \
                     {MAX_XATTR_NAME_BYTES} and {MAX_XATTR_VALUE_BYTES})",
                    name.len()
                )));
            }
        } else if matches!(key, b"path" | b"linkpath") && value as u64 > MAX_NAME_BYTES {
            return Err(limit(format!(
                "a PAX path of {value} bytes (at most {MAX_NAME_BYTES})"
            )));
        }
    }
    Ok(())
}

impl<R: Read> Read for ExtensionGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.advance(&buf[..n])?;
        Ok(n)
    }
}
