//! skiffd's real HTTP front end on a Unix socket in a temporary directory, with an engine of the
//! test's choosing, and the real Docker clients pointed at it.

pub mod fake_engine;

use skiff_api::daemon::host::HostFacts;
use skiff_api::daemon::server::{self, ListenAddr};
use skiff_api::daemon::{ContainerBackend, Daemon};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

pub struct TestDaemon {
    /// Where it listens, as `-H` takes it.
    pub endpoint: String,
    /// The Unix socket's path (`start`) or empty (`start_on`).
    pub socket: PathBuf,
    dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestDaemon {
    /// On a Unix socket in a fresh directory.
    pub fn start(backend: Arc<dyn ContainerBackend>) -> TestDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("skiffd.sock");
        let mut d = TestDaemon::start_on(backend, ListenAddr::Unix(socket.clone()), None, dir);
        d.socket = socket;
        d
    }

    /// On `addr`, TLS when `tls` is given; `dir` holds the clients' configuration.
    pub fn start_on(
        backend: Arc<dyn ContainerBackend>,
        addr: ListenAddr,
        tls: Option<TlsAcceptor>,
        dir: tempfile::TempDir,
    ) -> TestDaemon {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let daemon = Arc::new(Daemon {
            backend,
            host: HostFacts::read(),
            engine_id: "0".repeat(64),
            root_dir: dir.path().display().to_string(),
        });
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = server::bind(&addr, None, tls.as_ref()).await.expect("bind");
                let _ = ready_tx.send(listener.local_addr());
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                server::serve(vec![listener], daemon, shutdown, Duration::from_secs(2)).await;
            });
        });
        let endpoint = ready_rx.recv().expect("skiffd test server did not start");
        TestDaemon {
            endpoint,
            socket: PathBuf::new(),
            dir: Some(dir),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Runs the docker CLI against this daemon, isolated from the user's Docker configuration.
    pub fn docker(&self, cli: &Path, args: &[&str]) -> Output {
        let config = self.docker_config();
        let _ = std::fs::create_dir_all(&config);
        Command::new(cli)
            .arg("-H")
            .arg(&self.endpoint)
            .args(args)
            .env("DOCKER_CONFIG", &config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CLI_HINTS", "false")
            .output()
            .expect("running the docker CLI")
    }

    /// The DOCKER_CONFIG directory `docker` runs with (where a test puts `config.json`).
    pub fn docker_config(&self) -> PathBuf {
        let dir = self
            .dir
            .as_ref()
            .expect("a running test daemon has its directory");
        dir.path().join("docker-config")
    }

    /// Stops the server the way SIGTERM stops skiffd, waits for it, and hands back its
    /// directory (where the socket was).
    pub fn stop(mut self) -> Option<tempfile::TempDir> {
        self.shutdown();
        self.dir.take()
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The docker CLI, or None after saying loudly that the tests needing it are skipped:
/// `$SKIFF_TEST_DOCKER_CLI`, else /usr/local/bin/docker, /usr/bin/docker, or the one tests/setup
/// extracts from Debian's docker.io into `target/docker-cli/` (client only, no daemon).
pub fn docker_cli() -> Option<PathBuf> {
    let extracted =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/docker-cli/usr/bin/docker");
    let chosen = std::env::var_os("SKIFF_TEST_DOCKER_CLI").map(PathBuf::from);
    let found = chosen
        .into_iter()
        .chain(["/usr/local/bin/docker", "/usr/bin/docker"].map(PathBuf::from))
        .chain([extracted])
        .find(|p| p.exists());
    if found.is_none() {
        eprintln!(
            "\n*** SKIPPED: no docker CLI ($SKIFF_TEST_DOCKER_CLI, /usr/local/bin/docker, \
             /usr/bin/docker or target/docker-cli/usr/bin/docker; tests/setup installs one) ***\n"
        );
    }
    found
}

/// A python3 that can `import docker` (docker-py), or None after saying so loudly. tests/setup
/// puts one in `target/docker-py/`.
pub fn docker_py() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/docker-py/bin/python3");
    let found = [venv, PathBuf::from("python3")].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import docker"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        eprintln!(
            "\n*** SKIPPED: no python3 with docker-py (target/docker-py/bin/python3 or \
             python3 -c 'import docker'; tests/setup installs it) ***\n"
        );
    }
    found
}

/// The real engine on a fresh root, behind the HTTP front end (its image store only: nothing
/// the tests using it do boots a VM).
pub fn engine_daemon(root: &Path) -> TestDaemon {
    let root = root.to_path_buf();
    let env = move |key: &str| (key == "SKIFF_ROOT").then(|| root.clone().into_os_string());
    let config = skiff_api::config::Config::from_env(&env, Path::new("/nonexistent"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let engine = rt
        .block_on(skiff_api::engine::Engine::open(config))
        .expect("engine");
    TestDaemon::start(Arc::new(engine))
}

/// Asserts that a command succeeded (showing its output otherwise); returns its stdout.
#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a command's exit code and its whole stdout, showing its stderr otherwise.
#[track_caller]
pub fn check(out: &Output, code: i32, stdout: &str) {
    assert_eq!(
        (out.status.code(), text(&out.stdout).as_str()),
        (Some(code), stdout),
        "stderr: {}",
        text(&out.stderr)
    );
}
