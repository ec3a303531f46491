//! Each thread's credentials in a jailed VMM, set by the thread itself when it starts (next to
//! its seccomp filter): uid and gid, capabilities, securebits and `no_new_privs` all belong to a
//! thread in Linux, so a process-wide change would miss threads started earlier and could not
//! give one kind of thread more than another.
//!
//! Every thread gets the jail's uid and gid as its real and saved ids, no supplementary groups,
//! an empty bounding set and no capabilities, except the virtio-fs workers. They write the
//! guest's owners and modes into their share, which takes [`FS_WORKER_CAPS`]; fuse-backend-rs
//! switches their effective uid and gid to the guest's caller for each creation and back to 0
//! after it, so their effective ids stay 0. In the jail's user namespace (see [`super::idmap`])
//! the jail's ids are that namespace's 0 and so are the workers' effective ids: the host's
//! jail uid, with capabilities over the namespace's ids alone. The securebits keep a uid change
//! from adding or removing capabilities and are locked, so uid 0 never brings more than those.

use std::io;

use super::JailError;

/// What a virtio-fs worker may do on its share's files (and nothing else): own them as the
/// guest says, read and write whatever mode they have, switch its ids to the guest's caller.
pub const FS_WORKER_CAPS: &[u32] = &[
    CAP_CHOWN,
    CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH,
    CAP_FOWNER,
    CAP_FSETID,
    CAP_SETGID,
    CAP_SETUID,
];

const CAP_CHOWN: u32 = 0;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_FOWNER: u32 = 3;
const CAP_FSETID: u32 = 4;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
/// Linux has 41 capabilities today; dropping from a bounding set past the last is EINVAL,
/// which the drop loop takes as its end.
const MAX_CAPS: u32 = 64;

/// securebits (linux/securebits.h): no capabilities from uid 0, none lost or gained by a uid
/// change, no ambient raise, each locked; `keep_caps` itself off and locked.
const SECUREBITS: libc::c_ulong = (1 << 0) // NOROOT
    | (1 << 1) // NOROOT_LOCKED
    | (1 << 2) // NO_SETUID_FIXUP
    | (1 << 3) // NO_SETUID_FIXUP_LOCKED
    | (1 << 5) // KEEP_CAPS_LOCKED
    | (1 << 6) // NO_CAP_AMBIENT_RAISE
    | (1 << 7); // NO_CAP_AMBIENT_RAISE_LOCKED

/// The ids and capability set of one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCredentials {
    pub uid: u32,
    pub gid: u32,
    /// Effective uid and gid: the jail's, or 0 for a virtio-fs worker.
    pub effective_root: bool,
    /// Capability bits kept (permitted and effective; the bounding set is the same).
    pub caps: u64,
}

impl ThreadCredentials {
    /// A thread with nothing: the jail's ids, no capabilities.
    pub fn unprivileged(uid: u32, gid: u32) -> ThreadCredentials {
        ThreadCredentials {
            uid,
            gid,
            effective_root: false,
            caps: 0,
        }
    }

    /// A virtio-fs worker: effective ids 0 with [`FS_WORKER_CAPS`].
    pub fn fs_worker(uid: u32, gid: u32) -> ThreadCredentials {
        ThreadCredentials {
            uid,
            gid,
            effective_root: true,
            caps: FS_WORKER_CAPS.iter().fold(0, |bits, cap| bits | (1 << cap)),
        }
    }

    /// Applies these credentials to the calling thread, for good. Needs a thread that still
    /// has CAP_SETPCAP, CAP_SETUID and CAP_SETGID (root's), so it is done once per thread.
    pub fn apply_to_this_thread(&self) -> Result<(), JailError> {
        let fail = |step: &'static str| JailError::Privileges {
            step,
            source: io::Error::last_os_error(),
        };
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, SECUREBITS, 0, 0, 0) } != 0 {
            return Err(fail("set the securebits"));
        }
        for cap in 0..MAX_CAPS {
            if self.caps & (1 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(fail("drop from the bounding set"));
            }
        }
        // SAFETY: prctl with integer arguments only.
        let clear_ambient = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if clear_ambient != 0 {
            return Err(fail("clear the ambient set"));
        }
        let (euid, egid) = if self.effective_root {
            (0, 0)
        } else {
            (self.uid, self.gid)
        };
        // Raw system calls: glibc's wrappers would change every thread of the process.
        // SAFETY: setgroups reads no memory for an empty list; setresgid and setresuid take
        // integers. The order keeps CAP_SETGID until the gid is set.
        unsafe {
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0 {
                return Err(fail("clear the supplementary groups"));
            }
            if libc::syscall(libc::SYS_setresgid, self.gid, egid, self.gid) != 0 {
                return Err(fail("set the gid"));
            }
            if libc::syscall(libc::SYS_setresuid, self.uid, euid, self.uid) != 0 {
                return Err(fail("set the uid"));
            }
        }
        set_capabilities(self.caps).map_err(|source| JailError::Privileges {
            step: "set the capabilities",
            source,
        })?;
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(fail("set no_new_privs"));
        }
        Ok(())
    }
}

