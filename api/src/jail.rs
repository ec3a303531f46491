//! The uids (and equal gids) jailed VMMs run as: a block of [`BLOCK`] per running VMM, from a
//! configured range, leased through a lock file per block under the state root. The VMM runs as
//! the block's first id, and its user namespace maps the guest's ids 0–65535 onto the block (see
//! skiff-vmm's `jail::idmap`). The lock's descriptor goes to the VMM, which keeps it for its life
//! (`--jail-keep-fd`), so a block is free again exactly when its VMM has ended, whoever started it
//! (skiffd, before or after a restart, or `skiff run`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Ids a VMM takes: its user namespace maps the guest's 0..65535 onto them.
pub const BLOCK: u32 = 65_536;

/// The default range: far above any user's uid and the usual subordinate ranges, 16384 blocks.
pub const DEFAULT_IDS: JailIds = JailIds {
    first: 1_000_000_000,
    count: BLOCK * 16_384,
};

/// The range of ids for jailed VMMs (`$SKIFF_JAIL_IDS`, `FIRST:COUNT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JailIds {
    pub first: u32,
    pub count: u32,
}

impl JailIds {
    /// Parses `FIRST:COUNT`; 0 is never in a range, which holds one block at least.
    pub fn parse(text: &str) -> Result<JailIds, String> {
        let bad = || {
            format!(
                "SKIFF_JAIL_IDS: want FIRST:COUNT with COUNT at least {BLOCK}, the ids of one VMM \
                 (e.g. 1000000000:1073741824), got {text:?}"
            )
        };
        let (first, count) = text.split_once(':').ok_or_else(bad)?;
        let first: u32 = first.trim().parse().map_err(|_| bad())?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if first == 0
            || count < BLOCK
            || first
                .checked_add(count - 1)
                .is_none_or(|last| last == u32::MAX)
        {
            return Err(bad());
        }
        Ok(JailIds { first, count })
    }

    /// Leases the lowest free block of the range; `root` is the state root.
    pub fn lease(&self, root: &Path) -> io::Result<JailLease> {
        let dir = root.join("jail");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)?;
        for uid in (0..self.count / BLOCK).map(|block| self.first + block * BLOCK) {
            let lock = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(dir.join(uid.to_string()))?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(JailLease { uid, lock });
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(err);
            }
        }
        Err(io::Error::other(format!(
            "every jail block of uids {}..{} is in use (SKIFF_JAIL_IDS names the range)",
            self.first,
            u64::from(self.first) + u64::from(self.count)
        )))
    }
}

/// The lock's descriptor number in the VMM (above every tap's).
pub const LOCK_FD: i32 = 32;

/// A leased block, by its first uid: its lock, held while this lives and by the VMM that
/// inherits it.
#[derive(Debug)]
pub struct JailLease {
    pub uid: u32,
    pub lock: File,
}

impl JailLease {
    /// skiff-vmm's flags for this jail, with `dir` as its root (an empty directory: the VMM
    /// mounts its own tmpfs there); the lock must be inherited as [`LOCK_FD`].
    pub fn vmm_args(&self, dir: &Path) -> Vec<std::ffi::OsString> {
        let uid = self.uid.to_string();
        ["--jail-uid", &uid, "--jail-gid", &uid, "--jail-dir"]
            .iter()
            .map(Into::into)
            .chain([dir.as_os_str().to_owned()])
            .chain(["--jail-keep-fd".into(), LOCK_FD.to_string().into()])
            .collect()
    }

    /// Gives `path` (a directory the jailed VMM writes in) to the leased uid.
    pub fn give(&self, path: &Path) -> io::Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.uid))
    }
}

