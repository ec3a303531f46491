//! A cgroup v2 per VM: the whole `skiff-vmm` process (vCPU threads, device workers) is held to
//! what its container was given, whatever its guest does: `cpu.max` from the CPUs asked for,
//! `memory.max` from the guest's memory plus the VMM's own measured overhead, `pids.max` from the
//! threads a VMM runs. The VMM joins its cgroup before it executes (from the forked child), so
//! no guest instruction runs outside it. `docker stats` reads the cgroup's counters.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The cgroup v2 mount.
pub const MOUNT: &str = "/sys/fs/cgroup";
/// The default parent of the VMs' cgroups (a child of the root, where controllers can be
/// delegated: the root cgroup may hold processes, a nested one that does may not).
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup/skiff";
/// cgroup v2's CPU period, in microseconds.
const PERIOD_US: u64 = 100_000;
/// What a VMM needs beyond its guest's memory, measured in the test host (the VMM's VmRSS minus
/// the guest pages, plus page cache charged for the files it serves), with room to spare: at
/// `memory.max` the kernel reclaims the cache first and kills the VMM only past it.
pub const VMM_OVERHEAD_MIB: u64 = 64;
/// A VMM's threads: main, signals, session, device workers, attach clients (host side), one per
/// vCPU on top.
const VMM_THREADS: u64 = 64;
const CONTROLLERS: &str = "+cpu +memory +pids";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {}: {what}: {source} (set SKIFF_CGROUP_ROOT=off to run VMs without one)", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
}

/// What a VM's cgroup holds it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmLimits {
    pub vcpus: u8,
    /// Docker's `NanoCpus`, when given: the CPU time, which may be less than the vCPUs.
    pub nano_cpus: Option<u64>,
    pub memory_mib: u64,
}

impl VmLimits {
    /// `cpu.max`: quota and period in microseconds.
    pub fn cpu_max(&self) -> String {
        let quota = match self.nano_cpus {
            Some(nano) => (nano.saturating_mul(PERIOD_US) / 1_000_000_000).max(1_000),
            None => u64::from(self.vcpus.max(1)) * PERIOD_US,
        };
        format!("{quota} {PERIOD_US}")
    }

    pub fn memory_max(&self) -> u64 {
        (self.memory_mib + VMM_OVERHEAD_MIB) << 20
    }

    pub fn pids_max(&self) -> u64 {
        VMM_THREADS + u64::from(self.vcpus)
    }
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// The cgroup one VM runs in, made with its limits; [`VmCgroup::join_on_exec`] moves the VMM
/// into it.
#[derive(Debug)]
pub struct VmCgroup {
    path: PathBuf,
    procs: CString,
}

impl VmCgroup {
    /// `<root>/<name>` with `limits`, the controllers enabled down to it. A cgroup left by a
    /// VMM that ended while nobody watched is replaced.
    pub fn create(root: &Path, name: &str, limits: &VmLimits) -> Result<VmCgroup, CgroupError> {
        if let Some(parent) = root.parent() {
            enable_controllers(parent)?;
        }
        match std::fs::create_dir(root) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io_err(root, "creating it")(e))
            }
            _ => {}
        }
        enable_controllers(root)?;
        let path = root.join(name);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).map_err(io_err(&path, "creating it"))?;
        let cgroup = VmCgroup {
            procs: CString::new(path.join("cgroup.procs").as_os_str().as_bytes())
                .map_err(|e| io_err(&path, "naming cgroup.procs")(io::Error::other(e)))?,
            path,
        };
        let written = cgroup
            .write("cpu.max", &limits.cpu_max())
            .and_then(|()| cgroup.write("memory.max", &limits.memory_max().to_string()))
            .and_then(|()| cgroup.write("pids.max", &limits.pids_max().to_string()))
            // One process, killed whole: never a VMM missing a thread.
            .and_then(|()| cgroup.write("memory.oom.group", "1"));
        if let Err(e) = written {
            cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the process `command` starts join this cgroup before it executes.
    pub fn join_on_exec(&self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let procs = self.procs.clone();
        // SAFETY: the closure runs in the child between fork and exec; join_in_child only
        // opens, writes and closes (async-signal-safe) with a path allocated before the fork.
        unsafe { command.pre_exec(move || join_in_child(&procs)) };
    }

    fn write(&self, file: &'static str, value: &str) -> Result<(), CgroupError> {
        std::fs::write(self.path.join(file), value).map_err(io_err(&self.path, file))
    }

    /// Removes the cgroup once its VMM is gone (best effort: a cgroup still holding a process
    /// stays).
    pub fn remove(&self) {
        remove(&self.path);
    }
}

pub fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_dir(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!("removing cgroup {}: {e}", path.display());
        }
    }
}

