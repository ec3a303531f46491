//! The `/etc` files provided for real, as guest-init does it in the VM: a staging tmpfs outside
//! the root, a chroot into the root, bind mounts through `/proc/self/fd`. Runs as a child copy of
//! this test binary in a private mount namespace (`unshare --mount`), so every mount goes with it;
//! the files it creates are in a temporary directory. Skipped when not root or without `unshare`.

use skiff_guest_init::etc_files::{EtcFiles, Staging};
use skiff_guest_init::protocol::GuestNetwork;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT_VAR: &str = "SKIFF_ETC_TEST_DIR";

fn files() -> EtcFiles {
    let network = GuestNetwork {
        dns: vec!["10.88.0.1".into()],
        ..GuestNetwork::default()
    };
    EtcFiles::new(&network, Some("box"), &["10.88.0.2".parse().unwrap()]).unwrap()
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

#[test]
fn etc_files_are_bind_mounted_over_the_images_files() {
    // SAFETY: geteuid(2) only reads.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skip: needs root for mounts");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::write(root.join("etc/hosts"), "image hosts\n").unwrap();
    // The image's resolv.conf is a link into a directory that is empty at run time.
    std::os::unix::fs::symlink("../run/resolv.conf", root.join("etc/resolv.conf")).unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = match Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([
            "--exact",
            "in_a_mount_namespace",
            "--ignored",
            "--nocapture",
        ])
        .env(ROOT_VAR, dir.path())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skip: cannot run unshare: {e}");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("unshare failed") {
        eprintln!("skip: {stderr}");
        return;
    }
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "child failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The mounts went with the namespace; the image's file is as it was, the missing targets
    // exist (empty), and nothing was written into them.
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hosts")).unwrap(),
        "image hosts\n"
    );
    assert_eq!(std::fs::read(root.join("etc/hostname")).unwrap(), b"");
    assert_eq!(std::fs::read(root.join("run/resolv.conf")).unwrap(), b"");
    assert!(std::fs::read_dir(dir.path().join("staging"))
        .unwrap()
        .next()
        .is_none());
}

/// The child's half: run by the test above only.
#[test]
#[ignore = "run by etc_files_are_bind_mounted_over_the_images_files in a mount namespace"]
fn in_a_mount_namespace() {
    let dir = PathBuf::from(std::env::var_os(ROOT_VAR).expect("run by the parent test"));
    let root = dir.join("root");
    let staging = Staging::prepare(&c_path(&dir.join("staging"))).unwrap();
    // SAFETY: chroot and chdir with valid paths, in this child process of its own.
    unsafe {
        assert_eq!(libc::chroot(c_path(&root).as_ptr()), 0);
        assert_eq!(libc::chdir(c"/".as_ptr()), 0);
        assert_eq!(
            libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                0,
                std::ptr::null()
            ),
            0
        );
    }
    let files = files();
    staging.provide(&files, Path::new("/etc")).unwrap();
    drop(staging);
    let read = |p: &str| std::fs::read_to_string(p).unwrap();
    assert_eq!(read("/etc/hosts"), files.hosts);
    assert!(read("/etc/hosts").ends_with("10.88.0.2\tbox\n"));
    assert_eq!(read("/etc/hostname"), "box\n");
    assert_eq!(read("/etc/resolv.conf"), "nameserver 10.88.0.1\n");
    // Writable, as Docker's are, without touching the image's file.
    std::fs::write("/etc/hosts", "edited\n").unwrap();
    assert_eq!(read("/etc/hosts"), "edited\n");
    // Unmounted, the image's own file shows again, unchanged.
    // SAFETY: umount2 of a valid path.
    assert_eq!(unsafe { libc::umount2(c"/etc/hosts".as_ptr(), 0) }, 0);
    assert_eq!(read("/etc/hosts"), "image hosts\n");
}
