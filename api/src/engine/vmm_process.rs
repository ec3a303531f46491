//! A container's `skiff-vmm` process: its files, its start (detached from the daemon, so it
//! survives the daemon's death), finding it again after a daemon restart, and waiting for its end
//! whether or not the daemon is its parent (a pidfd either way).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use skiff_vmm::container::ContainerExit;
use tokio::io::unix::AsyncFd;

use super::network::guest_net::TAP_FD;
use super::record::VmmProcess;
use crate::cgroup::VmCgroup;
use crate::jail::{inherit_on_exec, spawn_vmm, JailLease, LOCK_FD};

/// Unix socket paths longer than this do not fit `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 107;

/// Where one container's files live: `<root>/containers/<id>/` for what lasts (log, exit report,
/// VM spec, VMM's own messages, the copy-on-write upper layer, its disk image when capped) and `<root>/run/<id:12>/` for the
/// sockets (a full ID would not fit a socket path).
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    pub dir: PathBuf,
    pub run: PathBuf,
}

impl ContainerPaths {
    pub fn new(root: &Path, id: &str) -> ContainerPaths {
        ContainerPaths {
            dir: root.join("containers").join(id),
            run: root.join("run").join(&id[..12.min(id.len())]),
        }
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// The ext4 image holding the upper layer of a container with `--storage-opt size=`; its
    /// VMM mounts it on [`upper`](Self::upper).
    pub fn upper_disk(&self) -> PathBuf {
        self.dir.join("rootfs.img")
    }
    /// What the VMM's container session writes (the log, the exit report): the one directory
    /// of the container's a jailed VMM may write in besides its sockets'.
    pub fn session(&self) -> PathBuf {
        self.dir.join("session")
    }
    pub fn log(&self) -> PathBuf {
        self.session().join("container-json.log")
    }
    pub fn exit_file(&self) -> PathBuf {
        self.session().join("exit.json")
    }
    /// The jailed VMM's `/` (empty here: the VMM mounts its own tmpfs on it).
    pub fn jail(&self) -> PathBuf {
        self.run.join("jail")
    }
    pub fn vm_spec(&self) -> PathBuf {
        self.dir.join("vm.json")
    }
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }
    pub fn vsock(&self) -> PathBuf {
        self.run.join("vsock.sock")
    }
    pub fn attach(&self) -> PathBuf {
        self.run.join("attach.sock")
    }

    /// Creates both directories (0700) and the upper layer's and the session's, for a start.
    /// The socket directory is made afresh: sockets a killed VMM left behind would make the
    /// next one's bind fail. With `jail`, the socket and session directories are given to its
    /// uid (nothing the daemon trusts is in them: vm.json stays root's).
    pub fn create(&self, jail: Option<&JailLease>) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.run) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.mode(0o700).recursive(true);
        builder.create(&self.dir)?;
        builder.create(&self.run)?;
        builder.create(self.upper())?;
        builder.create(self.session())?;
        if let Some(lease) = jail {
            lease.give(&self.run)?;
            lease.give(&self.session())?;
        }
        let longest = format!(
            "{}_{}",
            self.vsock().display(),
            skiff_protocol::CONTROL_PORT
        );
        if longest.len() > MAX_SOCKET_PATH {
            return Err(std::io::Error::other(format!(
                "socket path {longest} is longer than {MAX_SOCKET_PATH} bytes; use a shorter --root"
            )));
        }
        Ok(())
    }

    pub fn remove(&self) {
        for dir in [&self.run, &self.dir] {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("removing {}: {e}", dir.display());
                }
            }
        }
    }

    /// The exit report of the last run, if the guest gave one.
    pub fn exit(&self) -> Option<ContainerExit> {
        ContainerExit::read(&self.exit_file()).unwrap_or_else(|e| {
            tracing::warn!("{}: {e}", self.exit_file().display());
            None
        })
    }

    /// The VMM's last words (its stderr: a crash's console tail, an error), for `State.Error`.
    pub fn vmm_tail(&self) -> String {
        let text = std::fs::read(self.vmm_log()).unwrap_or_default();
        let start = text.len().saturating_sub(2048);
        String::from_utf8_lossy(&text[start..]).trim().to_string()
    }
}

