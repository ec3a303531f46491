//! The host side of a virtio-net device: a tap file descriptor in `IFF_TAP|IFF_NO_PI|IFF_VNET_HDR`
//! mode with the 12-byte `virtio_net_hdr_v1`, so every frame read or written carries the same
//! header the guest's driver uses and passes through unchanged.
//!
//! Two ways to get one: attach to a tap the host already created, by name (no CAP_NET_ADMIN needed
//! when the tap's owner is our user), or take over a tap descriptor our parent opened and left
//! open for us (it must not be close-on-exec in the parent at the exec of `skiff-vmm`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use libc::{c_int, c_uint};

use super::{Backend, VNET_HDR_LEN};

/// Longest interface name the kernel takes (IFNAMSIZ less the NUL).
pub const MAX_TAP_NAME_LEN: usize = libc::IFNAMSIZ - 1;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "tap {0:?}: not a valid interface name (1 to {MAX_TAP_NAME_LEN} bytes, no '/', ':', \
         whitespace, \".\" or \"..\")"
    )]
    Name(String),
    #[error("tap {0:?}: no such network interface (the host creates the tap before the VM)")]
    NoSuchTap(String),
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    #[error("tap {name:?}: cannot attach to it: {source}")]
    Attach {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("fd {0}: not an open file descriptor (the parent must leave it open across exec, without FD_CLOEXEC)")]
    FdNotOpen(RawFd),
    #[error("fd {0}: 0 to 2 are standard input, output and error, not a tap")]
    FdStdio(RawFd),
    #[error("fd {fd}: not an attached tun/tap descriptor: {source}")]
    NotTun {
        fd: RawFd,
        #[source]
        source: io::Error,
    },
    #[error("fd {fd}: the tap lacks {missing} (open it with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR)")]
    FdFlags { fd: RawFd, missing: &'static str },
    #[error("tap {name:?}: {what}: {source}")]
    Setup {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// An attached tap descriptor, non-blocking and close-on-exec, with 12-byte vnet headers and no
/// offloads until a driver accepts some.
#[derive(Debug)]
pub struct Tap {
    fd: OwnedFd,
    name: String,
}

impl Tap {
    /// Attaches to the existing tap `name`.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        check_name(name)?;
        let c_name = std::ffi::CString::new(name).map_err(|_| TapError::Name(name.into()))?;
        // SAFETY: `c_name` is a valid NUL-terminated string; the call only reads it.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            // Without this check TUNSETIFF would create a tap nobody set up (given the privilege).
            return Err(TapError::NoSuchTap(name.into()));
        }
        // SAFETY: a plain open(2) of a constant NUL-terminated path.
        let raw = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(TapError::OpenTun(io::Error::last_os_error()));
        }
        // SAFETY: `raw` was just opened by us and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = ifreq(name);
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: `req` is a valid ifreq the kernel reads (name, flags) and writes (name) in place.
        if unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETIFF,
                &mut req as *mut libc::ifreq,
            )
        } < 0
        {
            return Err(TapError::Attach {
                name: name.into(),
                source: io::Error::last_os_error(),
            });
        }
        Tap::configure(fd, name.to_string())
    }

    /// Takes over `fd`, a tap descriptor the parent process opened and left open for us.
    ///
    /// The descriptor is checked to be an attached tap with the right flags before it is taken
    /// over, so a wrong number is refused without closing whatever it happens to be.
    pub fn from_inherited_fd(fd: RawFd) -> Result<Tap, TapError> {
        if (0..=2).contains(&fd) {
            return Err(TapError::FdStdio(fd));
        }
        // SAFETY: F_GETFD only queries the descriptor table; any number is fine to ask about.
        if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(TapError::FdNotOpen(fd));
        }
        // SAFETY: `fd` is open (checked just above) and stays open for this borrow: nothing in
        // this process closes descriptors it does not own.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let flags = tap_flags(borrowed).map_err(|source| TapError::NotTun { fd, source })?;
        for (flag, missing) in [
            (libc::IFF_TAP, "IFF_TAP (it is a tun device)"),
            (libc::IFF_NO_PI, "IFF_NO_PI"),
            (libc::IFF_VNET_HDR, "IFF_VNET_HDR"),
        ] {
            if flags & flag == 0 {
                return Err(TapError::FdFlags { fd, missing });
            }
        }
        let name = interface_name(borrowed).unwrap_or_else(|_| format!("fd {fd}"));
        // SAFETY: `fd` is an open tun descriptor (checked above) that this process never opened
        // itself: it was inherited for this device, and the spec's validation refuses the same
        // number twice, so nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let setup = |what| {
            let name = name.clone();
            move |source| TapError::Setup { name, what, source }
        };
        set_fd_flag(&owned, libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC)
            .map_err(setup("cannot set close-on-exec"))?;
        set_fd_flag(&owned, libc::F_GETFL, libc::F_SETFL, libc::O_NONBLOCK)
            .map_err(setup("cannot make it non-blocking"))?;
        Tap::configure(owned, name)
    }

    /// Sets the vnet header size and clears the offloads (no driver has accepted any yet).
    fn configure(fd: OwnedFd, name: String) -> Result<Tap, TapError> {
        let size: c_int = VNET_HDR_LEN as c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer, which is valid.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size as *const c_int) } < 0
        {
            return Err(TapError::Setup {
                name,
                what: "cannot set the vnet header size",
                source: io::Error::last_os_error(),
            });
        }
        let tap = Tap { fd, name };
        tap.set_offload(0).map_err(|source| TapError::Setup {
            name: tap.name.clone(),
            what: "cannot clear its offloads",
            source,
        })?;
        Ok(tap)
    }

    /// The interface's name (for messages).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AsFd for Tap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Backend for Tap {
    fn offloads(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        format!("tap {}", self.name)
    }

    fn set_offload(&self, flags: c_uint) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                libc::c_ulong::from(flags),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The kernel's rules for interface names (`dev_valid_name`).
