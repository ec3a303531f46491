//! The store and the files `skiff load` / `skiff save` touch, against hostile images and
//! hostile paths: every input is built here.

mod hostile;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use hostile::{oci_layout, Tar};
use serde_json::json;
use skiff_images::{Digest, ImageService};

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs `cmd` as nobody (65534) and says whether it succeeded.
fn as_nobody(cmd: &mut Command) -> bool {
    cmd.uid(65534)
        .gid(65534)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every directory of the store; none may be reachable by other users.
const STORE_DIRS: [&str; 7] = [
    "",
    "blobs",
    "blobs/sha256",
    "layers",
    "layers/sha256",
    "tmp",
    "locks",
];

#[tokio::test]
async fn store_is_private_to_its_owner() {
    let tmp = tempfile::tempdir().unwrap();
    // A store created by an older skiff: world-readable directories.
    let images = tmp.path().join("images");
    for d in STORE_DIRS {
        fs::create_dir_all(images.join(d)).unwrap();
        fs::set_permissions(images.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let id = fs::read("/usr/bin/id").unwrap();
    let layer = Tar::default()
        .dir("./", 0o777)
        .dir("bin", 0o755)
        .file("bin/id", 0o4755, &id)
        .finish();
    let layout = oci_layout(&tmp.path().join("layout"), &[&layer], json!({}));
    let svc = ImageService::open(&images).unwrap();
    svc.load(&layout).await.unwrap();

    for d in STORE_DIRS {
        let mode = fs::metadata(images.join(d)).unwrap().mode();
        assert_eq!(mode & 0o077, 0, "{d}: mode {mode:o}");
    }
    for blob in fs::read_dir(images.join("blobs/sha256")).unwrap() {
        let mode = blob.unwrap().metadata().unwrap().mode();
        assert_eq!(mode & 0o077, 0, "blob mode {mode:o}");
    }
    // The layer keeps the image's own modes (they are what the container sees)...
    let layer_dir = images.join("layers/sha256").join(Digest::of(&layer).hex());
    assert_eq!(
        fs::metadata(layer_dir.join("bin/id")).unwrap().mode() & 0o7777,
        0o4755
    );
    // ...but no other user can reach it.
    if is_root() {
        assert!(!as_nobody(&mut Command::new(layer_dir.join("bin/id"))));
        assert!(!as_nobody(
            Command::new("touch").arg(layer_dir.join("planted"))
        ));
        assert!(!layer_dir.join("planted").exists());
        assert!(!as_nobody(
            Command::new("ls").arg(images.join("blobs/sha256"))
        ));
    }
}

/// Pulls and loads killed mid-way leave data in tmp/: it goes when the store is next opened
/// with no writer at work, never from under one. Prune counts what it frees there.
#[test]
fn abandoned_temporary_data_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    let svc = ImageService::open(&images).unwrap();
    let leave_debris = || {
        fs::write(images.join("tmp/blob-killed"), vec![7u8; 1 << 20]).unwrap();
        fs::create_dir_all(images.join("tmp/layer-killed/usr")).unwrap();
        fs::write(images.join("tmp/layer-killed/usr/x"), vec![7u8; 1000]).unwrap();
    };
    leave_debris();
    let writer = svc.store().gc_lock(false).unwrap();
    ImageService::open(&images).unwrap();
    assert_eq!(fs::read_dir(images.join("tmp")).unwrap().count(), 2);
    drop(writer);
    ImageService::open(&images).unwrap();
    assert_eq!(fs::read_dir(images.join("tmp")).unwrap().count(), 0);

    leave_debris();
    let report = svc.prune().unwrap();
    assert_eq!(report.bytes_freed, (1 << 20) + 1000);
    assert_eq!(fs::read_dir(images.join("tmp")).unwrap().count(), 0);
}

/// An error with its causes, as the CLI prints it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    text
}

/// A store holding one small image, `localhost/layout:test`.
async fn store_with_image(dir: &Path) -> ImageService {
    let layer = Tar::default().file("hello", 0o644, b"hi\n").finish();
    let layout = oci_layout(&dir.join("layout"), &[&layer], json!({}));
    let svc = ImageService::open(&dir.join("images")).unwrap();
    svc.load(&layout).await.unwrap();
    svc
}

fn archive_names(bytes: &[u8]) -> Vec<String> {
    tar::Archive::new(bytes)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

const SAVED: &str = "localhost/layout:test";

/// Hole 6: `skiff save IMG PATH` writes FIFOs and devices as streams, follows symlinks to
/// what they point at, refuses directories and dangling links, and never replaces a
/// non-regular file.
#[tokio::test]
async fn save_never_replaces_what_is_not_a_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = store_with_image(tmp.path()).await;
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();

    let fifo = out.join("fifo");
    hostile::run("mkfifo", &[fifo.to_str().unwrap()]);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).unwrap())
    };
    svc.save(SAVED, &fifo).await.unwrap();
    let streamed = reader.join().unwrap();
    assert!(archive_names(&streamed).contains(&"index.json".to_string()));
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    let target = out.join("target.tar");
    fs::write(&target, b"old").unwrap();
    let link = out.join("link.tar");
    std::os::unix::fs::symlink("target.tar", &link).unwrap();
    svc.save(SAVED, &link).await.unwrap();
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&target).unwrap(), streamed);

    let dangling = out.join("dangling.tar");
    std::os::unix::fs::symlink("missing/nowhere.tar", &dangling).unwrap();
    assert!(svc.save(SAVED, &dangling).await.is_err());
    assert!(fs::symlink_metadata(&dangling)
        .unwrap()
        .file_type()
        .is_symlink());

    let dir = out.join("dir");
    fs::create_dir(&dir).unwrap();
    assert!(svc.save(SAVED, &dir).await.is_err());
    assert!(fs::metadata(&dir).unwrap().is_dir());

    if is_root() {
        // A private copy of /dev/null: the device node must survive.
        let null = out.join("null");
        hostile::run("mknod", &[null.to_str().unwrap(), "c", "1", "3"]);
        svc.save(SAVED, &null).await.unwrap();
        let m = fs::symlink_metadata(&null).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), fs::metadata("/dev/null").unwrap().rdev());
    }

    // A new path and a regular file are written whole.
    let fresh = out.join("fresh.tar");
    svc.save(SAVED, &fresh).await.unwrap();
    assert_eq!(fs::read(&fresh).unwrap(), streamed);
}

