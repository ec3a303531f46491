//! `Follower`: reading a log as it is written, across rotations (`docker logs -f`).

use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{
    files_oldest_first, id, open_existing, read_chunk, rotated_path, Lines, Record, CHUNK,
    MAX_ROTATED, POLL_BUDGET,
};

/// Follows a log as it grows (`docker logs -f`), across rotations, losing and repeating nothing.
///
/// It keeps its file open. Once `path` names another file, its file was rotated and gets no
/// more writes: it reads that one to its end, then the file that came after it (`path.k-1`,
/// found by inode, or `path`) from its start, so even several rotations between two polls lose
/// nothing while the files are kept. Records are lost only if the file it is reading is
/// deleted (rotated past `max_files`) first; it then goes on with the oldest file left. With
/// `max_files == 1` the file is truncated in place, which is noticed only if the file is
/// shorter than what was read (best effort, as Docker).
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    cur: Option<Current>,
    lines: Lines,
    chunk: Vec<u8>,
}

#[derive(Debug)]
struct Current {
    file: File,
    id: (u64, u64),
    /// Bytes read so far (to notice truncation).
    pos: u64,
}

impl Current {
    fn new(file: File, pos: u64) -> io::Result<Current> {
        let id = id(&file.metadata()?);
        Ok(Current { file, id, pos })
    }
}

/// Where the file after a rotated one is.
enum Next {
    Found(File),
    /// The file being read is gone (deleted by rotation).
    Lost,
    /// Names kept moving under the search, or the new `path` is not created yet: poll again.
    Busy,
}

impl Follower {
    /// Follows from now on: only records written after this call.
    pub fn at_end(path: &Path) -> io::Result<Follower> {
        let mut f = Follower::new(path);
        // `path.1` is the live file for the instant between a rotation's two steps.
        for name in [path.to_path_buf(), rotated_path(path, 1)] {
            if let Some(mut file) = open_existing(&name)? {
                let pos = file.seek(SeekFrom::End(0))?;
                f.cur = Some(Current::new(file, pos)?);
                break;
            }
        }
        Ok(f)
    }

    /// Follows from the oldest record still kept (rotated files included).
    pub fn from_start(path: &Path) -> io::Result<Follower> {
        let mut f = Follower::new(path);
        f.cur = f.open_oldest()?;
        Ok(f)
    }

    fn new(path: &Path) -> Follower {
        Follower {
            path: path.to_path_buf(),
            cur: None,
            lines: Lines::default(),
            chunk: vec![0u8; CHUNK],
        }
    }

    fn open_oldest(&self) -> io::Result<Option<Current>> {
        for name in files_oldest_first(&self.path) {
            if let Some(file) = open_existing(&name)? {
                return Current::new(file, 0).map(Some);
            }
        }
        Ok(None)
    }

    /// The complete records written since the last poll, oldest first; an incomplete last
    /// line waits for its end. It stops after reading about 1 MiB (bounded memory when
    /// starting on a large log), so only an empty result means caught up: call again at once
    /// while it is not empty.
    pub fn poll(&mut self) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut budget = 0;
        loop {
            if self.cur.is_none() {
                // Nothing existed when following began: all that appeared since is new.
                self.cur = self.open_oldest()?;
            }
            let Some(cur) = self.cur.as_mut() else {
                return Ok(out);
            };
            // Look before reading: a file that `path` no longer names got its last write
            // before the rename, so reading it to its end after this gets everything.
            let live = match fs::metadata(&self.path) {
                Ok(m) => id(&m) == cur.id,
                Err(e) if e.kind() == io::ErrorKind::NotFound => true, // mid-rotation or removed
                Err(e) => return Err(e),
            };
            let (eof, n) = drain(
                &mut cur.file,
                &mut self.chunk,
                &mut self.lines,
                &mut out,
                &mut budget,
            )?;
            cur.pos += n;
            if !eof {
                return Ok(out);
            }
            if live {
                if cur.file.metadata()?.len() < cur.pos {
                    // Truncated in place (max_files == 1): start over.
                    cur.pos = cur.file.seek(SeekFrom::Start(0))?;
                    self.lines.clear();
                    continue;
                }
                return Ok(out);
            }
            let next = match next_after(&self.path, cur.id)? {
                Next::Found(file) => Some(Current::new(file, 0)?),
                Next::Lost => self.open_oldest()?,
                Next::Busy => return Ok(out),
            };
            // A rotated file's unfinished last line never gets its end.
            self.lines.clear();
            self.cur = next;
        }
    }
}

/// Finds the file written after the rotated file `done`: if `done` is now `path.k`, that is
/// `path.k-1` (or `path` for k = 1). Checks `done` did not move meanwhile, else searches again.
fn next_after(path: &Path, done: (u64, u64)) -> io::Result<Next> {
    let at = |k: u32| fs::metadata(rotated_path(path, k)).is_ok_and(|m| id(&m) == done);
    for _ in 0..5 {
        // Files only move up (`path.k` to `path.k+1`), so an upward scan cannot miss `done`;
        // a rotation in progress leaves a one-name gap, hence stopping at two missing in a row.
        let mut misses = 0;
        let Some(k) = (1..=MAX_ROTATED).find(|&k| match fs::metadata(rotated_path(path, k)) {
            Ok(m) => {
                misses = 0;
                id(&m) == done
            }
            Err(_) => {
                misses += 1;
                misses == 2
            }
        }) else {
            return Ok(Next::Lost);
        };
        if misses == 2 {
            return Ok(Next::Lost);
        }
        let name = if k == 1 {
            path.to_path_buf()
        } else {
            rotated_path(path, k - 1)
        };
        if let Some(file) = open_existing(&name)? {
            if at(k) {
                return Ok(Next::Found(file));
            }
        }
    }
    Ok(Next::Busy)
}

/// Reads `file` on from its offset until its end (`true`) or until `budget` reaches
/// POLL_BUDGET (`false`); also returns the bytes read.
fn drain(
    file: &mut File,
    chunk: &mut [u8],
    lines: &mut Lines,
    out: &mut Vec<Record>,
    budget: &mut u64,
) -> io::Result<(bool, u64)> {
    let mut total = 0;
    loop {
        if *budget >= POLL_BUDGET {
            return Ok((false, total));
        }
        let n = read_chunk(file, chunk, lines, out)?;
        if n == 0 {
            return Ok((true, total));
        }
        total += n as u64;
        *budget += n as u64;
    }
}