/// capset(2)'s header and one of its two data words (linux/capability.h, version 3).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the calling thread's permitted and effective sets to `bits`, its inheritable set empty.
fn set_capabilities(bits: u64) -> io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |w: u32| CapData {
        effective: w,
        permitted: w,
        inheritable: 0,
    };
    let data = [word(bits as u32), word((bits >> 32) as u32)];
    // SAFETY: the header and the two-word array have capset's v3 layout and outlive the call.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/thread-self/status`'s value for `key`.
    fn status(key: &str) -> String {
        let text = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    }

    /// Runs `creds` on a fresh thread (credentials never come back) and reads its status.
    fn on_a_thread(creds: ThreadCredentials) -> Option<[String; 6]> {
        std::thread::spawn(move || {
            creds.apply_to_this_thread().unwrap();
            Some(
                [
                    "Uid:",
                    "Gid:",
                    "CapEff:",
                    "CapPrm:",
                    "CapBnd:",
                    "NoNewPrivs:",
                ]
                .map(status),
            )
        })
        .join()
        .unwrap()
    }

    #[test]
    fn threads_get_the_jail_ids_and_only_the_fs_workers_keep_capabilities() {
        // SAFETY: a getter without arguments.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to change ids");
            return;
        }
        let [uid, gid, eff, prm, bnd, nnp] =
            on_a_thread(ThreadCredentials::unprivileged(4_000_123, 4_000_124)).unwrap();
        assert_eq!(uid, "4000123\t4000123\t4000123\t4000123");
        assert_eq!(gid, "4000124\t4000124\t4000124\t4000124");
        assert_eq!(
            [eff, prm, bnd, nnp],
            [
                "0000000000000000",
                "0000000000000000",
                "0000000000000000",
                "1"
            ]
            .map(String::from)
        );
        let [uid, gid, eff, prm, bnd, _] =
            on_a_thread(ThreadCredentials::fs_worker(4_000_123, 4_000_124)).unwrap();
        assert_eq!(uid, "4000123\t0\t4000123\t0");
        assert_eq!(gid, "4000124\t0\t4000124\t0");
        // CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH, FOWNER, FSETID, SETGID, SETUID.
        assert_eq!([eff, prm, bnd], ["00000000000000df"; 3].map(String::from));
        // The calling thread is untouched.
        assert_eq!(status("Uid:"), "0\t0\t0\t0");
    }

    #[test]
    fn an_fs_worker_writes_as_the_guest_says_and_uid_0_brings_nothing_more() {
        // SAFETY: a getter without arguments.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to change ids");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let outcome = std::thread::spawn(move || {
            ThreadCredentials::fs_worker(4_000_123, 4_000_123)
                .apply_to_this_thread()
                .unwrap();
            std::fs::write(&path, b"x").unwrap();
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            // SAFETY: a NUL-terminated path.
            let chown = unsafe { libc::chown(c.as_ptr(), 1234, 5678) };
            // Not held: mknod of a device, a mount.
            // SAFETY: NUL-terminated paths.
            let mknod = unsafe {
                let node = std::ffi::CString::new(format!("{}.dev", c.to_str().unwrap())).unwrap();
                libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3))
            };
            let mknod_err = io::Error::last_os_error().raw_os_error();
            (chown, mknod, mknod_err)
        })
        .join()
        .unwrap();
        assert_eq!(outcome, (0, -1, Some(libc::EPERM)));
        let meta =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir.path().join("f")).unwrap());
        assert_eq!(meta, 1234);
    }
}