pub fn check_name(name: &str) -> Result<(), TapError> {
    let bad = name.is_empty()
        || name.len() > MAX_TAP_NAME_LEN
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if bad {
        return Err(TapError::Name(name.into()));
    }
    Ok(())
}

/// An ifreq naming `name` (which `check_name` has accepted: it fits with its NUL).
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (bytes, integers, pointers in a union); all zeroes is a
    // valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(MAX_TAP_NAME_LEN))
    {
        *dst = src as libc::c_char;
    }
    req
}

/// TUNGETIFF: the name and flags of the tun/tap device `fd` is attached to.
fn tun_get_iff(fd: BorrowedFd<'_>) -> io::Result<libc::ifreq> {
    let mut req = ifreq("");
    // SAFETY: TUNGETIFF writes an ifreq into `req`, which is valid and large enough.
    if unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNGETIFF,
            &mut req as *mut libc::ifreq,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(req)
}

/// The flags of the tun/tap device `fd` is attached to.
pub(super) fn tap_flags(fd: BorrowedFd<'_>) -> io::Result<c_int> {
    let req = tun_get_iff(fd)?;
    // SAFETY: TUNGETIFF filled in the flags member of the union.
    Ok(c_int::from(unsafe { req.ifr_ifru.ifru_flags }) & 0xffff)
}

