//! Container subcommands: `run`, and the development form of `exec` (and later create/start/ps/…).

use crate::config::Config;
use crate::run::{self, terminal, Caller, ProcessOptions, Root, RunOptions};
use clap::{Args, Subcommand};
use skiff_vmm::spec::{DEFAULT_CPUS, DEFAULT_MEMORY_MIB};
use std::path::PathBuf;

/// How to run a process inside a container.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Set an environment variable (KEY=VALUE, or KEY to pass on skiff's own value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container (absolute).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: numeric UID[:GID] (the group defaults to 0).
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]")]
    user: Option<String>,
    /// Allocate a pseudo terminal (stdout and stderr merged).
    #[arg(short = 't', long)]
    tty: bool,
    /// Keep stdin open even when it is a terminal (a pipe or file is always forwarded).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// `skiff run`: IMAGE then the command and its arguments (the image's default when absent),
    /// or only the command with `--rootfs`. `skiff exec`: the command and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    command: Vec<String>,
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

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Run a command in a new microVM: `skiff run [OPTIONS] IMAGE [CMD [ARGS...]]`, or
    /// `skiff run --rootfs DIR [OPTIONS] -- CMD [ARGS...]`.
    Run {
        /// Root file system directory instead of an image (used read-only; writes go to a
        /// per-run layer).
        #[arg(long, value_name = "DIR")]
        rootfs: Option<PathBuf>,
        /// Override the image's entrypoint ("" clears it).
        #[arg(long, value_name = "CMD")]
        entrypoint: Option<String>,
        /// Number of vCPUs.
        #[arg(long, default_value_t = DEFAULT_CPUS)]
        cpus: u8,
        /// Guest memory in MiB.
        #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MEMORY_MIB)]
        memory: u64,
        /// Host name inside the VM (default: the run id).
        #[arg(long)]
        hostname: Option<String>,
        #[command(flatten)]
        process: ProcessArgs,
    },
    /// Run a command in a running microVM, named by its vsock socket
    /// (`$SKIFF_ROOT/run/<id>/vsock.sock`): `skiff exec --vsock PATH -- CMD [ARGS...]`.
    Exec {
        /// The VM's vsock Unix socket.
        #[arg(long, value_name = "PATH")]
        vsock: PathBuf,
        #[command(flatten)]
        process: ProcessArgs,
    },
}

impl ContainerCommand {
    /// Runs the command; `env` looks up skiff's own environment (for `-e KEY`).
    pub async fn run(
        self,
        config: &Config,
        env: &(dyn Fn(&str) -> Option<String> + Sync),
    ) -> anyhow::Result<i32> {
        let caller = Caller {
            env,
            terminal_size: terminal::size(libc::STDOUT_FILENO)
                .or(terminal::size(libc::STDIN_FILENO)),
        };
        match self {
            ContainerCommand::Run {
                rootfs,
                entrypoint,
                cpus,
                memory,
                hostname,
                process,
            } => {
                let mut process = ProcessOptions::from(process);
                let root = match rootfs {
                    Some(dir) => {
                        if entrypoint.is_some() {
                            anyhow::bail!("--entrypoint goes with an image, not with --rootfs");
                        }
                        Root::Dir(dir)
                    }
                    None if process.command.is_empty() => {
                        anyhow::bail!("skiff run needs an IMAGE (or --rootfs DIR) and a command")
                    }
                    None => Root::Image {
                        reference: process.command.remove(0),
                        entrypoint,
                    },
                };
                let options = RunOptions {
                    root,
                    cpus,
                    memory_mib: memory,
                    hostname,
                    process,
                };
                run::run(config, options, &caller).await
            }
            ContainerCommand::Exec { vsock, process } => {
                run::exec(&vsock, &process.into(), &caller).await
            }
        }
    }
}
