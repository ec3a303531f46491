//! Where entries land: archive names made relative and clean, and walked segment by segment
//! (symlinks included) inside the target root.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

pub(super) fn unsafe_entry(entry: &str, reason: impl Into<String>) -> Error {
    Error::UnsafeEntry {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

/// The archive path made relative and clean; `..` and absolute paths are refused.
pub(super) fn clean_path(p: &Path, shown: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry(shown, "path contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_entry(shown, "absolute path"))
            }
        }
    }
    Ok(out)
}

pub(super) enum Seg {
    Root,
    Up,
    Name(OsString),
}

pub(super) fn segments(p: &Path) -> impl DoubleEndedIterator<Item = Seg> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(Seg::Name(n.to_os_string())),
        Component::CurDir => None,
        Component::ParentDir => Some(Seg::Up),
        Component::RootDir | Component::Prefix(_) => Some(Seg::Root),
    })
}

/// Removes whatever is at `p` (file, symlink, device, or a whole directory tree) without
/// following symlinks.
pub(super) fn remove_any(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).at("cannot remove", p),
        Ok(_) => fs::remove_file(p).at("cannot remove", p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).at("cannot inspect", p),
    }
}
