//! The jail a VMM started by root puts itself in, in the spirit of Firecracker's jailer but with
//! no second binary: the VM is set up with root's rights, then the process keeps only its own
//! files and runs as an unprivileged uid and gid of its own.
//!
//! 1. [`Jail::unshare`], first, while the process has one thread (PID 1 of its own PID
//!    namespace, see below): new mount, IPC, UTS and network namespaces (the VMM's network is
//!    the tap descriptors it was given), every descriptor closed but stdio, the taps and those
//!    named by `--jail-keep-fd`, resource limits. [`Jail::user_namespace`] then makes the user
//!    namespace the jail's ids head (see [`idmap`]), when every served directory can be
//!    idmapped.
//! 2. The VM and its devices are set up as usual (guest memory, /dev/kvm, the overlay over
//!    idmapped layers, sockets), still on one thread.
//! 3. [`Jail::pivot`]: a small tmpfs on the jail directory receives bind mounts of just what the
//!    running VM still opens by path (the kernel, the served directories, the socket and
//!    session directories, the process's own /proc/self/fd) at their usual paths, becomes `/`
//!    (`pivot_root`), the old root is detached and the new one made read-only.
//! 4. [`Jail::confine`]: the process enters its user namespace as its 0. Every thread, all
//!    started from then on, drops to the jail's credentials as it starts, the main thread once
//!    every other has started ([`restrict_thread`], next to the seccomp filter): see
//!    [`privileges`]. Only the main thread keeps root's rights through steps 2 and 3.
//!
//! The PID namespace comes from whoever starts the VMM: a jailed VMM must be PID 1 of a
//! namespace of its own ([`JailError::NotPidOne`] otherwise). skiff starts it so (a namespace
//! made for the spawn, see `skiff_api::jail::in_new_pid_namespace`), which keeps it one process
//! whose host PID its starter waits on, signals and reads statistics of; by hand,
//! `unshare --pid --fork --kill-child skiff-vmm ...` does the same.

pub mod idmap;
pub mod privileges;
#[cfg(test)]
mod tests;

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::seccomp::ThreadKind;
use idmap::UserNamespace;
use privileges::ThreadCredentials;

/// Descriptors a jailed VMM may have open (guest memory is mapped, not open; virtio-fs holds a
/// descriptor per inode the guest has looked up, so this is the cap on that).
pub const NOFILE_LIMIT: u64 = 65_536;
/// Tasks the jail's uid may have: a VMM has a thread per vCPU and device and a few for the
/// container session and attach clients; it never makes a process (no `fork` in its filters).
pub const NPROC_LIMIT: u64 = 512;

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("the jail needs root (CAP_SYS_ADMIN, CAP_SETUID): skiff-vmm runs as uid {0}")]
    NotRoot(u32),
    #[error("the jail's uid and gid must not be 0")]
    RootIds,
    #[error("cannot {step}: {source}")]
    Setup {
        step: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot drop privileges ({step}): {source}")]
    Privileges {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
    #[error(
        "cannot pivot_root into the jail: this host's / is the initramfs itself, which \
         pivot_root refuses (boot into a real root file system, or run without the jail: \
         SKIFF_JAIL_IDS=off)"
    )]
    InitramfsRoot,
    #[error(
        "a jailed skiff-vmm must be PID 1 of a PID namespace of its own, and this one is PID {0} \
         (skiff starts it so; by hand: unshare --pid --fork --kill-child skiff-vmm ...)"
    )]
    NotPidOne(i32),
    #[error("a thread started before the jail was complete (a skiff-vmm bug)")]
    ThreadTooEarly,
    #[error(
        "net[{0}]: a jailed VMM has a network namespace of its own; give the tap as an inherited \
         descriptor (\"fd\"), not by name"
    )]
    NamedTap(usize),
}

fn setup(step: impl Into<String>) -> impl FnOnce(io::Error) -> JailError {
    let step = step.into();
    move |source| JailError::Setup { step, source }
}

