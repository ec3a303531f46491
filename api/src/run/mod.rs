//! `skiff run` and `skiff exec` without a daemon: one container in its own microVM, attached to
//! this process's stdio, signals and terminal.
//!
//! Run: make the run directory, listen on the guest's control port socket, start `skiff-vmm`,
//! accept guest-init's connection, send the spec, pump the streams until the exit report, wait for
//! the VM's orderly power-off, remove the run directory. A signal to skiff goes to the container
//! first; if the container has not ended [`STOP_GRACE`] later (or on a second signal) the VM is
//! stopped. A VM that ends without an exit report is an error carrying skiff-vmm's stderr (which
//! holds the guest console's tail, e.g. a panic message).

pub mod exec;
pub mod image;
pub mod passt;
pub mod rundir;
pub mod session;
pub mod terminal;
pub mod vmm;

use crate::config::Config;
use anyhow::Context;
use session::{Control, Input, Outcome, Session};
use skiff_protocol::{ProcessSpec, TerminalSize, DEFAULT_PATH};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Time a container gets to end after a forwarded signal before its VM is stopped.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Time the VM gets to power off after the container's exit report.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);
/// Exit code when skiff had to stop the VM itself (as if the container was SIGKILLed).
const STOPPED_CODE: i32 = 128 + libc::SIGKILL;

/// The process to run, as the user described it.
#[derive(Debug, Clone, Default)]
pub struct ProcessOptions {
    pub command: Vec<String>,
    /// `KEY=VALUE`, or `KEY` to pass on skiff's own value.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// `UID[:GID]`, numeric.
    pub user: Option<String>,
    pub tty: bool,
    pub interactive: bool,
}

/// What the container's root file system is made of.
#[derive(Debug, Clone)]
pub enum Root {
    /// A plain directory, used read-only.
    Dir(PathBuf),
    /// An image reference (pulled if missing), with the user's `--entrypoint`.
    Image {
        reference: String,
        entrypoint: Option<String>,
    },
}

/// The network of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    /// Loopback only.
    #[default]
    None,
    /// passt (no privilege needed): outbound access and these published ports.
    Passt(Vec<passt::Publish>),
}

/// A container to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub root: Root,
    pub cpus: u8,
    pub memory_mib: u64,
    pub hostname: Option<String>,
    pub network: Network,
    pub process: ProcessOptions,
}

/// What a process spec takes from whoever asked for the process; the front end supplies it (the
/// CLI from its own environment and terminal).
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    /// The caller's environment, for `-e KEY` given without a value.
    pub env: &'a (dyn Fn(&str) -> Option<String> + Sync),
    /// The caller's terminal size, for a process with a TTY.
    pub terminal_size: Option<TerminalSize>,
}

/// Parses `UID[:GID]`; the group defaults to 0 like Docker's for a numeric user.
pub fn parse_user(user: &str) -> anyhow::Result<(u32, u32)> {
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let number = |s: &str, what: &str| {
        s.parse::<u32>().with_context(|| {
            format!("invalid {what} {s:?} in --user {user:?} (numeric UID[:GID] expected)")
        })
    };
    Ok((
        number(uid, "uid")?,
        gid.map(|g| number(g, "gid")).transpose()?.unwrap_or(0),
    ))
}

fn set_env(env: &mut Vec<String>, entry: String) {
    let key = entry
        .split_once('=')
        .map_or(entry.as_str(), |(k, _)| k)
        .to_string();
    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
    env.push(entry);
}

/// The spec guest-init gets for `process` (hostname only for a container's main process).
pub fn build_spec(
    process: &ProcessOptions,
    hostname: Option<&str>,
    caller: &Caller,
) -> anyhow::Result<ProcessSpec> {
    if process.command.is_empty() {
        anyhow::bail!("no command given");
    }
    let mut spec = ProcessSpec::new(process.command.clone());
    let mut env = vec![format!("PATH={DEFAULT_PATH}")];
    if let Some(h) = hostname {
        env.push(format!("HOSTNAME={h}"));
    }
    if process.tty {
        env.push("TERM=xterm".into());
    }
    for entry in &process.env {
        if entry.is_empty() || entry.starts_with('=') {
            anyhow::bail!("invalid environment entry {entry:?} (KEY=VALUE expected)");
        }
        if entry.contains('=') {
            set_env(&mut env, entry.clone());
        } else if let Some(value) = (caller.env)(entry) {
            set_env(&mut env, format!("{entry}={value}"));
        }
    }
    spec.env = env;
    if let Some(dir) = &process.workdir {
        if !dir.starts_with('/') {
            anyhow::bail!("--workdir {dir:?} must be an absolute path");
        }
        spec.cwd = dir.clone();
    }
    if let Some(user) = &process.user {
        (spec.uid, spec.gid) = parse_user(user)?;
    }
    if let Some(h) = hostname {
        if h.is_empty() || h.len() > 64 || h.contains('\0') {
            anyhow::bail!("invalid hostname {h:?} (1 to 64 characters)");
        }
        spec.hostname = Some(h.to_string());
    }
    spec.tty = process.tty;
    if process.tty {
        spec.terminal_size = caller.terminal_size;
    }
    Ok(spec)
}

