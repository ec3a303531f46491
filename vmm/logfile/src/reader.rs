//! The daemon side: reads the records back for `docker logs` (all, `--tail`, `-f`).
//! Synchronous and poll-based; the daemon runs it on blocking threads. Anything that does not
//! parse as a record (a line torn by a crash, garbage) is skipped, never an error.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use crate::time::parse_rfc3339;
use crate::writer::{rotated_path, Stream};

#[path = "follow.rs"]
mod follow;
pub use follow::Follower;

/// How much is read at a time, forwards or backwards.
const CHUNK: usize = 64 * 1024;

/// Lines longer than this are not records (the writer's longest is 16 KiB of `\ufffd`
/// escapes, about 96 KiB); they are skipped rather than held in memory.
const MAX_RECORD: usize = 1024 * 1024;

/// Records' bytes after which `Follower::poll` returns, so one poll's memory stays bounded.
const POLL_BUDGET: u64 = 1024 * 1024;

/// Rotated files probed at most (`path.1` … ), a guard against a directory full of junk.
const MAX_ROTATED: u32 = 10_000;

/// One log record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub stream: Stream,
    pub time: SystemTime,
    /// The time exactly as written in the file, for `docker logs -t`.
    pub time_text: String,
    /// The output bytes, with the trailing newline unless the line was written in pieces.
    pub log: Vec<u8>,
}

#[derive(Deserialize)]
struct RawRecord {
    // Docker omits `log` when it is empty.
    #[serde(default)]
    log: String,
    stream: Stream,
    time: String,
}

/// A newline-terminated line to a record, or `None` if it is not one.
fn parse_line(line: &[u8]) -> Option<Record> {
    let raw: RawRecord = serde_json::from_slice(line).ok()?;
    Some(Record {
        stream: raw.stream,
        time: parse_rfc3339(&raw.time)?,
        time_text: raw.time,
        log: raw.log.into_bytes(),
    })
}

/// Whether `rec` passes Docker's `since`/`until` filters (both inclusive; `None` = no bound).
/// Docker treats `since=0` as "no bound"; that mapping is the caller's.
pub fn within(rec: &Record, since: Option<SystemTime>, until: Option<SystemTime>) -> bool {
    since.is_none_or(|s| rec.time >= s) && until.is_none_or(|u| rec.time <= u)
}

/// The log's files that exist, oldest first: `path.N` … `path.1`, `path`.
pub fn files_oldest_first(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=MAX_ROTATED)
        .map(|k| rotated_path(path, k))
        .take_while(|p| p.exists())
        .collect();
    files.reverse();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

/// Every record of the log, oldest first.
///
/// A snapshot taken file by file: a rotation happening meanwhile can make it miss or repeat
/// records at the seam (`Follower` is the exact way).
pub fn read_all(path: &Path) -> io::Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    for name in files_oldest_first(path) {
        let Some(mut file) = open_existing(&name)? else {
            continue;
        };
        let mut lines = Lines::default();
        while read_chunk(&mut file, &mut chunk, &mut lines, &mut out)? > 0 {}
    }
    Ok(out)
}

/// The last `n` records of the log, oldest first, reading backwards from the end so that the
/// cost depends on `n`, not on the log's size.
pub fn tail(path: &Path, n: usize) -> io::Result<Vec<Record>> {
    tail_counted(path, n).map(|(records, _)| records)
}

/// `tail`, also reporting how many bytes it read (for the test that it reads little).
fn tail_counted(path: &Path, n: usize) -> io::Result<(Vec<Record>, u64)> {
    let mut newest_first = Vec::new();
    let mut read = 0;
    if n == 0 {
        return Ok((newest_first, read));
    }
    for name in files_oldest_first(path).iter().rev() {
        let Some(file) = open_existing(name)? else {
            continue;
        };
        read += tail_file(&file, n, &mut newest_first)?;
        if newest_first.len() >= n {
            break;
        }
    }
    newest_first.truncate(n);
    newest_first.reverse();
    Ok((newest_first, read))
}