/// Where and as whom a VMM is jailed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    pub uid: u32,
    pub gid: u32,
    /// An empty directory (created if missing) that becomes the VMM's `/`.
    pub dir: PathBuf,
    /// Inherited descriptors kept open besides stdio and the taps.
    pub keep_fds: Vec<i32>,
}

/// A path the jailed VMM still opens, bound at the same path inside the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub path: PathBuf,
    pub read_only: bool,
}

/// Whether [`Jail::unshare`] ran: the process is being jailed.
static JAILED: OnceLock<()> = OnceLock::new();
/// The jail's ids once [`Jail::confine`] is done (the namespace's 0 in a user namespace of its
/// own): threads, all started from then on, drop to them.
static CREDENTIALS: OnceLock<(u32, u32)> = OnceLock::new();

/// A thread start put off until the jail is complete.
type Start = Box<dyn FnOnce() -> io::Result<()> + Send>;
static PUT_OFF: Mutex<Vec<Start>> = Mutex::new(Vec::new());

/// Runs `start` (which starts a thread) now, or, while the process is being jailed (between
/// [`Jail::unshare`] and [`Jail::confine`], when it must keep a single thread), in
/// [`Jail::confine`], which fails if `start` does.
pub fn start_thread_when_confined(
    start: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<()> {
    let mut put_off = PUT_OFF.lock().unwrap_or_else(|p| p.into_inner());
    if active() && CREDENTIALS.get().is_none() {
        put_off.push(Box::new(start));
        return Ok(());
    }
    drop(put_off);
    start()
}

/// Marks the process as being jailed without the rest of [`Jail::unshare`] (tests, in a child
/// process of their own).
#[cfg(test)]
pub(crate) fn mark_jailed() {
    let _ = JAILED.set(());
}

/// Whether this process is jailed (its mounts then go with its namespace; nothing to undo).
pub fn active() -> bool {
    JAILED.get().is_some()
}

/// Gives the calling thread its jailed credentials when the process is jailed: see
/// [`privileges`]. Called by each thread as it starts, before its seccomp filter.
pub fn restrict_thread(kind: ThreadKind) -> Result<(), JailError> {
    let Some(&(uid, gid)) = CREDENTIALS.get() else {
        if active() {
            // It would keep root's rights, and the user namespace needs a single thread.
            return Err(JailError::ThreadTooEarly);
        }
        return Ok(());
    };
    let creds = match kind {
        ThreadKind::FsWorker => ThreadCredentials::fs_worker(uid, gid),
        _ => ThreadCredentials::unprivileged(uid, gid),
    };
    creds.apply_to_this_thread()
}

impl Jail {
    /// Step 1 (see the module): namespaces, descriptors, limits. `taps` are the inherited tap
    /// descriptors the spec names; must run while the process has a single thread.
    pub fn unshare(&self, taps: &[i32]) -> Result<(), JailError> {
        // SAFETY: getters without arguments.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(JailError::NotRoot(euid));
        }
        if self.uid == 0 || self.gid == 0 {
            return Err(JailError::RootIds);
        }
        // SAFETY: a getter without arguments.
        let pid = unsafe { libc::getpid() };
        if pid != 1 {
            return Err(JailError::NotPidOne(pid));
        }
        let mut keep: Vec<i32> = taps.iter().chain(&self.keep_fds).copied().collect();
        close_descriptors_but(&mut keep).map_err(setup("close the inherited descriptors"))?;
        crate::rootfs::enter_private_mount_namespace()?;
        // SAFETY: unshare takes no pointers.
        if unsafe { libc::unshare(libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNET) }
            != 0
        {
            return Err(setup("make IPC, UTS and network namespaces")(
                io::Error::last_os_error(),
            ));
        }
        for (resource, limit) in [
            (libc::RLIMIT_NOFILE, NOFILE_LIMIT),
            (libc::RLIMIT_NPROC, NPROC_LIMIT),
            // Guest memory must never end up in a core file.
            (libc::RLIMIT_CORE, 0),
        ] {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: a valid rlimit that outlives the call.
            if unsafe { libc::setrlimit(resource, &rlimit) } != 0 {
                return Err(setup(format!("set resource limit {resource}"))(
                    io::Error::last_os_error(),
                ));
            }
        }
        // Not dumpable: no core, no ptrace by the jail's uid, /proc/PID stays root's.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        let _ = JAILED.set(());
        Ok(())
    }

    /// The user namespace the jail's ids head (see [`idmap`]), when every directory in `served`
    /// can be idmapped, and none lies in another (an idmapped mount over the outer one would
    /// hide the inner one's own mount, a read-only bind say); else None, with a warning: the
    /// virtio-fs workers then hold their file capabilities as the host's root, confined by the
    /// mount namespace and their filter alone.
    pub fn user_namespace(&self, served: &[PathBuf]) -> Option<UserNamespace> {
        let fallback = "its virtio-fs workers keep their file capabilities as the host's root";
        if let Some((outer, inner)) = nested(served) {
            tracing::warn!(
                "jail: no user namespace, {} and {} are both served: {fallback}",
                outer.display(),
                inner.display()
            );
            return None;
        }
        let ns = match UserNamespace::new(self.uid, self.gid) {
            Ok(ns) => ns,
            Err(e) => {
                tracing::warn!("jail: no user namespace ({e}): {fallback}");
                return None;
            }
        };
        for dir in served {
            if let Err(e) = ns.supports(existing_ancestor(dir)) {
                tracing::warn!(
                    "jail: {} cannot be idmapped ({e}; tmpfs can since Linux 6.3): {fallback}",
                    dir.display()
                );
                return None;
            }
        }
        Some(ns)
    }

    /// Step 4 (see the module), after [`Jail::pivot`] and before any other thread starts:
    /// enters `userns` if there is one, and sets the ids every thread then drops to.
    pub fn confine(&self, userns: Option<&UserNamespace>) -> Result<(), JailError> {
        let ids = match userns {
            Some(ns) => {
                ns.enter()
                    .map_err(setup("enter the jail's user namespace"))?;
                (0, 0)
            }
            None => (self.uid, self.gid),
        };
        let put_off = {
            let mut put_off = PUT_OFF.lock().unwrap_or_else(|p| p.into_inner());
            let _ = CREDENTIALS.set(ids);
            std::mem::take(&mut *put_off)
        };
        for start in put_off {
            start().map_err(setup("start a device's worker thread"))?;
        }
        Ok(())
    }

    /// Step 3 (see the module): the jail directory becomes `/` with only `binds` in it, each
    /// path in `own` (sockets the VMM bound as root) passing to the jail's uid first.
    pub fn pivot(&self, binds: &[Bind], own: &[PathBuf]) -> Result<(), JailError> {
        for path in own {
            std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
                .map_err(setup(format!("give {} to the jail's uid", path.display())))?;
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(setup(format!("create {}", self.dir.display())))?;
        mount(
            Some(c"tmpfs"),
            &self.dir,
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(c"size=1m,mode=0755"),
        )
        .map_err(setup(format!("mount a tmpfs on {}", self.dir.display())))?;
        for bind in binds {
            bind_into(&self.dir, bind)?;
        }
        // The file server names its own descriptors by path for xattrs (`getxattr` cannot take
        // an O_PATH descriptor): /proc/self/fd, this process's table alone, and nothing else of
        // /proc.
        let fds = Bind {
            path: PathBuf::from("/proc/self/fd"),
            read_only: true,
        };
        bind_into(&self.dir, &fds)?;
        std::env::set_current_dir(&self.dir)
            .map_err(setup(format!("enter {}", self.dir.display())))?;
        // pivot_root(".", "."): the old root ends up under the new one, detached right after.
        // SAFETY: NUL-terminated literals.
        if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } != 0 {
            let err = io::Error::last_os_error();
            // A chroot instead would leave the old root reachable through descriptors opened
            // before (the file server's /proc/self/fd): refused rather than weakened.
            if err.raw_os_error() == Some(libc::EINVAL) && root_is_initramfs() {
                return Err(JailError::InitramfsRoot);
            }
            return Err(setup("pivot_root into the jail")(err));
        }
        // SAFETY: a NUL-terminated literal.
        if unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(setup("detach the old root")(io::Error::last_os_error()));
        }
        std::env::set_current_dir("/").map_err(setup("enter the jail's /"))?;
        let flags = libc::MS_BIND
            | libc::MS_REMOUNT
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC;
        mount(None, Path::new("/"), None, flags, None)
            .map_err(setup("make the jail's / read-only"))?;
        Ok(())
    }
}

