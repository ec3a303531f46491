//! Exec sessions: recorded in the state database (so `exec inspect` outlives a daemon restart),
//! run straight against guest-init's exec port, with resizes carried to the running process.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::streams::{pump, OnDetach, StdinPlan};
use super::{create, detach_keys, internal, Inner, Result};
use crate::daemon::model::{ExecInspect, ExecProcessConfig};
use crate::daemon::options::{AttachStreams, ExecConfig, ExecStartOptions};
use crate::daemon::BackendError;
use crate::run::session::{self, Control, Outcome};

/// How long an exec waits for a booting guest to serve it.
const EXEC_BOOT_WAIT: Duration = Duration::from_secs(60);
/// Exit code recorded for a session whose stream the daemon lost (it stopped meanwhile).
const LOST_WITH_THE_DAEMON: i64 = 255;

/// One exec session as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRecord {
    pub container: String,
    pub config: ExecConfig,
    pub running: bool,
    pub exit_code: Option<i64>,
}

pub(super) fn not_running(id: &str) -> BackendError {
    BackendError::Conflict(format!("Container {id} is not running"))
}

fn get(inner: &Inner, exec: &str) -> Result<ExecRecord> {
    inner
        .store
        .exec(exec)
        .map_err(internal)?
        .ok_or_else(|| BackendError::NoSuchExec(exec.to_string()))
}

fn put(inner: &Inner, exec: &str, record: &ExecRecord) -> Result<()> {
    inner.store.put_exec(exec, record).map_err(internal)
}

pub async fn create(inner: &Inner, container: &str, config: ExecConfig) -> Result<String> {
    let id = inner.resolve(container)?;
    if !inner.record(&id)?.running() {
        return Err(not_running(&id));
    }
    let exec_id = create::new_id()?;
    let record = ExecRecord {
        container: id,
        config,
        running: false,
        exit_code: None,
    };
    put(inner, &exec_id, &record)?;
    Ok(exec_id)
}

/// Starts the session; a console size given to `start` replaces the one given to `create`.
pub async fn start(
    inner: &std::sync::Arc<Inner>,
    exec: &str,
    opts: ExecStartOptions,
) -> Result<AttachStreams> {
    let mut record = get(inner, exec)?;
    if record.running || record.exit_code.is_some() {
        return Err(BackendError::Conflict(format!(
            "exec {exec} has already been started"
        )));
    }
    let container = inner.record(&record.container)?;
    if !container.running() {
        return Err(not_running(&record.container));
    }
    if opts.console_size.is_some() {
        record.config.console_size = opts.console_size;
    }
    let spec = create::exec_spec(&container, &record.config)?;
    let stream = connect_exec_when_up(inner, &record.container).await?;
    let (reader, writer) = stream.into_split();
    let started = session::start(reader, writer, &spec)
        .await
        .map_err(internal)?;
    record.running = true;
    put(inner, exec, &record)?;
    let (controls, controls_rx) = mpsc::channel(4);
    inner
        .exec_controls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(exec.to_string(), controls);
    let plan = if record.config.attach_stdin {
        StdinPlan::Forward {
            detach_keys: detach_keys::parse(record.config.detach_keys.as_deref())?,
        }
    } else {
        StdinPlan::Empty
    };
    let tty = record.config.tty;
    let inner = inner.clone();
    let exec_id = exec.to_string();
    Ok(pump(
        started,
        tty,
        plan,
        controls_rx,
        OnDetach::KeepSession,
        move |outcome| {
            let code = match outcome {
                Outcome::Exited(status) => i64::from(status.shell_code()),
                Outcome::Failed(report) => i64::from(report.exit_code),
                Outcome::Lost(_) => 137,
            };
            inner
                .exec_controls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&exec_id);
            record.running = false;
            record.exit_code = Some(code);
            if let Err(e) = put(&inner, &exec_id, &record) {
                tracing::warn!("recording exec {exec_id}'s exit: {e}");
            }
        },
    ))
}

pub fn inspect(inner: &Inner, exec: &str) -> Result<ExecInspect> {
    let s = get(inner, exec)?;
    Ok(ExecInspect {
        id: exec.to_string(),
        running: s.running,
        exit_code: s.exit_code,
        process_config: ExecProcessConfig {
            tty: s.config.tty,
            entrypoint: s.config.cmd.first().cloned().unwrap_or_default(),
            arguments: s.config.cmd.iter().skip(1).cloned().collect(),
            user: s.config.user.clone(),
            ..ExecProcessConfig::default()
        },
        open_stdin: s.config.attach_stdin,
        open_stdout: s.config.attach_stdout,
        open_stderr: s.config.attach_stderr,
        container_id: s.container.clone(),
        ..ExecInspect::default()
    })
}

/// Resizes a running exec's terminal; a session without one ignores it, as Docker's does.
pub async fn resize(inner: &Inner, exec: &str, height: u32, width: u32) -> Result<()> {
    get(inner, exec)?;
    let controls = inner
        .exec_controls
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(exec)
        .cloned();
    if let (Some(controls), Some(size)) = (controls, create::terminal_size(Some((height, width)))) {
        let _ = controls.send(Control::Resize(size)).await;
    }
    Ok(())
}

/// At daemon start: sessions recorded as running lost their stream when the last daemon ended.
pub fn recover(inner: &Inner) -> Result<()> {
    for (id, mut record) in inner.store.running_execs().map_err(internal)? {
        record.running = false;
        record.exit_code = Some(LOST_WITH_THE_DAEMON);
        put(inner, &id, &record)?;
    }
    Ok(())
}

/// A stream to guest-init's exec port. A container runs from its VMM's start, but guest-init
/// serves exec only once the guest has booted: this waits for it, as long as a boot may take.
pub(super) async fn connect_exec_when_up(
    inner: &Inner,
    container: &str,
) -> Result<tokio::net::UnixStream> {
    let vsock = inner.paths(container).vsock();
    let deadline = tokio::time::Instant::now() + EXEC_BOOT_WAIT;
    loop {
        match crate::run::exec::connect_exec(&vsock).await {
            Ok(stream) => return Ok(stream),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(internal(e)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