/// Whether our stdin feeds the process: when asked (`-i`) or when it is not a terminal
/// (`echo x | skiff run … cat`).
pub(crate) fn forwards_stdin(interactive: bool) -> bool {
    interactive || !terminal::is_tty(libc::STDIN_FILENO)
}

/// How our stdin feeds the process: forwarded (see `forwards_stdin`); else empty, or nothing at
/// all on a terminal (EOF would be ^D).
fn plan_input(process: &ProcessOptions) -> Input {
    if forwards_stdin(process.interactive) {
        Input::Forward(session::forward_stdin())
    } else if process.tty {
        Input::None
    } else {
        Input::Empty
    }
}

pub(crate) fn raw_terminal(process: &ProcessOptions) -> anyhow::Result<Option<terminal::RawMode>> {
    if process.tty && process.interactive && terminal::is_tty(libc::STDIN_FILENO) {
        let raw = terminal::RawMode::enter(libc::STDIN_FILENO).context("raw terminal mode")?;
        return Ok(Some(raw));
    }
    Ok(None)
}

/// The signals that ask skiff (and so the container) to end.
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

fn handle(kind: SignalKind) -> anyhow::Result<tokio::signal::unix::Signal> {
    signal(kind).context("installing signal handlers")
}

impl Signals {
    pub(crate) fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            int: handle(SignalKind::interrupt())?,
            term: handle(SignalKind::terminate())?,
            hup: handle(SignalKind::hangup())?,
            quit: handle(SignalKind::quit())?,
        })
    }

    /// The next terminating signal's number.
    pub(crate) async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.hup.recv() => libc::SIGHUP,
            _ = self.quit.recv() => libc::SIGQUIT,
        }
    }
}

