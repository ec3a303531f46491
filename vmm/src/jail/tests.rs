//! The jail's parts, each in a child process where it changes the process.
use super::*;
use std::os::fd::AsRawFd;

#[test]
fn every_descriptor_but_those_kept_is_closed() {
    // Opened before the fork; the child (of a threaded harness) must not allocate.
    let files: Vec<std::fs::File> = (0..6)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let fds: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
    let mut keep = [fds[4], fds[1], -1, 1];
    // SAFETY: the child only closes and queries descriptors, then _exits.
    let pid = unsafe { libc::fork() };
    // waitpid(-1) would take another test's child.
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let ok = close_descriptors_but(&mut keep).is_ok()
            && fds.iter().enumerate().all(|(i, &fd)| {
                // SAFETY: F_GETFD only queries.
                let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
                open == (i == 1 || i == 4)
            })
            // SAFETY: F_GETFD only queries.
            && unsafe { libc::fcntl(2, libc::F_GETFD) } >= 0;
        // SAFETY: _exit ends the forked child at once.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    drop(files);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status}"
    );
}

#[test]
fn root_ids_are_refused() {
    let jail = Jail {
        uid: 0,
        gid: 5,
        dir: "/nonexistent".into(),
        keep_fds: vec![],
    };
    // SAFETY: a getter without arguments.
    let err = jail.unshare(&[]).unwrap_err().to_string();
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(err, "the jail's uid and gid must not be 0");
    } else {
        assert!(err.starts_with("the jail needs root"), "{err}");
    }
}

#[test]
fn a_vmm_that_is_not_pid_1_of_its_own_namespace_is_refused_before_any_change() {
    // SAFETY: a getter without arguments.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let jail = Jail {
        uid: 1_000_000_001,
        gid: 1_000_000_001,
        dir: "/nonexistent".into(),
        keep_fds: vec![],
    };
    let err = jail.unshare(&[]).unwrap_err();
    assert!(
        matches!(err, JailError::NotPidOne(pid) if pid == std::process::id() as i32),
        "{err}"
    );
    assert!(err.to_string().contains("unshare --pid --fork"), "{err}");
    // Refused first: the test process still has its descriptors and namespaces.
    assert!(!super::active());
}

/// Runs `body` in a forked child and returns its exit status: for what jails the whole process.
/// The child may start threads (glibc's fork leaves the allocator usable); a panic is exit 101.
fn in_a_child(body: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the child runs `body` and _exits without returning into the test harness.
    let pid = unsafe { libc::fork() };
    // waitpid(-1) would take another test's child.
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: _exit ends the forked child at once.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    }
}

#[test]
fn a_jailed_file_server_serves_every_file_of_its_share_whatever_its_mode() {
    jailed_file_server(false);
}

#[test]
fn a_jailed_file_server_in_a_user_namespace_serves_its_idmapped_share_alike() {
    jailed_file_server(true);
}