/// Two of `dirs` of which the first holds the second or is the same directory.
fn nested(dirs: &[PathBuf]) -> Option<(PathBuf, PathBuf)> {
    let resolved: Vec<PathBuf> = dirs.iter().map(|d| resolve(d)).collect();
    for (i, a) in resolved.iter().enumerate() {
        for b in &resolved[i + 1..] {
            if b.starts_with(a) {
                return Some((a.clone(), b.clone()));
            }
            if a.starts_with(b) {
                return Some((b.clone(), a.clone()));
            }
        }
    }
    None
}

/// `dir` with symlinks resolved, as far as it exists (the rest, still to be made, as given).
fn resolve(dir: &Path) -> PathBuf {
    let existing = existing_ancestor(dir);
    let rest = dir.strip_prefix(existing).unwrap_or(Path::new(""));
    std::fs::canonicalize(existing)
        .unwrap_or_else(|_| existing.to_path_buf())
        .join(rest)
}

/// The nearest directory of `dir` (itself included) that exists.
fn existing_ancestor(dir: &Path) -> &Path {
    dir.ancestors()
        .find(|d| d.is_dir())
        .unwrap_or(Path::new("/"))
}

/// Whether `/` is the kernel's initial root (rootfs), which has no parent mount.
fn root_is_initramfs() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|info| {
            let root = info.lines().find(|l| l.split(' ').nth(4) == Some("/"))?;
            Some(root.split(" - ").nth(1)?.starts_with("rootfs "))
        })
        .unwrap_or(false)
}

