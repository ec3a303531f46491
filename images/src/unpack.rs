//! Applies layer tarballs to a directory, safely.
//!
//! Every path is resolved inside the target root: `..` and absolute names are refused, parent
//! directories are walked component by component with `symlink_metadata`, and a symlink met on
//! the way is resolved as if the root were `/` (so `/etc` through a link still lands in
//! `<root>/etc`). The final component is never followed: whatever is there is replaced.
//!
//! Whiteouts are either kept the overlayfs way (per-layer directories used as overlay lower
//! layers: a 0:0 character device for `.wh.NAME`, `trusted.overlay.opaque=y` for
//! `.wh..wh..opq`) or applied (a merged root filesystem: lower entries are deleted).

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{debug, warn};

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};
use crate::manifest::Compression;
use crate::sys;
use crate::text::escape_untrusted;

pub(crate) mod guard;
mod paths;

use paths::{clean_path, remove_any, segments, unsafe_entry, Seg};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const MAX_SYMLINK_HOPS: u32 = 40;

/// Caps against decompression bombs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Per layer: the uncompressed tar stream size, and the sum of the sizes its files
    /// declare (a sparse file counts at its expanded size).
    pub max_bytes: u64,
    /// Per layer.
    pub max_entries: u64,
    /// Per image: the sizes the files of all its layers declare, together (see
    /// [`ImageBudget`]).
    pub max_image_bytes: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            max_bytes: 32 << 30,
            max_entries: 1_000_000,
            max_image_bytes: 128 << 30,
        }
    }
}

/// What the layers one operation unpacks for one image may write together: file sizes as
/// declared, counted before they are written. Shared by layers unpacked in parallel.
#[derive(Debug)]
pub struct ImageBudget {
    max: u64,
    used: AtomicU64,
}

impl ImageBudget {
    pub fn new(limits: &UnpackLimits) -> ImageBudget {
        ImageBudget {
            max: limits.max_image_bytes,
            used: AtomicU64::new(0),
        }
    }

    fn charge(&self, bytes: u64) -> Result<()> {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.max {
            return Err(Error::LimitExceeded(format!(
                "the image's layers declare more than {} bytes of files",
                self.max
            )));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DevicePolicy {
    /// Device nodes in images are skipped: the guest's /dev is its own devtmpfs.
    #[default]
    Skip,
    Create,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackOptions {
    pub limits: UnpackLimits,
    pub devices: DevicePolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteouts {
    /// Keep them as overlayfs whiteouts (per-layer directories).
    Overlay,
    /// Delete what they hide (a merged root filesystem).
    Apply,
}

/// Whether `dir` carries overlayfs' opaque marker (what `.wh..wh..opq` becomes in a layer dir).
pub fn is_overlay_opaque(dir: &Path) -> io::Result<bool> {
    Ok(sys::lgetxattr(dir, OVERLAY_OPAQUE_XATTR)?.as_deref() == Some(b"y"))
}

#[derive(Debug)]
pub struct LayerStats {
    /// sha256 of the uncompressed tar stream: compare with the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
    pub tar_bytes: u64,
    pub entries: u64,
}

/// Applies one (possibly compressed) layer tarball to `root`.
pub fn apply_layer(
    blob: impl Read,
    compression: Compression,
    root: &Path,
    mode: Whiteouts,
    opts: &UnpackOptions,
    image: &ImageBudget,
) -> Result<LayerStats> {
    let decompressed: Box<dyn Read> = match compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(blob).at("cannot start zstd decoder for", root)?,
        ),
    };
    let mut stream = HashingReader::new(decompressed, opts.limits.max_bytes);
    let mut applier = Applier {
        root: root.to_path_buf(),
        mode,
        opts,
        image,
        written: HashSet::new(),
        dir_times: Vec::new(),
        entries: 0,
        declared: 0,
    };
    let outcome = applier.apply_all(&mut stream);
    if stream_over_limit(&stream, opts) {
        return Err(Error::LimitExceeded(format!(
            "more than {} bytes uncompressed",
            opts.limits.max_bytes
        )));
    }
    outcome?;
    // The diff_id covers the whole stream, the end-of-archive blocks included.
    io::copy(&mut stream, &mut io::sink()).map_err(|e| malformed_tar(&e))?;
    applier.finish()?;
    let (diff_id, tar_bytes) = stream.finish();
    Ok(LayerStats {
        diff_id,
        tar_bytes,
        entries: applier.entries,
    })
}

fn stream_over_limit<R: Read>(s: &HashingReader<R>, opts: &UnpackOptions) -> bool {
    s.bytes_read() > opts.limits.max_bytes
}

/// A tar error; a layer cap the extension guard enforced is reported as such.
fn malformed_tar(e: &io::Error) -> Error {
    if let Some(l) = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<guard::TarLimit>())
    {
        return Error::LimitExceeded(l.to_string());
    }
    Error::Malformed {
        what: "layer tar stream".into(),
        reason: e.to_string(),
    }
}

/// A header number; an empty field (all NUL or blanks, as some writers leave them) is 0, the
/// way GNU tar and Go's archive/tar read it.
fn numeric_field(raw: &[u8], parsed: io::Result<u64>) -> Result<u64> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(e) => Err(malformed_tar(&e)),
    }
}

