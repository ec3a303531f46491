//! `manifest create`: multi-platform indexes assembled on a real registry (Debian's
//! docker-registry on loopback) over images already there, read back with skopeo and umoci and
//! pulled through by skiff; a proxy declines mounts where the copy path must be proven.

mod common;

use std::path::Path;
use std::process::Command;

use common::proxy::{Fault, Proxy};
use common::{copy_storage, fixture, raw_manifest, skopeo_unpack, tag_descriptor, Auth, Registry};
use skiff_images::error::Error;
use skiff_images::{Digest, ImageService, IndexOptions, PullOptions};

fn raw(reference: &str) -> (Vec<u8>, serde_json::Value) {
    let raw = raw_manifest(reference);
    let doc = serde_json::from_slice(&raw).unwrap();
    (raw, doc)
}

/// `/etc/platform` of the image skopeo picks from `reference` for `arch`.
fn platform_file(reference: &str, arch: &str, tmp: &Path) -> String {
    let rootfs = skopeo_unpack(reference, Some(arch), tmp);
    std::fs::read_to_string(rootfs.join("etc/platform")).unwrap()
}

/// A registry on a private copy of the fixtures (it is written to), and an image service.
fn setup(tmp: &Path) -> (Registry, ImageService) {
    let storage = copy_storage(fixture(), tmp);
    let reg = Registry::start(&storage, Auth::None);
    (reg, ImageService::open(&tmp.join("images")).unwrap())
}

/// The two images of the fixtures' `multiarch:test` index, by digest.
fn multiarch(registry: &str) -> Vec<String> {
    ["amd64", "arm64"]
        .iter()
        .map(|a| format!("{registry}/multiarch@{}", one(a)))
        .collect()
}

fn one(arch: &str) -> String {
    tag_descriptor(&fixture().layout, &format!("multiarch-{arch}")).0
}

#[tokio::test]
async fn an_index_over_two_platforms_reads_back_and_pulls_through() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, svc) = setup(tmp.path());
    let target = format!("{}/apps/multi:v1", reg.addr);
    let opts = IndexOptions::default();
    let report = svc
        .push_index(&target, &multiarch(&reg.addr), &opts)
        .await
        .unwrap();

    let (bytes, doc) = raw(&target);
    assert_eq!(report.digest, Digest::of(&bytes));
    assert_eq!(report.size, bytes.len() as u64);
    assert_eq!(doc["mediaType"], "application/vnd.oci.image.index.v1+json");
    let fx = fixture();
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let entry = &doc["manifests"][i];
        let (digest, size) = tag_descriptor(&fx.layout, &format!("multiarch-{arch}"));
        assert_eq!(entry["digest"], digest.as_str(), "{doc}");
        assert_eq!(entry["size"], size, "{doc}");
        assert_eq!(
            entry["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(entry["platform"]["os"], "linux");
        assert_eq!(entry["platform"]["architecture"], *arch);
        // Each platform's layers are in the new repository.
        assert_eq!(
            platform_file(&target, arch, tmp.path()),
            format!("linux/{arch}\n")
        );
    }
    // The shared base layer is mounted once: both images' own layer and config, the base.
    assert_eq!((report.blobs_mounted, report.blobs_copied), (5, 0));

    // skiff pulls this host's platform through it.
    svc.pull(&target, &PullOptions::default()).await.unwrap();
    let dir = tmp.path().join("pulled");
    svc.unpack_rootfs(&target, &dir).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/platform")).unwrap(),
        "linux/amd64\n"
    );

    // Again: nothing to mount, the same bytes (the index is made the same way each time).
    let again = svc
        .push_index(&target, &multiarch(&reg.addr), &opts)
        .await
        .unwrap();
    assert_eq!((again.blobs_mounted, again.digest), (0, report.digest));

    // Docker schema 2 images make a Docker manifest list.
    let list = format!("{}/apps/docker-list:v1", reg.addr);
    let sources = [format!("{}/busybox:test-docker", reg.addr)];
    let report = svc.push_index(&list, &sources, &opts).await.unwrap();
    let (_, doc) = raw(&list);
    let docker_list = "application/vnd.docker.distribution.manifest.list.v2+json";
    assert_eq!(
        (doc["mediaType"].as_str(), report.media_type.as_str()),
        (Some(docker_list), docker_list)
    );
    assert_eq!(
        doc["manifests"][0]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
}

#[tokio::test]
async fn blobs_are_copied_in_chunks_when_the_registry_declines_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, svc) = setup(tmp.path());
    let proxy = Proxy::start(&reg.addr, Fault::DeclineMounts);
    let target = format!("{}/apps/copied:v1", proxy.addr);
    let opts = IndexOptions {
        chunk_size: 4096,
        ..IndexOptions::default()
    };
    let report = svc
        .push_index(&target, &multiarch(&proxy.addr), &opts)
        .await
        .unwrap();
    assert_eq!((report.blobs_mounted, report.blobs_copied), (0, 5));
    let log = proxy.take_log();
    let patches = log.iter().filter(|s| s.method == "PATCH").count();
    assert!(patches > 5, "chunks sent: {log:?}");
    let target = format!("{}/apps/copied:v1", reg.addr);
    for arch in ["amd64", "arm64"] {
        assert_eq!(
            platform_file(&target, arch, tmp.path()),
            format!("linux/{arch}\n")
        );
    }
}

#[tokio::test]
async fn bad_sources_are_refused_by_name_and_leave_no_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let (reg, svc) = setup(tmp.path());
    let target = format!("{}/apps/bad:v1", reg.addr);
    let opts = IndexOptions::default();
    let refused = |sources: Vec<String>| {
        let (svc, target, opts) = (&svc, &target, &opts);
        async move { svc.push_index(target, &sources, opts).await.unwrap_err() }
    };
    let r = &reg.addr;

    let e = refused(vec![format!("{r}/multiarch:test")]).await;
    assert!(matches!(e, Error::IndexSource { .. }), "{e}");
    assert!(e.to_string().contains("is an index already"), "{e}");

    let e = refused(vec![
        format!("{r}/multiarch@{}", one("amd64")),
        format!("{r}/busybox:test"),
    ])
    .await;
    assert!(
        e.to_string().contains(&format!(
            "{r}/busybox:test in an index: its platform linux/amd64 is"
        )),
        "{e}"
    );

    let e = refused(vec![format!("127.0.0.1:1/multiarch@{}", one("amd64"))]).await;
    assert!(
        e.to_string()
            .contains("an index names manifests of its own registry"),
        "{e}"
    );

    let e = refused(vec![format!("{r}/multiarch:missing")]).await;
    assert!(matches!(e, Error::Registry { .. }), "{e}");
    assert!(e.to_string().contains("404"), "{e}");

    let e = refused(Vec::new()).await;
    assert!(e.to_string().contains("at least one image"), "{e}");
    let digest_target = format!("{r}/apps/bad@sha256:{}", "0".repeat(64));
    let e = svc
        .push_index(&digest_target, &multiarch(r), &opts)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pushed to a tag"), "{e}");

    let missing = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(!missing.status.success(), "no tag was pushed");
}
