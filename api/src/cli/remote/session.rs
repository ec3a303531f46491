//! Containers and their streams through skiffd: `create` (pulling a missing image, as `docker
//! run` does), `run -d`, attached `run` and `start -a` (attach → wait → start, in the docker
//! CLI's order, so that no output and no exit can slip by), `attach` and `exec`. Typing the
//! detach keys (ctrl-p,ctrl-q) in an attached stream leaves the container or exec running.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::io::{stderr, stdout, AsyncWriteExt};

use super::{answers, code};
use crate::cli::containers::{ContainerArgs, ProcessArgs};
use crate::client::stream::write_chunk;
use crate::client::{Client, Hijacked};
use crate::daemon::create::body::{
    CreateBody, EndpointConfig, HostConfig, NetworkingConfig, PortBinding,
};
use crate::daemon::create::ports::parse_publish;
use crate::daemon::create::Stdio;
use crate::daemon::handlers::exec::ExecCreateBody;
use crate::daemon::options::{AttachOptions, RemoveOptions, WaitCondition};
use crate::engine::detach_keys::{self, Scanned, Scanner};
use crate::run::{self, session::forward_stdin, Caller, ProcessOptions, Signals};

/// `-e` entries as the daemon takes them: `KEY=VALUE` as given, a bare `KEY` with skiff's own
/// value (left out when skiff has none, as docker does).
fn resolve_env(env: &[String], caller: &Caller) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::with_capacity(env.len());
    for entry in env {
        if entry.is_empty() || entry.starts_with('=') {
            anyhow::bail!("invalid environment entry {entry:?} (KEY=VALUE expected)");
        }
        if entry.contains('=') {
            out.push(entry.clone());
        } else if let Some(value) = (caller.env)(entry) {
            out.push(format!("{entry}={value}"));
        }
    }
    Ok(out)
}

/// `[height, width]` of our terminal, for a TTY.
fn console_size(tty: bool, caller: &Caller) -> Option<(u32, u32)> {
    let size = caller.terminal_size.filter(|_| tty)?;
    Some((u32::from(size.rows), u32::from(size.cols)))
}

/// `--network`s and `--network-alias`es as the docker CLI sends them: an endpoint for each
/// network, the aliases on the first.
fn network_endpoints(networks: &[String], aliases: &[String]) -> Option<NetworkingConfig> {
    if networks.len() < 2 && aliases.is_empty() {
        return None;
    }
    // Aliases without a network land on the default one, which refuses them as Docker does.
    let default = ["default".to_string()];
    let networks = if networks.is_empty() {
        &default[..]
    } else {
        networks
    };
    let endpoints = networks.iter().enumerate().map(|(i, network)| {
        let endpoint = EndpointConfig {
            aliases: (i == 0 && !aliases.is_empty()).then(|| aliases.to_vec()),
            ..EndpointConfig::default()
        };
        (network.clone(), Some(endpoint))
    });
    Some(NetworkingConfig {
        endpoints_config: Some(endpoints.collect()),
    })
}

/// `--ulimit NAME=SOFT[:HARD]` as the API's `Ulimits` entry (the daemon checks the name).
fn parse_ulimit(spec: &str) -> anyhow::Result<serde_json::Value> {
    let bad = || anyhow::anyhow!("invalid --ulimit {spec:?}: want NAME=SOFT[:HARD]");
    let (name, limits) = spec.split_once('=').ok_or_else(bad)?;
    let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
    let soft: i64 = soft.parse().map_err(|_| bad())?;
    let hard: i64 = hard.parse().map_err(|_| bad())?;
    Ok(serde_json::json!({"Name": name, "Soft": soft, "Hard": hard}))
}

/// A container to create: its name and the request.
struct NewContainer {
    name: Option<String>,
    image: String,
    body: CreateBody,
    process: ProcessOptions,
}

