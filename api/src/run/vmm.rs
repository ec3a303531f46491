//! Starting and stopping the `skiff-vmm` process of one run.

use super::rundir::RunDir;
use super::RunOptions;
use crate::cgroup::VmCgroup;
use crate::config::Config;
use crate::jail::{inherit_on_exec, spawn_vmm, JailLease, LOCK_FD};
use anyhow::Context;
use skiff_vmm::devices::serial::SerialOutput;
use skiff_vmm::spec::{RootfsSpec, VsockSpec, DEFAULT_GUEST_CID};
use skiff_vmm::VmSpec;
use std::os::fd::AsRawFd;
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

/// The VM of one run: the container's root is `layers` under the run's upper directory, its
/// console goes to `config.console` (or nowhere) and guest-init talks to the host over vsock.
pub fn vm_spec(
    config: &Config,
    options: &RunOptions,
    layers: Vec<PathBuf>,
    dir: &RunDir,
) -> VmSpec {
    VmSpec {
        cpus: options.cpus,
        memory_mib: options.memory_mib,
        init: Some(config.init.clone()),
        serial: config
            .console
            .clone()
            .map_or(SerialOutput::Discard, SerialOutput::File),
        rootfs: Some(RootfsSpec {
            layers,
            upper: Some(dir.upper()),
            upper_disk: None,
        }),
        vsock: Some(VsockSpec {
            guest_cid: DEFAULT_GUEST_CID,
            uds: dir.vsock_socket(),
        }),
        ..VmSpec::new(config.kernel.clone())
    }
}

/// A running `skiff-vmm`.
pub struct Vmm {
    child: Child,
    pid: Option<u32>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_done: tokio::task::JoinHandle<()>,
    status: Option<ExitStatus>,
    cgroup: Option<VmCgroup>,
}

impl Vmm {
    /// Starts `binary` on `spec`, which is validated first and handed over as the file
    /// `spec_file`: a file rather than a pipe on stdin so that the VMM's stdin stays /dev/null
    /// (no writer to keep alive, nothing to block on if the VMM dies before reading it) and what a
    /// running VM was given stays readable beside its sockets, for people and for a daemon that
    /// restarts (the run directory is private to its owner and removed with the run).
    /// The VMM joins `cgroup` before it executes; the cgroup is removed once the VMM is gone.
    pub fn spawn(
        binary: &Path,
        spec: &VmSpec,
        spec_file: &Path,
        cgroup: Option<VmCgroup>,
        jail: Option<(&JailLease, &Path)>,
    ) -> anyhow::Result<Vmm> {
        let spawned = Self::spawn_in(binary, spec, spec_file, cgroup.as_ref(), jail);
        match spawned {
            Ok(vmm) => Ok(Vmm { cgroup, ..vmm }),
            Err(e) => {
                if let Some(cgroup) = cgroup {
                    cgroup.remove();
                }
                Err(e)
            }
        }
    }

    fn spawn_in(
        binary: &Path,
        spec: &VmSpec,
        spec_file: &Path,
        cgroup: Option<&VmCgroup>,
        jail: Option<(&JailLease, &Path)>,
    ) -> anyhow::Result<Vmm> {
        spec.validate().context("invalid VM")?;
        std::fs::write(spec_file, spec.to_json()?)
            .with_context(|| format!("writing {}", spec_file.display()))?;
        let mut command = Command::new(binary);
        if let Some(cgroup) = cgroup {
            cgroup.join_on_exec(command.as_std_mut());
        }
        if let Some((lease, dir)) = jail {
            command.args(lease.vmm_args(dir));
            inherit_on_exec(command.as_std_mut(), &[(lease.lock.as_raw_fd(), LOCK_FD)])?;
        }
        command
            .arg("--spec")
            .arg(spec_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's ^C reaches skiff (which forwards it to the
            // container first), not the VMM.
            .process_group(0)
            .kill_on_drop(true);
        // A jailed VMM is spawned from a thread of its own: the child is registered with this
        // runtime all the same.
        let runtime = tokio::runtime::Handle::current();
        let spawned = spawn_vmm(jail.is_some(), || {
            let _entered = runtime.enter();
            command.spawn()
        });
        let mut child = spawned.with_context(|| {
            format!(
                "starting {} (install skiff-vmm next to skiff or set SKIFF_VMM)",
                binary.display()
            )
        })?;
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
        tracing::debug!(?pid, ?spec, "skiff-vmm started");
        Ok(Vmm {
            child,
            pid,
            stderr,
            stderr_done,
            status: None,
            cgroup: None,
        })
    }

    /// Waits for the VMM to exit (cancel-safe; remembers the status).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = self.child.wait().await?;
        self.status = Some(status);
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.remove();
        }
        Ok(status)
    }

    /// Asks the VMM to stop the VM (SIGTERM: it exits 143).
    pub fn terminate(&self) {
        if let (Some(pid), None) = (self.pid, self.status) {
            // SAFETY: kill(2) of our own child, which has not been reaped yet.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }

    /// Kills the VMM (one that did not stop when asked).
    pub fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.start_kill();
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
                self.kill();
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
            Some(code) if code == i32::from(skiff_vmm::seccomp::EXIT_CODE) => {
                "skiff-vmm was killed by its seccomp filter".to_string()
            }
            Some(0) => "the VM powered off".to_string(),
            _ => format!("skiff-vmm ended ({status})"),
        };
        format!("{what} before the container reported an exit status ({context}){detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{ProcessOptions, Root};

    #[test]
    fn a_run_gets_a_valid_spec_for_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            root: tmp.path().to_path_buf(),
            kernel: "/k/vmlinux".into(),
            vmm: "skiff-vmm".into(),
            init: "/bin/skiff-init".into(),
            boot_timeout: Duration::from_secs(1),
            console: Some("/tmp/console.log".into()),
            images: Default::default(),
            network: Default::default(),
            cgroup_root: None,
            jail: Ok(None),
        };
        let options = RunOptions {
            root: Root::Dir("/layer".into()),
            cpus: 2,
            memory_mib: 256,
            hostname: None,
            network: Default::default(),
            process: ProcessOptions::default(),
        };
        let dir = RunDir::create(&config.root, "abc").unwrap();
        let spec = vm_spec(&config, &options, vec!["/top".into(), "/base".into()], &dir);
        spec.validate().unwrap();
        assert_eq!((spec.cpus, spec.memory_mib), (2, 256));
        assert_eq!(spec.kernel, config.kernel);
        assert_eq!(spec.init.as_ref(), Some(&config.init));
        assert_eq!(spec.serial, SerialOutput::File("/tmp/console.log".into()));
        let rootfs = spec.rootfs.as_ref().unwrap();
        assert_eq!(rootfs.upper.as_ref(), Some(&dir.upper()));
        assert_eq!(spec.vsock.as_ref().unwrap().uds, dir.vsock_socket());
        let quiet = Config {
            console: None,
            ..config.clone()
        };
        let spec = vm_spec(&quiet, &options, vec!["/l".into()], &dir);
        assert_eq!(spec.serial, SerialOutput::Discard);
    }
}