/// Drives a started session with our stdio, forwarding signals and terminal resizes. With a
/// `vmm`, a signal also arms the stop deadline; returns the outcome and whether the VM was stopped.
async fn supervise<W>(
    session: Session<W>,
    process: &ProcessOptions,
    signals: &mut Signals,
    mut vmm: Option<&mut vmm::Vmm>,
) -> anyhow::Result<(Outcome, bool)>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (controls, control_rx) = mpsc::channel(16);
    let mut winch = handle(SignalKind::window_change())?;
    let input = plan_input(process);
    let mut drive =
        tokio::spawn(session.drive(tokio::io::stdout(), tokio::io::stderr(), input, control_rx));
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut stopped = false;
    // Once the VM is told to stop: when its VMM is killed if it has not ended (a wedged VMM must
    // not keep skiff waiting for a session that never ends).
    let mut kill_at: Option<tokio::time::Instant> = None;
    let stop = |vmm: &mut vmm::Vmm| {
        vmm.terminate();
        Some(tokio::time::Instant::now() + POWER_OFF_GRACE)
    };
    loop {
        let far = tokio::time::Instant::now() + Duration::from_secs(86400);
        tokio::select! {
            outcome = &mut drive => return Ok((outcome.context("session task")?, stopped)),
            sig = signals.next() => {
                let _ = controls.send(Control::Signal(sig)).await;
                if let Some(vmm) = vmm.as_deref_mut() {
                    if deadline.is_none() {
                        deadline = Some(tokio::time::Instant::now() + STOP_GRACE);
                    } else if !stopped {
                        kill_at = stop(vmm);
                        stopped = true;
                    }
                }
            }
            _ = winch.recv(), if process.tty => {
                if let Some(size) = terminal::size(libc::STDOUT_FILENO) {
                    let _ = controls.send(Control::Resize(size)).await;
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && !stopped => {
                if let Some(vmm) = vmm.as_deref_mut() {
                    kill_at = stop(vmm);
                }
                stopped = true;
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                if let Some(vmm) = vmm.as_deref_mut() {
                    tracing::warn!("skiff-vmm did not stop within {POWER_OFF_GRACE:?}; killing it");
                    vmm.kill();
                }
                kill_at = None;
            }
        }
    }
}

/// Reports a failed start like a shell does and yields its code.
fn report_failure(report: &skiff_protocol::ErrorReport) -> i32 {
    eprintln!("skiff: {}", report.message);
    report.exit_code
}

/// `skiff run`: returns the container's exit code (128+N for a signal).
pub async fn run(config: &Config, options: RunOptions, caller: &Caller<'_>) -> anyhow::Result<i32> {
    config.check_run_files()?;
    let id = rundir::new_id()?;
    // The image (if any) stays pinned until this function returns.
    let (layers, process, _image) = match &options.root {
        Root::Dir(dir) => {
            if !dir.is_dir() {
                anyhow::bail!("--rootfs {}: not a directory", dir.display());
            }
            let dir = std::fs::canonicalize(dir)
                .with_context(|| format!("resolving {}", dir.display()))?;
            (vec![dir], options.process.clone(), None)
        }
        Root::Image {
            reference,
            entrypoint,
        } => {
            let pull = skiff_images::PullOptions {
                progress: terminal::is_tty(libc::STDERR_FILENO),
                ..Default::default()
            };
            let image = image::ImageRoot::prepare(
                config.images()?,
                reference,
                &id,
                &options.process,
                entrypoint.as_deref(),
                &pull,
            )
            .await?;
            (image.layers.clone(), image.process.clone(), Some(image))
        }
    };
    let hostname = options.hostname.clone().unwrap_or_else(|| id.clone());
    let mut spec = build_spec(&process, Some(&hostname), caller)?;
    let mut signals = Signals::new()?;
    let dir = rundir::RunDir::create(&config.root, &id)?;
    let mut vm_spec = vmm::vm_spec(config, &options, layers, &dir);
    let passt = match &options.network {
        Network::None => None,
        Network::Passt(ports) => {
            let passt = passt::Passt::start(&dir, ports).await?;
            vm_spec.net.push(passt::nic(passt.socket()));
            spec.network = Some(Box::new(passt::guest_network()));
            Some(passt)
        }
    };
    let listener = tokio::net::UnixListener::bind(dir.control_socket())
        .with_context(|| format!("listening on {}", dir.control_socket().display()))?;
    // Held until the VMM has started with its own copy of the lock.
    let lease = config.jail_lease()?;
    if let Some(lease) = &lease {
        // The jailed VMM reaches its sockets' directory and connects to guest-init's.
        for path in [dir.path().to_path_buf(), dir.control_socket()] {
            lease
                .give(&path)
                .with_context(|| format!("giving {} to the jail", path.display()))?;
        }
    }
    let cgroup = match &config.cgroup_root {
        Some(root) => {
            let limits = crate::cgroup::VmLimits {
                vcpus: options.cpus,
                nano_cpus: None,
                memory_mib: options.memory_mib,
            };
            Some(crate::cgroup::VmCgroup::create(root, &id, &limits)?)
        }
        None => None,
    };
    let jail_dir = dir.jail();
    let jail = lease.as_ref().map(|lease| (lease, jail_dir.as_path()));
    let mut vm = vmm::Vmm::spawn(&config.vmm, &vm_spec, &dir.vm_spec(), cgroup, jail)?;
    drop(lease);
    tracing::debug!(id, dir = %dir.path().display(), "VM started");

    // Boot: until guest-init connects and the session is set up.
    let boot = async {
        let (stream, _) = listener
            .accept()
            .await
            .context("accepting guest-init's connection")?;
        let (reader, writer) = stream.into_split();
        session::start(reader, writer, &spec)
            .await
            .map_err(anyhow::Error::from)
    };
    let booted = tokio::select! {
        session = boot => Some(session),
        status = vm.wait() => {
            let status = status.context("waiting for skiff-vmm")?;
            anyhow::bail!(vm.describe_unexpected_end(status, "during boot").await);
        }
        _ = tokio::time::sleep(config.boot_timeout) => None,
        sig = signals.next() => {
            tracing::debug!("signal {sig} during boot: stopping the VM");
            None
        }
    };
    let session = match booted {
        Some(Ok(session)) => session,
        Some(Err(e)) => {
            vm.terminate();
            let status = vm.finish(POWER_OFF_GRACE).await?;
            let detail = vm.describe_unexpected_end(status, "handshake failed").await;
            return Err(e.context(detail));
        }
        None => {
            vm.terminate();
            vm.finish(POWER_OFF_GRACE).await?;
            anyhow::bail!(
                "guest-init did not connect within {:?} (or skiff was interrupted during boot)\n{}",
                config.boot_timeout,
                vm.stderr().await
            );
        }
    };
    drop(listener);

    let raw = raw_terminal(&process)?;
    let (outcome, stopped) = supervise(session, &process, &mut signals, Some(&mut vm)).await?;
    drop(raw);
    let status = vm
        .finish(POWER_OFF_GRACE)
        .await
        .context("waiting for skiff-vmm")?;
    tracing::debug!(?outcome, ?status, "run ended");
    if let Some(passt) = passt {
        passt.stop().await;
    }
    let code = match outcome {
        Outcome::Exited(exit) => exit.shell_code(),
        Outcome::Failed(report) => report_failure(&report),
        Outcome::Lost(_) if stopped => {
            eprintln!(
                "skiff: the container did not exit within {STOP_GRACE:?} of the signal; its VM was stopped"
            );
            STOPPED_CODE
        }
        Outcome::Lost(why) => anyhow::bail!(vm.describe_unexpected_end(status, &why).await),
    };
    drop(dir);
    Ok(code)
}

/// `skiff exec --vsock PATH`: runs a process in the running VM behind that vsock socket.
pub async fn exec(
    vsock_socket: &Path,
    process: &ProcessOptions,
    caller: &Caller<'_>,
) -> anyhow::Result<i32> {
    let spec = build_spec(process, None, caller)?;
    let mut signals = Signals::new()?;
    let stream = exec::connect_exec(vsock_socket).await?;
    let (reader, writer) = stream.into_split();
    let session = session::start(reader, writer, &spec).await?;
    let raw = raw_terminal(process)?;
    let (outcome, _) = supervise(session, process, &mut signals, None).await?;
    drop(raw);
    match outcome {
        Outcome::Exited(exit) => Ok(exit.shell_code()),
        Outcome::Failed(report) => Ok(report_failure(&report)),
        Outcome::Lost(why) => anyhow::bail!("exec session ended without an exit status: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(command: &[&str]) -> ProcessOptions {
        ProcessOptions {
            command: command.iter().map(|s| s.to_string()).collect(),
            ..ProcessOptions::default()
        }
    }

    #[test]
    fn user_parsing() {
        assert_eq!(parse_user("1000").unwrap(), (1000, 0));
        assert_eq!(parse_user("1000:100").unwrap(), (1000, 100));
        assert!(parse_user("nobody").is_err());
        assert!(parse_user("1:x").is_err());
        assert!(parse_user("").is_err());
    }

    /// A caller whose environment holds only `FROM_CALLER=yes`, on an 80x24 terminal.
    fn caller() -> Caller<'static> {
        Caller {
            env: &|key| (key == "FROM_CALLER").then(|| "yes".to_string()),
            terminal_size: Some(TerminalSize { rows: 24, cols: 80 }),
        }
    }

    #[test]
    fn spec_has_defaults_and_overrides() {
        let mut p = process(&["sh", "-c", "env"]);
        p.env = vec!["A=1".into(), "PATH=/bin".into(), "A=2".into()];
        p.workdir = Some("/tmp".into());
        p.user = Some("5:6".into());
        let spec = build_spec(&p, Some("box"), &caller()).unwrap();
        assert_eq!(spec.env, vec!["HOSTNAME=box", "PATH=/bin", "A=2"]);
        assert_eq!(spec.cwd, "/tmp");
        assert_eq!((spec.uid, spec.gid), (5, 6));
        assert_eq!(spec.hostname.as_deref(), Some("box"));
        assert!(!spec.tty);
        assert_eq!(spec.terminal_size, None, "no TTY, no size");
    }

    #[test]
    fn spec_takes_env_and_terminal_from_the_caller() {
        let mut p = process(&["true"]);
        p.env = vec!["FROM_CALLER".into(), "NOT_SET".into()];
        p.tty = true;
        let spec = build_spec(&p, None, &caller()).unwrap();
        assert_eq!(
            spec.env,
            vec![
                format!("PATH={DEFAULT_PATH}"),
                "TERM=xterm".into(),
                "FROM_CALLER=yes".into()
            ]
        );
        assert_eq!(
            spec.terminal_size,
            Some(TerminalSize { rows: 24, cols: 80 })
        );
    }

    #[test]
    fn spec_rejects_bad_input() {
        let c = caller();
        assert!(build_spec(&process(&[]), None, &c).is_err());
        let mut p = process(&["true"]);
        p.workdir = Some("relative".into());
        assert!(build_spec(&p, None, &c).is_err());
        let mut p = process(&["true"]);
        p.env = vec!["=x".into()];
        assert!(build_spec(&p, None, &c).is_err());
        assert!(build_spec(&process(&["true"]), Some(&"h".repeat(65)), &c).is_err());
    }
}