/// Runs `spawn`, which starts one process (a jailed VMM), so that this process is PID 1 of a
/// new PID namespace, as a jailed VMM must be: `spawn` runs on a thread of its own after
/// `unshare(CLONE_NEWPID)`, which places that thread's next child in the new namespace and goes
/// away with the thread. The process is still this one's child, under its host PID (which
/// `spawn`'s handle holds); nothing else can ever join its namespace.
pub fn in_new_pid_namespace<T: Send>(
    spawn: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|scope| {
        let spawner = scope.spawn(|| {
            // SAFETY: unshare takes no pointers; CLONE_NEWPID changes only where this thread's
            // children are made.
            if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
                return Err(io::Error::last_os_error());
            }
            spawn()
        });
        spawner
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `spawn`, which starts a VMM: in a new PID namespace (see [`in_new_pid_namespace`]) when
/// the VMM is `jailed`, as a jailed VMM must start, else here.
pub fn spawn_vmm<T: Send>(
    jailed: bool,
    spawn: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    if jailed {
        in_new_pid_namespace(spawn)
    } else {
        spawn()
    }
}

/// The most descriptors [`inherit_on_exec`] places.
const MAX_INHERITED: usize = 16;

/// Makes the child of `command` inherit each `(descriptor, number)` pair's descriptor at that
/// number (whatever numbers the descriptors have here, even each other's targets).
pub fn inherit_on_exec(
    command: &mut std::process::Command,
    pairs: &[(std::os::fd::RawFd, std::os::fd::RawFd)],
) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    if pairs.len() > MAX_INHERITED {
        return Err(io::Error::other(format!(
            "{} descriptors to pass, at most {MAX_INHERITED}",
            pairs.len()
        )));
    }
    let mut fixed = [(-1, -1); MAX_INHERITED];
    fixed[..pairs.len()].copy_from_slice(pairs);
    let count = pairs.len();
    let above = pairs.iter().map(|&(_, to)| to).max().unwrap_or(0) + 1;
    // SAFETY: the closure runs in the child between fork and exec and calls only fcntl and
    // dup2, which are async-signal-safe, on a fixed array (no allocation); the descriptors stay
    // open in the parent until the spawn returns.
    unsafe {
        command.pre_exec(move || {
            // First above every target number, so that none is overwritten before it is moved
            // (one may sit on another's target), then into place; the high copies close at
            // exec, dup2's new descriptors stay open.
            let mut high = [-1; MAX_INHERITED];
            for i in 0..count {
                high[i] = libc::fcntl(fixed[i].0, libc::F_DUPFD_CLOEXEC, above);
                if high[i] < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for i in 0..count {
                if libc::dup2(high[i], fixed[i].1) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_spawned_in_a_new_pid_namespace_is_its_pid_1() {
        // SAFETY: a getter without arguments.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let script = "echo $$; readlink /proc/self/ns/pid";
        let run = || {
            let mut command = std::process::Command::new("sh");
            command
                .args(["-c", script])
                .stdout(std::process::Stdio::piped());
            let child = in_new_pid_namespace(|| command.spawn()).expect("spawn");
            assert_ne!(child.id(), 1, "the handle holds the host PID");
            let out = child.wait_with_output().expect("wait");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let (pid, namespace) = text.trim().split_once('\n').expect("two lines");
            (pid.to_string(), namespace.to_string())
        };
        let ours = std::fs::read_link("/proc/self/ns/pid").expect("our namespace");
        let ours = ours.display().to_string();
        let (pid, first) = run();
        assert_eq!(pid, "1");
        assert_ne!(first, ours);
        // Again: the first spawning thread's namespace went with it (a second unshare on the
        // same thread would fail).
        let (pid, second) = run();
        assert_eq!(pid, "1");
        assert_ne!(second, ours);
    }

    #[test]
    fn ranges_parse_and_refuse_nonsense() {
        assert_eq!(
            JailIds::parse("1000000000:65536"),
            Ok(JailIds {
                first: 1_000_000_000,
                count: 65_536
            })
        );
        let too_few = ["70000:10", "70000:65535"];
        for bad in [
            "",
            "5",
            "0:65536",
            "10:0",
            "x:1",
            "4294967000:65536",
            "-1:5",
        ] {
            assert!(JailIds::parse(bad).is_err(), "{bad}");
        }
        for bad in too_few {
            let err = JailIds::parse(bad).unwrap_err();
            assert!(err.contains("COUNT at least 65536"), "{err}");
        }
    }

    #[test]
    fn a_leased_uid_is_taken_until_its_lock_is_closed() {
        let root = tempfile::tempdir().unwrap();
        // Two blocks and some ids too few for a third.
        let ids = JailIds {
            first: 500_000,
            count: 2 * BLOCK + 100,
        };
        let a = ids.lease(root.path()).unwrap();
        let b = ids.lease(root.path()).unwrap();
        assert_eq!((a.uid, b.uid), (500_000, 565_536));
        let err = ids.lease(root.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("every jail block of uids 500000..631172 is in use"),
            "{err}"
        );
        // A descriptor inherited by another process keeps the lease: a dup stands in for it.
        let inherited = a.lock.try_clone().unwrap();
        drop(a);
        assert!(ids.lease(root.path()).is_err());
        drop(inherited);
        assert_eq!(ids.lease(root.path()).unwrap().uid, 500_000);
    }

    #[test]
    fn descriptors_land_on_their_numbers_even_when_they_swap() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| {
            std::fs::write(dir.path().join(name), name).unwrap();
            File::open(dir.path().join(name)).unwrap()
        };
        let (a, b) = (open("a"), open("b"));
        let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
        // a goes where b was and b where a was; a again on a number above both. Each number is
        // read back through /proc (a shell's `<&N` takes only one digit in dash).
        let third = fa.max(fb) + 7;
        let script = [fb, fa, third]
            .map(|n| format!("readlink /proc/self/fd/{n}"))
            .join("; ");
        let mut command = std::process::Command::new("sh");
        command.arg("-c").arg(script);
        inherit_on_exec(&mut command, &[(fa, fb), (fb, fa), (fa, third)]).unwrap();
        let out = command.output().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let expected = format!("{}\n{}\n{}\n", path("a"), path("b"), path("a"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }
}
