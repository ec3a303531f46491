//! A container's overlay upper directory written as an OCI layer tar.
//!
//! - overlay whiteouts (character devices 0:0) become `.wh.NAME` empty files, opaque directories
//!   (`trusted.overlay.opaque=y`, or `user.overlay.opaque` of a user-xattr overlay) the directory
//!   followed at once by `DIR/.wh..wh..opq`;
//! - hard links stay hard links (the first name in sorted order holds the data), symlinks,
//!   device nodes and FIFOs are kept; owners, modes (setuid bits included), mtimes (seconds)
//!   and xattrs (PAX `SCHILY.xattr.*`) are kept, except overlayfs' own `*.overlay.*` ones and
//!   the host's `security.selinux` label;
//! - the same tree gives the same bytes: names in byte order, no atime/ctime, no user or group
//!   names, GNU long names where a name does not fit;
//! - sockets cannot be represented in a tar: they are left out, with a warning (as Docker does).
//!
//! The upper of a running container is changed by its guest while we read it, so nothing here
//! trusts a path twice: every directory is opened with `O_NOFOLLOW` relative to its parent's open
//! descriptor (through `/proc/self/fd`), and a file's type and size come from the descriptor
//! that is read. A symlink swapped in is never followed out of the upper.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::digest::{Digest, Hasher, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::sys;
use crate::unpack::guard::MAX_XATTR_VALUE_BYTES;

const OPAQUE_MARKER: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";
/// Deeper directories are refused: the walk holds one descriptor per level.
pub const MAX_DEPTH: usize = 512;

/// What a written layer is.
#[derive(Debug)]
pub struct LayerSummary {
    /// sha256 of the tar stream (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Entries in the tar (0: the upper holds no change).
    pub entries: u64,
}

/// Writes the tree under `upper` (an overlay upper directory) as a layer tar into `out`;
/// returns `out` and what was written.
pub fn write_layer<W: Write>(upper: &Path, out: W) -> Result<(W, LayerSummary)> {
    let root = open_dir(upper).at("cannot open", upper)?;
    let mut walk = Walk {
        tar: tar::Builder::new(HashingWriter {
            inner: out,
            hasher: Hasher::default(),
        }),
        upper: upper.to_path_buf(),
        links: HashMap::new(),
        entries: 0,
    };
    let root_meta = root.metadata().at("cannot inspect", upper)?;
    let root_xattrs = walk.xattrs(upper, Path::new(""))?;
    if root_xattrs.opaque {
        walk.marker(&root_meta, OPAQUE_MARKER.into())?;
    }
    walk.dir(&root, Path::new(""), 0)?;
    walk.tar
        .finish()
        .map_err(|e| walk.failed(Path::new(""), e))?;
    let hashing = walk
        .tar
        .into_inner()
        .map_err(|e| walk_error(upper, Path::new(""), e))?;
    Ok((
        hashing.inner,
        LayerSummary {
            diff_id: hashing.hasher.finish(),
            entries: walk.entries,
        },
    ))
}

struct Walk<W: Write> {
    tar: tar::Builder<HashingWriter<W>>,
    upper: PathBuf,
    /// (device, inode) of a multiply linked file → the archive name that carries it.
    links: HashMap<(u64, u64), PathBuf>,
    entries: u64,
}

#[derive(Default)]
struct Xattrs {
    opaque: bool,
    /// Kept ones, by name.
    kept: Vec<(String, Vec<u8>)>,
}