/// Appends the records of one file, newest first, to `out` until it holds `n`; returns the
/// bytes read. A last line without its newline is torn and skipped.
fn tail_file(file: &File, n: usize, out: &mut Vec<Record>) -> io::Result<u64> {
    let mut pos = file.metadata()?.len();
    let mut chunk = vec![0u8; CHUNK];
    let mut read = 0;
    // The line being assembled backwards: its known tail, whether it ends in a newline, and
    // whether it outgrew MAX_RECORD (then it is dropped).
    let mut carry: Vec<u8> = Vec::new();
    let mut terminated = false;
    let mut oversize = false;
    let mut finish = |head: &[u8], carry: &[u8], terminated: bool, oversize: bool| {
        if terminated && !oversize {
            let line = [head, carry].concat();
            out.extend(parse_line(&line));
        }
        out.len() >= n
    };
    while pos > 0 {
        let len = CHUNK.min(usize::try_from(pos).unwrap_or(CHUNK));
        pos -= len as u64;
        match file.read_exact_at(&mut chunk[..len], pos) {
            Ok(()) => read += len as u64,
            // Truncated under us (a one-file log being emptied): nothing older to read.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(read),
            Err(e) => return Err(e),
        }
        let buf = &chunk[..len];
        // `end`: where the current segment ends (after its newline); `lim`: where to look.
        let (mut end, mut lim) = (len, len);
        while let Some(i) = buf[..lim].iter().rposition(|&c| c == b'\n') {
            // The newline at i ends the previous line, so the line in `carry` starts at i + 1.
            if finish(&buf[i + 1..end], &carry, terminated, oversize) {
                return Ok(read);
            }
            carry.clear();
            (terminated, oversize) = (true, false);
            (end, lim) = (i + 1, i);
        }
        if !oversize {
            carry.splice(0..0, buf[..end].iter().copied());
            if carry.len() > MAX_RECORD {
                carry = Vec::new();
                oversize = true;
            }
        }
    }
    finish(&[], &carry, terminated, oversize);
    Ok(read)
}

/// Reads one chunk and parses the lines it completes into `out`; returns the bytes read.
fn read_chunk(
    file: &mut File,
    chunk: &mut [u8],
    lines: &mut Lines,
    out: &mut Vec<Record>,
) -> io::Result<usize> {
    let n = loop {
        match file.read(chunk) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    lines.push(&chunk[..n], |line| out.extend(parse_line(line)));
    Ok(n)
}

/// Splits a byte stream into newline-terminated lines, holding at most MAX_RECORD of an
/// unfinished one (a longer one is garbage and skipped up to its newline).
#[derive(Debug, Default)]
struct Lines {
    buf: Vec<u8>,
    skipping: bool,
}

impl Lines {
    fn push(&mut self, data: &[u8], mut each: impl FnMut(&[u8])) {
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&c| c == b'\n') {
            let line = &rest[..=i];
            if self.skipping {
                self.skipping = false;
            } else if self.buf.is_empty() {
                each(line);
            } else {
                self.buf.extend_from_slice(line);
                each(&self.buf);
                self.buf.clear();
            }
            rest = &rest[i + 1..];
        }
        if !self.skipping {
            self.buf.extend_from_slice(rest);
            if self.buf.len() > MAX_RECORD {
                self.clear();
                self.skipping = true;
            }
        }
    }

    fn clear(&mut self) {
        self.buf = Vec::new();
        self.skipping = false;
    }
}

/// Opens a log file that must be a regular file: the directory may be a jailed VMM's to write
/// in, and a symlink or FIFO put there in place of the log must not make its reader (root)
/// read another file or block.
fn open_existing(path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    match opened {
        Ok(f) if f.metadata()?.is_file() => Ok(Some(f)),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A file's identity, to notice that its name now denotes another file.
fn id(m: &Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