/// The name of the interface `fd` is attached to.
fn interface_name(fd: BorrowedFd<'_>) -> io::Result<String> {
    let req = tun_get_iff(fd)?;
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Sets `flag` in the descriptor's F_GETFD/F_GETFL word.
fn set_fd_flag(fd: &OwnedFd, get: c_int, set: c_int, flag: c_int) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let old = unsafe { libc::fcntl(fd.as_raw_fd(), get) };
    if old < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), set, old | flag) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::IntoRawFd;

    use super::*;

    /// Runs `f` on a thread of its own in a new network namespace (its taps vanish with it, and
    /// the host's interfaces never see them); `None` where that is not permitted.
    fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: unshare only changes this thread's network namespace.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    eprintln!(
                        "skipped: no network namespace: {}",
                        io::Error::last_os_error()
                    );
                    return None;
                }
                if !std::path::Path::new("/dev/net/tun").exists() {
                    eprintln!("skipped: no /dev/net/tun");
                    return None;
                }
                Some(f())
            })
            .join()
            .expect("test thread")
        })
    }

    /// Creates a tun/tap named `name` with `flags` the way a host does.
    fn create(name: &str, flags: c_int) -> OwnedFd {
        // SAFETY: open(2) of a constant NUL-terminated path.
        let raw = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        assert!(raw >= 0, "{}", io::Error::last_os_error());
        // SAFETY: just opened, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut req = ifreq(name);
        req.ifr_ifru.ifru_flags = flags as i16;
        // SAFETY: a valid ifreq for TUNSETIFF.
        let rc = unsafe { libc::ioctl(raw, libc::TUNSETIFF, &mut req as *mut libc::ifreq) };
        assert_eq!(rc, 0, "TUNSETIFF: {}", io::Error::last_os_error());
        fd
    }

    fn vnet_hdr_size(fd: BorrowedFd<'_>) -> c_int {
        let mut size: c_int = 0;
        // SAFETY: TUNGETVNETHDRSZ writes one int.
        let rc = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNGETVNETHDRSZ,
                &mut size as *mut c_int,
            )
        };
        assert_eq!(rc, 0);
        size
    }

    fn fd_flags(fd: RawFd, get: c_int) -> c_int {
        // SAFETY: an fcntl query with no memory passed.
        unsafe { libc::fcntl(fd, get) }
    }

    #[test]
    fn real_taps_by_name_and_by_inherited_fd() {
        in_private_netns(|| {
            let vnet = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
            // The daemon's way: it creates the tap and hands the descriptor over.
            let raw = create("sk-fd0", vnet).into_raw_fd();
            let tap = Tap::from_inherited_fd(raw).expect("inherited tap");
            assert_eq!(tap.name(), "sk-fd0");
            assert_eq!(tap.as_fd().as_raw_fd(), raw);
            assert_eq!(vnet_hdr_size(tap.as_fd()), VNET_HDR_LEN as c_int);
            assert_ne!(fd_flags(raw, libc::F_GETFD) & libc::FD_CLOEXEC, 0);
            assert_ne!(fd_flags(raw, libc::F_GETFL) & libc::O_NONBLOCK, 0);
            let all = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
            tap.set_offload(all).expect("offloads");
            tap.set_offload(0).expect("no offloads");
            drop(tap);

            // Wrong descriptors are refused, and left open.
            let tun = create(
                "sk-tun0",
                libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR,
            );
            let err = Tap::from_inherited_fd(tun.as_raw_fd()).unwrap_err();
            assert!(
                matches!(err, TapError::FdFlags { missing, .. } if missing.starts_with("IFF_TAP"))
            );
            let plain = create("sk-plain0", libc::IFF_TAP | libc::IFF_NO_PI);
            let err = Tap::from_inherited_fd(plain.as_raw_fd()).unwrap_err();
            assert!(
                matches!(
                    err,
                    TapError::FdFlags {
                        missing: "IFF_VNET_HDR",
                        ..
                    }
                ),
                "{err}"
            );
            let file = std::fs::File::open("/dev/null").unwrap();
            let err = Tap::from_inherited_fd(file.as_raw_fd()).unwrap_err();
            assert!(matches!(err, TapError::NotTun { .. }), "{err}");
            assert!(fd_flags(file.as_raw_fd(), libc::F_GETFD) >= 0, "still open");
            let err = Tap::from_inherited_fd(1_000_000).unwrap_err();
            assert!(matches!(err, TapError::FdNotOpen(1_000_000)), "{err}");

            // The by-name way: a persistent tap the host made.
            let made = create("sk-name0", vnet);
            // SAFETY: TUNSETPERSIST takes its argument by value.
            let rc = unsafe { libc::ioctl(made.as_raw_fd(), libc::TUNSETPERSIST, 1) };
            assert_eq!(rc, 0, "TUNSETPERSIST: {}", io::Error::last_os_error());
            drop(made);
            let tap = Tap::open("sk-name0").expect("tap by name");
            assert_eq!(tap.name(), "sk-name0");
            assert_eq!(vnet_hdr_size(tap.as_fd()), VNET_HDR_LEN as c_int);
            assert_eq!(tap_flags(tap.as_fd()).unwrap() & vnet, vnet);
            assert!(matches!(Tap::open("sk-none0"), Err(TapError::NoSuchTap(_))));
            assert!(matches!(Tap::open("sk-tun0"), Err(TapError::Attach { .. })));
            assert!(matches!(Tap::open("a b"), Err(TapError::Name(_))));
        });
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        for good in ["t", "tap0", "skiff-012345678", "veth.1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\nb",
            "sixteen-chars-xx",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
