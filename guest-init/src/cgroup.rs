//! The container's cgroup: every process of the container, the main one and each exec, runs in
//! `/sys/fs/cgroup/container`, whose `pids.max` is the container's `--pids-limit` (`max`
//! without one), as in Docker. guest-init itself stays in the root group, so a container that
//! reaches its limit cannot keep PID 1 from serving the host.
//!
//! The container's root user can change the limit (it owns its VM's kernel); the limit guards
//! against runaway forks, the VM's memory and vCPUs bound everything else.

use std::ffi::CString;
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::system::{self, SystemError};

const ROOT: &str = "/sys/fs/cgroup";
const GROUP: &str = "/sys/fs/cgroup/container";

/// The open `cgroup.procs` of the container's group; -1 until `create` succeeded. A forked child
/// writes "0" to it (moving itself) before it execs; that write is async-signal-safe.
static PROCS_FD: AtomicI32 = AtomicI32::new(-1);

fn err(what: String) -> impl FnOnce(io::Error) -> SystemError {
    move |source| SystemError { what, source }
}

/// Mounts cgroup2 on `/sys/fs/cgroup` and creates the container's group with its pids limit.
pub fn create(pids_limit: Option<u64>) -> Result<(), SystemError> {
    system::mount(
        c"cgroup2",
        c"/sys/fs/cgroup",
        c"cgroup2",
        system::NOSUID_NODEV_NOEXEC,
        c"",
    )?;
    let control = format!("{ROOT}/cgroup.subtree_control");
    std::fs::write(&control, "+pids").map_err(err(format!("enable pids in {control}")))?;
    match std::fs::create_dir(GROUP) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            return Err(err(format!("mkdir {GROUP}"))(e));
        }
        _ => {}
    }
    let limit = pids_limit.map_or_else(|| "max".to_string(), |n| n.to_string());
    let max = format!("{GROUP}/pids.max");
    std::fs::write(&max, &limit).map_err(err(format!("write {limit} to {max}")))?;
    let procs = CString::new(format!("{GROUP}/cgroup.procs")).map_err(io::Error::other);
    let procs = procs.map_err(err("cgroup.procs".into()))?;
    // SAFETY: a valid path string; the descriptor is kept for the VM's lifetime.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(err(format!("open {GROUP}/cgroup.procs"))(
            io::Error::last_os_error(),
        ));
    }
    PROCS_FD.store(fd, Ordering::SeqCst);
    Ok(())
}

/// In a freshly forked child: moves it into the container's group. False when that failed
/// (errno tells why); true without a group (outside a VM, in tests).
///
/// # Safety
/// Async-signal-safe; meant for a child between fork and exec.
pub unsafe fn join_from_child() -> bool {
    let fd = PROCS_FD.load(Ordering::Relaxed);
    fd < 0 || libc::write(fd, c"0".as_ptr().cast(), 1) == 1
}
