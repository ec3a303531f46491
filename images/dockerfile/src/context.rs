//! The build context: which files a COPY or ADD takes, and where they go.
//!
//! Sources are read from an unpacked directory: the build context (confined: a source that
//! leaves it with `..` or through a symlink is refused, naming it; `.dockerignore` applies) or
//! an image's root file system for `COPY --from` (symlinks resolved inside it, as a chroot
//! would). [`plan_copy`] lists every file, directory and symlink to copy with its absolute
//! destination and a digest of what is copied (the history text and the build cache use it);
//! [`stage::stage`] writes them into a staging directory the executor commits as the layer.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use skiff_images::commit::clean;
use skiff_images::digest::Hasher;

use crate::error::{Error, Result};
use crate::eval::CopyStep;

pub mod ignore;
pub mod stage;

pub use ignore::Ignore;
use ignore::{has_wildcards, match_element};

const MAX_SYMLINK_HOPS: u32 = 40;
const MAX_DEPTH: usize = 512;

/// The destination of a COPY/ADD, absolute: relative ones are taken from WORKDIR; a trailing
/// `/` is kept (it says "a directory").
pub fn join_dest(workdir: &str, dest: &str) -> String {
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    let dir = dest.ends_with('/') || dest.ends_with("/.") || dest == ".";
    let mut clean = clean(&joined);
    if dir && !clean.ends_with('/') {
        clean.push('/');
    }
    clean
}

/// Where sources are read from.
#[derive(Clone, Copy, Debug)]
pub enum Root<'a> {
    /// The unpacked build context and its `.dockerignore`.
    Context { dir: &'a Path, ignore: &'a Ignore },
    /// An image's unpacked root file system (`COPY --from`).
    Image { dir: &'a Path },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemKind {
    Dir,
    File,
    Symlink(PathBuf),
    /// ADD of a local tar: extracted at `dest`.
    Archive,
}

/// One thing to copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// On the host, inside the root.
    pub source: PathBuf,
    /// Absolute in the image, without a trailing `/`.
    pub dest: String,
    pub kind: ItemKind,
}

#[derive(Clone, Debug, Default)]
pub struct CopyPlan {
    pub items: Vec<Item>,
    /// Heredoc files: (absolute destination, content).
    pub inline: Vec<(String, String)>,
    /// `file:<sha256>` for one file, `dir:<sha256>` otherwise: what the history shows in
    /// place of the sources, and the content part of the cache key.
    pub digest: String,
}

impl Root<'_> {
    fn dir(&self) -> &Path {
        match self {
            Root::Context { dir, .. } | Root::Image { dir } => dir,
        }
    }

    fn excluded(&self, rel: &str) -> bool {
        match self {
            Root::Context { ignore, .. } => ignore.excludes(rel),
            Root::Image { .. } => false,
        }
    }

    fn has_exceptions(&self) -> bool {
        matches!(self, Root::Context { ignore, .. } if ignore.has_exceptions())
    }

    fn outside(&self, source: &str, how: &str) -> Error {
        context_error(
            source,
            format!("Forbidden path outside the build context: {source} ({how})"),
        )
    }

    /// `rel` resolved inside the root: symlinks on the way (and the last element too, when
    /// `follow_last`) are followed; in the context one that leads out of it is refused, in an
    /// image absolute targets start at its root. Returns the clean relative path.
    fn resolve(&self, source: &str, rel: &str, follow_last: bool) -> Result<String> {
        let mut done: Vec<String> = Vec::new();
        let mut todo: VecDeque<String> = split(rel).map(str::to_string).collect();
        let mut hops = 0;
        while let Some(el) = todo.pop_front() {
            if el == ".." {
                if done.pop().is_none() && matches!(self, Root::Context { .. }) {
                    return Err(self.outside(source, "through a symlink"));
                }
                continue;
            }
            done.push(el);
            let host = self.dir().join(done.join("/"));
            let meta = match fs::symlink_metadata(&host) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(not_found(source));
                }
                Err(e) => return Err(context_error(source, format!("{source}: {e}"))),
            };
            if !meta.file_type().is_symlink() || (todo.is_empty() && !follow_last) {
                continue;
            }
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(context_error(
                    source,
                    format!("{source}: too many levels of symbolic links"),
                ));
            }
            let target = fs::read_link(&host)
                .map_err(|e| context_error(source, format!("{source}: {e}")))?;
            let link = done.join("/");
            done.pop();
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                if matches!(self, Root::Context { .. }) {
                    return Err(self.outside(source, &format!("{link} -> {target}")));
                }
                done.clear();
            }
            let mut next: VecDeque<String> = split(&target).map(str::to_string).collect();
            next.extend(todo);
            todo = next;
        }
        Ok(done.join("/"))
    }

    /// The context paths a wildcard source matches, sorted, without excluded ones.
    fn glob(&self, pattern: &str) -> Result<Vec<String>> {
        let elements: Vec<&str> = split(pattern).collect();
        let mut found = vec![String::new()];
        for (i, el) in elements.iter().enumerate() {
            let last = i + 1 == elements.len();
            let mut next = Vec::new();
            for dir in &found {
                let host = self.dir().join(dir);
                let is_dir = fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir());
                if !is_dir {
                    continue;
                }
                let mut names: Vec<String> = fs::read_dir(&host)
                    .and_then(|it| {
                        it.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                            .collect()
                    })
                    .map_err(|e| context_error(pattern, format!("{pattern}: {e}")))?;
                names.sort();
                for name in names.into_iter().filter(|n| match_element(el, n)) {
                    let rel = join_rel(dir, &name);
                    if !(last && self.excluded(&rel)) {
                        next.push(rel);
                    }
                }
            }
            found = next;
        }
        Ok(found)
    }
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|e| !e.is_empty() && *e != ".")
}

fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn join_dest_path(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

fn context_error(path: &str, reason: String) -> Error {
    Error::Context {
        path: path.to_string(),
        reason,
    }
}

fn not_found(source: &str) -> Error {
    context_error(
        source,
        format!(
            "file not found in build context or excluded by .dockerignore: stat {source}: file \
             does not exist"
        ),
    )
}

/// The items of one COPY/ADD step. `dest_is_dir_in_image`: the destination is a directory in
/// the image already (a single file then goes inside it, as Docker does).
pub fn plan_copy(root: &Root, step: &CopyStep, dest_is_dir_in_image: bool) -> Result<CopyPlan> {
    let mut matched: Vec<(String, String)> = Vec::new(); // (source as written, relative path)
    for source in &step.sources {
        if source.starts_with("http://") || source.starts_with("https://") {
            return Err(context_error(
                source,
                format!("ADD of a URL ({source}) is not supported by skiff yet"),
            ));
        }
        // `..` may not leave the root, even lexically (`a/../../x`).
        let mut depth: i64 = 0;
        for el in split(source) {
            depth += if el == ".." { -1 } else { 1 };
            if depth < 0 {
                return Err(root.outside(source, ""));
            }
        }
        let rel = clean(source).trim_start_matches('/').to_string();
        if has_wildcards(source) {
            for m in root.glob(&rel)? {
                matched.push((source.clone(), m));
            }
        } else {
            if root.excluded(&rel) && !rel.is_empty() {
                return Err(not_found(source));
            }
            matched.push((source.clone(), rel));
        }
    }
    if matched.is_empty() && step.inline.is_empty() {
        return Err(context_error("", "no source files were specified".into()));
    }
    let dest_dir = step.dest_is_dir || dest_is_dir_in_image;
    if matched.len() + step.inline.len() > 1 && !step.dest_is_dir {
        let word = if step.add { "ADD" } else { "COPY" };
        return Err(context_error(
            &step.dest,
            format!(
                "When using {word} with more than one source file, the destination must be a \
                 directory and end with a /"
            ),
        ));
    }
    let mut plan = CopyPlan::default();
    let mut hasher = Hasher::default();
    let dest = step.dest.trim_end_matches('/');
    let dest = if dest.is_empty() { "/" } else { dest };
    for (source, rel) in &matched {
        let resolved = root.resolve(source, rel, true)?;
        let host = root.dir().join(&resolved);
        let meta = fs::symlink_metadata(&host).map_err(|_| not_found(source))?;
        if meta.is_dir() {
            walk_dir(root, source, &resolved, dest, &mut plan.items, 0)?;
        } else if meta.is_file() {
            let archive = step.add && is_archive(&host)?;
            let name = Path::new(&resolved)
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let (to, kind) = if archive {
                (dest.to_string(), ItemKind::Archive)
            } else if dest_dir {
                (join_dest_path(dest, &name), ItemKind::File)
            } else {
                (dest.to_string(), ItemKind::File)
            };
            plan.items.push(Item {
                source: host,
                dest: to,
                kind,
            });
        } else {
            return Err(context_error(
                source,
                format!("{source}: not a regular file, directory or symlink"),
            ));
        }
    }
    for (name, content) in &step.inline {
        let to = if dest_dir {
            join_dest_path(dest, name)
        } else {
            dest.to_string()
        };
        plan.inline.push((to, content.clone()));
    }
    let single_file =
        plan.inline.is_empty() && plan.items.len() == 1 && plan.items[0].kind == ItemKind::File;
    for item in &plan.items {
        hash_item(&mut hasher, item, dest)?;
    }
    for (to, content) in &plan.inline {
        hasher.update(format!("inline\0{to}\0{}\0", content.len()).as_bytes());
        hasher.update(content.as_bytes());
    }
    let digest = hasher.finish();
    plan.digest = format!(
        "{}:{}",
        if single_file { "file" } else { "dir" },
        digest.hex()
    );
    Ok(plan)
}

/// A directory source: its contents (not itself) under `dest`; excluded paths are left out.
fn walk_dir(
    root: &Root,
    source: &str,
    rel: &str,
    dest: &str,
    items: &mut Vec<Item>,
    depth: usize,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(context_error(
            source,
            format!("{source}: directories nest deeper than {MAX_DEPTH}"),
        ));
    }
    let host = root.dir().join(rel);
    let mut names: Vec<std::ffi::OsString> = fs::read_dir(&host)
        .and_then(|it| it.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(|e| context_error(source, format!("{source}: {e}")))?;
    names.sort();
    for name in names {
        let shown = name.to_string_lossy().into_owned();
        let child_rel = join_rel(rel, &shown);
        let child = host.join(&name);
        let to = join_dest_path(dest, &shown);
        let meta = fs::symlink_metadata(&child)
            .map_err(|e| context_error(source, format!("{child_rel}: {e}")))?;
        let excluded = root.excluded(&child_rel);
        if meta.is_dir() {
            if !excluded {
                items.push(Item {
                    source: child.clone(),
                    dest: to.clone(),
                    kind: ItemKind::Dir,
                });
            }
            if !excluded || root.has_exceptions() {
                walk_dir(root, source, &child_rel, &to, items, depth + 1)?;
            }
            continue;
        }
        if excluded {
            continue;
        }
        let kind = if meta.is_file() {
            ItemKind::File
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&child)
                .map_err(|e| context_error(source, format!("{child_rel}: {e}")))?;
            ItemKind::Symlink(target)
        } else {
            // FIFOs, sockets and devices are not copied (Docker's context has none either).
            continue;
        };
        items.push(Item {
            source: child,
            dest: to,
            kind,
        });
    }
    Ok(())
}

