//! What a build step needs to know of the image it starts from without unpacking it whole: a
//! path's metadata as the merged layers show it, paths resolved through the image's symlinks
//! (`COPY x /bin/` where `/bin -> usr/bin`), `--chown` names, and the metadata of the parent
//! directories a staging directory had to create.

use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The unpacked layers of an image, top-most first (none for scratch).
pub struct ImageView {
    pub layers: Vec<PathBuf>,
}

const MAX_HOPS: u32 = 40;

impl ImageView {
    /// `path` (absolute) in the top-most layer that has it; a whiteout hides it. (Opaque
    /// directories are not looked at: a path they hide may show.)
    pub fn lookup(&self, path: &str) -> Option<(Metadata, PathBuf)> {
        let rel = path.trim_start_matches('/');
        for layer in &self.layers {
            let host = layer.join(rel);
            if let Ok(meta) = fs::symlink_metadata(&host) {
                if meta.file_type().is_char_device() && meta.rdev() == 0 {
                    return None;
                }
                return Some((meta, host));
            }
        }
        None
    }

    /// `path` with every symlink the image has on the way resolved inside the image.
    pub fn resolve(&self, path: &str) -> String {
        let mut done: Vec<String> = Vec::new();
        let mut todo: std::collections::VecDeque<String> = path
            .split('/')
            .filter(|e| !e.is_empty() && *e != ".")
            .map(str::to_string)
            .collect();
        let mut hops = 0;
        while let Some(el) = todo.pop_front() {
            if el == ".." {
                done.pop();
                continue;
            }
            done.push(el);
            let here = format!("/{}", done.join("/"));
            let Some((meta, host)) = self.lookup(&here) else {
                continue;
            };
            if !meta.file_type().is_symlink() || hops >= MAX_HOPS {
                continue;
            }
            hops += 1;
            let Ok(target) = fs::read_link(&host) else {
                continue;
            };
            done.pop();
            let target = target.to_string_lossy().into_owned();
            if target.starts_with('/') {
                done.clear();
            }
            let mut next: std::collections::VecDeque<String> = target
                .split('/')
                .filter(|e| !e.is_empty() && *e != ".")
                .map(str::to_string)
                .collect();
            next.extend(todo);
            todo = next;
        }
        format!("/{}", done.join("/"))
    }

    pub fn is_dir(&self, path: &str) -> bool {
        self.lookup(path).is_some_and(|(m, _)| m.is_dir())
    }

    /// `--chown=user[:group]` as numbers, names looked up in the image's /etc/passwd and
    /// /etc/group; without a group the gid is the uid, as Docker's builder does it.
    pub fn chown(&self, spec: &str) -> Result<(u32, u32), String> {
        let numeric = crate::run::image::numeric_user(spec, &self.layers).map_err(|e| {
            format!("unable to convert uid/gid chown string to host mapping: {e:#}")
        })?;
        let (uid, gid) = numeric
            .split_once(':')
            .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
            .ok_or_else(|| format!("invalid chown {spec:?}"))?;
        Ok(if spec.contains(':') {
            (uid, gid)
        } else {
            (uid, uid)
        })
    }

    /// Gives each directory of `staging` that the step did not copy itself (`copied` holds the
    /// image paths it did) the image's metadata when the image has it, else 0755 and `owner`.
    pub fn settle_parents(
        &self,
        staging: &Path,
        copied: &std::collections::HashSet<String>,
        owner: (u32, u32),
    ) -> std::io::Result<()> {
        let mut stack = vec![(staging.to_path_buf(), String::new())];
        while let Some((dir, image_path)) = stack.pop() {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                if !entry.file_type()?.is_dir() {
                    continue;
                }
                let child_path = format!("{image_path}/{}", entry.file_name().to_string_lossy());
                let host = entry.path();
                if !copied.contains(&child_path) {
                    let times = match self.lookup(&child_path) {
                        Some((meta, _)) if meta.is_dir() => {
                            std::os::unix::fs::lchown(&host, Some(meta.uid()), Some(meta.gid()))?;
                            fs::set_permissions(
                                &host,
                                fs::Permissions::from_mode(meta.mode() & 0o7777),
                            )?;
                            meta.modified().ok()
                        }
                        _ => {
                            std::os::unix::fs::lchown(&host, Some(owner.0), Some(owner.1))?;
                            fs::set_permissions(&host, fs::Permissions::from_mode(0o755))?;
                            None
                        }
                    };
                    stack.push((host.clone(), child_path));
                    if let Some(t) = times {
                        // Children first would change it again: set after the walk below.
                        pending_time(&host, t);
                    }
                } else {
                    stack.push((host, child_path));
                }
            }
        }
        Ok(())
    }
}

/// Sets a directory's mtime (best effort: a parent's time is cosmetic).
fn pending_time(dir: &Path, t: std::time::SystemTime) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.set_modified(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn lookups_follow_the_layers_and_their_symlinks() {
        let upper = tempfile::tempdir().unwrap();
        let lower = tempfile::tempdir().unwrap();
        fs::create_dir_all(lower.path().join("usr/bin")).unwrap();
        symlink("usr/bin", lower.path().join("bin")).unwrap();
        symlink("/usr", upper.path().join("u")).unwrap();
        fs::create_dir_all(upper.path().join("etc")).unwrap();
        fs::write(
            upper.path().join("etc/passwd"),
            "app:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        let view = ImageView {
            layers: vec![upper.path().to_path_buf(), lower.path().to_path_buf()],
        };
        assert_eq!(view.resolve("/bin/x"), "/usr/bin/x");
        assert_eq!(view.resolve("/u/bin/"), "/usr/bin");
        assert_eq!(view.resolve("/new/dir"), "/new/dir");
        assert!(view.is_dir("/usr/bin") && !view.is_dir("/bin"));
        assert_eq!(view.chown("app").unwrap(), (1000, 1000));
        assert_eq!(view.chown("app:1").unwrap(), (1000, 1));
        assert_eq!(view.chown("7").unwrap(), (7, 7));
        assert!(view.chown("nobody").is_err());
    }
}