/// Binds `bind.path` at the same path under `root` (a directory or a file, created empty in the
/// tmpfs with its parents), read-only if asked.
fn bind_into(root: &Path, bind: &Bind) -> Result<(), JailError> {
    let source = &bind.path;
    let relative = source.strip_prefix("/").unwrap_or(source);
    let target = root.join(relative);
    let meta = std::fs::metadata(source).map_err(setup(format!("stat {}", source.display())))?;
    if meta.is_dir() {
        std::fs::create_dir_all(&target)
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(setup(format!("create {}", parent.display())))?;
        }
        std::fs::File::create(&target).map(drop)
    }
    .map_err(setup(format!("create {}", target.display())))?;
    let what = format!("bind {} into the jail", source.display());
    mount(Some(&c_path(source)?), &target, None, libc::MS_BIND, None).map_err(setup(&what))?;
    if bind.read_only {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        mount(None, &target, None, flags, None).map_err(setup(&what))?;
    }
    Ok(())
}

fn c_path(path: &Path) -> Result<CString, JailError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        setup(format!("use {}", path.display()))(io::Error::from(io::ErrorKind::InvalidInput))
    })
}

fn mount(
    source: Option<&std::ffi::CStr>,
    target: &Path,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
    data: Option<&std::ffi::CStr>,
) -> io::Result<()> {
    let target = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let ptr = |s: Option<&std::ffi::CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: NUL-terminated strings or null where mount(2) allows null, all outliving the call.
    let rc = unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every descriptor above stderr except `keep` (sorted in place; no allocation, so a
/// forked child may call it).
fn close_descriptors_but(keep: &mut [i32]) -> io::Result<()> {
    keep.sort_unstable();
    let mut from = 3u32;
    let kept = keep.iter().filter_map(|&fd| u32::try_from(fd).ok());
    for fd in kept.chain([u32::MAX]) {
        if fd > from {
            // SAFETY: close_range takes integers; closing descriptors nothing else owns yet
            // (this runs first thing, before the VMM opens anything it keeps).
            if unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        from = from.max(fd.saturating_add(1));
    }
    Ok(())
}