/// Opens a source for reading without following a symlink put in its place.
pub(crate) fn open_source(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn hash_item(hasher: &mut Hasher, item: &Item, dest: &str) -> Result<()> {
    let meta = fs::symlink_metadata(&item.source)
        .map_err(|e| context_error(&item.dest, format!("{}: {e}", item.dest)))?;
    let rel = item.dest.strip_prefix(dest).unwrap_or(&item.dest);
    let kind = match &item.kind {
        ItemKind::Dir => "dir".to_string(),
        ItemKind::File => "file".to_string(),
        ItemKind::Archive => "archive".to_string(),
        ItemKind::Symlink(t) => format!("symlink\0{}", t.display()),
    };
    hasher.update(format!("{kind}\0{rel}\0{:o}\0", meta.mode() & 0o7777).as_bytes());
    if matches!(item.kind, ItemKind::File | ItemKind::Archive) {
        let mut f = open_source(&item.source)
            .map_err(|e| context_error(&item.dest, format!("{}: {e}", item.dest)))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| context_error(&item.dest, format!("{}: {e}", item.dest)))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    hasher.update(b"\n");
    Ok(())
}

/// What a local ADD source is: a tar (plain, gzip, bzip2 or xz, by its first bytes).
pub fn is_archive(path: &Path) -> Result<bool> {
    let shown = path.display().to_string();
    let mut head = [0u8; 512];
    let mut f = open_source(path).map_err(|e| context_error(&shown, format!("{shown}: {e}")))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(context_error(&shown, format!("{shown}: {e}"))),
        }
    }
    Ok(stage::Compression::sniff(&head[..n]).is_some())
}

#[cfg(test)]
#[path = "tests/context.rs"]
mod tests;