fn new_container(
    args: ContainerArgs,
    caller: &Caller,
    stdio: Stdio,
) -> anyhow::Result<NewContainer> {
    let mut process = ProcessOptions::from(args.process);
    if process.command.is_empty() {
        anyhow::bail!("an IMAGE is needed, then optionally a command");
    }
    let image = process.command.remove(0);
    let memory = args
        .memory
        .map(|mib| i64::try_from(mib).ok().and_then(|m| m.checked_mul(1 << 20)))
        .map(|bytes| bytes.context("--memory is too large"))
        .transpose()?;
    // As the docker CLI sends them: SRC:DST as binds, a lone path as an anonymous volume.
    let (binds, anonymous): (Vec<String>, Vec<String>) =
        args.volumes.into_iter().partition(|v| v.contains(':'));
    let tmpfs: BTreeMap<String, String> = args
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((path, options)) => (path.to_string(), options.to_string()),
            None => (t.clone(), String::new()),
        })
        .collect();
    let mut port_bindings: BTreeMap<String, Option<Vec<PortBinding>>> = BTreeMap::new();
    for spec in &args.publish {
        let (key, binding) = parse_publish(spec).map_err(anyhow::Error::msg)?;
        port_bindings
            .entry(key)
            .or_default()
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    let ulimits = args
        .ulimit
        .iter()
        .map(|u| parse_ulimit(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // As the docker CLI sends them: KEY=VALUE pairs (the daemon checks the keys and values).
    let storage_opt = args
        .storage_opt
        .iter()
        .map(|o| {
            o.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("invalid --storage-opt {o:?}: want KEY=VALUE"))
        })
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let host_config = HostConfig {
        storage_opt: (!storage_opt.is_empty()).then_some(storage_opt),
        ulimits: (!ulimits.is_empty()).then_some(ulimits),
        pids_limit: args.pids_limit,
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        publish_all_ports: args.publish_all.then_some(true),
        network_mode: args.network.first().cloned(),
        binds: (!binds.is_empty()).then_some(binds),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        auto_remove: Some(args.rm),
        nano_cpus: args.cpus.map(|n| i64::from(n) * 1_000_000_000),
        memory,
        console_size: console_size(stdio.tty, caller).map(|(h, w)| vec![h, w]),
        ..HostConfig::default()
    };
    let body = CreateBody {
        image: Some(image.clone()),
        cmd: (!process.command.is_empty()).then(|| process.command.clone()),
        entrypoint: args.entrypoint.map(|e| vec![e]),
        env: Some(resolve_env(&process.env, caller)?),
        working_dir: process.workdir.clone(),
        user: process.user.clone(),
        hostname: args.hostname,
        tty: Some(stdio.tty),
        open_stdin: Some(stdio.open_stdin),
        stdin_once: Some(stdio.stdin_once),
        attach_stdin: Some(stdio.attach_stdin),
        attach_stdout: Some(stdio.attach_stdout),
        attach_stderr: Some(stdio.attach_stderr),
        host_config: Some(host_config),
        networking_config: network_endpoints(&args.network, &args.network_aliases),
        healthcheck: args.health.healthcheck()?,
        volumes: (!anonymous.is_empty()).then(|| {
            anonymous
                .into_iter()
                .map(|v| (v, serde_json::Value::Object(Default::default())))
                .collect()
        }),
        ..CreateBody::default()
    };
    Ok(NewContainer {
        name: args.name,
        image,
        body,
        process,
    })
}

/// Creates the container, pulling its image first when the daemon does not have it; prints the
/// daemon's warnings. Returns its ID.
async fn create_container(client: &Client, new: &NewContainer) -> anyhow::Result<String> {
    let created = match client.create(new.name.as_deref(), &new.body).await {
        Err(e) if e.is_no_such_image() => {
            eprintln!("Unable to find image '{}' locally", new.image);
            pull(client, &new.image).await?;
            client.create(new.name.as_deref(), &new.body).await?
        }
        other => other?,
    };
    for warning in &created.warnings {
        eprintln!("WARNING: {warning}");
    }
    Ok(created.id)
}

/// Pulls through the daemon, showing its status lines (not the byte counts) on stderr.
async fn pull(client: &Client, image: &str) -> anyhow::Result<()> {
    let mut progress = client.pull(image).await?;
    while let Some(line) = progress.next().await? {
        if let Some(error) = line.error {
            anyhow::bail!("pulling {image}: {error}");
        }
        match (line.status, line.id) {
            (Some(status), _) if line.progress.is_some() => tracing::debug!("{status}"),
            (Some(status), Some(id)) => eprintln!("{id}: {status}"),
            (Some(status), None) => eprintln!("{status}"),
            (None, _) => {}
        }
    }
    Ok(())
}

/// `skiff create`: prints the new container's ID.
pub async fn create(
    client: &Client,
    args: ContainerArgs,
    caller: &Caller<'_>,
) -> anyhow::Result<i32> {
    let interactive = args.process.interactive;
    let stdio = Stdio {
        tty: args.process.tty,
        open_stdin: interactive,
        attach_stdin: interactive,
        attach_stdout: true,
        attach_stderr: true,
        stdin_once: false,
    };
    let new = new_container(args, caller, stdio)?;
    println!("{}", create_container(client, &new).await?);
    Ok(0)
}

/// `skiff run -d`: creates and starts the container, prints its ID.
pub async fn run_detached(
    client: &Client,
    args: ContainerArgs,
    caller: &Caller<'_>,
) -> anyhow::Result<i32> {
    answers(client)
        .await
        .context("skiff run -d needs a running skiffd")?;
    let stdio = Stdio {
        tty: args.process.tty,
        open_stdin: args.process.interactive,
        ..Stdio::default()
    };
    let new = new_container(args, caller, stdio)?;
    let id = create_container(client, &new).await?;
    client.start(&id).await?;
    println!("{id}");
    Ok(0)
}

/// `skiff run` through the daemon: output streamed, stdin forwarded as in-process runs do,
/// signals passed on to the container; returns its exit code.
pub async fn run_attached(
    client: &Client,
    args: ContainerArgs,
    caller: &Caller<'_>,
) -> anyhow::Result<i32> {
    let auto_remove = args.rm;
    let stdin = run::forwards_stdin(args.process.interactive);
    let stdio = Stdio {
        tty: args.process.tty,
        open_stdin: stdin,
        stdin_once: stdin,
        attach_stdin: stdin,
        attach_stdout: true,
        attach_stderr: true,
    };
    let new = new_container(args, caller, stdio)?;
    let id = create_container(client, &new).await?;
    let condition = if auto_remove {
        WaitCondition::Removed
    } else {
        WaitCondition::NextExit
    };
    attached(client, &id, &new.process, stdin, condition).await
}

/// `skiff start -a`: as an attached run of an existing container.
pub async fn start_attached(client: &Client, id: &str, interactive: bool) -> anyhow::Result<i32> {
    let tty = client.inspect(id).await?.config.tty;
    let process = ProcessOptions {
        tty,
        interactive,
        ..ProcessOptions::default()
    };
    attached(client, id, &process, interactive, WaitCondition::NextExit).await
}

/// Attach, wait, start, then stream until the output ends; returns the exit code from the wait.
async fn attached(
    client: &Client,
    id: &str,
    process: &ProcessOptions,
    stdin: bool,
    condition: WaitCondition,
) -> anyhow::Result<i32> {
    let opts = AttachOptions {
        stream: true,
        stdin,
        stdout: true,
        stderr: true,
        ..AttachOptions::default()
    };
    let hijacked = client.attach(id, &opts).await?;
    let waiting = client.wait(id, condition).await?;
    // Before the start: a signal from then on is the container's.
    let mut signals = Signals::new()?;
    if let Err(e) = client.start(id).await {
        // A container that never ran is not left behind by --rm (docker does the same).
        if condition == WaitCondition::Removed {
            let force = RemoveOptions {
                force: true,
                ..RemoveOptions::default()
            };
            let _ = client.remove(id, force).await;
        }
        return Err(e.into());
    }
    let keys = detach_keys::parse(None)?;
    let container = Some((&mut signals, client, id));
    if stream_raw(hijacked, process, stdin, keys, container).await? {
        // Detached: the container runs on, as docker leaves it.
        return Ok(0);
    }
    let exit = waiting.outcome().await?;
    if let Some(error) = exit.error {
        eprintln!("skiff: {}", error.message);
    }
    Ok(i32::try_from(exit.status_code).unwrap_or(255))
}

/// `stream`, with our terminal raw while a TTY process is attached (restored before returning).
async fn stream_raw(
    hijacked: Hijacked,
    process: &ProcessOptions,
    stdin: bool,
    detach_keys: Vec<u8>,
    container: Option<(&mut Signals, &Client, &str)>,
) -> anyhow::Result<bool> {
    let raw = run::raw_terminal(process)?;
    let streamed = stream(hijacked, stdin, detach_keys, container).await;
    drop(raw);
    streamed
}

/// Streams a hijacked connection: output to our stdout and stderr until it ends, our stdin to
/// the process when `stdin`, and (with a container) the signals caught to it. Our stdin is
/// watched for `detach_keys` as the daemon watches it: returns true when the stream ended
/// because they were typed.
async fn stream(
    hijacked: Hijacked,
    stdin: bool,
    detach_keys: Vec<u8>,
    mut container: Option<(&mut Signals, &Client, &str)>,
) -> anyhow::Result<bool> {
    let (mut output, mut input) = hijacked.split();
    let detached = Arc::new(AtomicBool::new(false));
    let feeder = stdin.then(|| {
        let detached = detached.clone();
        let mut scanner = Scanner::new(detach_keys);
        tokio::spawn(async move {
            let mut chunks = forward_stdin();
            while let Some(bytes) = chunks.recv().await {
                if let Scanned::Detach(_) = scanner.scan(&bytes) {
                    detached.store(true, Ordering::SeqCst);
                }
                if input.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            // Half-closed: the process sees the end of its stdin, output still flows.
            let _ = input.shutdown().await;
        })
    });
    let (mut out, mut err) = (stdout(), stderr());
    loop {
        let signal = async {
            match container.as_mut() {
                Some((signals, ..)) => signals.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            chunk = output.next() => match chunk? {
                Some(chunk) => write_chunk(&chunk, &mut out, &mut err).await?,
                None => break,
            },
            sig = signal => {
                if let Some((_, client, id)) = container.as_ref() {
                    if let Err(e) = client.kill(id, Some(&sig.to_string())).await {
                        tracing::debug!("passing signal {sig} on: {e}");
                    }
                }
            }
        }
    }
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    Ok(detached.load(Ordering::SeqCst))
}

/// `skiff attach`: a running container's output, and our stdin when it was created with `-i`
/// (unless `no_stdin`); signals go to it. Returns its exit code, or 0 when the detach keys
/// (`detach_keys`, default ctrl-p,ctrl-q) left it running.
pub async fn attach(
    client: &Client,
    id: &str,
    no_stdin: bool,
    detach_keys: Option<String>,
) -> anyhow::Result<i32> {
    let info = client.inspect(id).await?;
    if !info.state.running {
        anyhow::bail!("You cannot attach to a stopped container, start it first");
    }
    let stdin = !no_stdin && info.config.open_stdin;
    let keys = detach_keys::parse(detach_keys.as_deref())?;
    let opts = AttachOptions {
        stream: true,
        stdin,
        stdout: true,
        stderr: true,
        detach_keys,
        ..AttachOptions::default()
    };
    let hijacked = client.attach(id, &opts).await?;
    let mut signals = Signals::new()?;
    let process = ProcessOptions {
        tty: info.config.tty,
        interactive: stdin,
        ..ProcessOptions::default()
    };
    let container = Some((&mut signals, client, id));
    if stream_raw(hijacked, &process, stdin, keys, container).await? {
        return Ok(0);
    }
    let exit = client.wait(id, WaitCondition::NotRunning).await?;
    Ok(i32::try_from(exit.outcome().await?.status_code).unwrap_or(255))
}

/// How many times `exec` asks for an exit code the daemon has not recorded yet, 50 ms apart.
const EXIT_CODE_POLLS: u32 = 40;

/// `skiff exec CONTAINER CMD…`: returns the process's exit code; failures print and give 1.
pub async fn exec(client: &Client, process: ProcessArgs, caller: &Caller<'_>) -> i32 {
    match exec_session(client, process, caller).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            code(true)
        }
    }
}

async fn exec_session(
    client: &Client,
    process: ProcessArgs,
    caller: &Caller<'_>,
) -> anyhow::Result<i32> {
    let mut process = ProcessOptions::from(process);
    if process.command.len() < 2 {
        anyhow::bail!("skiff exec needs a CONTAINER and a command (or --vsock PATH -- CMD)");
    }
    let container = process.command.remove(0);
    let stdin = run::forwards_stdin(process.interactive);
    let size = console_size(process.tty, caller);
    let body = ExecCreateBody {
        attach_stdin: Some(stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(process.tty),
        env: Some(resolve_env(&process.env, caller)?),
        cmd: Some(process.command.clone()),
        user: process.user.clone(),
        working_dir: process.workdir.clone(),
        console_size: size.map(|(h, w)| vec![h, w]),
        ..ExecCreateBody::default()
    };
    let exec_id = client.exec_create(&container, &body).await?;
    let hijacked = client.exec_start(&exec_id, process.tty, size).await?;
    let keys = detach_keys::parse(None)?;
    if stream_raw(hijacked, &process, stdin, keys, None).await? {
        return Ok(0);
    }
    // The output ends as the process does; its code may be recorded a moment later.
    for _ in 0..EXIT_CODE_POLLS {
        if let Some(code) = client.exec_inspect(&exec_id).await?.exit_code {
            return Ok(i32::try_from(code).unwrap_or(255));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("exec {exec_id}: the output ended but no exit code was recorded")
}