/// A file server jailed as skiff-vmm jails it, with or without its user namespace, reads a
/// share's files of any mode, and executables' capabilities are asked for through /proc.
fn jailed_file_server(userns: bool) {
    use crate::virtio::fs::tests::{call, fuse_init, lookup, started_with};
    use crate::virtio::fs::Sharing;
    use crate::virtio::test_driver::guest_memory;
    use fuse_backend_rs::abi::fuse_abi::{GetxattrIn, Opcode, OpenIn, OpenOut, ReadIn};
    use std::os::unix::fs::PermissionsExt;
    use vm_memory::ByteValued;

    // SAFETY: a getter without arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to change ids");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jail_dir = tempfile::tempdir().unwrap();
    let upper = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    std::fs::write(dir.path().join("bin/busybox"), b"the program").unwrap();
    std::os::unix::fs::symlink("busybox", dir.path().join("bin/echo")).unwrap();
    std::fs::write(dir.path().join("shadow"), b"secret").unwrap();
    std::fs::set_permissions(
        dir.path().join("shadow"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let code = in_a_child(|| {
        // As skiff-vmm does it: a private mount namespace, the device (with root's rights), then
        // the jail with the share bound in (the old root and its /proc detached).
        if let Err(e) = crate::rootfs::enter_private_mount_namespace() {
            eprintln!("{e}");
            return 3;
        }
        mark_jailed();
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        let ns = match userns.then(|| UserNamespace::new(4_000_321, 4_000_321)) {
            None => None,
            Some(Ok(ns)) => Some(ns),
            Some(Err(e)) => {
                eprintln!("user namespace: {e}");
                return 7;
            }
        };
        if let Some(ns) = &ns {
            for d in [dir.path(), upper.path()] {
                if let Err(e) = ns.supports(d) {
                    eprintln!("skipped: {} cannot be idmapped here: {e}", d.display());
                    return 0;
                }
            }
        }
        let rootfs = match crate::rootfs::Rootfs::prepare(
            &[dir.path().to_path_buf()],
            Some(upper.path()),
            None,
            ns.as_ref(),
        ) {
            Ok(rootfs) => rootfs,
            Err(e) => {
                eprintln!("{e}");
                return 5;
            }
        };
        // The device is made with root's rights; its worker starts once the jail is complete.
        let mem = guest_memory();
        let (_dev, [_, mut q]) = started_with(rootfs.dir(), &mem, Sharing::Exclusive);
        let jail = Jail {
            uid: 4_000_321,
            gid: 4_000_321,
            dir: jail_dir.path().to_path_buf(),
            keep_fds: vec![],
        };
        let share = Bind {
            path: rootfs.dir().to_path_buf(),
            read_only: false,
        };
        if let Err(e) = jail
            .pivot(&[share], &[])
            .and_then(|()| jail.confine(ns.as_ref()))
        {
            eprintln!("{e}");
            return 4;
        }
        fuse_init(&mut q);
        let read_all = |q: &mut _, parent: u64, name: &str| -> Result<Vec<u8>, String> {
            let (error, entry) = lookup(q, parent, name);
            let node = entry.ok_or(format!("LOOKUP {name}: {error}"))?.nodeid;
            let open = OpenIn {
                flags: libc::O_RDONLY as u32,
                fuse_flags: 0,
            };
            let (out, body) = call(q, Opcode::Open, node, open.as_slice());
            if out.error != 0 {
                return Err(format!("OPEN {name}: {}", out.error));
            }
            let fh = OpenOut::from_slice(&body[..std::mem::size_of::<OpenOut>()])
                .ok_or("open reply")?
                .fh;
            let read = ReadIn {
                fh,
                size: 64,
                ..Default::default()
            };
            let (out, body) = call(q, Opcode::Read, node, read.as_slice());
            if out.error != 0 {
                return Err(format!("READ {name}: {}", out.error));
            }
            Ok(body)
        };
        let bin = match lookup(&mut q, 1, "bin") {
            (0, Some(entry)) => entry.nodeid,
            (error, _) => {
                eprintln!("LOOKUP bin: {error}");
                return 1;
            }
        };
        let echo = lookup(&mut q, bin, "echo");
        // An exec asks for security.capability: "none" (ENODATA), named through /proc/self/fd.
        let busybox = lookup(&mut q, bin, "busybox").1.map_or(0, |e| e.nodeid);
        let getxattr = GetxattrIn {
            size: 64,
            padding: 0,
        };
        let mut body = getxattr.as_slice().to_vec();
        body.extend_from_slice(b"security.capability\0");
        let (out, _) = call(&mut q, Opcode::Getxattr, busybox, &body);
        if out.error != -libc::ENODATA {
            eprintln!("GETXATTR: {}", out.error);
            return 6;
        }
        let results = [
            read_all(&mut q, bin, "busybox"),
            read_all(&mut q, 1, "shadow"),
        ];
        match (echo, results) {
            ((0, Some(_)), [Ok(program), Ok(secret)])
                if program == b"the program" && secret == b"secret" =>
            {
                0
            }
            (echo, results) => {
                eprintln!("echo {:?}, reads {results:?}", echo.0);
                2
            }
        }
    });
    assert_eq!(code, 0);
}

#[test]
fn served_directories_inside_one_another_are_found() {
    let top = tempfile::tempdir().unwrap();
    let [a, b, c] = ["a", "a/b", "c"].map(|d| top.path().join(d));
    for d in [&b, &c] {
        std::fs::create_dir_all(d).unwrap();
    }
    let link = top.path().join("link");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    assert_eq!(nested(&[a.clone(), c.clone()]), None);
    assert_eq!(
        nested(&[b.clone(), c.clone(), a.clone()]),
        Some((a.clone(), b.clone()))
    );
    // The same directory twice, once through a symlink.
    assert_eq!(nested(&[link, a.clone()]), Some((a.clone(), a.clone())));
    // One still to be made counts where it will be.
    let to_make = top.path().join("link/new");
    assert_eq!(nested(&[c.clone(), to_make]), None);
    assert_eq!(
        nested(&[top.path().join("link/b/new"), b.clone()]),
        Some((b, a.join("b/new")))
    );
}

#[test]
fn pid_1_of_a_pid_namespace_makes_its_user_namespace_and_enters_it() {
    // SAFETY: a getter without arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let code = in_a_child(|| {
        // SAFETY: unshare takes no pointers; the next child is PID 1 of the new namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            return 3;
        }
        in_a_child(|| {
            // SAFETY: a getter without arguments.
            if unsafe { libc::getpid() } != 1 {
                return 4;
            }
            let ns = match UserNamespace::new(3_000_000_000, 3_100_000_000) {
                Ok(ns) => ns,
                Err(e) => {
                    eprintln!("{e}");
                    return 5;
                }
            };
            if let Err(e) = ns.enter() {
                eprintln!("enter: {e}");
                return 6;
            }
            let map = |f| std::fs::read_to_string(f).unwrap_or_default();
            let maps = [map("/proc/self/uid_map"), map("/proc/self/gid_map")]
                .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "));
            // SAFETY: getters without arguments.
            let ids = unsafe { (libc::getuid(), libc::getgid()) };
            if maps == ["0 3000000000 65536", "0 3100000000 65536"] && ids == (0, 0) {
                0
            } else {
                eprintln!("{maps:?} {ids:?}");
                2
            }
        })
    });
    assert_eq!(code, 0);
}

