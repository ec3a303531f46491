//! The engine behind skiffd's API: each call of `ContainerBackend` on the engine's state.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};

use super::build;
use super::commit;
use super::create::{self, parse_signal};
use super::exec::{self, not_running};
use super::images;
use super::lifecycle;
use super::push;
use super::streams::StdinPlan;
use super::{detach_keys, disk_usage, internal, networks, now_unix, top, volumes, Engine, Result};
use crate::daemon::create::CreateRequest;
use crate::daemon::model::{
    ContainerInspect, ContainerStats, ContainerSummary, DiskUsage, Event, ExecInspect, HistoryItem,
    ImageDeleteItem, ImageInspect, ImageSummary, Network, NetworkCreateBody, NetworkCreated,
    NetworkPruneReport, ProgressMessage, TopResponse, Volume, VolumeCreateBody, VolumeList,
    VolumePruneReport, WaitResponse,
};
use crate::daemon::options::{
    AttachOptions, AttachStreams, BuildOptions, ByteStream, CommitOptions, EventsOptions,
    ExecConfig, ExecStartOptions, Filters, ImageListOptions, ListOptions, LogsOptions,
    OutputStream, PullOptions, PushOptions, RemoveOptions, StatsOptions, SystemCounts,
    WaitCondition, WaitFuture,
};
use crate::daemon::{BackendError, ContainerBackend, Created};
use crate::run::session;
use skiff_protocol::Message;

