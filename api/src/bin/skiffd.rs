//! `skiffd`: the daemon serving the Docker Engine API (so the `docker` CLI and docker-py drive
//! skiff unchanged) on a Unix socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use skiff_api::config::Config;
use skiff_api::daemon::host::HostFacts;
use skiff_api::daemon::root_lock::RootLock;
use skiff_api::daemon::server::{self, ListenAddr, DEFAULT_SOCKET};
use skiff_api::daemon::tls::{self, TlsOptions};
use skiff_api::daemon::Daemon;
use skiff_api::engine::{network, Engine};

/// How long in-flight requests may run on after SIGTERM/SIGINT before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    name = "skiffd",
    version,
    about = "skiff's daemon: the Docker Engine API over microVM containers",
    after_help = "SECURITY: anyone who can connect to skiffd's socket is root on this host, as \
                  with Docker's socket. The Unix socket is created mode 0660, group 'skiff' when \
                  that group exists: add only trusted users to it. Never expose tcp:// beyond \
                  this host without --tlsverify."
)]
struct Args {
    /// Where to listen: unix:///PATH or tcp://HOST:PORT (repeatable). Default:
    /// unix:///run/skiff/skiff.sock.
    #[arg(short = 'H', long = "host", value_name = "ADDR")]
    hosts: Vec<String>,
    /// State directory (locked: one daemon per root).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/skiff")]
    root: PathBuf,
    /// Group given to Unix sockets when it exists.
    #[arg(long, value_name = "NAME", default_value = "skiff")]
    group: String,
    /// Serve tcp:// addresses over TLS with --tlscert and --tlskey (clients unauthenticated).
    #[arg(long)]
    tls: bool,
    /// TLS and require client certificates signed by --tlscacert (implies --tls).
    #[arg(long)]
    tlsverify: bool,
    /// CA certificate (PEM) that client certificates must be signed by.
    #[arg(long, value_name = "FILE")]
    tlscacert: Option<PathBuf>,
    /// Server certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    tlscert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, value_name = "FILE")]
    tlskey: Option<PathBuf>,
    /// The default network's bridge; "none": containers get loopback only.
    #[arg(short = 'b', long, value_name = "NAME", default_value = "skiff0")]
    bridge: String,
    /// The default network's subnet (its first address is the bridge's, the gateway).
    #[arg(long, value_name = "CIDR", default_value = "10.88.0.0/16")]
    bridge_subnet: String,
}

impl Args {
    /// dockerd's rules: --tlsverify implies --tls; TLS needs a certificate and key, verification
    /// a CA. No default paths: every file is named.
    fn tls(&self) -> anyhow::Result<Option<TlsOptions>> {
        if !self.tls && !self.tlsverify {
            if self.tlscacert.is_some() || self.tlscert.is_some() || self.tlskey.is_some() {
                bail!("--tlscacert, --tlscert and --tlskey need --tls or --tlsverify");
            }
            return Ok(None);
        }
        let (Some(cert), Some(key)) = (self.tlscert.clone(), self.tlskey.clone()) else {
            bail!("--tls and --tlsverify need --tlscert and --tlskey");
        };
        let client_ca = match (self.tlsverify, &self.tlscacert) {
            (true, None) => bail!("--tlsverify needs --tlscacert"),
            (true, Some(ca)) => Some(ca.clone()),
            (false, _) => None,
        };
        Ok(Some(TlsOptions {
            cert,
            key,
            client_ca,
        }))
    }
}

/// A stable identity for `/info`'s `ID`, kept in the root directory.
fn engine_id(root: &Path) -> anyhow::Result<String> {
    let path = root.join("engine-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(id.to_string());
        }
    }
    let id = skiff_api::run::rundir::random_hex(32).context("reading /dev/urandom")?;
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop skiffd with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}

async fn run(args: Args, config: Config) -> anyhow::Result<()> {
    let tls_options = args.tls()?;
    let acceptor = tls_options.as_ref().map(tls::acceptor).transpose()?;
    let verified = tls_options.as_ref().is_some_and(|t| t.client_ca.is_some());
    let _lock = RootLock::acquire(&args.root)?;
    let hosts = if args.hosts.is_empty() {
        vec![format!("unix://{DEFAULT_SOCKET}")]
    } else {
        args.hosts.clone()
    };
    let mut listeners = Vec::new();
    for h in &hosts {
        let addr: ListenAddr = h.parse()?;
        match (&addr, &acceptor) {
            (ListenAddr::Tcp(a), None) => tracing::warn!(
                "LISTENING ON PLAIN TCP {a} WITHOUT TLS OR AUTHENTICATION: ANYONE WHO CAN REACH \
                 THIS PORT IS ROOT ON THIS HOST (use --tlsverify)"
            ),
            (ListenAddr::Tcp(a), Some(_)) if !verified => tracing::warn!(
                "LISTENING ON TCP {a} WITH TLS BUT NO CLIENT AUTHENTICATION: ANYONE WHO CAN \
                 REACH THIS PORT IS ROOT ON THIS HOST (use --tlsverify)"
            ),
            _ => {}
        }
        let listener = server::bind(&addr, Some(&args.group), acceptor.as_ref()).await?;
        tracing::info!("listening on {}", listener.local_addr());
        listeners.push(listener);
    }
    let engine = Engine::open(config).await?;
    let daemon = Arc::new(Daemon {
        backend: Arc::new(engine),
        host: HostFacts::read(),
        engine_id: engine_id(&args.root)?,
        root_dir: args.root.display().to_string(),
    });
    server::serve(listeners, daemon, shutdown_signal(), SHUTDOWN_GRACE).await;
    tracing::info!("stopped");
    Ok(())
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // Settings from the environment (kernel, VMM, init: as for `skiff`), read here once; the
    // state root is --root's.
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut config = Config::from_env(&|key| std::env::var_os(key), &exe_dir);
    config.root = std::path::absolute(&args.root).unwrap_or_else(|_| args.root.clone());
    config.network = match config.network.with_subnet(&args.bridge_subnet) {
        Ok(network) => network,
        Err(e) => {
            eprintln!("skiffd: --bridge-subnet: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    config.network.bridge = (args.bridge != "none").then(|| args.bridge.clone());
    // Containers get the host's name servers, as with Docker.
    config.network.dns =
        network::resolvers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiffd: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiffd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