impl<W: Write> Walk<W> {
    fn dir(&mut self, dir: &File, rel: &Path, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(self.refuse(rel, format!("directories nest deeper than {MAX_DEPTH}")));
        }
        let here = fd_path(dir);
        let mut names: Vec<OsString> = fs::read_dir(&here)
            .and_then(|it| it.map(|e| e.map(|e| e.file_name())).collect())
            .map_err(|e| self.failed(rel, e))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let child = here.join(&name);
            let child_rel = rel.join(&name);
            let meta = match fs::symlink_metadata(&child) {
                Ok(m) => m,
                // Removed meanwhile by the running guest.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.failed(&child_rel, e)),
            };
            let kind = meta.file_type();
            if kind.is_char_device() && meta.rdev() == 0 {
                // A whiteout (possibly one of overlayfs' shared whiteout inodes: not a link).
                self.marker(&meta, rel.join(whiteout_name(&name)))?;
            } else if kind.is_dir() {
                let sub = match open_dir(&child) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(self.failed(&child_rel, e)),
                };
                let meta = sub.metadata().map_err(|e| self.failed(&child_rel, e))?;
                let xattrs = self.xattrs(&child, &child_rel)?;
                let mut h = header(&meta, EntryType::Directory, 0);
                self.append(&mut h, &dir_name(&child_rel), &xattrs, io::empty())?;
                if xattrs.opaque {
                    self.marker(&meta, child_rel.join(OPAQUE_MARKER))?;
                }
                self.dir(&sub, &child_rel, depth + 1)?;
            } else if kind.is_socket() {
                tracing::warn!(
                    path = %crate::text::escape_untrusted(child_rel.display()),
                    "a socket cannot be kept in a layer: left out"
                );
            } else {
                self.non_dir(&child, &child_rel, &meta)?;
            }
        }
        Ok(())
    }

    /// A file, symlink, device node or FIFO; a hard link to one already written.
    fn non_dir(&mut self, path: &Path, rel: &Path, meta: &Metadata) -> Result<()> {
        let key = (meta.dev(), meta.ino());
        if let Some(first) = self.links.get(&key).cloned() {
            let mut h = header(meta, EntryType::Link, 0);
            self.entries += 1;
            return self
                .tar
                .append_link(&mut h, rel, &first)
                .map_err(|e| self.failed(rel, e));
        }
        let written = self.non_dir_entry(path, rel, meta)?;
        if written && meta.nlink() > 1 {
            self.links.insert(key, rel.to_path_buf());
        }
        Ok(())
    }

    /// Writes the entry itself; false when it vanished meanwhile.
    fn non_dir_entry(&mut self, path: &Path, rel: &Path, meta: &Metadata) -> Result<bool> {
        let xattrs = self.xattrs(path, rel)?;
        let kind = meta.file_type();
        if kind.is_file() {
            let file = match fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(self.failed(rel, e)),
            };
            let meta = file.metadata().map_err(|e| self.failed(rel, e))?;
            if !meta.is_file() {
                return Err(self.refuse(rel, "changed from a file to something else meanwhile"));
            }
            let size = meta.len();
            // A file the running guest shortens meanwhile is padded with zeros: the header
            // promised `size` bytes.
            let data = file.take(size).chain(io::repeat(0)).take(size);
            let mut h = header(&meta, EntryType::Regular, size);
            return self.append(&mut h, rel, &xattrs, data).map(|()| true);
        }
        if kind.is_symlink() {
            let target = fs::read_link(path).map_err(|e| self.failed(rel, e))?;
            self.pax(&xattrs, rel)?;
            let mut h = header(meta, EntryType::Symlink, 0);
            self.entries += 1;
            return self
                .tar
                .append_link(&mut h, rel, &target)
                .map(|()| true)
                .map_err(|e| self.failed(rel, e));
        }
        let entry_type = if kind.is_char_device() {
            EntryType::Char
        } else if kind.is_block_device() {
            EntryType::Block
        } else if kind.is_fifo() {
            EntryType::Fifo
        } else {
            return Err(self.refuse(rel, "a file type a tar cannot hold"));
        };
        let mut h = header(meta, entry_type, 0);
        if entry_type != EntryType::Fifo {
            let rdev = meta.rdev();
            h.set_device_major(libc::major(rdev))
                .and_then(|()| h.set_device_minor(libc::minor(rdev)))
                .map_err(|e| self.failed(rel, e))?;
        }
        self.append(&mut h, rel, &xattrs, io::empty())
            .map(|()| true)
    }

    /// A `.wh.` entry: an empty regular file with the owner and time of what it stands for.
    fn marker(&mut self, meta: &Metadata, rel: PathBuf) -> Result<()> {
        let mut h = header(meta, EntryType::Regular, 0);
        h.set_mode(meta.mode() & 0o777);
        self.append(&mut h, &rel, &Xattrs::default(), io::empty())
    }

    fn append(&mut self, h: &mut Header, rel: &Path, x: &Xattrs, data: impl Read) -> Result<()> {
        self.pax(x, rel)?;
        self.entries += 1;
        self.tar
            .append_data(h, rel, data)
            .map_err(|e| self.failed(rel, e))
    }

    /// The PAX header carrying the next entry's xattrs, if it has any.
    fn pax(&mut self, x: &Xattrs, rel: &Path) -> Result<()> {
        if x.kept.is_empty() {
            return Ok(());
        }
        let mut records = Vec::new();
        for (name, value) in &x.kept {
            pax_record(&mut records, &format!("SCHILY.xattr.{name}"), value);
        }
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(records.len() as u64);
        self.tar
            .append_data(&mut h, "PaxHeader", &records[..])
            .map_err(|e| self.failed(rel, e))
    }

    /// The xattrs of the entry at `path` (itself, not a symlink's target) worth keeping.
    /// overlayfs' own are left out; those that mean its redirect or metacopy features are
    /// refused: the data of such an entry is in a lower layer, which a layer cannot point at.
    fn xattrs(&self, path: &Path, rel: &Path) -> Result<Xattrs> {
        let mut out = Xattrs::default();
        let names = sys::llistxattr(path).map_err(|e| self.failed(rel, e))?;
        for raw in names {
            let Ok(name) = String::from_utf8(raw) else {
                return Err(self.refuse(rel, "an xattr name that is not UTF-8"));
            };
            let overlay = name
                .strip_prefix("trusted.overlay.")
                .or_else(|| name.strip_prefix("user.overlay."));
            match overlay {
                Some("redirect" | "metacopy") => {
                    return Err(self.refuse(
                        rel,
                        format!(
                            "overlayfs {name} (a renamed directory or a metadata-only copy) \
                             cannot be written as a layer; mount overlays without redirect_dir \
                             and metacopy"
                        ),
                    ))
                }
                Some("opaque") => {
                    out.opaque = sys::lgetxattr(path, &name)
                        .map_err(|e| self.failed(rel, e))?
                        .is_some_and(|v| v == b"y");
                }
                Some(_) => {}
                None if name == "security.selinux" => {}
                None => {
                    let Some(value) =
                        sys::lgetxattr(path, &name).map_err(|e| self.failed(rel, e))?
                    else {
                        continue;
                    };
                    if value.len() > MAX_XATTR_VALUE_BYTES {
                        return Err(self.refuse(rel, format!("xattr {name} is too large")));
                    }
                    out.kept.push((name, value));
                }
            }
        }
        out.kept.sort();
        Ok(out)
    }

    fn failed(&self, rel: &Path, e: io::Error) -> Error {
        walk_error(&self.upper, rel, e)
    }

    fn refuse(&self, rel: &Path, reason: impl Into<String>) -> Error {
        Error::Uncommittable {
            path: self.upper.join(rel),
            reason: reason.into(),
        }
    }
}