/// Docker's default time between the stop signal and the kill.
const DEFAULT_STOP_TIMEOUT: i64 = 10;

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
        let started = lifecycle::start(&self.inner, &id).await;
        // As Docker's: a `--rm` container that cannot start is removed (its client waits for
        // that), with its anonymous volumes.
        if let Err(e) = &started {
            let auto_remove = self.inner.record(&id).is_ok_and(|r| r.request.auto_remove);
            if auto_remove && !matches!(e, BackendError::NotModified) {
                if let Err(gone) = lifecycle::remove(&self.inner, &id, true, true).await {
                    tracing::warn!(
                        id,
                        "removing the --rm container that failed to start: {gone}"
                    );
                }
            }
        }
        started
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
        // A container that is not running is attached from its next start, as Docker does it
        // (`docker start -a` attaches first; `docker attach` itself refuses stopped ones).
        let tty = record.request.stdio.tty;
        let stdin_plan = if opts.stdin && record.request.stdio.open_stdin {
            StdinPlan::Forward {
                detach_keys: detach_keys::parse(opts.detach_keys.as_deref())?,
            }
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
        lifecycle::remove(&self.inner, &id, opts.force, opts.volumes).await
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
                let health = r.state.health.as_ref().filter(|_| r.running());
                wanted("health", health.map_or("none", |h| h.status.as_str()))
            })
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
        if opts.size {
            let sizes = disk_usage::image_sizes(&self.inner)?;
            for summary in &mut out {
                if let Some(record) = records.iter().find(|r| r.id == summary.id) {
                    *summary = disk_usage::sized_summary(&self.inner, record, &sizes, now);
                }
            }
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
        let cgroups = self.inner.config.cgroup_root.clone();
        Ok(super::stats::stream(self.inner.record(&id)?, opts, cgroups))
    }

    async fn resize(&self, id: &str, height: u32, width: u32) -> Result<()> {
        let id = self.inner.resolve(id)?;
        if !self.inner.record(&id)?.running() {
            return Err(not_running(&id));
        }
        let Some(size) = create::terminal_size(Some((height, width))) else {
            return Err(BackendError::InvalidArgument(format!(
                "terminal size {height}x{width} is out of range"
            )));
        };
        lifecycle::send_control(&self.inner, &id, Message::Resize(size)).await
    }

    async fn top(&self, id: &str, ps_args: Option<String>) -> Result<TopResponse> {
        top::check_ps_args(ps_args.as_deref())?;
        let id = self.inner.resolve(id)?;
        if !self.inner.record(&id)?.running() {
            return Err(not_running(&id));
        }
        let stream = exec::connect_exec_when_up(&self.inner, &id).await?;
        let (reader, writer) = stream.into_split();
        let list = session::list_processes(reader, writer)
            .await
            .map_err(internal)?;
        Ok(top::table(&list, top::now_unix_ms()))
    }

    async fn exec_create(&self, container: &str, config: ExecConfig) -> Result<String> {
        exec::create(&self.inner, container, config).await
    }

    async fn exec_start(&self, exec: &str, opts: ExecStartOptions) -> Result<AttachStreams> {
        exec::start(&self.inner, exec, opts).await
    }

    async fn exec_inspect(&self, exec: &str) -> Result<ExecInspect> {
        exec::inspect(&self.inner, exec)
    }

    async fn exec_resize(&self, exec: &str, height: u32, width: u32) -> Result<()> {
        exec::resize(&self.inner, exec, height, width).await
    }

    async fn build(
        &self,
        opts: BuildOptions,
        context: ByteStream,
    ) -> Result<BoxStream<'static, ProgressMessage>> {
        build::build(&self.inner, opts, context).await
    }

    async fn system_df(&self) -> Result<DiskUsage> {
        disk_usage::system_df(&self.inner)
    }

    async fn volume_list(&self, filters: Filters) -> Result<VolumeList> {
        volumes::list(&self.inner, &filters)
    }

    async fn volume_create(&self, body: VolumeCreateBody) -> Result<Volume> {
        volumes::create_api(&self.inner, body)
    }

    async fn volume_inspect(&self, name: &str) -> Result<Volume> {
        volumes::inspect(&self.inner, name)
    }

    async fn volume_remove(&self, name: &str, force: bool) -> Result<()> {
        volumes::remove(&self.inner, name, force)
    }

    async fn volume_prune(&self, filters: Filters) -> Result<VolumePruneReport> {
        volumes::prune(&self.inner, &filters)
    }

    async fn network_list(&self, filters: Filters) -> Result<Vec<Network>> {
        networks::list(&self.inner, &filters)
    }

    async fn network_create(&self, body: NetworkCreateBody) -> Result<NetworkCreated> {
        networks::create(&self.inner, body).await
    }

    async fn network_inspect(&self, name: &str) -> Result<Network> {
        networks::inspect(&self.inner, name)
    }

    async fn network_remove(&self, name: &str) -> Result<()> {
        networks::remove(&self.inner, name).await
    }

    async fn network_prune(&self, filters: Filters) -> Result<NetworkPruneReport> {
        networks::prune(&self.inner, &filters).await
    }

    async fn network_connect(
        &self,
        network: &str,
        container: &str,
        aliases: Vec<String>,
    ) -> Result<()> {
        let id = self.inner.resolve(container)?;
        let lock = self.inner.op_lock(&id);
        let _guard = lock.lock().await;
        let mut record = self.inner.record(&id)?;
        networks::connect(&self.inner, &mut record, network, aliases)?;
        self.inner.save(&record)
    }

    async fn network_disconnect(&self, network: &str, container: &str) -> Result<()> {
        let id = self.inner.resolve(container)?;
        let lock = self.inner.op_lock(&id);
        let _guard = lock.lock().await;
        let mut record = self.inner.record(&id)?;
        networks::disconnect(&self.inner, &mut record, network)?;
        self.inner.save(&record)
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

    async fn commit(&self, opts: CommitOptions) -> Result<String> {
        commit::commit(&self.inner, opts).await
    }

    async fn image_pull(&self, opts: PullOptions) -> Result<BoxStream<'static, ProgressMessage>> {
        images::pull(&self.inner, opts).await
    }

    async fn image_push(&self, opts: PushOptions) -> Result<BoxStream<'static, ProgressMessage>> {
        push::push(&self.inner, opts).await
    }

    async fn image_history(&self, name: &str) -> Result<Vec<HistoryItem>> {
        push::history(&self.inner, name)
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

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
