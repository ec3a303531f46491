//! Writing a [`CopyPlan`] into a staging directory laid out like the image's root: each item at
//! its destination, with the owner `--chown` asks for (else root for the build context, the
//! source's own for `COPY --from`), the mode `--chmod` asks for (else the source's), and the
//! source's modification time. ADD of a local tar extracts it there with the image unpacker
//! (`..`, absolute names and links out of the destination refused, devices skipped, sizes
//! capped). The executor then gives created parent directories their metadata and commits
//! the directory as the step's layer.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use skiff_images::manifest::Compression as LayerCompression;
use skiff_images::unpack::{apply_layer, ImageBudget, UnpackOptions, Whiteouts};

use super::{context_error, open_source, CopyPlan, ItemKind};
use crate::error::Result;

/// How an ADD archive is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
}

impl Compression {
    /// By the first bytes (Docker's `DetectCompression`); `None` for what is not a tar.
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(b"BZh") {
            Some(Compression::Bzip2)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Compression::Xz)
        } else if head.len() >= 262 && &head[257..262] == b"ustar" {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// The decompressed stream.
    pub fn reader<'a, R: Read + 'a>(self, inner: R) -> Box<dyn Read + 'a> {
        match self {
            Compression::None => Box::new(inner),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
            Compression::Bzip2 => Box::new(bzip2_rs::DecoderReader::new(inner)),
            Compression::Xz => Box::new(XzReader::new(inner)),
        }
    }
}

/// xz through lzma-rs, which decodes a whole stream into a writer: run in a thread feeding a
/// pipe, so the tar is read as it comes and the size caps hold.
struct XzReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl XzReader {
    fn new<R: Read>(mut inner: R) -> XzReader {
        // lzma-rs needs the input whole or buffered: read it here (bounded by the caller's
        // file size), decode in a thread.
        let mut input = Vec::new();
        let read = inner.read_to_end(&mut input);
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            if let Err(e) = read {
                let _ = tx.send(Err(e));
                return;
            }
            let mut out = ChannelWriter(tx.clone());
            if let Err(e) = lzma_rs::xz_decompress(&mut io::BufReader::new(&input[..]), &mut out) {
                let _ = tx.send(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    e.to_string(),
                )));
            }
        });
        XzReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

struct ChannelWriter(std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>);

impl io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .send(Ok(buf.to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "reader gone"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for XzReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct StageOptions {
    /// `--chown`, resolved to numbers.
    pub owner: Option<(u32, u32)>,
    /// Keep the sources' owners (`COPY --from`); else root owns what has no `--chown`.
    pub keep_owner: bool,
    /// `--chmod`, for files and directories alike.
    pub mode: Option<u32>,
    pub unpack: UnpackOptions,
}

/// `--chmod=0755` (octal, as the classic builder takes it).
pub fn parse_chmod(text: &str) -> Result<u32> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| context_error(text, format!("invalid chmod parameter: {text}")))
}

/// The staging path of an absolute destination.
pub fn staged(staging: &Path, dest: &str) -> PathBuf {
    staging.join(dest.trim_start_matches('/'))
}

/// Writes `plan` under `staging` (which exists).
pub fn stage(plan: &CopyPlan, staging: &Path, opts: &StageOptions) -> Result<()> {
    let fail = |what: &str, e: io::Error| context_error(what, format!("{what}: {e}"));
    // Directory times are set last: writing inside a directory changes its mtime.
    let mut dir_times: Vec<(PathBuf, std::time::SystemTime)> = Vec::new();
    for item in &plan.items {
        let to = staged(staging, &item.dest);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent).map_err(|e| fail(&item.dest, e))?;
        }
        let meta = fs::symlink_metadata(&item.source).map_err(|e| fail(&item.dest, e))?;
        let owner = opts
            .owner
            .or(opts.keep_owner.then_some((meta.uid(), meta.gid())))
            .unwrap_or((0, 0));
        let mode = opts.mode.unwrap_or(meta.mode() & 0o7777);
        match &item.kind {
            ItemKind::Dir => {
                match fs::create_dir(&to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && to.is_dir() => {}
                    Err(e) => return Err(fail(&item.dest, e)),
                }
                set_owner_mode(&to, owner, mode).map_err(|e| fail(&item.dest, e))?;
                if let Ok(t) = meta.modified() {
                    dir_times.push((to, t));
                }
            }
            ItemKind::File => {
                remove_non_dir(&to).map_err(|e| fail(&item.dest, e))?;
                let mut src = open_source(&item.source).map_err(|e| fail(&item.dest, e))?;
                let mut dst = File::create(&to).map_err(|e| fail(&item.dest, e))?;
                io::copy(&mut src, &mut dst).map_err(|e| fail(&item.dest, e))?;
                if let Ok(t) = meta.modified() {
                    dst.set_modified(t).map_err(|e| fail(&item.dest, e))?;
                }
                drop(dst);
                set_owner_mode(&to, owner, mode).map_err(|e| fail(&item.dest, e))?;
            }
            ItemKind::Symlink(target) => {
                remove_non_dir(&to).map_err(|e| fail(&item.dest, e))?;
                std::os::unix::fs::symlink(target, &to).map_err(|e| fail(&item.dest, e))?;
                std::os::unix::fs::lchown(&to, Some(owner.0), Some(owner.1))
                    .map_err(|e| fail(&item.dest, e))?;
            }
            ItemKind::Archive => extract(&item.source, &to, &item.dest, opts)?,
        }
    }
    for (to, content) in &plan.inline {
        let path = staged(staging, to);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| fail(to, e))?;
        }
        fs::write(&path, content).map_err(|e| fail(to, e))?;
        let owner = opts.owner.unwrap_or((0, 0));
        set_owner_mode(&path, owner, opts.mode.unwrap_or(0o644)).map_err(|e| fail(to, e))?;
    }
    for (dir, time) in dir_times.into_iter().rev() {
        let f = File::open(&dir).map_err(|e| fail(&dir.display().to_string(), e))?;
        f.set_modified(time)
            .map_err(|e| fail(&dir.display().to_string(), e))?;
    }
    Ok(())
}

fn set_owner_mode(path: &Path, owner: (u32, u32), mode: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1))?;
    // After the chown, which clears setuid bits.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// A file, symlink or empty place at `path`: a later source of the same step replaces what an
/// earlier one put there (a directory stays).
fn remove_non_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a directory is in the way",
        )),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// ADD of a local tar: unpacked at `to` by the image unpacker (whiteout names are applied as
/// in a layer).
fn extract(source: &Path, to: &Path, dest: &str, opts: &StageOptions) -> Result<()> {
    let fail = |e: String| context_error(dest, format!("ADD {}: {e}", source.display()));
    fs::create_dir_all(to).map_err(|e| fail(e.to_string()))?;
    let mut f = open_source(source).map_err(|e| fail(e.to_string()))?;
    let mut head = [0u8; 512];
    let n = f.read(&mut head).map_err(|e| fail(e.to_string()))?;
    let compression = Compression::sniff(&head[..n]).ok_or_else(|| fail("not a tar".into()))?;
    let f = open_source(source).map_err(|e| fail(e.to_string()))?;
    let budget = ImageBudget::new(&opts.unpack.limits);
    apply_layer(
        compression.reader(f),
        LayerCompression::None,
        to,
        Whiteouts::Apply,
        &opts.unpack,
        &budget,
    )
    .map_err(|e: skiff_images::Error| fail(e.to_string()))?;
    Ok(())
}
