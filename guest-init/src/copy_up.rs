//! Docker's copy of an image's files into a new volume: when a volume mounted at PATH is empty,
//! what the image has at PATH is copied into it, with owners, modes, times, symbolic links, hard
//! links, device nodes and FIFOs kept (extended attributes are not copied).
//!
//! guest-init holds the image's directory open before the volume is mounted over it, then copies
//! from that descriptor (through `/proc/self/fd`) into the mounted volume.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// True when `dir` holds nothing.
pub fn is_empty(dir: &Path) -> io::Result<bool> {
    Ok(fs::read_dir(dir)?.next().is_none())
}

/// Copies the tree under `from` into the existing directory `to` (which takes `from`'s owner,
/// mode and times).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let mut links = HashMap::new();
    copy_dir_contents(from, to, &mut links)?;
    copy_attributes(&fs::symlink_metadata(from)?, to)
}

fn copy_dir_contents(
    from: &Path,
    to: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = fs::symlink_metadata(&src)?;
        let kind = meta.file_type();
        if !kind.is_dir() && meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                fs::hard_link(first, &dst)?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), dst.clone());
        }
        if kind.is_dir() {
            fs::create_dir(&dst)?;
            copy_dir_contents(&src, &dst, links)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            fs::copy(&src, &dst)?;
        } else {
            make_node(&dst, meta.mode(), meta.rdev())?;
        }
        copy_attributes(&meta, &dst)?;
    }
    Ok(())
}

/// A device node, FIFO or socket like the source.
fn make_node(path: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: a valid path string; mode and device number come from the source's stat.
    if unsafe { libc::mknod(c.as_ptr(), mode, rdev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Owner, then mode (chown clears set-user-ID bits), then times; never through a symlink.
fn copy_attributes(meta: &fs::Metadata, path: &Path) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    let c = c_path(path)?;
    // SAFETY: a valid path string and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_copied_with_links_modes_and_times() {
        let root = std::env::temp_dir().join(format!("skiff-copy-up-{}", std::process::id()));
        let (from, to) = (root.join("from"), root.join("to"));
        fs::create_dir_all(from.join("sub")).unwrap();
        fs::create_dir_all(&to).unwrap();
        fs::write(from.join("sub/file"), b"data").unwrap();
        fs::set_permissions(from.join("sub/file"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::hard_link(from.join("sub/file"), from.join("twin")).unwrap();
        std::os::unix::fs::symlink("sub/file", from.join("link")).unwrap();
        fs::set_permissions(&from, fs::Permissions::from_mode(0o711)).unwrap();
        assert!(is_empty(&to).unwrap());

        copy_tree(&from, &to).unwrap();
        assert!(!is_empty(&to).unwrap());
        assert_eq!(fs::read(to.join("sub/file")).unwrap(), b"data");
        let file = fs::metadata(to.join("sub/file")).unwrap();
        assert_eq!(file.mode() & 0o7777, 0o640);
        assert_eq!(file.ino(), fs::metadata(to.join("twin")).unwrap().ino());
        assert_eq!(
            fs::read_link(to.join("link")).unwrap(),
            Path::new("sub/file")
        );
        assert_eq!(fs::metadata(&to).unwrap().mode() & 0o7777, 0o711);
        let src = fs::metadata(from.join("sub/file")).unwrap();
        assert_eq!(file.mtime(), src.mtime());
        assert_eq!(file.mtime_nsec(), src.mtime_nsec());
        fs::remove_dir_all(&root).unwrap();
    }
}