/// Enables the CPU, memory and pids controllers for `dir`'s children, unless they are on.
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    let on = std::fs::read_to_string(&control).map_err(io_err(dir, "reading subtree_control"))?;
    let missing = ["cpu", "memory", "pids"]
        .iter()
        .any(|c| !on.split_whitespace().any(|w| w == *c));
    if missing {
        std::fs::write(&control, CONTROLLERS)
            .map_err(io_err(dir, "enabling the cpu, memory and pids controllers"))?;
    }
    Ok(())
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs`. For a forked
/// child before exec: it only opens, writes and closes (async-signal-safe, no allocation).
fn join_in_child(procs: &CString) -> io::Result<()> {
    // SAFETY: open(2) of a NUL-terminated path that outlives the call.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // "0" names the writer itself.
    // SAFETY: write(2) of a 1-byte static buffer to the fd just opened.
    let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let err = io::Error::last_os_error();
    // SAFETY: closes the fd opened above, used by nothing else.
    unsafe { libc::close(fd) };
    if n == 1 {
        Ok(())
    } else {
        Err(err)
    }
}

/// The cgroup v2 directory process `pid` is in, when it is under `root` (a VM's own).
pub fn of_pid(pid: i32, root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let path = Path::new(MOUNT).join(rel.trim_start_matches('/'));
    path.starts_with(root).then_some(path)
}

/// A VM cgroup's counters, for `docker stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    /// Docker's usage: `memory.current` less the inactive page cache.
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub pids_current: u64,
    pub pids_limit: u64,
}

pub fn stats(dir: &Path) -> Option<CgroupStats> {
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
    let keyed = |text: &Option<String>, key: &str| {
        text.as_deref()?.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse::<u64>().ok())?
        })
    };
    let number = |file: &str| read(file)?.trim().parse::<u64>().ok();
    let cpu = read("cpu.stat");
    let memory = read("memory.stat");
    let current = number("memory.current")?;
    Some(CgroupStats {
        cpu_usage_ns: keyed(&cpu, "usage_usec").unwrap_or(0) * 1000,
        cpu_user_ns: keyed(&cpu, "user_usec").unwrap_or(0) * 1000,
        memory_usage: current.saturating_sub(keyed(&memory, "inactive_file").unwrap_or(0)),
        // "max" (no limit) reads as 0, Docker's "none".
        memory_limit: number("memory.max").unwrap_or(0),
        pids_current: number("pids.current").unwrap_or(0),
        pids_limit: number("pids.max").unwrap_or(0),
    })
}

/// Whether the kernel killed something in the cgroup at `dir` for its memory limit.
pub fn oom_killed(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("memory.events")).is_ok_and(|events| {
        events.lines().any(|l| {
            l.split_once(' ')
                .is_some_and(|(k, v)| k == "oom_kill" && v.trim() != "0")
        })
    })
}

/// Whether this host has cgroup v2 at [`MOUNT`] (not v1 or a hybrid's tmpfs).
pub fn v2_mounted() -> bool {
    Path::new(MOUNT).join("cgroup.controllers").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_containers_settings() {
        let two = VmLimits {
            vcpus: 2,
            nano_cpus: None,
            memory_mib: 128,
        };
        assert_eq!(two.cpu_max(), "200000 100000");
        assert_eq!(two.memory_max(), (128 + VMM_OVERHEAD_MIB) << 20);
        assert_eq!(two.pids_max(), VMM_THREADS + 2);
        let half = VmLimits {
            nano_cpus: Some(1_500_000_000),
            ..two
        };
        assert_eq!(half.cpu_max(), "150000 100000");
        let tiny = VmLimits {
            nano_cpus: Some(1),
            ..two
        };
        assert_eq!(tiny.cpu_max(), "1000 100000", "the kernel's smallest quota");
    }

    #[test]
    fn stats_read_a_cgroups_files() {
        let dir = tempfile::tempdir().unwrap();
        let put = |f: &str, v: &str| std::fs::write(dir.path().join(f), v).unwrap();
        put(
            "cpu.stat",
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        );
        put(
            "memory.stat",
            "anon 100\ninactive_file 4096\nactive_file 1\n",
        );
        put("memory.current", "10000\n");
        put("memory.max", "max\n");
        put("pids.current", "9\n");
        put("pids.max", "66\n");
        let s = stats(dir.path()).unwrap();
        assert_eq!(
            s,
            CgroupStats {
                cpu_usage_ns: 1_500_000,
                cpu_user_ns: 1_000_000,
                memory_usage: 10000 - 4096,
                memory_limit: 0,
                pids_current: 9,
                pids_limit: 66,
            }
        );
        assert_eq!(stats(&dir.path().join("gone")), None);
        assert!(!oom_killed(dir.path()));
        put("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        assert!(oom_killed(dir.path()));
    }
}
