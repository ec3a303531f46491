//! Container subcommands. `run` without `-d` goes through skiffd when one answers on the chosen
//! host and runs the container in-process otherwise (always with `--rootfs`); the development
//! `exec --vsock` talks to a VM directly; every other command goes through skiffd (`remote`).

use crate::client::{Client, Host};
use crate::config::Config;
use crate::run::passt::Publish;
use crate::run::{self, terminal, Caller, Network, ProcessOptions, Root, RunOptions};
use clap::{Args, Subcommand};
use skiff_vmm::spec::{DEFAULT_CPUS, DEFAULT_MEMORY_MIB};
use std::path::PathBuf;

use super::images::ListFormat;
use super::remote;

/// How to run a process inside a container.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Set an environment variable (KEY=VALUE, or KEY to pass on skiff's own value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Working directory inside the container (absolute).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub(crate) workdir: Option<String>,
    /// User to run as: numeric UID[:GID] (the group defaults to 0; skiffd also takes names).
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]")]
    pub(crate) user: Option<String>,
    /// Allocate a pseudo terminal (stdout and stderr merged).
    #[arg(short = 't', long)]
    pub(crate) tty: bool,
    /// Keep stdin open even when it is a terminal (a pipe or file is always forwarded).
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,
    /// `skiff run`/`create`: IMAGE then the command and its arguments (the image's default when
    /// absent), or only the command with `--rootfs`. `skiff exec`: CONTAINER (none with
    /// `--vsock`), then the command and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub(crate) command: Vec<String>,
}

impl From<ProcessArgs> for ProcessOptions {
    fn from(a: ProcessArgs) -> ProcessOptions {
        ProcessOptions {
            command: a.command,
            env: a.env,
            workdir: a.workdir,
            user: a.user,
            tty: a.tty,
            interactive: a.interactive,
        }
    }
}

/// A new container, as `create` and `run` describe it.
#[derive(Debug, Args)]
pub struct ContainerArgs {
    /// Override the image's entrypoint ("" clears it).
    #[arg(long, value_name = "CMD")]
    pub(crate) entrypoint: Option<String>,
    /// Number of vCPUs [default: 1].
    #[arg(long)]
    pub(crate) cpus: Option<u8>,
    /// Guest memory in MiB [default: 128].
    #[arg(long, value_name = "MIB")]
    pub(crate) memory: Option<u64>,
    /// Host name inside the VM (default: the container's ID, in-process the run's).
    #[arg(long)]
    pub(crate) hostname: Option<String>,
    /// The container's name (through skiffd only).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Remove the container when it exits (in-process runs always are).
    #[arg(long)]
    pub(crate) rm: bool,
    /// Mount a host directory or a named volume: SRC:DST[:ro]; a lone DST is an anonymous
    /// volume (through skiffd only).
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    pub(crate) volumes: Vec<String>,
    /// Mount a tmpfs: PATH[:OPTIONS] such as /scratch:size=64m (through skiffd only).
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    pub(crate) tmpfs: Vec<String>,
    /// Publish a container port on the host: [IP:][HOST:]CONTAINER[/tcp|udp] (through skiffd,
    /// or HOST:CONTAINER[/tcp|udp] with --network passt).
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    pub(crate) publish: Vec<String>,
    /// Publish every port the image exposes on a free host port (through skiffd only).
    #[arg(short = 'P', long = "publish-all")]
    pub(crate) publish_all: bool,
    /// A resource limit of the container's processes: NAME=SOFT[:HARD], e.g. nofile=1024:2048
    /// (through skiffd only).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    pub(crate) ulimit: Vec<String>,
    /// The most processes the container may have at once (-1: no limit; through skiffd only).
    #[arg(long = "pids-limit", value_name = "N", allow_negative_numbers = true)]
    pub(crate) pids_limit: Option<i64>,
    /// Storage driver options: size=SIZE caps the container's writable layer, e.g. size=1G
    /// (through skiffd only).
    #[arg(long = "storage-opt", value_name = "size=SIZE")]
    pub(crate) storage_opt: Vec<String>,
    /// The network: bridge (the default network, with outbound access), none (loopback only)
    /// or a user-defined network's name, repeated to join several, each an interface of the VM
    /// (through skiffd); without skiffd none (the default) or passt (outbound access and -p
    /// through passt, no privilege needed).
    #[arg(long, value_name = "NAME")]
    pub(crate) network: Vec<String>,
    /// More names the container is found by on a user-defined network.
    #[arg(long = "network-alias", value_name = "NAME")]
    pub(crate) network_aliases: Vec<String>,
    #[command(flatten)]
    pub(crate) health: super::health::HealthArgs,
    #[command(flatten)]
    pub(crate) process: ProcessArgs,
}

