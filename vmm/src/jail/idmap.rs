//! The jail's user namespace: the guest's ids 0–65535 are the host's `uid..uid + 65536`,
//! and every directory the VMM serves is an idmapped mount of that namespace, so the virtio-fs
//! workers' file capabilities are the namespace's, not the host's. On disk nothing changes: a
//! file the guest gives uid 1000 is owned by uid 1000, as without the namespace, because the
//! mount maps it back. A worker that got out of its shares would find every other file of the
//! host owned by ids its namespace does not have, over which its capabilities are void.
//!
//! Built in three moves, all while the VMM still has root's rights and one thread:
//! [`UserNamespace::new`] (a throwaway child process makes the namespace, whose ids this process
//! then maps), [`UserNamespace::supports`] / [`UserNamespace::idmap_in_place`] on each served
//! directory (`open_tree` + `mount_setattr(MOUNT_ATTR_IDMAP)` + `move_mount`, Linux 5.12), and
//! [`UserNamespace::enter`] once the jail is pivoted into. Linux lets only a single-threaded
//! process change its user namespace.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Ids the namespace maps: the guest's 0..65535, what images and guests use.
pub const IDS: u32 = 65_536;

/// linux/mount.h.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// mount_setattr(2)'s argument (linux/mount.h, `MOUNT_ATTR_SIZE_VER0`).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A user namespace mapping uids `0..IDS` to `uid..uid + IDS` and gids `0..IDS` to
/// `gid..gid + IDS`.
#[derive(Debug)]
pub struct UserNamespace {
    fd: OwnedFd,
    uid: u32,
    gid: u32,
}

impl UserNamespace {
    /// Makes the namespace: a child process unshares it and waits while this one (root) writes
    /// its id maps and opens it; the child then exits.
    pub fn new(uid: u32, gid: u32) -> io::Result<UserNamespace> {
        for first in [uid, gid] {
            if first == 0 || first.checked_add(IDS - 1).is_none() {
                return Err(io::Error::other(format!(
                    "id {first} cannot start a range of {IDS} ids"
                )));
            }
        }
        let (ready_read, ready_write) = pipe()?;
        let (go_read, go_write) = pipe()?;
        // SAFETY: the child calls only async-signal-safe functions (unshare, write, read,
        // _exit) on descriptors it inherited, and never returns into Rust code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: see the fork above.
            unsafe {
                let mut byte = 0u8;
                // The parent's ends: the read below ends when the parent closes its own.
                libc::close(ready_read.as_raw_fd());
                libc::close(go_write.as_raw_fd());
                // Its pid as /proc knows it: a jailed VMM is in a PID namespace of its own,
                // and its /proc is still the host's.
                let mut pid = [0u8; 16];
                let len = libc::readlink(c"/proc/self".as_ptr(), pid.as_mut_ptr().cast(), 16);
                if len > 0 && libc::unshare(libc::CLONE_NEWUSER) == 0 {
                    libc::write(ready_write.as_raw_fd(), pid.as_ptr().cast(), len as usize);
                    libc::close(ready_write.as_raw_fd());
                    libc::read(go_read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                }
                libc::_exit(0);
            }
        }
        drop(ready_write);
        drop(go_read);
        let made = (|| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::fs::File::from(ready_read), &mut text)?;
            let proc_pid: u32 = text.parse().map_err(|_| {
                io::Error::other("the child process could not make a user namespace")
            })?;
            for (file, first) in [("uid_map", uid), ("gid_map", gid)] {
                std::fs::write(
                    format!("/proc/{proc_pid}/{file}"),
                    format!("0 {first} {IDS}"),
                )?;
            }
            let fd = std::fs::File::open(format!("/proc/{proc_pid}/ns/user"))?;
            Ok(UserNamespace {
                fd: fd.into(),
                uid,
                gid,
            })
        })();
        drop(go_write);
        // SAFETY: waits for our own child; a null status pointer is allowed.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        made
    }

    /// Whether `dir`'s mount can be idmapped (not every file system can: tmpfs only since
    /// Linux 6.3); nothing is changed.
    pub fn supports(&self, dir: &Path) -> io::Result<()> {
        self.idmapped_clone(dir).map(drop)
    }

    /// Mounts an idmapped copy of `dir`'s mount (from `dir` down) over `dir` itself, in the
    /// calling thread's mount namespace: from then on, every path through `dir` is idmapped.
    pub fn idmap_in_place(&self, dir: &Path) -> io::Result<()> {
        let clone = self.idmapped_clone(dir)?;
        let target = c_path(dir)?;
        // SAFETY: move_mount takes a descriptor we own, an empty and a NUL-terminated path.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                clone.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn idmapped_clone(&self, dir: &Path) -> io::Result<OwnedFd> {
        let path = c_path(dir)?;
        // SAFETY: open_tree takes a NUL-terminated path and flags; the descriptor it returns
        // is owned from here on.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                path.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let clone = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: self.fd.as_raw_fd() as u64,
        };
        // SAFETY: the attribute struct has mount_setattr's layout and size and outlives the
        // call; the path is an empty literal.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                clone.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(clone)
    }

    /// Runs `mount` with the file-system ids of the namespace's 0, as the mounter of an overlay
    /// over idmapped layers must be: overlayfs does its own work in them (its work directory,
    /// copy-ups) as its mounter, and ids the namespace does not map cannot be written there.
    /// The capabilities stay (the securebit that would drop them is set meanwhile).
    pub fn as_mounter<T>(&self, mount: impl FnOnce() -> T) -> io::Result<T> {
        const NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
        // SAFETY: prctl with integer arguments only.
        let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
        if bits < 0 {
            return Err(io::Error::last_os_error());
        }
        let bits = bits as libc::c_ulong;
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits | NO_SETUID_FIXUP, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: setfsuid and setfsgid take integers and change this thread alone.
        let (uid, gid) = unsafe {
            (
                libc::setfsuid(self.uid) as u32,
                libc::setfsgid(self.gid) as u32,
            )
        };
        let out = mount();
        // SAFETY: as above, back to the ids they had.
        unsafe {
            libc::setfsuid(uid);
            libc::setfsgid(gid);
            libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0);
        }
        Ok(out)
    }

    /// Moves this process into the namespace as its 0 (the host's `uid` and `gid`), with every
    /// capability of the namespace and none of the host's. Needs a single-threaded process.
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: setns takes a descriptor we own and a flag.
        if unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: setgroups reads no memory for an empty list; setresgid and setresuid take
        // integers (raw calls: one thread, nothing to broadcast to).
        unsafe {
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
                || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn an_idmapped_clone_shows_the_namespace_ids_where_the_disk_has_the_guest_ones() {
        // SAFETY: a getter without arguments.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let ns = UserNamespace::new(3_000_000_000, 3_000_000_000).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        std::os::unix::fs::lchown(&file, Some(1000), Some(7)).unwrap();
        let clone = match ns.idmapped_clone(dir.path()) {
            Ok(clone) => clone,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                eprintln!("skipped: {} cannot be idmapped here", dir.path().display());
                return;
            }
            Err(e) => panic!("idmapped clone: {e}"),
        };
        let through = format!("/proc/self/fd/{}/f", clone.as_raw_fd());
        let meta = std::fs::metadata(through).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (3_000_001_000, 3_000_000_007));
        assert_eq!(std::fs::metadata(&file).unwrap().uid(), 1000);
    }

    #[test]
    fn a_range_that_does_not_fit_is_refused() {
        assert!(UserNamespace::new(0, 5).is_err());
        assert!(UserNamespace::new(5, u32::MAX - 10).is_err());
    }
}