#[test]
fn a_capped_upper_disk_is_idmapped_too_and_keeps_the_guest_s_owners() {
    use std::os::unix::fs::MetadataExt;
    const SKIPPED: i32 = 77;
    // SAFETY: a getter without arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    std::fs::create_dir(&layer).unwrap();
    std::fs::write(layer.join("from-image"), b"image").unwrap();
    let upper = tmp.path().join("rootfs");
    let image = tmp.path().join("rootfs.img");
    if let Err(e) = crate::loop_disk::create(&image, 32 << 20) {
        eprintln!("skipped: {e}");
        return;
    }
    let code = in_a_child(|| {
        if crate::rootfs::enter_private_mount_namespace().is_err() {
            return 3;
        }
        mark_jailed();
        let Ok(ns) = UserNamespace::new(4_000_321, 4_000_321) else {
            return 4;
        };
        if ns.supports(&layer).is_err() {
            return SKIPPED;
        }
        let rootfs = match crate::rootfs::Rootfs::prepare(
            std::slice::from_ref(&layer),
            Some(&upper),
            Some(&image),
            Some(&ns),
        ) {
            Ok(rootfs) => rootfs,
            Err(e) => {
                eprintln!("{e}");
                return 5;
            }
        };
        if let Err(e) = ns.enter() {
            eprintln!("enter: {e}");
            return 6;
        }
        // As the guest's root would, through the file server: a new file given to 1000:1001,
        // and a copy-up of the image's file.
        let file = rootfs.dir().join("mine");
        let made = std::fs::write(&file, b"x")
            .and_then(|()| std::os::unix::fs::chown(&file, Some(1000), Some(1001)))
            .and_then(|()| std::fs::write(rootfs.dir().join("from-image"), b"changed"));
        match (made, std::fs::metadata(&file)) {
            (Ok(()), Ok(meta)) if (meta.uid(), meta.gid()) == (1000, 1001) => 0,
            (made, meta) => {
                eprintln!("{made:?} {:?}", meta.map(|m| (m.uid(), m.gid())));
                2
            }
        }
    });
    if code == SKIPPED {
        eprintln!("skipped: {} cannot be idmapped here", layer.display());
        return;
    }
    assert_eq!(code, 0);
    // On the disk itself, mounted again: the guest's ids, not the namespace's.
    let check = tmp.path().join("check");
    std::fs::create_dir(&check).unwrap();
    let _disk = crate::loop_disk::DiskMount::mount(&image, &check).unwrap();
    let meta = std::fs::metadata(check.join("upper/mine")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1001));
    assert_eq!(
        std::fs::read(check.join("upper/from-image")).unwrap(),
        b"changed"
    );
}
