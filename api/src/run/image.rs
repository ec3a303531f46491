//! Containers started from images: the image's unpacked layers become the VM's root (read-only
//! overlay lowers), its config supplies what the user did not say (command, env, cwd, user), the
//! way `docker run` merges them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use skiff_images::manifest::RuntimeConfig;
use skiff_images::{ImageService, PreparedImage, PullOptions};

use super::ProcessOptions;

/// An image made ready for one run; its layers stay pinned (safe from `rmi`/prune) until drop.
pub struct ImageRoot {
    pub layers: Vec<PathBuf>,
    pub process: ProcessOptions,
    service: ImageService,
    holder: String,
}

impl ImageRoot {
    /// Pulls `reference` into `service`'s store if it is not there, pins it for run `id`, and
    /// merges its config into `process`; `entrypoint` is the user's `--entrypoint`.
    pub async fn prepare(
        service: ImageService,
        reference: &str,
        id: &str,
        process: &ProcessOptions,
        entrypoint: Option<&str>,
        pull: &PullOptions,
    ) -> anyhow::Result<ImageRoot> {
        let image: PreparedImage = service
            .ensure(reference, pull)
            .await
            .with_context(|| format!("image {reference}"))?;
        let holder = format!("run:{id}");
        service.pin(&holder, &image).context("pinning the image")?;
        // Built before the merge so that a merge error drops (unpins) it.
        let mut root = ImageRoot {
            process: ProcessOptions::default(),
            layers: image.layers,
            service,
            holder,
        };
        root.process = merge_config(process, &image.config, entrypoint, &root.layers)
            .with_context(|| format!("image {reference}"))?;
        Ok(root)
    }
}

impl Drop for ImageRoot {
    fn drop(&mut self) {
        if let Err(e) = self.service.unpin(&self.holder) {
            tracing::warn!("cannot unpin {}: {e}", self.holder);
        }
    }
}

/// Docker's rules: the command is the entrypoint (or `--entrypoint`, which also drops the image's
/// Cmd) followed by the user's arguments or else the image's Cmd; image Env comes before `-e`
/// (which wins); `-w` and `-u` win over WorkingDir and User.
pub fn merge_config(
    user: &ProcessOptions,
    config: &RuntimeConfig,
    entrypoint: Option<&str>,
    layers: &[PathBuf],
) -> anyhow::Result<ProcessOptions> {
    let mut command: Vec<String> = match entrypoint {
        Some("") => Vec::new(),
        Some(e) => vec![e.to_string()],
        None => config.entrypoint.clone().unwrap_or_default(),
    };
    if !user.command.is_empty() {
        command.extend(user.command.iter().cloned());
    } else if entrypoint.is_none() {
        command.extend(config.cmd.clone().unwrap_or_default());
    }
    if command.is_empty() {
        anyhow::bail!("no command: the image has no Entrypoint or Cmd, and none was given");
    }
    let mut env = config.env.clone().unwrap_or_default();
    env.extend(user.env.iter().cloned());
    let workdir = user
        .workdir
        .clone()
        .or_else(|| config.working_dir.clone().filter(|w| !w.is_empty()));
    let image_user = config.user.as_deref().filter(|u| !u.is_empty());
    let user_spec = match (&user.user, image_user) {
        (Some(u), _) => Some(u.clone()),
        (None, Some(u)) => Some(numeric_user(u, layers)?),
        (None, None) => None,
    };
    Ok(ProcessOptions {
        command,
        env,
        workdir,
        user: user_spec,
        tty: user.tty,
        interactive: user.interactive,
    })
}

/// Turns an image's `User` (`name`, `uid`, `name:group`, `uid:gid`) into numeric `UID:GID`, looking
/// names up in the image's /etc/passwd and /etc/group; a user without a group gets its primary one.
pub(crate) fn numeric_user(spec: &str, layers: &[PathBuf]) -> anyhow::Result<String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = image_file(layers, "etc/passwd");
    let entry = |file: &Option<String>, name: &str, what: &str| -> anyhow::Result<(u32, u32)> {
        file.as_deref()
            .and_then(|text| lookup(text, name))
            .with_context(|| {
                format!("{what} {name:?} of the image's User is not in its /etc/{what}")
            })
    };
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd
                .as_deref()
                .and_then(|t| gid_of_uid(t, uid))
                .unwrap_or(0),
        ),
        Err(_) => entry(&passwd, user, "passwd")?,
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => entry(&image_file(layers, "etc/group"), g, "group")?.0,
        },
    };
    Ok(format!("{uid}:{gid}"))
}