/// Hole 7: every file `skiff load` reads from a layout directory must be a regular file and
/// is capped like its counterpart inside an archive; a device or FIFO is refused (neither
/// eats memory nor hangs).
#[tokio::test]
async fn layout_files_must_be_small_regular_files() {
    let layer = Tar::default().file("hello", 0o644, b"hi\n").finish();
    let layer_hex = Digest::of(&layer).hex().to_string();
    let cases: [(&str, &str); 5] = [
        ("index.json", "zero"),
        ("index.json", "fifo"),
        ("index.json", "huge"),
        ("blob", "zero"),
        ("blob", "fifo"),
    ];
    for (file, sabotage) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let layout = oci_layout(&tmp.path().join("layout"), &[&layer], json!({}));
        let victim = match file {
            "index.json" => layout.join("index.json"),
            _ => layout.join("blobs/sha256").join(&layer_hex),
        };
        fs::remove_file(&victim).unwrap();
        match sabotage {
            "zero" => std::os::unix::fs::symlink("/dev/zero", &victim).unwrap(),
            "fifo" => hostile::run("mkfifo", &[victim.to_str().unwrap()]),
            _ => fs::write(&victim, vec![b' '; 5 << 20]).unwrap(),
        }
        let svc = ImageService::open(&tmp.path().join("images")).unwrap();
        let err = chain(&svc.load(&layout).await.unwrap_err());
        let expected = if sabotage == "huge" {
            "too large"
        } else {
            "not a regular file"
        };
        assert!(err.contains(expected), "{file} {sabotage}: {err}");
        assert!(svc.list().unwrap().is_empty());
    }
    // The archive itself: a device is refused, not read.
    let tmp = tempfile::tempdir().unwrap();
    let svc = ImageService::open(&tmp.path().join("images")).unwrap();
    assert!(svc.load(Path::new("/dev/zero")).await.is_err());
}