/// How `stop` and `restart` stop containers.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait before stopping the VM (default: the container's, else 10).
    #[arg(
        short = 't',
        long = "timeout",
        visible_alias = "time",
        value_name = "S"
    )]
    pub(crate) timeout: Option<i64>,
    /// Signal to send first (default: the container's, else SIGTERM).
    #[arg(short = 's', long)]
    pub(crate) signal: Option<String>,
    #[command(flatten)]
    pub(crate) targets: Targets,
}

/// Containers named by ID, unique ID prefix or name.
#[derive(Debug, Args)]
pub struct Targets {
    #[arg(required = true, value_name = "CONTAINER")]
    pub(crate) containers: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Run a command in a new microVM: `skiff run [OPTIONS] IMAGE [CMD [ARGS...]]`, or
    /// `skiff run --rootfs DIR [OPTIONS] -- CMD [ARGS...]`.
    Run {
        /// Root file system directory instead of an image (used read-only; writes go to a
        /// per-run layer). Always runs in-process.
        #[arg(long, value_name = "DIR")]
        rootfs: Option<PathBuf>,
        /// Run in the background through skiffd and print the container's ID.
        #[arg(short = 'd', long)]
        detach: bool,
        #[command(flatten)]
        container: ContainerArgs,
    },
    /// Create a container through skiffd without starting it; prints its ID.
    Create(ContainerArgs),
    /// Start created or stopped containers.
    Start {
        /// Attach to the container's output and exit with its code (one container).
        #[arg(short = 'a', long)]
        attach: bool,
        /// With -a: forward stdin too.
        #[arg(short = 'i', long)]
        interactive: bool,
        #[command(flatten)]
        targets: Targets,
    },
    /// List containers.
    Ps {
        /// All containers (default: running ones).
        #[arg(short = 'a', long)]
        all: bool,
        /// Only IDs.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Full IDs and commands.
        #[arg(long)]
        no_trunc: bool,
        /// `table`, or `json`: one JSON object per line.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// Show a container's output.
    Logs {
        /// Keep following the output.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Lines from the end to show ("all" or a number).
        #[arg(short = 'n', long, default_value = "all", value_name = "N")]
        tail: String,
        /// Prefix each line with its RFC 3339 timestamp.
        #[arg(short = 't', long)]
        timestamps: bool,
        #[arg(value_name = "CONTAINER")]
        container: String,
    },
    /// Stop containers: their stop signal, then the VM after the timeout.
    Stop(StopArgs),
    /// Restart containers: a stop as `stop` does it, then a start.
    Restart(StopArgs),
    /// Make a new image of a container's changes (its copy-on-write layer) on top of its
    /// image. A running container is committed as it is (skiff cannot pause it): stop it first
    /// for a consistent snapshot.
    Commit {
        /// A Dockerfile instruction to apply: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER,
        /// VOLUME or WORKDIR (repeatable).
        #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
        changes: Vec<String>,
        /// The history entry's comment.
        #[arg(short = 'm', long)]
        message: Option<String>,
        /// The image's author (e.g. "Name <mail@example.com>").
        #[arg(short = 'a', long)]
        author: Option<String>,
        #[arg(value_name = "CONTAINER")]
        container: String,
        /// The new image's name; untagged without one.
        #[arg(value_name = "REPO[:TAG]")]
        reference: Option<String>,
    },
    /// Rename a container.
    Rename {
        #[arg(value_name = "CONTAINER")]
        container: String,
        #[arg(value_name = "NEW_NAME")]
        new_name: String,
    },
    /// Show the processes running in a container's VM (guest PIDs, `ps -ef`'s columns).
    Top {
        #[arg(value_name = "CONTAINER")]
        container: String,
    },
    /// Show what containers' VMs cost the host: CPU and resident memory (default: every
    /// running container), a new table each second.
    Stats {
        /// Print one table and exit.
        #[arg(long)]
        no_stream: bool,
        #[arg(value_name = "CONTAINER")]
        containers: Vec<String>,
    },
    /// Attach to a running container's output (and stdin, when it was created with -i).
    Attach {
        /// Do not forward stdin.
        #[arg(long)]
        no_stdin: bool,
        /// Keys that detach and leave the container running (default ctrl-p,ctrl-q).
        #[arg(long, value_name = "KEYS")]
        detach_keys: Option<String>,
        #[arg(value_name = "CONTAINER")]
        container: String,
    },
    /// Send a signal to containers (default SIGKILL).
    Kill {
        #[arg(short = 's', long, value_name = "SIG")]
        signal: Option<String>,
        #[command(flatten)]
        targets: Targets,
    },
    /// Remove containers.
    Rm {
        /// Remove running containers too (they are killed first).
        #[arg(short = 'f', long)]
        force: bool,
        /// Remove the containers' anonymous volumes.
        #[arg(short = 'v', long)]
        volumes: bool,
        #[command(flatten)]
        targets: Targets,
    },
    /// Show containers' details as JSON.
    Inspect(Targets),
    /// Wait for containers to stop and print their exit codes.
    Wait(Targets),
    /// Run a command in a running container: `skiff exec [OPTIONS] CONTAINER CMD [ARGS...]`,
    /// or in a VM named by its vsock socket (development): `skiff exec --vsock PATH -- CMD…`.
    Exec {
        /// The VM's vsock Unix socket (`$SKIFF_ROOT/run/<id>/vsock.sock`).
        #[arg(long, value_name = "PATH")]
        vsock: Option<PathBuf>,
        #[command(flatten)]
        process: ProcessArgs,
    },
}

impl ContainerCommand {
    /// Runs the command against the daemon at `host` (or in-process, see above); `env` looks up
    /// skiff's own environment (for `-e KEY`).
    pub async fn run(
        self,
        config: &Config,
        host: &Host,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> anyhow::Result<i32> {
        let caller = Caller {
            env,
            terminal_size: terminal::size(libc::STDOUT_FILENO)
                .or(terminal::size(libc::STDIN_FILENO)),
        };
        let client = Client::new(host.clone());
        match self {
            ContainerCommand::Run {
                rootfs: Some(dir),
                detach,
                container,
            } => {
                if detach {
                    anyhow::bail!("--rootfs runs the container in-process: it cannot be detached");
                }
                in_process(config, Some(dir), container, &caller, host).await
            }
            ContainerCommand::Run {
                rootfs: None,
                detach: true,
                container,
            } => remote::run_detached(&client, container, &caller).await,
            ContainerCommand::Run {
                rootfs: None,
                detach: false,
                container,
            } => match remote::answers(&client).await {
                Ok(()) => remote::run_attached(&client, container, &caller).await,
                Err(e) => {
                    tracing::debug!("running in-process: {e:#}");
                    in_process(config, None, container, &caller, host).await
                }
            },
            ContainerCommand::Exec {
                vsock: Some(vsock),
                process,
            } => run::exec(&vsock, &process.into(), &caller).await,
            ContainerCommand::Exec {
                vsock: None,
                process,
            } => Ok(remote::exec(&client, process, &caller).await),
            ContainerCommand::Create(container) => {
                remote::create(&client, container, &caller).await
            }
            command => Ok(remote::manage(&client, command).await),
        }
    }
}

/// `skiff run` without a daemon: the container runs in this process's VM session.
async fn in_process(
    config: &Config,
    rootfs: Option<PathBuf>,
    container: ContainerArgs,
    caller: &Caller<'_>,
    host: &Host,
) -> anyhow::Result<i32> {
    if container.name.is_some() {
        anyhow::bail!("--name needs skiffd, and none answers at {host}");
    }
    if !container.volumes.is_empty() || !container.tmpfs.is_empty() {
        anyhow::bail!("-v and --tmpfs need skiffd, and none answers at {host}");
    }
    if container.publish_all
        || !container.ulimit.is_empty()
        || container.pids_limit.is_some()
        || !container.storage_opt.is_empty()
        || container.health.any()
    {
        anyhow::bail!(
            "-P, --ulimit, --pids-limit, --storage-opt and --health-* need skiffd, and none \
             answers at {host}"
        );
    }
    if container.network.len() > 1 {
        anyhow::bail!("a run without skiffd joins one network; start skiffd for several");
    }
    let network = match container.network.first().map(String::as_str) {
        None | Some("none") if !container.publish.is_empty() => {
            anyhow::bail!("-p without skiffd needs --network passt (or start skiffd at {host})")
        }
        None | Some("none") => Network::None,
        Some("passt") => Network::Passt(
            container
                .publish
                .iter()
                .map(|p| Publish::parse(p))
                .collect::<anyhow::Result<_>>()?,
        ),
        Some(_) => anyhow::bail!(
            "a run without skiffd has --network none (loopback only) or passt (outbound access \
             and -p, no privilege needed); start skiffd for other networks"
        ),
    };
    let mut process = ProcessOptions::from(container.process);
    let root = match rootfs {
        Some(dir) => {
            if container.entrypoint.is_some() {
                anyhow::bail!("--entrypoint goes with an image, not with --rootfs");
            }
            Root::Dir(dir)
        }
        None if process.command.is_empty() => {
            anyhow::bail!("skiff run needs an IMAGE (or --rootfs DIR) and a command")
        }
        None => Root::Image {
            reference: process.command.remove(0),
            entrypoint: container.entrypoint,
        },
    };
    let options = RunOptions {
        root,
        cpus: container.cpus.unwrap_or(DEFAULT_CPUS),
        memory_mib: container.memory.unwrap_or(DEFAULT_MEMORY_MIB),
        hostname: container.hostname,
        network,
        process,
    };
    run::run(config, options, caller).await
}