fn walk_error(upper: &Path, rel: &Path, e: io::Error) -> Error {
    Error::Uncommittable {
        path: upper.join(rel),
        reason: e.to_string(),
    }
}

/// `.wh.NAME`, keeping the hidden name's bytes as they are.
fn whiteout_name(hidden: &OsStr) -> OsString {
    let mut bytes = WHITEOUT_PREFIX.as_bytes().to_vec();
    bytes.extend_from_slice(hidden.as_bytes());
    OsString::from_vec(bytes)
}

/// Directories are named with a trailing slash, as Docker writes them.
fn dir_name(rel: &Path) -> PathBuf {
    let mut s = rel.as_os_str().to_owned();
    s.push("/");
    PathBuf::from(s)
}

fn header(meta: &Metadata, kind: EntryType, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(u64::from(meta.uid()));
    h.set_gid(u64::from(meta.gid()));
    // Times before 1970 cannot be written in this header: they become the epoch.
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h.set_size(size);
    h
}

/// `"<len> <key>=<value>\n"`, where len counts the whole record, its own digits included.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A directory, opened without following a symlink in its last component.
fn open_dir(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(path)
}

/// The path through which names inside the open directory `dir` resolve from it, whatever
/// happens to the path it was opened by.
fn fd_path(dir: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}