/// The `(name, id, next numeric field)` of each entry of a passwd- or group-style file (for
/// passwd the third is the primary gid).
fn entries(text: &str) -> impl Iterator<Item = (&str, u32, u32)> {
    text.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse().ok()?;
        let next = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        Some((name, id, next))
    })
}

/// The `(id, next numeric field)` of the entry called `name` in a passwd- or group-style file.
pub(crate) fn lookup(text: &str, name: &str) -> Option<(u32, u32)> {
    entries(text).find_map(|(n, id, next)| (n == name).then_some((id, next)))
}

fn gid_of_uid(passwd: &str, uid: u32) -> Option<u32> {
    entries(passwd).find_map(|(_, id, gid)| (id == uid).then_some(gid))
}

/// A small text file as the merged image shows it: from the top-most layer that has it. (An
/// overlay whiteout is a character device, which reads as absent here too.)
fn image_file(layers: &[PathBuf], relative: &str) -> Option<String> {
    const MAX: u64 = 1 << 20;
    layers.iter().find_map(|layer| {
        let path: PathBuf = Path::new(layer).join(relative);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > MAX {
            return None;
        }
        std::fs::read_to_string(path).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> RuntimeConfig {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        RuntimeConfig {
            entrypoint: entrypoint.map(strings),
            cmd: cmd.map(strings),
            env: Some(vec!["PATH=/bin".into(), "A=image".into()]),
            working_dir: Some("/data".into()),
            ..RuntimeConfig::default()
        }
    }

    fn user_args(command: &[&str]) -> ProcessOptions {
        ProcessOptions {
            command: command.iter().map(|s| s.to_string()).collect(),
            ..ProcessOptions::default()
        }
    }

    #[test]
    fn command_follows_docker_rules() {
        let both = config(Some(&["/bin/cat"]), Some(&["/etc/new.txt"]));
        let merged =
            |user: &[&str], ep: Option<&str>| merge_config(&user_args(user), &both, ep, &[]);
        assert_eq!(
            merged(&[], None).unwrap().command,
            ["/bin/cat", "/etc/new.txt"]
        );
        assert_eq!(merged(&["/x"], None).unwrap().command, ["/bin/cat", "/x"]);
        assert_eq!(merged(&[], Some("/bin/ls")).unwrap().command, ["/bin/ls"]);
        assert_eq!(
            merged(&["-l"], Some("/bin/ls")).unwrap().command,
            ["/bin/ls", "-l"]
        );
        assert_eq!(merged(&["sh"], Some("")).unwrap().command, ["sh"]);
        let neither = config(None, None);
        let err = merge_config(&user_args(&[]), &neither, None, &[]).unwrap_err();
        assert!(err.to_string().contains("no command"), "{err}");
    }

    #[test]
    fn user_settings_win_over_the_image() {
        let image = config(None, Some(&["sh"]));
        let mut user = user_args(&[]);
        user.env = vec!["A=user".into()];
        let merged = merge_config(&user, &image, None, &[]).unwrap();
        assert_eq!(merged.env, ["PATH=/bin", "A=image", "A=user"]);
        assert_eq!(merged.workdir.as_deref(), Some("/data"));
        user.workdir = Some("/tmp".into());
        user.user = Some("5:6".into());
        let merged = merge_config(&user, &image, None, &[]).unwrap();
        assert_eq!(merged.workdir.as_deref(), Some("/tmp"));
        assert_eq!(merged.user.as_deref(), Some("5:6"));
    }

    #[test]
    fn image_user_names_resolve_in_the_top_most_layer() {
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(lower.path().join("etc")).unwrap();
        std::fs::create_dir_all(upper.path().join("etc")).unwrap();
        std::fs::write(lower.path().join("etc/passwd"), "app:x:1:1::/:/bin/sh\n").unwrap();
        std::fs::write(
            upper.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(upper.path().join("etc/group"), "staff:x:50:\n").unwrap();
        let layers = [upper.path().to_path_buf(), lower.path().to_path_buf()];
        assert_eq!(numeric_user("app", &layers).unwrap(), "1000:1001");
        assert_eq!(numeric_user("app:staff", &layers).unwrap(), "1000:50");
        assert_eq!(numeric_user("1000", &layers).unwrap(), "1000:1001");
        assert_eq!(numeric_user("7:8", &layers).unwrap(), "7:8");
        let err = numeric_user("nobody", &layers).unwrap_err().to_string();
        assert!(
            err.contains("nobody") && err.contains("/etc/passwd"),
            "{err}"
        );
        let err = numeric_user("app:wheel", &layers).unwrap_err().to_string();
        assert!(err.contains("wheel") && err.contains("/etc/group"), "{err}");
    }
}
