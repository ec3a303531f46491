//! RUN: each step is a container of its own (its own microVM) made from the current image by
//! the engine's own create, start, wait and logs, its output streamed line by line; its upper
//! directory becomes the step's layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use skiff_dockerfile::RunStep;

use crate::daemon::create::mounts::{MountKind, MountRequest};
use crate::daemon::create::{CreateRequest, NetworkMode, Stdio};
use crate::daemon::options::{LogsOptions, RemoveOptions, WaitCondition};
use crate::daemon::ContainerBackend;
use crate::engine::Engine;

/// The container a RUN step runs in: the step's argv with no entrypoint, its environment,
/// user and directory; `files` (a directory per mount point) read-only; `network` the
/// build's (`networkmode`) unless the step names its own (`RUN --network=`).
pub fn run_request(
    step: &RunStep,
    image: &str,
    network: Option<&str>,
    files: &[(String, PathBuf)],
) -> Result<CreateRequest, String> {
    let network = match step.network.as_deref().or(network) {
        None | Some("default") | Some("bridge") => NetworkMode::Default,
        Some("none") => NetworkMode::None,
        Some("host") => {
            return Err("RUN --network=host is not supported: every step is its own VM".into())
        }
        Some(other) => NetworkMode::Named(other.to_string()),
    };
    let mounts = files
        .iter()
        .map(|(target, dir)| MountRequest {
            kind: MountKind::Bind {
                source: dir.display().to_string(),
                create: false,
            },
            target: target.clone(),
            read_only: true,
        })
        .collect();
    Ok(CreateRequest {
        image: image.to_string(),
        cmd: Some(step.argv.clone()),
        entrypoint: Some(Vec::new()),
        env: step.env.clone(),
        working_dir: step.workdir.clone().filter(|w| !w.is_empty()),
        user: step.user.clone().filter(|u| !u.is_empty()),
        labels: BTreeMap::new(),
        stdio: Stdio {
            attach_stdout: true,
            attach_stderr: true,
            ..Stdio::default()
        },
        network,
        mounts,
        ..CreateRequest::default()
    })
}

/// Writes a step's inline files (`RUN <<EOF` scripts) into `dir`, one subdirectory per mount
/// point: (mount point, host directory).
pub fn inline_files(step: &RunStep, dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for (path, content) in &step.files {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let parent = if parent.is_empty() { "/" } else { parent };
        let host = match mounts.iter().find(|(t, _)| t == parent) {
            Some((_, h)) => h.clone(),
            None => {
                let h = dir.join(format!("m{}", mounts.len()));
                std::fs::create_dir(&h)?;
                mounts.push((parent.to_string(), h.clone()));
                h
            }
        };
        std::fs::write(host.join(name), content)?;
        std::fs::set_permissions(host.join(name), std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(mounts)
}

/// What a RUN container did.
pub struct RunOutcome {
    pub id: String,
    pub code: i64,
}

/// Creates, starts and waits for the step's container, sending each output line to `line`.
pub async fn run_container(
    engine: &Engine,
    req: CreateRequest,
    mut line: impl FnMut(String) -> futures_util::future::BoxFuture<'static, ()>,
) -> Result<RunOutcome, String> {
    let created = engine.create(req).await.map_err(|e| e.to_string())?;
    let id = created.id;
    let guard = RemoveUnlessDone {
        engine: engine.clone(),
        id: Some(id.clone()),
    };
    line(format!(" ---> Running in {}\n", &id[..12])).await;
    let waited = engine
        .wait(&id, WaitCondition::NextExit)
        .await
        .map_err(|e| e.to_string())?;
    engine.start(&id).await.map_err(|e| e.to_string())?;
    let logs = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        ..LogsOptions::default()
    };
    let (_, mut output) = engine.logs(&id, logs).await.map_err(|e| e.to_string())?;
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = output.next().await {
        pending.extend_from_slice(&chunk.data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let rest = pending.split_off(end + 1);
            line(String::from_utf8_lossy(&pending).into_owned()).await;
            pending = rest;
        }
    }
    if !pending.is_empty() {
        pending.push(b'\n');
        line(String::from_utf8_lossy(&pending).into_owned()).await;
    }
    let code = waited.await.status_code;
    guard.done();
    Ok(RunOutcome { id, code })
}

/// Removes a step's container if the build is dropped (cancelled) while it runs.
struct RemoveUnlessDone {
    engine: Engine,
    id: Option<String>,
}

impl RemoveUnlessDone {
    fn done(mut self) {
        self.id = None;
    }
}

impl Drop for RemoveUnlessDone {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let engine = self.engine.clone();
            tokio::spawn(async move {
                tracing::info!("build cancelled: removing its RUN container {}", &id[..12]);
                if let Err(e) = remove_container(&engine, &id).await {
                    tracing::warn!("removing the cancelled build's container {id}: {e}");
                }
            });
        }
    }
}

/// Removes a step's container and its anonymous volumes.
pub async fn remove_container(engine: &Engine, id: &str) -> Result<(), String> {
    let opts = RemoveOptions {
        force: true,
        volumes: true,
        link: false,
    };
    engine.remove(id, opts).await.map_err(|e| e.to_string())
}

/// Docker's message for a failed RUN.
pub fn failed_message(argv: &[String], code: i64) -> String {
    format!(
        "The command '{}' returned a non-zero code: {code}",
        argv.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> RunStep {
        RunStep {
            argv: vec!["/bin/sh".into(), "-c".into(), "make".into()],
            env: vec!["PATH=/bin".into(), "V=1".into()],
            files: vec![("/dev/pipes/EOF".into(), "#!/bin/sh\necho hi\n".into())],
            network: None,
            user: Some("app".into()),
            workdir: Some("/src".into()),
        }
    }

    #[test]
    fn a_run_step_becomes_a_create_request() {
        let tmp = tempfile::tempdir().unwrap();
        let s = step();
        let files = inline_files(&s, tmp.path()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "/dev/pipes");
        let script = files[0].1.join("EOF");
        assert_eq!(
            std::fs::read_to_string(&script).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        let req = run_request(&s, "sha256:abc", None, &files).unwrap();
        assert_eq!(req.image, "sha256:abc");
        assert_eq!(req.cmd.as_deref(), Some(&s.argv[..]));
        assert_eq!(req.entrypoint.as_deref(), Some(&[][..]));
        assert_eq!(req.env, s.env);
        assert_eq!(req.user.as_deref(), Some("app"));
        assert_eq!(req.working_dir.as_deref(), Some("/src"));
        assert_eq!(req.network, NetworkMode::Default);
        assert!(req.mounts[0].read_only && req.mounts[0].target == "/dev/pipes");
        assert!(!req.auto_remove && req.stdio.attach_stdout);
        let none = run_request(&s, "x", Some("none"), &[]).unwrap();
        assert_eq!(none.network, NetworkMode::None);
        let mut own = s.clone();
        own.network = Some("host".into());
        assert!(run_request(&own, "x", None, &[]).is_err());
        assert_eq!(
            failed_message(&["/bin/sh".into(), "-c".into(), "false".into()], 1),
            "The command '/bin/sh -c false' returned a non-zero code: 1"
        );
    }
}
