//! `skiff load` of archives written by skopeo (docker save style, OCI archive, OCI layout)
//! and `skiff save` read back by skopeo, compared with umoci's unpack.

mod common;

use std::fs;
use std::path::Path;

use common::{assert_same_tree, fixture, run};
use skiff_images::error::Error;
use skiff_images::ImageService;

fn service(dir: &Path) -> ImageService {
    ImageService::open(&dir.join("images")).unwrap()
}

#[tokio::test]
async fn load_docker_save_archive() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());
    let loaded = svc
        .load(&fx.archives.join("busybox.docker.tar"))
        .await
        .unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].name, "docker.io/library/busybox:test");
    let ours = tmp.path().join("rootfs");
    svc.unpack_rootfs("busybox:test", &ours).await.unwrap();
    assert_same_tree(&ours, &common::umoci_rootfs(fx, "busybox-test", tmp.path()));
    let img = svc
        .ensure("busybox:test", &Default::default())
        .await
        .unwrap();
    assert_eq!(img.config.working_dir.as_deref(), Some("/root"));
}

#[tokio::test]
async fn load_compressed_archive() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let gz = tmp.path().join("busybox.docker.tar.gz");
    run(
        "sh",
        &[
            "-c",
            &format!(
                "gzip -c '{}' > '{}'",
                fx.archives.join("busybox.docker.tar").display(),
                gz.display()
            ),
        ],
    );
    let svc = service(tmp.path());
    let loaded = svc.load(&gz).await.unwrap();
    assert_eq!(loaded[0].name, "docker.io/library/busybox:test");
}

#[tokio::test]
async fn load_oci_archives_and_layout() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());
    let loaded = svc
        .load(&fx.archives.join("whiteout.oci.tar"))
        .await
        .unwrap();
    assert_eq!(loaded[0].name, "docker.io/library/whiteout:test");
    let ours = tmp.path().join("whiteout");
    svc.unpack_rootfs("whiteout:test", &ours).await.unwrap();
    assert_same_tree(
        &ours,
        &common::umoci_rootfs(fx, "whiteout-test", tmp.path()),
    );

    // An index inside the archive: the host's platform is chosen.
    let loaded = svc
        .load(&fx.archives.join("multiarch.oci.tar"))
        .await
        .unwrap();
    assert_eq!(loaded[0].platform, "linux/amd64");
    assert!(loaded[0].index_digest.is_some());
    let dir = tmp.path().join("multiarch");
    svc.unpack_rootfs("multiarch:test", &dir).await.unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("etc/platform")).unwrap(),
        "linux/amd64\n"
    );

    // A layout directory whose tags are bare: named localhost/<dir>:<tag>.
    let loaded = svc.load(&fx.layout).await.unwrap();
    let names: Vec<&str> = loaded.iter().map(|r| r.name.as_str()).collect();
    assert!(names.contains(&"localhost/oci:busybox-zstd"), "{names:?}");
    assert!(names.contains(&"localhost/oci:whiteout-test"), "{names:?}");
    let zstd = tmp.path().join("zstd");
    svc.unpack_rootfs("localhost/oci:busybox-zstd", &zstd)
        .await
        .unwrap();
    assert_same_tree(&zstd, &common::umoci_rootfs(fx, "busybox-test", tmp.path()));
}

#[tokio::test]
async fn save_is_readable_by_skopeo_and_loads_back() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());
    svc.load(&fx.archives.join("whiteout.oci.tar"))
        .await
        .unwrap();
    let rec = svc.resolve("whiteout:test").unwrap();
    let out = tmp.path().join("saved.tar");
    svc.save("whiteout:test", &out).await.unwrap();

    let inspect = run(
        "skopeo",
        &[
            "--insecure-policy",
            "inspect",
            &format!("oci-archive:{}", out.display()),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v["Digest"], rec.manifest_digest.to_string());
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2);

    // skopeo can copy it out, and umoci's unpack of that equals ours.
    let layout = tmp.path().join("copied");
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "-q",
            &format!("oci-archive:{}", out.display()),
            &format!("oci:{}:copied", layout.display()),
        ],
    );
    let bundle = tmp.path().join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:copied", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let ours = tmp.path().join("rootfs");
    svc.unpack_rootfs("whiteout:test", &ours).await.unwrap();
    assert_same_tree(&ours, &bundle.join("rootfs"));

    let other = service(&tmp.path().join("other"));
    let loaded = other.load(&out).await.unwrap();
    assert_eq!(loaded[0].name, "docker.io/library/whiteout:test");
    assert_eq!(loaded[0].manifest_digest, rec.manifest_digest);
}

#[tokio::test]
async fn hostile_archives_are_refused_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());
    // A blob whose content does not match its name.
    let liar = tmp.path().join("liar.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&liar).unwrap());
        let name = format!("blobs/sha256/{}", "a".repeat(64));
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &b"hello"[..]).unwrap();
        b.finish().unwrap();
    }
    let err = svc.load(&liar).await.unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    let store = tmp.path().join("images");
    assert_eq!(fs::read_dir(store.join("blobs/sha256")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0);

    // Neither kind of archive (and a `../` entry name, which is never used as a path).
    let odd = tmp.path().join("odd.tar");
    {
        let mut b = tar::Builder::new(fs::File::create(&odd).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.as_old_mut().name[..11].copy_from_slice(b"../escaped\0");
        h.set_cksum();
        b.append(&h, &b"hi"[..]).unwrap();
        b.finish().unwrap();
    }
    let err = svc.load(&odd).await.unwrap_err();
    assert!(err.to_string().contains("neither an OCI archive"), "{err}");
    assert!(!tmp.path().join("escaped").exists());
    assert!(svc.list().unwrap().is_empty());
}

/// A container's image stays on disk while pinned, whatever rmi and prune do.
#[tokio::test]
async fn pinned_images_survive_rmi_and_prune() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());
    svc.load(&fx.archives.join("whiteout.oci.tar"))
        .await
        .unwrap();
    let img = svc
        .ensure("whiteout:test", &Default::default())
        .await
        .unwrap();
    svc.pin("container-1", &img).unwrap();
    let (names, gc) = svc.remove("whiteout:test").unwrap();
    assert_eq!(names, ["docker.io/library/whiteout:test"]);
    assert_eq!(gc.layers_removed, 0);
    svc.prune().unwrap();
    assert!(svc.list().unwrap().is_empty());
    for l in &img.layers {
        assert!(l.join("etc").is_dir(), "{} was collected", l.display());
    }
    assert!(svc.unpin("container-1").unwrap());
    let gc = svc.prune().unwrap();
    assert_eq!(gc.layers_removed, 2);
    assert!(img.layers.iter().all(|l| !l.exists()));
}
