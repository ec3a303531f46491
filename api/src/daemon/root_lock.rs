//! The exclusive lock a daemon holds on its root directory, so two never share one.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Name of the lock file inside the root; it holds the owner's pid.
pub const LOCK_FILE: &str = "skiffd.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another skiffd (pid {pid}) is using {root}: {lock} is locked")]
    Held {
        pid: String,
        root: PathBuf,
        lock: PathBuf,
    },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Held for the daemon's life; the kernel drops the lock when the process ends, however it ends.
#[derive(Debug)]
pub struct RootLock {
    _file: File,
}

impl RootLock {
    /// Creates `root` if needed and takes `root/skiffd.lock`, writing our pid into it.
    pub fn acquire(root: &Path) -> Result<RootLock, LockError> {
        let path = root.join(LOCK_FILE);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(root).map_err(io_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        // SAFETY: flock on a file descriptor we own and keep open; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    pid: if pid.is_empty() {
                        "unknown".to_string()
                    } else {
                        pid.to_string()
                    },
                    root: root.to_path_buf(),
                    lock: path,
                });
            }
            return Err(io_err(err));
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        writeln!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(RootLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let _held = RootLock::acquire(dir.path()).unwrap();
        let err = RootLock::acquire(dir.path()).unwrap_err().to_string();
        let me = std::process::id().to_string();
        assert!(err.contains(&format!("pid {me}")), "{err}");
    }
}