/// Starts `skiff-vmm --spec FILE` in a process group of its own, its stdio away from the
/// daemon's (a dead daemon's closed pipe must not kill it).
/// `taps` are inherited as fds [`TAP_FD`], `TAP_FD + 1`, … (the numbers the spec names); the
/// VMM joins `cgroup` before it executes; with `jail`, it starts as PID 1 of a PID namespace of
/// its own and jails itself as that lease's uid (see [`ContainerPaths::create`] for what that
/// uid is given).
pub fn spawn(
    vmm: &Path,
    paths: &ContainerPaths,
    taps: &[&OwnedFd],
    cgroup: Option<&VmCgroup>,
    jail: Option<&JailLease>,
) -> std::io::Result<VmmProcess> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.vmm_log())?;
    let mut command = std::process::Command::new(vmm);
    command
        .arg("--spec")
        .arg(paths.vm_spec())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    if taps.len() > MAX_TAPS {
        return Err(std::io::Error::other(format!(
            "{} network interfaces, at most {MAX_TAPS}",
            taps.len()
        )));
    }
    let mut inherited: Vec<(RawFd, RawFd)> = (TAP_FD..)
        .zip(taps)
        .map(|(number, tap)| (tap.as_raw_fd(), number))
        .collect();
    if let Some(lease) = jail {
        command.args(lease.vmm_args(&paths.jail()));
        inherited.push((lease.lock.as_raw_fd(), LOCK_FD));
    }
    inherit_on_exec(&mut command, &inherited)?;
    if let Some(cgroup) = cgroup {
        cgroup.join_on_exec(&mut command);
    }
    let child = spawn_vmm(jail.is_some(), || command.spawn())?;
    let pid = child.id() as i32;
    // The child is reaped by `wait_for_end` (waitpid after its pidfd fires), not by `Child`.
    drop(child);
    Ok(VmmProcess {
        pid,
        start_ticks: start_ticks(pid).unwrap_or(0),
    })
}

/// The most taps a VMM inherits (more than any container's networks).
const MAX_TAPS: usize = 8;

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot.
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `process` is still the VMM that was started (not a new process on a reused PID).
pub fn alive(process: &VmmProcess) -> bool {
    start_ticks(process.pid).is_some_and(|t| t == process.start_ticks)
}

/// Waits for the VMM to end; reaps it when it is our child.
pub async fn wait_for_end(process: &VmmProcess) -> std::io::Result<()> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, process.pid, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ESRCH) {
            Ok(())
        } else {
            Err(e)
        };
    }
    // SAFETY: the fd was just returned to us and nothing else owns it.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    if !alive(process) {
        reap(process.pid);
        return Ok(());
    }
    // SAFETY: the AsyncFd owns the pidfd, so it stays open for as long as it is registered.
    let pidfd = unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }?;
    let _ = pidfd.readable().await?;
    reap(process.pid);
    Ok(())
}

fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid on a PID with a valid status pointer; ECHILD when not ours, which is fine.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// Sends `signal` to the VMM (SIGKILL: the VM is gone at once; SIGTERM: it stops the VM).
pub fn signal(process: &VmmProcess, signal: i32) {
    if alive(process) {
        // SAFETY: kill(2) on a PID we checked is still our VMM.
        unsafe { libc::kill(process.pid, signal) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_clears_what_a_killed_vmm_left_in_the_socket_directory() {
        let root = tempfile::tempdir().unwrap();
        let paths = ContainerPaths::new(root.path(), &"ab".repeat(32));
        paths.create(None).unwrap();
        std::fs::write(paths.attach(), b"stale").unwrap();
        std::fs::write(paths.log(), b"kept").unwrap();
        paths.create(None).unwrap();
        assert!(!paths.attach().exists());
        assert!(paths.run.is_dir() && paths.upper().is_dir());
        assert_eq!(std::fs::read(paths.log()).unwrap(), b"kept");
    }
}
