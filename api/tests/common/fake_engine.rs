//! An in-memory engine behind skiffd's real HTTP front end, so the docker CLI and docker-py can be
//! driven end to end without VMs. A container's command is canned: `echo ARGS…` writes ARGS to
//! stdout and exits with the code in its `EXIT_CODE` env entry (default 0); anything else runs
//! until it is stopped or killed. Exec sessions behave the same way. Images are not checked,
//! except those named `remote/…`: they must be pulled first (the pull always succeeds).

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use skiff_api::daemon::create::CreateRequest;
use skiff_api::daemon::model::{
    ContainerInspect, ContainerState, ContainerStats, ContainerSummary, CpuStats, CpuUsage,
    ExecInspect, ImageInspect, InspectConfig, InspectHostConfig, LogConfigJson, MemoryStats,
    ProgressMessage, TopResponse, WaitResponse,
};
use skiff_api::daemon::options::{
    AttachOptions, AttachStreams, ByteStream, ExecConfig, ExecStartOptions, ListOptions,
    LogsOptions, OutputChunk, OutputStream, PullOptions, RemoveOptions, StatsOptions, StdStream,
    SystemCounts, WaitCondition, WaitFuture,
};
use skiff_api::daemon::timefmt::{rfc3339, ZERO_TIME};
use skiff_api::daemon::{BackendError, ContainerBackend, Created};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;
use tokio::sync::{mpsc, watch};

type Result<T> = std::result::Result<T, BackendError>;

/// What waiters watch: how many times the container exited, its last code, whether it is gone.
#[derive(Debug, Clone, Copy, Default)]
struct Phase {
    exits: u64,
    exit_code: i64,
    removed: bool,
}

struct Container {
    id: String,
    name: String,
    req: CreateRequest,
    running: bool,
    started_at: String,
    finished_at: String,
    log: Vec<OutputChunk>,
    attached: Vec<mpsc::UnboundedSender<OutputChunk>>,
    phase: watch::Sender<Phase>,
}

struct Exec {
    container: String,
    config: ExecConfig,
    exit_code: Option<i64>,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, Container>,
    execs: BTreeMap<String, Exec>,
    serial: u64,
    /// `remote/…` images pulled so far.
    pulled: Vec<String>,
}

#[derive(Default)]
pub struct FakeEngine {
    state: Mutex<State>,
}

/// The canned behaviour of a command: its output and exit code, or None to run until stopped.
fn canned(cmd: &[String], env: &[String]) -> Option<(Vec<OutputChunk>, i64)> {
    let (first, args) = cmd.split_first()?;
    if first != "echo" {
        return None;
    }
    let code = env
        .iter()
        .find_map(|e| e.strip_prefix("EXIT_CODE="))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let out = OutputChunk {
        stream: StdStream::Stdout,
        data: Bytes::from(format!("{}\n", args.join(" "))),
    };
    Some((vec![out], code))
}

fn id_for(serial: u64, salt: &str) -> String {
    format!("{salt}{serial:0>width$}", width = 64 - salt.len())
}

impl State {
    fn find(&mut self, key: &str) -> Result<&mut Container> {
        let id = self
            .containers
            .values()
            .find(|c| c.id == key || c.name == key || c.id.starts_with(key))
            .map(|c| c.id.clone())
            .ok_or_else(|| BackendError::NoSuchContainer(key.to_string()))?;
        self.containers
            .get_mut(&id)
            .ok_or_else(|| BackendError::NoSuchContainer(key.to_string()))
    }

    /// Ends a running container: output delivered, attached streams closed, waiters woken;
    /// removed at once with AutoRemove.
    fn exit(&mut self, id: &str, chunks: Vec<OutputChunk>, code: i64) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        for chunk in chunks {
            for a in &c.attached {
                let _ = a.send(chunk.clone());
            }
            c.log.push(chunk);
        }
        c.attached.clear();
        c.running = false;
        c.finished_at = rfc3339(SystemTime::now());
        c.phase.send_modify(|p| {
            p.exits += 1;
            p.exit_code = code;
        });
        if c.req.auto_remove {
            self.remove(id);
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(c) = self.containers.remove(id) {
            c.phase.send_modify(|p| p.removed = true);
        }
    }
}

