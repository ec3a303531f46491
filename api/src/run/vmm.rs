//! Starting and stopping the `skiff-vmm` process of one run.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// How much of the VMM's stderr is kept for error reports (it prints the guest console's tail).
const STDERR_TAIL: usize = 16 * 1024;

/// skiff-vmm's exit code for a guest that reset or crashed (kernel panic, triple fault).
pub const EXIT_GUEST_CRASHED: i32 = 2;
/// skiff-vmm's exit code for its own errors.
pub const EXIT_VMM_ERROR: i32 = 1;

/// A helper binary: `$ENV_VAR`, else the file `name` next to the running executable.
pub fn helper_binary(env_var: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the skiff executable")?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let path = dir.join(name);
    if !path.is_file() {
        anyhow::bail!(
            "{name} not found at {} (install it next to skiff or set {env_var})",
            path.display()
        );
    }
    Ok(path)
}

/// What one VM gets.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub init: PathBuf,
    pub layers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub vsock_socket: PathBuf,
    pub cpus: u32,
    pub memory_mib: u32,
    /// `--serial` target, for debugging (`$SKIFF_CONSOLE`).
    pub serial: Option<PathBuf>,
}

impl VmConfig {
    fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--kernel".into(),
            self.kernel.clone().into(),
            "--init".into(),
            self.init.clone().into(),
        ];
        for layer in &self.layers {
            args.push("--rootfs-layer".into());
            args.push(layer.clone().into());
        }
        args.extend([
            "--rootfs-upper".into(),
            self.upper.clone().into(),
            "--vsock-uds".into(),
            self.vsock_socket.clone().into(),
            "--cpus".into(),
            self.cpus.to_string().into(),
            "--memory".into(),
            self.memory_mib.to_string().into(),
        ]);
        if let Some(serial) = &self.serial {
            args.push("--serial".into());
            args.push(serial.clone().into());
        }
        args
    }
}

/// A running `skiff-vmm`.
pub struct Vmm {
    child: Child,
    pid: Option<u32>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_done: tokio::task::JoinHandle<()>,
    status: Option<ExitStatus>,
}

impl Vmm {
    pub fn spawn(binary: &Path, config: &VmConfig) -> anyhow::Result<Vmm> {
        if !config.kernel.is_file() {
            anyhow::bail!(
                "guest kernel not found at {} (set SKIFF_KERNEL or build it with kernel-config/build-kernel)",
                config.kernel.display()
            );
        }
        let mut child = Command::new(binary)
            .args(config.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's ^C reaches skiff (which forwards it to the
            // container first), not the VMM.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child.id();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = child.stderr.take();
        let stderr_done = tokio::spawn(async move {
            let Some(pipe) = pipe.as_mut() else { return };
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let mut tail = sink.lock().unwrap_or_else(|p| p.into_inner());
                tail.extend_from_slice(&buf[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
            }
        });
        tracing::debug!(?pid, ?config, "skiff-vmm started");
        Ok(Vmm {
            child,
            pid,
            stderr,
            stderr_done,
            status: None,
        })
    }

    /// Waits for the VMM to exit (cancel-safe; remembers the status).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        self.status = Some(status);
        Ok(status)
    }

    /// Asks the VMM to stop the VM (SIGTERM: it exits 143).
    pub fn terminate(&self) {
        if let (Some(pid), None) = (self.pid, self.status) {
            // SAFETY: kill(2) of our own child, which has not been reaped yet.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }

    /// Waits up to `grace` for the VMM to exit, then kills it.
    pub async fn finish(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(
                    "skiff-vmm still running {grace:?} after the container ended; killing it"
                );
                let _ = self.child.start_kill();
                self.wait().await
            }
        }
    }

    /// What the VMM printed on stderr (its last 16 KiB), once it has exited.
    pub async fn stderr(&mut self) -> String {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.stderr_done).await;
        let tail = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&tail).trim_end().to_string()
    }

    /// A user-facing explanation of a VM that ended without the container's exit report.
    pub async fn describe_unexpected_end(&mut self, status: ExitStatus, context: &str) -> String {
        let stderr = self.stderr().await;
        let detail = if stderr.is_empty() {
            String::new()
        } else {
            format!("\n--- skiff-vmm stderr ---\n{stderr}")
        };
        let what = match status.code() {
            Some(EXIT_GUEST_CRASHED) => "the VM crashed or reset".to_string(),
            Some(EXIT_VMM_ERROR) => "skiff-vmm failed".to_string(),
            Some(0) => "the VM powered off".to_string(),
            _ => format!("skiff-vmm ended ({status})"),
        };
        format!("{what} before the container reported an exit status ({context}){detail}")
    }
}
