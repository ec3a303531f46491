//! What PID 1 does to the VM itself: switch from the initramfs into the container root, mount the
//! pseudo file systems, name the host, bring up loopback, and power off.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// virtio-fs tag of the container root (served by the VMM).
pub const ROOTFS_TAG: &CStr = c"rootfs";
/// Where the container root is mounted in the initramfs before it becomes `/`.
const NEW_ROOT: &CStr = c"/newroot";
/// The VMM's power-off port: a one-byte write ends the VM in order.
pub const SHUTDOWN_PORT: u16 = 0x510;

#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct SystemError {
    pub(crate) what: String,
    pub(crate) source: io::Error,
}

fn check(rc: libc::c_int, what: impl FnOnce() -> String) -> Result<(), SystemError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(SystemError {
            what: what(),
            source: io::Error::last_os_error(),
        })
    }
}

pub(crate) fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: &CStr,
) -> Result<(), SystemError> {
    // SAFETY: all pointers are valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    check(rc, || {
        format!(
            "mount {} ({}) on {}",
            source.to_string_lossy(),
            fstype.to_string_lossy(),
            target.to_string_lossy()
        )
    })
}

fn mkdir(path: &CStr, mode: libc::mode_t) -> Result<(), SystemError> {
    // SAFETY: valid path string.
    if unsafe { libc::mkdir(path.as_ptr(), mode) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(SystemError {
        what: format!("mkdir {}", path.to_string_lossy()),
        source: err,
    })
}

/// Mounts the virtio-fs root and makes it `/` (what `switch_root` does: move the mount over the
/// initramfs root, then chroot into it).
pub fn switch_to_container_root() -> Result<(), SystemError> {
    mkdir(NEW_ROOT, 0o755)?;
    mount(ROOTFS_TAG, NEW_ROOT, c"virtiofs", 0, c"")?;
    // The running binary stays mapped; unlinking frees the initramfs copy of it.
    // SAFETY: valid path string; failure is harmless.
    unsafe { libc::unlink(c"/init".as_ptr()) };
    // SAFETY: valid path strings.
    unsafe {
        check(libc::chdir(NEW_ROOT.as_ptr()), || "chdir /newroot".into())?;
    }
    mount(c".", c"/", c"", libc::MS_MOVE, c"")?;
    // SAFETY: valid path strings.
    unsafe {
        check(libc::chroot(c".".as_ptr()), || {
            "chroot into the container root".into()
        })?;
        check(libc::chdir(c"/".as_ptr()), || "chdir /".into())?;
    }
    Ok(())
}

struct Mount {
    fstype: &'static CStr,
    target: &'static CStr,
    mode: libc::mode_t,
    flags: libc::c_ulong,
    data: &'static CStr,
}

const NOSUID_NODEV: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;
pub(crate) const NOSUID_NODEV_NOEXEC: libc::c_ulong = NOSUID_NODEV | libc::MS_NOEXEC;

/// In mount order. `/tmp` and `/run` are fresh tmpfs in every container.
const MOUNTS: &[Mount] = &[
    Mount {
        fstype: c"proc",
        target: c"/proc",
        mode: 0o555,
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
    },
    Mount {
        fstype: c"sysfs",
        target: c"/sys",
        mode: 0o555,
        flags: NOSUID_NODEV_NOEXEC,
        data: c"",
    },
    Mount {
        fstype: c"devtmpfs",
        target: c"/dev",
        mode: 0o755,
        flags: libc::MS_NOSUID,
        data: c"mode=0755",
    },
    Mount {
        fstype: c"devpts",
        target: c"/dev/pts",
        mode: 0o755,
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: c"newinstance,ptmxmode=0666,mode=0620,gid=5",
    },
    Mount {
        fstype: c"tmpfs",
        target: c"/dev/shm",
        mode: 0o1777,
        flags: NOSUID_NODEV,
        data: c"mode=1777",
    },
    Mount {
        fstype: c"tmpfs",
        target: c"/tmp",
        mode: 0o1777,
        flags: NOSUID_NODEV,
        data: c"mode=1777",
    },
    Mount {
        fstype: c"tmpfs",
        target: c"/run",
        mode: 0o755,
        flags: NOSUID_NODEV,
        data: c"mode=0755",
    },
];

/// Mounts /proc, /sys, /dev (+pts, shm), /tmp and /run in the container root, creating missing
/// mount points, and adds the /dev links programs expect.
pub fn mount_container_filesystems() -> Result<(), SystemError> {
    for m in MOUNTS {
        mkdir(m.target, m.mode)?;
        mount(m.fstype, m.target, m.fstype, m.flags, m.data)?;
    }
    for (link, target) in [
        (c"/dev/fd", c"/proc/self/fd"),
        (c"/dev/stdin", c"/proc/self/fd/0"),
        (c"/dev/stdout", c"/proc/self/fd/1"),
        (c"/dev/stderr", c"/proc/self/fd/2"),
    ] {
        // SAFETY: valid path strings; EEXIST is fine.
        unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) };
    }
    Ok(())
}

/// Makes sure descriptors 0, 1 and 2 are open (on the console, else /dev/null), so that pipes
/// created later never land on them.
pub fn ensure_standard_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        for path in [c"/dev/console", c"/dev/null"] {
            // SAFETY: valid path; the lowest free descriptor is the one we are filling.
            if unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) } >= 0 {
                break;
            }
        }
    }
}

pub fn set_hostname(name: &str) -> Result<(), SystemError> {
    // SAFETY: pointer and length describe a valid buffer.
    let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    check(rc, || format!("sethostname {name:?}"))
}

/// Brings up the loopback interface.
pub fn loopback_up() -> Result<(), SystemError> {
    let err = |what: &str| SystemError {
        what: what.into(),
        source: io::Error::last_os_error(),
    };
    // SAFETY: plain socket(2), owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err("socket for loopback setup"));
    }
    // SAFETY: fresh descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zero is valid; the name fits.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(err("SIOCGIFFLAGS lo"));
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(err("SIOCSIFFLAGS lo up"));
        }
    }
    Ok(())
}

/// Flushes file systems and ends the VM in order by writing `status` to the VMM's shutdown port.
/// Never returns: PID 1 must not exit (the kernel would panic).
///
/// Without port access (a kernel built without `CONFIG_X86_IOPL_IOPERM`) the VM is reset instead:
/// skiff-vmm reports that as a crash (exit 2), but the container's status has already gone to the
/// host over vsock. A halt would be worse: the VMM would wait forever.
pub fn power_off(status: u8) -> ! {
    // SAFETY: sync, ioperm and a port write; the port belongs to our VMM.
    unsafe {
        libc::sync();
        if libc::ioperm(libc::c_ulong::from(SHUTDOWN_PORT), 1, 1) == 0 {
            std::arch::asm!("out dx, al", in("dx") SHUTDOWN_PORT, in("al") status,
                options(nomem, nostack, preserves_flags));
        } else {
            eprintln!(
                "skiff-init: no access to the shutdown port ({}); resetting the VM instead",
                io::Error::last_os_error()
            );
        }
        libc::reboot(libc::RB_AUTOBOOT);
    }
    loop {
        // SAFETY: pause(2) just sleeps.
        unsafe { libc::pause() };
    }
}
