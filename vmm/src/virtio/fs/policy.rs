//! What a guest may not do to the host through a share, whatever it sends. `SharedDirFs` checks
//! these before `PassthroughFs` acts, so they hold however privileged the VMM is (as full root,
//! too): a missing capability is a second line, not the policy. Every mode and name here comes
//! from the guest, which is assumed hostile.

use std::ffi::CStr;
use std::io;

use super::Sharing;

fn refused() -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::EPERM))
}

/// Every name the guest gives for an entry (LOOKUP, CREATE, MKDIR, MKNOD, SYMLINK, LINK, RENAME,
/// UNLINK, RMDIR) must be one component of its directory: not empty, not `.` or `..`, no `/`,
/// since `PassthroughFs` hands names to `openat` relative to the parent's descriptor. It checks
/// them itself only while `do_import` is set (else it counts on its VFS layer), and lets `.` and
/// `..` through LOOKUP for NFS export, which skiff never offers the guest. Checked here whatever
/// the library's settings. EINVAL, as fuse-backend-rs answers.
pub(crate) fn one_component(name: &CStr) -> io::Result<()> {
    let name = name.to_bytes();
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    Ok(())
}

/// MKNOD may make regular files, FIFOs and sockets; anything else is refused. A device node the
/// guest left in a host directory (a volume, or the root's upper, which `skiff commit` turns into
/// an image) would open a host device to whoever reaches it; the guest's own devices live in its
/// devtmpfs.
pub(crate) fn mknod_allowed(mode: u32) -> io::Result<()> {
    match mode & libc::S_IFMT {
        // 0 is a regular file to mknod(2).
        0 | libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK => Ok(()),
        _ => refused(),
    }
}

/// SETXATTR and REMOVEXATTR. `trusted.*` belongs to privileged host software (overlayfs keeps
/// its opaque and redirect marks there) and `security.*` to the host's LSMs: not the guest's to
/// set. The exception is `security.capability` on an exclusive share: images carry file
/// capabilities (ping's cap_net_raw) and the root's upper is out of every host user's reach. In
/// a volume a file capability would work for host users too, so it is refused there.
pub(crate) fn xattr_allowed(name: &CStr, sharing: Sharing) -> io::Result<()> {
    let name = name.to_bytes();
    let allowed = if name.starts_with(b"trusted.") {
        false
    } else if name.starts_with(b"security.") {
        sharing == Sharing::Exclusive && name == b"security.capability"
    } else {
        true
    };
    if allowed {
        Ok(())
    } else {
        refused()
    }
}

