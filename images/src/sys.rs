//! Thin wrappers over the few Linux calls std does not offer: mknod, xattrs, times without
//! following symlinks, and advisory file locks.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Linux's cap on an xattr value, and on a list of names (XATTR_LIST_MAX) alike.
use crate::unpack::guard::MAX_XATTR_VALUE_BYTES;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("path contains NUL"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `mode` includes the file type bits (S_IFCHR, S_IFBLK, S_IFIFO).
pub fn mknod(path: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: p is a valid NUL-terminated string for the duration of the call.
    check(unsafe { libc::mknod(p.as_ptr(), mode, libc::makedev(major, minor)) })
}

pub fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cpath(path)?;
    let n = CString::new(name).map_err(|_| io::Error::other("xattr name contains NUL"))?;
    // SAFETY: valid C strings and a buffer of the given length.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// The value of xattr `name` of the path itself (never a symlink's target); `None` when unset.
pub fn lgetxattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cpath(path)?;
    let n = CString::new(name).map_err(|_| io::Error::other("xattr name contains NUL"))?;
    let got = sized_read(|buf: &mut [u8]| {
        // SAFETY: valid C strings and a writable buffer of the given length (or a null
        // pointer with length 0, which asks for the size).
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    });
    match got {
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        other => other.map(Some),
    }
}

/// The names of the path's own xattrs (never a symlink target's), in the kernel's order.
pub fn llistxattr(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let p = cpath(path)?;
    let list = sized_read(|buf: &mut [u8]| {
        // SAFETY: a valid C string and a writable buffer of the given length.
        unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })?;
    Ok(list
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// Calls an xattr getter with a growing buffer: it answers ERANGE while the buffer is short
/// (a value may grow between asking its size and reading it).
fn sized_read(mut call: impl FnMut(&mut [u8]) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        let len = call(&mut buf);
        if len >= 0 {
            buf.truncate(len as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || buf.len() >= MAX_XATTR_VALUE_BYTES {
            return Err(e);
        }
        buf.resize((buf.len() * 4).min(MAX_XATTR_VALUE_BYTES), 0);
    }
}

/// Sets atime and mtime to `secs` on the path itself (never on a symlink's target).
pub fn set_times_nofollow(path: &Path, secs: i64) -> io::Result<()> {
    let p = cpath(path)?;
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid C string and a two-element timespec array.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// The directory a path lives in (`.` for a bare file name): where its temporary sibling
/// goes, so that the final rename stays on one filesystem.
pub fn parent_dir(path: &Path) -> std::path::PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// An advisory lock (flock) held as long as the value lives; other processes and other open
/// file descriptions of the same file wait for it.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub fn acquire(path: &Path, exclusive: bool) -> io::Result<FileLock> {
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        Self::lock(path, op)?.ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
    }

    /// The exclusive lock if nobody holds the file locked now; `None` without waiting else.
    pub fn try_exclusive(path: &Path) -> io::Result<Option<FileLock>> {
        Self::lock(path, libc::LOCK_EX | libc::LOCK_NB)
    }

    /// Like `try_exclusive`, on a directory itself (never through a symlink).
    pub fn try_exclusive_dir(dir: &Path) -> io::Result<Option<FileLock>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(dir)?;
        Self::flock(file, libc::LOCK_EX | libc::LOCK_NB)
    }

    fn lock(path: &Path, op: libc::c_int) -> io::Result<Option<FileLock>> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        Self::flock(file, op)
    }

    fn flock(file: File, op: libc::c_int) -> io::Result<Option<FileLock>> {
        loop {
            // SAFETY: the descriptor is open for the duration of the call.
            match check(unsafe { libc::flock(file.as_raw_fd(), op) }) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                r => r?,
            }
            return Ok(Some(FileLock { _file: file }));
        }
    }
}