struct Applier<'a> {
    root: PathBuf,
    mode: Whiteouts,
    opts: &'a UnpackOptions,
    image: &'a ImageBudget,
    /// Root-relative resolved paths created by this layer (an opaque marker hides lower
    /// entries only).
    written: HashSet<PathBuf>,
    /// Directory mtimes are set last: creating entries inside changes them.
    dir_times: Vec<(PathBuf, i64)>,
    entries: u64,
    /// File sizes the entries declared so far (sparse files at their expanded size).
    declared: u64,
}

struct EntryMeta {
    uid: u64,
    gid: u64,
    mode: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Applier<'_> {
    fn apply_all<R: Read>(&mut self, stream: &mut R) -> Result<()> {
        let mut archive = tar::Archive::new(guard::ExtensionGuard::new(stream));
        for entry in archive.entries().map_err(|e| malformed_tar(&e))? {
            let mut entry = entry.map_err(|e| malformed_tar(&e))?;
            self.entries += 1;
            if self.entries > self.opts.limits.max_entries {
                return Err(Error::LimitExceeded(format!(
                    "more than {} entries",
                    self.opts.limits.max_entries
                )));
            }
            self.apply_entry(&mut entry)?;
        }
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        for (dir, mtime) in self.dir_times.iter().rev() {
            sys::set_times_nofollow(dir, *mtime).at("cannot set mtime of", dir)?;
        }
        Ok(())
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path().map_err(|e| malformed_tar(&e))?.into_owned();
        // For errors and logs: the entry's name is the image's text, escaped.
        let shown = escape_untrusted(raw.display());
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let rel = clean_path(&raw, &shown)?;
        let meta = self.entry_meta(entry)?;
        let Some(name) = rel.file_name().map(|n| n.to_os_string()) else {
            // "./": metadata of the root itself.
            if kind.is_dir() {
                let root = self.root.clone();
                self.set_metadata(&root, &meta, false)?;
                self.dir_times.push((root, meta.mtime));
            }
            return Ok(());
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(parent_rel, name.as_bytes(), hidden, &shown);
        }
        let (parent, parent_res) = self.resolve_dir(parent_rel, true, &shown)?;
        let target = parent.join(&name);
        let target_rel = parent_res.join(&name);
        match kind {
            tar::EntryType::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        remove_any(&target)?;
                        self.mkdir(&target)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => self.mkdir(&target)?,
                    Err(e) => return Err(e).at("cannot inspect", &target),
                }
                self.set_metadata(&target, &meta, false)?;
                self.dir_times.push((target, meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                // What the entry will write (a sparse map expands to its full size), counted
                // before a byte of it is written.
                self.declared = self.declared.saturating_add(entry.size());
                if self.declared > self.opts.limits.max_bytes {
                    return Err(Error::LimitExceeded(format!(
                        "its files declare more than {} bytes",
                        self.opts.limits.max_bytes
                    )));
                }
                self.image.charge(entry.size())?;
                remove_any(&target)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .at("cannot create", &target)?;
                io::copy(entry, &mut f).map_err(|e| malformed_tar(&e))?;
                drop(f);
                self.set_metadata(&target, &meta, false)?;
                sys::set_times_nofollow(&target, meta.mtime).at("cannot set mtime of", &target)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| malformed_tar(&e))?
                    .ok_or_else(|| unsafe_entry(&shown, "symlink without a target"))?;
                remove_any(&target)?;
                // The link's text is stored as is: nothing here ever follows it out of the root.
                std::os::unix::fs::symlink(&link, &target).at("cannot create symlink", &target)?;
                self.set_metadata(&target, &meta, true)?;
                sys::set_times_nofollow(&target, meta.mtime).at("cannot set mtime of", &target)?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| malformed_tar(&e))?
                    .ok_or_else(|| unsafe_entry(&shown, "hard link without a target"))?;
                let source = self.hardlink_source(&link, &shown)?;
                if source != target {
                    remove_any(&target)?;
                    fs::hard_link(&source, &target).at("cannot create hard link", &target)?;
                }
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                if self.opts.devices == DevicePolicy::Skip {
                    debug!(entry = %shown, "skipping device node");
                    return Ok(());
                }
                let ftype = if kind == tar::EntryType::Char {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                remove_any(&target)?;
                sys::mknod(&target, ftype | 0o600, major, minor).at("cannot mknod", &target)?;
                self.set_metadata(&target, &meta, false)?;
            }
            tar::EntryType::Fifo => {
                remove_any(&target)?;
                sys::mknod(&target, libc::S_IFIFO | 0o600, 0, 0).at("cannot mkfifo", &target)?;
                self.set_metadata(&target, &meta, false)?;
            }
            other => {
                warn!(entry = %shown, kind = ?other, "skipping unsupported tar entry type");
                return Ok(());
            }
        }
        if self.mode == Whiteouts::Apply {
            self.written.insert(target_rel);
        }
        Ok(())
    }

    fn mkdir(&mut self, p: &Path) -> Result<()> {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(p)
            .at("cannot create directory", p)
    }

    /// Walks `rel` inside the root and returns (absolute, root-relative) of the directory it
    /// names. Symlinks on the way are resolved with the root as `/`; missing directories are
    /// created (0755) when `create`, else `Ok(None)`-like: an error-free empty answer.
    fn resolve_dir_opt(
        &mut self,
        rel: &Path,
        create: bool,
        shown: &str,
    ) -> Result<Option<(PathBuf, PathBuf)>> {
        let mut todo: VecDeque<Seg> = segments(rel).collect();
        let mut cur = PathBuf::new();
        let mut hops = 0;
        while let Some(seg) = todo.pop_front() {
            let name = match seg {
                Seg::Root => {
                    cur.clear();
                    continue;
                }
                Seg::Up => {
                    cur.pop();
                    continue;
                }
                Seg::Name(n) => n,
            };
            let cand = cur.join(&name);
            let full = self.root.join(&cand);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => cur = cand,
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(unsafe_entry(shown, "too many levels of symbolic links"));
                    }
                    let target = fs::read_link(&full).at("cannot read symlink", &full)?;
                    for s in segments(&target).rev() {
                        todo.push_front(s);
                    }
                }
                Ok(_) => {
                    return Err(unsafe_entry(
                        shown,
                        format!("/{} is not a directory", cand.display()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    self.mkdir(&full)?;
                    if self.mode == Whiteouts::Apply {
                        self.written.insert(cand.clone());
                    }
                    cur = cand;
                }
                Err(e) => return Err(e).at("cannot inspect", &full),
            }
        }
        Ok(Some((self.root.join(&cur), cur)))
    }

    fn resolve_dir(&mut self, rel: &Path, create: bool, shown: &str) -> Result<(PathBuf, PathBuf)> {
        self.resolve_dir_opt(rel, create, shown)?
            .ok_or_else(|| unsafe_entry(shown, "parent directory does not exist"))
    }

    /// The existing non-directory a hard link entry points at, resolved inside the root.
    fn hardlink_source(&mut self, link: &Path, shown: &str) -> Result<PathBuf> {
        let rel = clean_path(link, shown).map_err(|_| {
            unsafe_entry(shown, format!("hard link target {link:?} leaves the layer"))
        })?;
        let missing = || unsafe_entry(shown, format!("hard link target {link:?} does not exist"));
        let name = rel.file_name().ok_or_else(missing)?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let (dir, _) = self
            .resolve_dir_opt(parent, false, shown)?
            .ok_or_else(missing)?;
        let source = dir.join(name);
        match fs::symlink_metadata(&source) {
            Ok(m) if m.is_dir() => Err(unsafe_entry(shown, "hard link to a directory")),
            Ok(_) => Ok(source),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(missing()),
            Err(e) => Err(e).at("cannot inspect", &source),
        }
    }

    fn whiteout(
        &mut self,
        parent_rel: &Path,
        name: &[u8],
        hidden: &[u8],
        shown: &str,
    ) -> Result<()> {
        if name == OPAQUE_MARKER {
            return self.opaque(parent_rel, shown);
        }
        if hidden.starts_with(WHITEOUT_PREFIX)
            || hidden.is_empty()
            || hidden == b"."
            || hidden == b".."
        {
            // AUFS bookkeeping (.wh..wh.plnk, ...) or nonsense: nothing to hide.
            debug!(entry = %shown, "ignoring whiteout metadata entry");
            return Ok(());
        }
        let hidden = std::ffi::OsStr::from_bytes(hidden);
        match self.mode {
            Whiteouts::Overlay => {
                let (dir, dir_rel) = self.resolve_dir(parent_rel, true, shown)?;
                let target = dir.join(hidden);
                remove_any(&target)?;
                sys::mknod(&target, libc::S_IFCHR, 0, 0).at("cannot create whiteout", &target)?;
                self.written.insert(dir_rel.join(hidden));
            }
            Whiteouts::Apply => {
                if let Some((dir, _)) = self.resolve_dir_opt(parent_rel, false, shown)? {
                    remove_any(&dir.join(hidden))?;
                }
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dir_rel: &Path, shown: &str) -> Result<()> {
        match self.mode {
            Whiteouts::Overlay => {
                let (dir, _) = self.resolve_dir(dir_rel, true, shown)?;
                sys::lsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y")
                    .at("cannot mark opaque (needs root for trusted.* xattrs)", &dir)?;
            }
            Whiteouts::Apply => {
                let Some((dir, res)) = self.resolve_dir_opt(dir_rel, false, shown)? else {
                    return Ok(());
                };
                for child in fs::read_dir(&dir).at("cannot list", &dir)? {
                    let child = child.at("cannot list", &dir)?;
                    if !self.written.contains(&res.join(child.file_name())) {
                        remove_any(&child.path())?;
                    }
                }
            }
        }
        Ok(())
    }

    fn entry_meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<EntryMeta> {
        let h = entry.header();
        let old = h.as_old();
        let mut meta = EntryMeta {
            uid: numeric_field(&old.uid, h.uid())?,
            gid: numeric_field(&old.gid, h.gid())?,
            mode: numeric_field(&old.mode, h.mode().map(u64::from))? as u32,
            mtime: numeric_field(&old.mtime, h.mtime())? as i64,
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry.pax_extensions().map_err(|e| malformed_tar(&e))? {
            for ext in pax {
                let ext = ext.map_err(|e| malformed_tar(&e))?;
                let Ok(key) = ext.key() else { continue };
                let num = || {
                    ext.value()
                        .ok()
                        .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
                };
                match key {
                    "uid" => meta.uid = num().unwrap_or(meta.uid),
                    "gid" => meta.gid = num().unwrap_or(meta.gid),
                    "mtime" => meta.mtime = num().map_or(meta.mtime, |v| v as i64),
                    _ => {
                        if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                            meta.xattrs
                                .push((name.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
        Ok(meta)
    }

    fn set_metadata(&self, path: &Path, meta: &EntryMeta, is_symlink: bool) -> Result<()> {
        let (uid, gid) = (meta.uid as libc::uid_t, meta.gid as libc::gid_t);
        if let Err(e) = std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
            // Unprivileged unpacks (tests, debugging) keep the caller's ownership.
            if sys::is_root() {
                return Err(e).at("cannot chown", path);
            }
        }
        if !is_symlink {
            // After chown: chown clears setuid/setgid.
            fs::set_permissions(path, fs::Permissions::from_mode(meta.mode & 0o7777))
                .at("cannot chmod", path)?;
        }
        for (name, value) in &meta.xattrs {
            // trusted.overlay.* from an image would forge whiteouts/redirects in our overlay.
            let allowed = name.starts_with("user.") || name == "security.capability";
            if !allowed {
                debug!(
                    path = %escape_untrusted(path.display()),
                    xattr = %escape_untrusted(name),
                    "ignoring xattr"
                );
                continue;
            }
            if let Err(e) = sys::lsetxattr(path, name, value) {
                debug!(
                    path = %escape_untrusted(path.display()),
                    xattr = %escape_untrusted(name),
                    error = %e,
                    "cannot set xattr"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