/// The mode to give a new or chmod-ed inode: on a volume without the setuid bit, and without the
/// setgid bit unless it is a directory (where it only passes the group on to new entries). A
/// setuid-root program a guest left in a host directory would give root to any host user who
/// can run it. The request still succeeds with the bits dropped, as `install -m 4755` succeeds on
/// a `nosuid` mount whose exec ignores them; here they are not even stored, as the host's own
/// mounts of the volume need not be `nosuid`. An exclusive share keeps modes as they are.
pub(crate) fn inert_mode(mode: u32, is_dir: bool, sharing: Sharing) -> u32 {
    match sharing {
        Sharing::Exclusive => mode,
        Sharing::Shared if is_dir => mode & !libc::S_ISUID,
        Sharing::Shared => mode & !(libc::S_ISUID | libc::S_ISGID),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPERM: Option<i32> = Some(libc::EPERM);

    #[test]
    fn a_name_is_one_component_of_its_directory() {
        for ok in [c"a", c"...", c"a..b", c".hidden", c"with space"] {
            assert!(one_component(ok).is_ok(), "{ok:?}");
        }
        for bad in [c"", c".", c"..", c"../x", c"a/b", c"/", c"x/.."] {
            let err = one_component(bad).expect_err("refused");
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        }
    }

    #[test]
    fn mknod_makes_files_fifos_and_sockets_but_no_devices() {
        for kind in [0, libc::S_IFREG, libc::S_IFIFO, libc::S_IFSOCK] {
            assert!(mknod_allowed(kind | 0o644).is_ok(), "{kind:o}");
        }
        for kind in [
            libc::S_IFCHR,
            libc::S_IFBLK,
            libc::S_IFDIR,
            libc::S_IFLNK,
            0o030000,
        ] {
            let err = mknod_allowed(kind | 0o644).expect_err("refused");
            assert_eq!(err.raw_os_error(), EPERM, "{kind:o}");
        }
    }

    #[test]
    fn trusted_and_security_xattrs_are_refused_but_file_capabilities_in_the_root() {
        use Sharing::{Exclusive, Shared};
        let cases: [(&CStr, bool, bool); 8] = [
            // (name, allowed on Exclusive, allowed on Shared)
            (c"user.x", true, true),
            (c"system.posix_acl_access", true, true),
            (c"trusted.x", false, false),
            (c"trusted.overlay.opaque", false, false),
            (c"security.selinux", false, false),
            (c"security.capability", true, false),
            (c"security.capabilityx", false, false),
            // Prefixes match exactly: these are no trusted or security names.
            (c"trustedx", true, true),
        ];
        for (name, exclusive, shared) in cases {
            for (sharing, allowed) in [(Exclusive, exclusive), (Shared, shared)] {
                let got = xattr_allowed(name, sharing);
                assert_eq!(
                    got.map_err(|e| e.raw_os_error()),
                    if allowed { Ok(()) } else { Err(EPERM) },
                    "{name:?} on {sharing:?}"
                );
            }
        }
    }

    #[test]
    fn setuid_and_setgid_are_dropped_on_volumes_but_setgid_directories_stay() {
        use Sharing::{Exclusive, Shared};
        let file = libc::S_IFREG | 0o6755;
        assert_eq!(inert_mode(file, false, Shared), libc::S_IFREG | 0o755);
        assert_eq!(inert_mode(0o7777, false, Shared), 0o1777, "sticky stays");
        assert_eq!(inert_mode(0o6775, true, Shared), 0o2775);
        assert_eq!(inert_mode(file, false, Exclusive), file);
        assert_eq!(inert_mode(0o6775, true, Exclusive), 0o6775);
    }

    /// The policy as a guest meets it: FUSE requests to a device over a scratch directory.
    mod through_a_device {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        use std::path::Path;

        use fuse_backend_rs::abi::fuse_abi::{
            EntryOut, MkdirIn, MknodIn, Opcode, OpenIn, SetattrIn, SetattrValid, SetxattrIn,
        };
        use vm_memory::ByteValued;

        use crate::virtio::fs::tests::{call, create_with_mode, fuse_init, lookup, started_with};
        use crate::virtio::fs::Sharing::{self, Exclusive, Shared};
        use crate::virtio::test_driver::{guest_memory, DriverQueue};

        const EPERM: i32 = -libc::EPERM;
        /// A v2 `security.capability` (magic with the effective flag, then the permitted and
        /// inheritable words of each half): cap_net_raw, as ping carries it.
        const CAP_NET_RAW: [u8; 20] = {
            let mut cap = [0u8; 20];
            let magic = 0x0200_0001u32.to_le_bytes();
            let permitted = (1u32 << 13).to_le_bytes();
            let mut i = 0;
            while i < 4 {
                cap[i] = magic[i];
                cap[4 + i] = permitted[i];
                i += 1;
            }
            cap
        };

        fn with_name(body: &[u8], name: &str) -> Vec<u8> {
            let mut body = body.to_vec();
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body
        }

        fn nodeid(q: &mut DriverQueue, parent: u64, name: &str) -> u64 {
            lookup(q, parent, name).1.expect(name).nodeid
        }

        /// MKNOD or MKDIR: the error and, on success, the new node.
        fn make(q: &mut DriverQueue, opcode: Opcode, parent: u64, body: &[u8]) -> (i32, u64) {
            let (out, reply) = call(q, opcode, parent, body);
            let entry = (out.error == 0).then(|| {
                EntryOut::from_slice(&reply[..std::mem::size_of::<EntryOut>()])
                    .expect("entry")
                    .nodeid
            });
            (out.error, entry.unwrap_or(0))
        }

        fn mknod(q: &mut DriverQueue, name: &str, mode: u32, rdev: u32) -> i32 {
            let mknod = MknodIn {
                mode,
                rdev,
                ..Default::default()
            };
            make(q, Opcode::Mknod, 1, &with_name(mknod.as_slice(), name)).0
        }

        fn mkdir(q: &mut DriverQueue, parent: u64, name: &str, mode: u32) -> u64 {
            let mkdir = MkdirIn { mode, umask: 0 };
            let (error, nodeid) =
                make(q, Opcode::Mkdir, parent, &with_name(mkdir.as_slice(), name));
            assert_eq!(error, 0, "MKDIR {name}");
            nodeid
        }

        fn chmod(q: &mut DriverQueue, nodeid: u64, mode: u32) {
            let setattr = SetattrIn {
                valid: SetattrValid::MODE.bits(),
                mode,
                ..Default::default()
            };
            let (out, _) = call(q, Opcode::Setattr, nodeid, setattr.as_slice());
            assert_eq!(out.error, 0, "SETATTR {mode:o}");
        }

        fn setxattr(q: &mut DriverQueue, nodeid: u64, name: &str, value: &[u8]) -> i32 {
            let setxattr = SetxattrIn {
                size: value.len() as u32,
                flags: 0,
            };
            let mut body = with_name(setxattr.as_slice(), name);
            body.extend_from_slice(value);
            call(q, Opcode::Setxattr, nodeid, &body).0.error
        }

        fn removexattr(q: &mut DriverQueue, nodeid: u64, name: &str) -> i32 {
            call(q, Opcode::Removexattr, nodeid, &with_name(&[], name))
                .0
                .error
        }

        fn host_mode(path: &Path) -> u32 {
            let meta = std::fs::symlink_metadata(path).expect("on the host");
            meta.permissions().mode() & 0o7777
        }

        fn c_path(path: &Path) -> CString {
            CString::new(path.as_os_str().as_bytes()).expect("path")
        }

        /// `name`'s value on the host, if it has one.
        fn host_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
            let (path, name) = (c_path(path), CString::new(name).expect("name"));
            let mut value = [0u8; 256];
            // SAFETY: NUL-terminated strings and a buffer of the length passed, all outliving the call.
            let len = unsafe {
                libc::lgetxattr(path.as_ptr(), name.as_ptr(), value.as_mut_ptr().cast(), 256)
            };
            usize::try_from(len).ok().map(|len| value[..len].to_vec())
        }

        /// Sets `name` on the host directly: 0 or the negated errno, as FUSE answers.
        fn host_setxattr(path: &Path, name: &str, value: &[u8]) -> i32 {
            let (path, name) = (c_path(path), CString::new(name).expect("name"));
            // SAFETY: NUL-terminated strings and a buffer of the length passed, all outliving the call.
            let rc = unsafe {
                libc::lsetxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if rc == 0 {
                0
            } else {
                -std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
            }
        }

        #[test]
        fn names_that_would_leave_the_share_are_refused() {
            let top = tempfile::tempdir().expect("tempdir");
            let share = top.path().join("share");
            std::fs::create_dir_all(share.join("d/e")).expect("share");
            std::fs::write(top.path().join("outside"), b"host").expect("outside");
            std::fs::write(share.join("d/e/inside"), b"guest").expect("inside");
            let mem = guest_memory();
            let (_dev, [_, mut q]) = started_with(&share, &mem, Shared);
            fuse_init(&mut q);
            let d = nodeid(&mut q, 1, "d");
            let e = nodeid(&mut q, d, "e");
            let (out, _) = create_with_mode(&mut q, e, "../../../escaped", 0o644);
            assert_eq!(out.error, -libc::EINVAL, "CREATE");
            let mkdir = MkdirIn {
                mode: 0o755,
                umask: 0,
            };
            let (error, _) = make(
                &mut q,
                Opcode::Mkdir,
                e,
                &with_name(mkdir.as_slice(), "../../../made"),
            );
            assert_eq!(error, -libc::EINVAL, "MKDIR");
            assert!(!top.path().join("escaped").exists() && !top.path().join("made").exists());
            for name in [
                "../../../outside",
                "..",
                ".",
                "../..",
                "x/../../../../outside",
                "",
            ] {
                assert_eq!(lookup(&mut q, e, name).0, -libc::EINVAL, "LOOKUP {name:?}");
            }
            // One component still works.
            assert!(nodeid(&mut q, e, "inside") > 1);
        }

        #[test]
        fn device_nodes_are_refused_and_fifos_made_on_every_share() {
            for sharing in [Exclusive, Shared] {
                let dir = tempfile::tempdir().expect("tempdir");
                let mem = guest_memory();
                let (_dev, [_, mut q]) = started_with(dir.path(), &mem, sharing);
                fuse_init(&mut q);
                // Device numbers as FUSE encodes them: major << 8 | minor.
                let null = mknod(&mut q, "null", libc::S_IFCHR | 0o666, 1 << 8 | 3);
                let sda = mknod(&mut q, "sda", libc::S_IFBLK | 0o600, 8 << 8);
                assert_eq!((null, sda), (EPERM, EPERM), "{sharing:?}");
                assert!(!dir.path().join("null").exists(), "{sharing:?}");
                assert!(!dir.path().join("sda").exists(), "{sharing:?}");

                assert_eq!(mknod(&mut q, "fifo", libc::S_IFIFO | 0o644, 0), 0);
                let fifo = std::fs::symlink_metadata(dir.path().join("fifo")).expect("fifo");
                assert!(fifo.file_type().is_fifo(), "{sharing:?}");
            }
        }

        #[test]
        fn trusted_and_security_xattrs_are_refused_but_file_capabilities_in_the_root() {
            for sharing in [Exclusive, Shared] {
                let dir = tempfile::tempdir().expect("tempdir");
                let file = dir.path().join("f");
                std::fs::write(&file, b"").expect("f");
                let mem = guest_memory();
                let (_dev, [_, mut q]) = started_with(dir.path(), &mem, sharing);
                fuse_init(&mut q);
                let f = nodeid(&mut q, 1, "f");

                assert_eq!(setxattr(&mut q, f, "trusted.x", b"1"), EPERM, "{sharing:?}");
                assert_eq!(host_xattr(&file, "trusted.x"), None);
                assert_eq!(host_setxattr(&file, "trusted.y", b"host"), 0);
                assert_eq!(removexattr(&mut q, f, "trusted.y"), EPERM, "{sharing:?}");
                assert_eq!(host_xattr(&file, "trusted.y"), Some(b"host".to_vec()));
                let selinux = setxattr(&mut q, f, "security.selinux", b"system_u:object_r:x\0");
                assert_eq!(selinux, EPERM, "{sharing:?}");
                assert_eq!(host_xattr(&file, "security.selinux"), None);

                let cap = setxattr(&mut q, f, "security.capability", &CAP_NET_RAW);
                let on_host = host_xattr(&file, "security.capability");
                if sharing == Exclusive {
                    assert_eq!((cap, on_host), (0, Some(CAP_NET_RAW.to_vec())));
                } else {
                    assert_eq!((cap, on_host), (EPERM, None));
                }

                // user.* as root may set it on the host directly (tmpfs before Linux 6.6 may not).
                let expected = host_setxattr(&dir.path().join("."), "user.probe", b"1");
                assert_eq!(setxattr(&mut q, f, "user.x", b"1"), expected, "{sharing:?}");
                assert_eq!(removexattr(&mut q, f, "user.x"), expected, "{sharing:?}");
            }
        }

        /// The host's modes after CREATE 0o4755, MKNOD of a regular file 0o6755, SETATTR of that
        /// file to 0o6755, MKDIR 0o2775 then SETATTR to 0o6775, and MKDIR 0o2775 in that one.
        fn modes_on_the_host(sharing: Sharing) -> [u32; 5] {
            let dir = tempfile::tempdir().expect("tempdir");
            let host_mode = |name: &str| host_mode(&dir.path().join(name));
            let mem = guest_memory();
            let (_dev, [_, mut q]) = started_with(dir.path(), &mem, sharing);
            fuse_init(&mut q);
            let (out, _) = create_with_mode(&mut q, 1, "created", 0o4755);
            assert_eq!(out.error, 0, "CREATE");
            assert_eq!(mknod(&mut q, "made", libc::S_IFREG | 0o6755, 0), 0);
            let made = host_mode("made");
            // A guest may call a file a directory: the host knows better.
            let file = nodeid(&mut q, 1, "made");
            chmod(&mut q, file, libc::S_IFDIR | 0o6755);
            let d = mkdir(&mut q, 1, "d", 0o2775);
            chmod(&mut q, d, libc::S_IFDIR | 0o6775);
            mkdir(&mut q, d, "sub", 0o2775);
            [
                host_mode("created"),
                made,
                host_mode("made"),
                host_mode("d"),
                host_mode("d/sub"),
            ]
        }

        #[test]
        fn setuid_and_setgid_do_not_reach_a_volume_but_setgid_directories_do() {
            let modes = modes_on_the_host(Shared).map(|mode| format!("{mode:o}"));
            assert_eq!(modes, ["755", "755", "755", "2775", "2775"]);
        }

        /// A host file of mode `mode` opened by the guest with `flags`: its host mode after.
        fn mode_after_open(sharing: Sharing, mode: u32, flags: i32) -> u32 {
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("prog");
            std::fs::write(&file, b"#!/bin/sh\n").expect("prog");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let mem = guest_memory();
            let (_dev, [_, mut q]) = started_with(dir.path(), &mem, sharing);
            fuse_init(&mut q);
            let prog = nodeid(&mut q, 1, "prog");
            let open = OpenIn {
                flags: flags as u32,
                fuse_flags: 0,
            };
            let (out, _) = call(&mut q, Opcode::Open, prog, open.as_slice());
            assert_eq!(out.error, 0, "OPEN {flags:#x}");
            host_mode(&file)
        }

        #[test]
        fn a_setuid_file_in_a_volume_is_defused_before_the_guest_may_write_it() {
            // The guest could leave out a WRITE's kill flags: the bits go at OPEN.
            assert_eq!(mode_after_open(Shared, 0o4755, libc::O_WRONLY), 0o755);
            assert_eq!(mode_after_open(Shared, 0o6755, libc::O_RDWR), 0o755);
            assert_eq!(
                mode_after_open(Shared, 0o4755, libc::O_RDONLY | libc::O_TRUNC),
                0o755
            );
            // setgid without group exec is a lock mark, not a privilege: kept, as Linux does.
            assert_eq!(mode_after_open(Shared, 0o2644, libc::O_WRONLY), 0o2644);
            assert_eq!(mode_after_open(Shared, 0o4755, libc::O_RDONLY), 0o4755);
            assert_eq!(mode_after_open(Exclusive, 0o4755, libc::O_WRONLY), 0o4755);
        }

        #[test]
        fn modes_reach_the_root_unchanged() {
            let modes = modes_on_the_host(Exclusive).map(|mode| format!("{mode:o}"));
            assert_eq!(modes, ["4755", "6755", "6755", "6775", "2775"]);
        }
    }
}
