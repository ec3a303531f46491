//! The engine behind skiffd's API: each call of `ContainerBackend` on the engine's state.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};

use super::create::{self, parse_signal};
use super::images;
use super::lifecycle;
use super::record::Status;
use super::streams::{pump, StdinPlan};
use super::{internal, now_unix, Engine, ExecSession, Result};
use crate::daemon::create::CreateRequest;
use crate::daemon::model::{
    ContainerInspect, ContainerStats, ContainerSummary, Event, ExecInspect, ExecProcessConfig,
    ImageDeleteItem, ImageInspect, ImageSummary, ProgressMessage, WaitResponse,
};
use crate::daemon::options::{
    AttachOptions, AttachStreams, ByteStream, EventsOptions, ExecConfig, ExecStartOptions,
    ImageListOptions, ListOptions, LogsOptions, OutputStream, PullOptions, RemoveOptions,
    StatsOptions, SystemCounts, WaitCondition, WaitFuture,
};
use crate::daemon::{BackendError, ContainerBackend, Created};
use crate::run::session::{self, Outcome};

/// Docker's default time between the stop signal and the kill.
const DEFAULT_STOP_TIMEOUT: i64 = 10;
/// How long an exec waits for a booting guest to serve it.
const EXEC_BOOT_WAIT: Duration = Duration::from_secs(60);

fn not_running(id: &str) -> BackendError {
    BackendError::Conflict(format!("Container {id} is not running"))
}

#[async_trait]
impl ContainerBackend for Engine {
    async fn counts(&self) -> SystemCounts {
        let all = self.inner.store.all().unwrap_or_default();
        let running = all.iter().filter(|r| r.running()).count() as u64;
        SystemCounts {
            containers: all.len() as u64,
            running,
            stopped: all.len() as u64 - running,
            images: self
                .inner
                .images
                .store()
                .list()
                .map_or(0, |l| l.len() as u64),
            ..SystemCounts::default()
        }
    }

    async fn create(&self, req: CreateRequest) -> Result<Created> {
        let record = create::create(&self.inner, req).await?;
        Ok(Created {
            id: record.id,
            warnings: Vec::new(),
        })
    }

    async fn start(&self, id: &str) -> Result<()> {
        let id = self.inner.resolve(id)?;
        lifecycle::start(&self.inner, &id).await
    }

    async fn wait(&self, id: &str, condition: WaitCondition) -> Result<WaitFuture> {
        let id = self.inner.resolve(id)?;
        let record = self.inner.record(&id)?;
        let mut rx = self.inner.phase(&id).subscribe();
        let seen = rx.borrow().exits;
        let running = record.running();
        let last_code = record.state.exit_code;
        Ok(Box::pin(async move {
            let done = |p: &super::Phase| match condition {
                WaitCondition::NotRunning => !running || p.exits > seen,
                WaitCondition::NextExit => p.exits > seen,
                WaitCondition::Removed => p.removed,
            };
            let code = match rx.wait_for(done).await {
                Ok(p) if p.exits > seen => p.exit_code,
                Ok(_) => last_code,
                Err(_) => last_code,
            };
            WaitResponse {
                status_code: code,
                error: None,
            }
        }))
    }

    async fn attach(&self, id: &str, opts: AttachOptions) -> Result<AttachStreams> {
        let id = self.inner.resolve(id)?;
        let record = self.inner.record(&id)?;
        if !record.running() && record.state.status != Status::Created {
            return Err(BackendError::Conflict(
                "You cannot attach to a stopped container, start it first".into(),
            ));
        }
        let tty = record.request.stdio.tty;
        let stdin_plan = if opts.stdin && record.request.stdio.open_stdin {
            StdinPlan::Forward
        } else {
            StdinPlan::None
        };
        Ok(super::streams::deferred_attach(
            self.inner.clone(),
            id,
            tty,
            stdin_plan,
            !record.running(),
        ))
    }

    async fn kill(&self, id: &str, signal: Option<String>) -> Result<()> {
        let id = self.inner.resolve(id)?;
        let signal = signal.as_deref().map_or(Ok(libc::SIGKILL), parse_signal)?;
        if !self.inner.record(&id)?.running() {
            return Err(not_running(&id));
        }
        lifecycle::kill(&self.inner, &id, signal).await
    }

    async fn stop(&self, id: &str, signal: Option<String>, timeout: Option<i64>) -> Result<()> {
        let id = self.inner.resolve(id)?;
        let record = self.inner.record(&id)?;
        if !record.running() {
            return Err(BackendError::NotModified);
        }
        let signal = signal
            .or(record.request.stop_signal.clone())
            .map_or(Ok(libc::SIGTERM), |s| parse_signal(&s))?;
        let timeout = timeout
            .or(record.request.stop_timeout)
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        // Negative: wait for ever (Docker's -1).
        let patience = u64::try_from(timeout).map_or(Duration::MAX, Duration::from_secs);
        lifecycle::stop(&self.inner, &id, signal, patience).await
    }

