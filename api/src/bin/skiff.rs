//! `skiff`: the command-line client. Works with or without a running `skiffd`.

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use skiff_api::cli::{
    build::BuildArgs, containers::ContainerCommand, images::ImageCommand, networks::NetworkCommand,
    volumes::VolumeCommand,
};
use skiff_api::client::Host;
use skiff_api::config::Config;
use skiff_api::daemon::server::DEFAULT_SOCKET;

#[derive(Debug, Parser)]
#[command(name = "skiff", version, about = "VM-isolated micro-containers")]
struct Cli {
    /// The daemon of the container commands: unix:///PATH or tcp://HOST:PORT. `skiff run`
    /// without -d runs in-process when no daemon answers there.
    #[arg(
        short = 'H',
        long = "host",
        env = "SKIFF_HOST",
        value_name = "ADDR",
        default_value_t = Host::Unix(DEFAULT_SOCKET.into())
    )]
    host: Host,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Container(Box<ContainerCommand>),
    #[command(flatten)]
    Image(ImageCommand),
    /// Build an image from a Dockerfile and a context (through skiffd: each RUN step runs in
    /// a microVM of its own).
    Build(BuildArgs),
    /// Manage volumes (through skiffd).
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Manage networks (through skiffd).
    #[command(subcommand)]
    Network(NetworkCommand),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let matches = Cli::command().get_matches();
    // Image commands go through a daemon only when one is named (-H or SKIFF_HOST), not by
    // the default socket: `skiff push` works without skiffd, as `skiff pull` does.
    let named_host = matches.value_source("host") != Some(ValueSource::DefaultValue);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The environment is read here and only here (SKIFF_HOST by clap, above); everything below
    // gets what it needs passed in.
    let exe_dir = match std::env::current_exe() {
        Ok(exe) => exe
            .parent()
            .map_or_else(|| "/".into(), |dir| dir.to_path_buf()),
        Err(e) => {
            eprintln!("skiff: cannot locate the skiff executable: {e}");
            return std::process::ExitCode::from(125);
        }
    };
    let config = Config::from_env(&|key| std::env::var_os(key), &exe_dir);
    let caller_env = |key: &str| std::env::var(key).ok();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiff: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(125);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Container(c) => c.run(&config, &cli.host, &caller_env).await,
            Command::Image(c) => c.run(&config, named_host.then_some(&cli.host)).await,
            Command::Build(args) => {
                skiff_api::cli::build::build(&cli.host, args, &caller_env).await
            }
            Command::Volume(c) => c.run(&cli.host).await,
            Command::Network(c) => c.run(&cli.host).await,
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("skiff: {e:#}");
            // 125 is what `docker run` uses for errors of its own, as opposed to the container's.
            std::process::ExitCode::from(125)
        }
    }
}