fn not_running(c: &Container) -> BackendError {
    BackendError::Conflict(format!("container {} is not running", c.id))
}

#[async_trait]
impl ContainerBackend for FakeEngine {
    async fn counts(&self) -> SystemCounts {
        let s = self.state.lock().unwrap();
        let running = s.containers.values().filter(|c| c.running).count() as u64;
        SystemCounts {
            containers: s.containers.len() as u64,
            running,
            stopped: s.containers.len() as u64 - running,
            ..SystemCounts::default()
        }
    }

    async fn create(&self, req: CreateRequest) -> Result<Created> {
        let mut s = self.state.lock().unwrap();
        if req.image.starts_with("remote/") && !s.pulled.contains(&req.image) {
            return Err(BackendError::NoSuchImage(req.image));
        }
        s.serial += 1;
        let id = id_for(s.serial, "c0ffee");
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| format!("fake_{}", s.serial));
        if s.containers.values().any(|c| c.name == name) {
            return Err(BackendError::Conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use"
            )));
        }
        let container = Container {
            id: id.clone(),
            name,
            req,
            running: false,
            started_at: ZERO_TIME.to_string(),
            finished_at: ZERO_TIME.to_string(),
            log: Vec::new(),
            attached: Vec::new(),
            phase: watch::Sender::new(Phase::default()),
        };
        s.containers.insert(id.clone(), container);
        Ok(Created {
            id,
            warnings: Vec::new(),
        })
    }

    async fn start(&self, id: &str) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        let c = s.find(id)?;
        if c.running {
            return Err(BackendError::NotModified);
        }
        c.running = true;
        c.started_at = rfc3339(SystemTime::now());
        let cid = c.id.clone();
        let cmd = c.req.cmd.clone().unwrap_or_default();
        if let Some((chunks, code)) = canned(&cmd, &c.req.env) {
            s.exit(&cid, chunks, code);
        }
        Ok(())
    }

    async fn wait(&self, id: &str, condition: WaitCondition) -> Result<WaitFuture> {
        let mut s = self.state.lock().unwrap();
        let c = s.find(id)?;
        let mut rx = c.phase.subscribe();
        let seen = rx.borrow().exits;
        let running = c.running;
        Ok(Box::pin(async move {
            let done = |p: &Phase| match condition {
                WaitCondition::NotRunning => !running || p.exits > seen,
                WaitCondition::NextExit => p.exits > seen,
                WaitCondition::Removed => p.removed,
            };
            let code = match rx.wait_for(done).await {
                Ok(p) => p.exit_code,
                Err(_) => -1,
            };
            WaitResponse {
                status_code: code,
                error: None,
            }
        }))
    }

    async fn attach(&self, id: &str, opts: AttachOptions) -> Result<AttachStreams> {
        let mut s = self.state.lock().unwrap();
        let c = s.find(id)?;
        let (tx, rx) = mpsc::unbounded_channel();
        if c.running || c.phase.borrow().exits == 0 {
            c.attached.push(tx);
        }
        let output: OutputStream = stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        })
        .boxed();
        let stdin = opts.stdin.then(|| {
            let (tx, mut rx) = mpsc::channel::<Bytes>(8);
            tokio::spawn(async move { while rx.recv().await.is_some() {} });
            tx
        });
        Ok(AttachStreams {
            tty: c.req.stdio.tty,
            output,
            stdin,
        })
    }

    async fn kill(&self, id: &str, _signal: Option<String>) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        let c = s.find(id)?;
        if !c.running {
            return Err(not_running(c));
        }
        let cid = c.id.clone();
        s.exit(&cid, Vec::new(), 137);
        Ok(())
    }

    async fn stop(&self, id: &str, _signal: Option<String>, _timeout: Option<i64>) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        let c = s.find(id)?;
        if !c.running {
            return Err(BackendError::NotModified);
        }
        let cid = c.id.clone();
        s.exit(&cid, Vec::new(), 143);
        Ok(())
    }

    async fn restart(&self, id: &str, signal: Option<String>, timeout: Option<i64>) -> Result<()> {
        match self.stop(id, signal, timeout).await {
            Ok(()) | Err(BackendError::NotModified) => {}
            Err(e) => return Err(e),
        }
        self.start(id).await
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        if s.containers.values().any(|c| c.name == new_name) {
            return Err(BackendError::Conflict(format!(
                "the name \"/{new_name}\" is already in use"
            )));
        }
        s.find(id)?.name = new_name.to_string();
        Ok(())
    }

    /// One canned process: the container's command as PID 7.
    async fn top(&self, id: &str, _ps_args: Option<String>) -> Result<TopResponse> {
        let mut s = self.state.lock().unwrap();
        let c = s.find(id)?;
        if !c.running {
            return Err(not_running(c));
        }
        let cmd = c.req.cmd.clone().unwrap_or_default().join(" ");
        Ok(TopResponse {
            titles: ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
                .map(String::from)
                .to_vec(),
            processes: vec![["root", "7", "1", "0", "10:30", "?", "00:00:00", &cmd]
                .map(String::from)
                .to_vec()],
        })
    }

    /// A canned sample: 25% of one of two CPUs, 32 of 128 MiB.
    async fn stats(
        &self,
        id: &str,
        _opts: StatsOptions,
    ) -> Result<BoxStream<'static, ContainerStats>> {
        let mut s = self.state.lock().unwrap();
        let c = s.find(id)?;
        let cpu = |total, system| CpuStats {
            cpu_usage: CpuUsage {
                total_usage: total,
                ..CpuUsage::default()
            },
            system_cpu_usage: system,
            online_cpus: 2,
        };
        let sample = ContainerStats {
            id: c.id.clone(),
            name: format!("/{}", c.name),
            cpu_stats: cpu(250, 2000),
            precpu_stats: cpu(0, 0),
            memory_stats: MemoryStats {
                usage: 32 << 20,
                limit: 128 << 20,
            },
            ..ContainerStats::default()
        };
        Ok(stream::iter([sample]).boxed())
    }

    async fn remove(&self, id: &str, opts: RemoveOptions) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        let c = s.find(id)?;
        if c.running && !opts.force {
            return Err(BackendError::Conflict(format!(
                "You cannot remove a running container {}. Stop the container before attempting \
                 removal or force remove",
                c.id
            )));
        }
        let cid = c.id.clone();
        s.remove(&cid);
        Ok(())
    }

    async fn list(&self, opts: ListOptions) -> Result<Vec<ContainerSummary>> {
        let s = self.state.lock().unwrap();
        Ok(s.containers
            .values()
            .filter(|c| opts.all || c.running)
            .map(|c| ContainerSummary {
                id: c.id.clone(),
                names: vec![format!("/{}", c.name)],
                image: c.req.image.clone(),
                command: c.req.cmd.clone().unwrap_or_default().join(" "),
                state: if c.running { "running" } else { "exited" }.to_string(),
                status: if c.running {
                    "Up".to_string()
                } else {
                    "Exited".to_string()
                },
                labels: c.req.labels.clone(),
                ..ContainerSummary::default()
            })
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInspect> {
        let mut s = self.state.lock().unwrap();
        let c = s.find(id)?;
        let phase = *c.phase.borrow();
        let status = match (c.running, phase.exits) {
            (true, _) => "running",
            (false, 0) => "created",
            (false, _) => "exited",
        };
        Ok(ContainerInspect {
            id: c.id.clone(),
            name: format!("/{}", c.name),
            path: c
                .req
                .cmd
                .iter()
                .flatten()
                .next()
                .cloned()
                .unwrap_or_default(),
            args: c.req.cmd.iter().flatten().skip(1).cloned().collect(),
            state: ContainerState {
                status: status.to_string(),
                running: c.running,
                exit_code: phase.exit_code,
                started_at: c.started_at.clone(),
                finished_at: c.finished_at.clone(),
                ..ContainerState::default()
            },
            host_config: InspectHostConfig {
                log_config: LogConfigJson {
                    kind: "json-file".to_string(),
                    config: BTreeMap::new(),
                },
                network_mode: "bridge".to_string(),
                ..InspectHostConfig::default()
            },
            config: InspectConfig {
                image: c.req.image.clone(),
                cmd: c.req.cmd.clone(),
                env: c.req.env.clone(),
                tty: c.req.stdio.tty,
                labels: c.req.labels.clone(),
                ..InspectConfig::default()
            },
            ..ContainerInspect::default()
        })
    }

    async fn logs(&self, id: &str, opts: LogsOptions) -> Result<(bool, OutputStream)> {
        let mut s = self.state.lock().unwrap();
        let c = s.find(id)?;
        let wanted = |chunk: &OutputChunk| match chunk.stream {
            StdStream::Stdout => opts.stdout,
            StdStream::Stderr => opts.stderr,
            StdStream::Stdin => false,
        };
        let log: Vec<OutputChunk> = c.log.iter().filter(|ch| wanted(ch)).cloned().collect();
        Ok((c.req.stdio.tty, stream::iter(log).boxed()))
    }

    async fn resize(&self, id: &str, _height: u32, _width: u32) -> Result<()> {
        self.state.lock().unwrap().find(id).map(|_| ())
    }

    async fn exec_create(&self, container: &str, config: ExecConfig) -> Result<String> {
        let mut s = self.state.lock().unwrap();
        let c = s.find(container)?;
        if !c.running {
            return Err(not_running(c));
        }
        let cid = c.id.clone();
        s.serial += 1;
        let id = id_for(s.serial, "e7ec");
        s.execs.insert(
            id.clone(),
            Exec {
                container: cid,
                config,
                exit_code: None,
            },
        );
        Ok(id)
    }

    async fn exec_start(&self, exec: &str, _opts: ExecStartOptions) -> Result<AttachStreams> {
        let mut s = self.state.lock().unwrap();
        let e = s
            .execs
            .get_mut(exec)
            .ok_or_else(|| BackendError::NoSuchExec(exec.to_string()))?;
        let (chunks, code) = canned(&e.config.cmd, &e.config.env).unwrap_or_default();
        e.exit_code = Some(code);
        Ok(AttachStreams {
            tty: e.config.tty,
            output: stream::iter(chunks).boxed(),
            stdin: None,
        })
    }

    async fn exec_inspect(&self, exec: &str) -> Result<ExecInspect> {
        let s = self.state.lock().unwrap();
        let e = s
            .execs
            .get(exec)
            .ok_or_else(|| BackendError::NoSuchExec(exec.to_string()))?;
        Ok(ExecInspect {
            id: exec.to_string(),
            running: false,
            exit_code: e.exit_code,
            container_id: e.container.clone(),
            ..ExecInspect::default()
        })
    }

    async fn exec_resize(&self, exec: &str, _height: u32, _width: u32) -> Result<()> {
        let s = self.state.lock().unwrap();
        s.execs
            .get(exec)
            .map(|_| ())
            .ok_or_else(|| BackendError::NoSuchExec(exec.to_string()))
    }

    async fn image_inspect(&self, name: &str) -> Result<ImageInspect> {
        Err(BackendError::NoSuchImage(name.to_string()))
    }

    async fn image_pull(&self, opts: PullOptions) -> Result<BoxStream<'static, ProgressMessage>> {
        let image = opts.from_image;
        self.state.lock().unwrap().pulled.push(image.clone());
        let line = |status: String, progress: Option<String>| ProgressMessage {
            status: Some(status),
            progress,
            ..ProgressMessage::default()
        };
        let lines = [
            line(format!("Pulling from {image}"), None),
            line("Downloading".into(), Some("[=>   ] 1B/4B".into())),
            line(format!("Status: Downloaded newer image for {image}"), None),
        ];
        Ok(stream::iter(lines).boxed())
    }

    /// Counts the archive's bytes as they arrive and reports them as docker load's line.
    async fn image_load(
        &self,
        archive: ByteStream,
        _quiet: bool,
    ) -> Result<BoxStream<'static, ProgressMessage>> {
        let total = archive
            .fold(0usize, |n, chunk| async move {
                n + chunk.map_or(0, |b| b.len())
            })
            .await;
        let line = ProgressMessage {
            stream: Some(format!("Loaded image: fake ({total} bytes)\n")),
            ..ProgressMessage::default()
        };
        Ok(stream::iter([line]).boxed())
    }
}