/// Hole 3 in archives: `skiff load` parses the archive's own tar with the same bounds on GNU
/// long names and PAX headers as layers.
#[tokio::test]
async fn archive_header_extensions_are_bounded() {
    for kind in [tar::EntryType::GNULongName, tar::EntryType::XHeader] {
        let tmp = tempfile::tempdir().unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_path("././@LongLink").unwrap();
        h.set_size(1 << 30);
        h.set_cksum();
        let archive = tmp.path().join("evil.tar");
        let mut bytes = h.as_bytes().to_vec();
        bytes.extend(vec![b'a'; 1 << 20]);
        fs::write(&archive, hostile::gzip(&bytes)).unwrap();
        let svc = ImageService::open(&tmp.path().join("images")).unwrap();
        let err = svc.load(&archive).await.unwrap_err();
        assert!(
            matches!(err, skiff_images::Error::LimitExceeded(_)),
            "{kind:?}: {err}"
        );
    }
}

/// A failed load takes back the blobs it imported (here: a big file that is no image).
#[tokio::test]
async fn failed_load_leaves_no_orphans() {
    let tmp = tempfile::tempdir().unwrap();
    let junk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let archive = tmp.path().join("junk.tar");
    fs::write(
        &archive,
        Tar::default().file("data.bin", 0o644, &junk).finish(),
    )
    .unwrap();
    let svc = ImageService::open(&tmp.path().join("images")).unwrap();
    assert!(svc.load(&archive).await.is_err());
    let left = fs::read_dir(tmp.path().join("images/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

/// A killed `skiff image unpack` leaves its work directory beside the target: the next unpack
/// into that parent removes it, but not one an unpack in progress holds, nor what a symlink
/// of that name points at.
#[tokio::test]
async fn abandoned_unpack_work_dirs_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = store_with_image(tmp.path()).await;
    let parent = tmp.path().join("out");
    let abandoned = parent.join(".skiff-unpack-killed");
    fs::create_dir_all(abandoned.join("usr/bin")).unwrap();
    fs::write(abandoned.join("usr/bin/x"), b"x").unwrap();
    let live = parent.join(".skiff-unpack-live");
    fs::create_dir(&live).unwrap();
    let live_dir = fs::File::open(&live).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(
        unsafe { libc::flock(live_dir.as_raw_fd(), libc::LOCK_EX) },
        0
    );
    let precious = tmp.path().join("precious");
    fs::create_dir(&precious).unwrap();
    std::os::unix::fs::symlink(&precious, parent.join(".skiff-unpack-link")).unwrap();

    svc.unpack_rootfs(SAVED, &parent.join("rootfs"))
        .await
        .unwrap();
    assert_eq!(fs::read(parent.join("rootfs/hello")).unwrap(), b"hi\n");
    assert!(!abandoned.exists());
    assert!(live.is_dir());
    assert!(precious.is_dir());
    let names: Vec<_> = fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".skiff-claim-")),
        "{names:?}"
    );
}

/// `.wh..wh..opq` at a layer's root hides every layer below: `image unpack` applies it, and
/// the layer stack `skiff run` mounts must show the same tree (overlayfs ignores the opaque
/// mark on a lower layer's root, so the hidden layers are left out).
#[tokio::test]
async fn opaque_layer_root_hides_lower_layers_in_both_views() {
    if !is_root() {
        eprintln!("SKIPPED: trusted.overlay.* xattrs need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let bottom = Tar::default().file("old", 0o644, b"old").finish();
    let middle = Tar::default().file("mid", 0o644, b"mid").finish();
    let top = Tar::default()
        .file(".wh..wh..opq", 0o644, b"")
        .file("new", 0o644, b"new")
        .finish();
    let layout = oci_layout(
        &tmp.path().join("layout"),
        &[&bottom, &middle, &top],
        json!({}),
    );
    let svc = ImageService::open(&tmp.path().join("images")).unwrap();
    svc.load(&layout).await.unwrap();
    let unpacked = tmp.path().join("rootfs");
    svc.unpack_rootfs(SAVED, &unpacked).await.unwrap();
    assert_eq!(
        hostile::tree(&unpacked),
        vec![Path::new("new").to_path_buf()]
    );

    let prepared = svc.ensure(SAVED, &Default::default()).await.unwrap();
    assert_eq!(prepared.layers.len(), 1, "{:?}", prepared.layers);
    let mut stacked: Vec<_> = prepared
        .layers
        .iter()
        .flat_map(|l| hostile::tree(l))
        .collect();
    stacked.sort();
    assert_eq!(stacked, hostile::tree(&unpacked));
}