    async fn restart(&self, id: &str, signal: Option<String>, timeout: Option<i64>) -> Result<()> {
        match self.stop(id, signal, timeout).await {
            Ok(()) | Err(BackendError::NotModified) => {}
            Err(e) => return Err(e),
        }
        match self.start(id).await {
            Ok(()) | Err(BackendError::NotModified) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn remove(&self, id: &str, opts: RemoveOptions) -> Result<()> {
        let id = self.inner.resolve(id)?;
        lifecycle::remove(&self.inner, &id, opts.force).await
    }

    async fn list(&self, opts: ListOptions) -> Result<Vec<ContainerSummary>> {
        let mut records = self.inner.store.all().map_err(internal)?;
        records.sort_by(|a, b| b.created.cmp(&a.created));
        let now = now_unix();
        let wanted = |key: &str, value: &str| {
            opts.filters
                .get(key)
                .is_none_or(|vals| vals.iter().any(|v| v == value))
        };
        let mut out: Vec<ContainerSummary> = records
            .iter()
            .filter(|r| opts.all || r.running() || opts.filters.contains_key("status"))
            .filter(|r| wanted("status", r.state.status.as_str()))
            .filter(|r| {
                opts.filters.get("name").is_none_or(|names| {
                    names
                        .iter()
                        .any(|n| r.name.contains(n.trim_start_matches('/')))
                })
            })
            .filter(|r| {
                opts.filters
                    .get("id")
                    .is_none_or(|ids| ids.iter().any(|i| r.id.starts_with(i.as_str())))
            })
            .filter(|r| {
                opts.filters.get("label").is_none_or(|labels| {
                    labels.iter().all(|l| match l.split_once('=') {
                        Some((k, v)) => r.request.labels.get(k).is_some_and(|x| x == v),
                        None => r.request.labels.contains_key(l.as_str()),
                    })
                })
            })
            .map(|r| r.summary(now))
            .collect();
        if let Some(limit) = opts.limit {
            out.truncate(limit);
        }
        Ok(out)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInspect> {
        let id = self.inner.resolve(id)?;
        let record = self.inner.record(&id)?;
        let log = self.inner.paths(&id).log().display().to_string();
        Ok(record.inspect(log))
    }

    async fn logs(&self, id: &str, opts: LogsOptions) -> Result<(bool, OutputStream)> {
        let id = self.inner.resolve(id)?;
        let record = self.inner.record(&id)?;
        let path = self.inner.paths(&id).log();
        let running = self.inner.phase(&id).subscribe();
        Ok((
            record.request.stdio.tty,
            super::logs::stream(path, opts, running),
        ))
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        let id = self.inner.resolve(id)?;
        create::check_name(new_name)?;
        let mut record = self.inner.record(&id)?;
        let old = std::mem::replace(&mut record.name, new_name.to_string());
        self.inner.store.update(&record).map_err(|e| match e {
            super::store::StoreError::NameInUse(n) => BackendError::Conflict(format!(
                "Error when allocating new name: Conflict. The container name \"/{n}\" is already in use"
            )),
            e => internal(e),
        })?;
        self.inner
            .event("rename", &record, &[("oldName", format!("/{old}"))]);
        Ok(())
    }

    async fn stats(
        &self,
        id: &str,
        opts: StatsOptions,
    ) -> Result<BoxStream<'static, ContainerStats>> {
        let id = self.inner.resolve(id)?;
        Ok(super::stats::stream(self.inner.record(&id)?, opts))
    }

    async fn resize(&self, id: &str, _height: u32, _width: u32) -> Result<()> {
        self.inner.resolve(id).map(|_| ())
    }

    async fn exec_create(&self, container: &str, config: ExecConfig) -> Result<String> {
        let id = self.inner.resolve(container)?;
        if !self.inner.record(&id)?.running() {
            return Err(not_running(&id));
        }
        let exec_id = create::new_id()?;
        let session = ExecSession {
            container: id,
            config,
            running: false,
            exit_code: None,
        };
        self.inner
            .execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(exec_id.clone(), session);
        Ok(exec_id)
    }

    async fn exec_start(&self, exec: &str, _opts: ExecStartOptions) -> Result<AttachStreams> {
        let session = self.exec_session(exec)?;
        let record = self.inner.record(&session.container)?;
        if !record.running() {
            return Err(not_running(&session.container));
        }
        let spec = create::exec_spec(&record, &session.config)?;
        let vsock = self.inner.paths(&session.container).vsock();
        let stream = connect_exec_when_up(&vsock).await?;
        let (reader, writer) = stream.into_split();
        let started = session::start(reader, writer, &spec)
            .await
            .map_err(internal)?;
        self.set_exec(exec, |s| s.running = true);
        let inner = self.inner.clone();
        let exec_id = exec.to_string();
        let plan = if session.config.attach_stdin {
            StdinPlan::Forward
        } else {
            StdinPlan::Empty
        };
        Ok(pump(started, session.config.tty, plan, move |outcome| {
            let code = match outcome {
                Outcome::Exited(status) => i64::from(status.shell_code()),
                Outcome::Failed(report) => i64::from(report.exit_code),
                Outcome::Lost(_) => 137,
            };
            let mut execs = inner.execs.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = execs.get_mut(&exec_id) {
                s.running = false;
                s.exit_code = Some(code);
            }
        }))
    }

    async fn exec_inspect(&self, exec: &str) -> Result<ExecInspect> {
        let s = self.exec_session(exec)?;
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

    async fn exec_resize(&self, exec: &str, _height: u32, _width: u32) -> Result<()> {
        self.exec_session(exec).map(|_| ())
    }

    async fn image_list(&self, opts: ImageListOptions) -> Result<Vec<ImageSummary>> {
        images::list(&self.inner, opts)
    }

    async fn image_inspect(&self, name: &str) -> Result<ImageInspect> {
        images::inspect(&self.inner, name)
    }

    async fn image_remove(
        &self,
        name: &str,
        force: bool,
        _no_prune: bool,
    ) -> Result<Vec<ImageDeleteItem>> {
        images::remove(&self.inner, name, force)
    }

    async fn image_tag(&self, name: &str, repo: &str, tag: Option<&str>) -> Result<()> {
        images::tag(&self.inner, name, repo, tag)
    }

    async fn image_pull(&self, opts: PullOptions) -> Result<BoxStream<'static, ProgressMessage>> {
        images::pull(&self.inner, opts).await
    }

    async fn image_load(
        &self,
        archive: ByteStream,
        quiet: bool,
    ) -> Result<BoxStream<'static, ProgressMessage>> {
        images::load(&self.inner, archive, quiet).await
    }

    async fn image_save(&self, names: Vec<String>) -> Result<ByteStream> {
        images::save(&self.inner, names).await
    }

    async fn events(&self, opts: EventsOptions) -> Result<BoxStream<'static, Event>> {
        let live = self.inner.events.subscribe();
        let past: Vec<Event> = match opts.since {
            Some(since) => self
                .inner
                .store
                .events_since((since * 1e9) as i64)
                .map_err(internal)?
                .iter()
                .filter_map(|json| serde_json::from_str(json).ok())
                .collect(),
            None => Vec::new(),
        };
        let until = opts.until.map(|u| (u * 1e9) as i64);
        let live = stream::unfold(live, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                }
            }
        });
        // With `until` now or past, only stored events: the stream ends once they are out.
        let all = match until {
            Some(u) if u <= now_nanos() => stream::iter(past).boxed(),
            _ => stream::iter(past).chain(live).boxed(),
        };
        let filters = opts.filters;
        let stream = all
            .take_while(move |e| {
                let go = until.is_none_or(|u| e.time_nano <= u);
                async move { go }
            })
            .filter(move |e| {
                let keep = filters.get("type").is_none_or(|t| t.contains(&e.kind))
                    && filters.get("event").is_none_or(|a| a.contains(&e.action))
                    && filters.get("container").is_none_or(|c| {
                        c.iter().any(|c| {
                            e.actor.id.starts_with(c.as_str())
                                || e.actor.attributes.get("name") == Some(c)
                        })
                    });
                async move { keep }
            });
        // A future `until` ends the stream at that time, events or not (as Docker does).
        Ok(match until {
            Some(u) if u > now_nanos() => {
                let wait = Duration::from_nanos((u - now_nanos()).max(0) as u64);
                stream.take_until(tokio::time::sleep(wait)).boxed()
            }
            _ => stream.boxed(),
        })
    }
}

/// A container runs from its VMM's start, but guest-init serves exec only once the guest has
/// booted: a session asked for meanwhile waits for it, as long as a boot may take.
async fn connect_exec_when_up(vsock: &std::path::Path) -> Result<tokio::net::UnixStream> {
    let deadline = tokio::time::Instant::now() + EXEC_BOOT_WAIT;
    loop {
        match crate::run::exec::connect_exec(vsock).await {
            Ok(stream) => return Ok(stream),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(internal(e)),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Engine {
    fn exec_session(&self, exec: &str) -> Result<ExecSession> {
        self.inner
            .execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(exec)
            .cloned()
            .ok_or_else(|| BackendError::NoSuchExec(exec.to_string()))
    }

    fn set_exec(&self, exec: &str, change: impl FnOnce(&mut ExecSession)) {
        if let Some(s) = self
            .inner
            .execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(exec)
        {
            change(s);
        }
    }
}
