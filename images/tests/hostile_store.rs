//! The store and the files `skiff load` / `skiff save` touch, against hostile images and
//! hostile paths: every input is built here.

mod hostile;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
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

#[tokio::test]
async fn store_is_private_to_its_owner() {
    let tmp = tempfile::tempdir().unwrap();
    // A store created by an older skiff: world-readable directories.
    let images = tmp.path().join("images");
    for sub in ["blobs/sha256", "layers/sha256", "tmp"] {
        fs::create_dir_all(images.join(sub)).unwrap();
    }
    for d in [
        "",
        "blobs",
        "blobs/sha256",
        "layers",
        "layers/sha256",
        "tmp",
    ] {
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

    for d in [
        "",
        "blobs",
        "blobs/sha256",
        "layers",
        "layers/sha256",
        "tmp",
        "locks",
    ] {
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
