//! Pulls from a real registry (Debian's docker-registry on loopback), compared file by file
//! with umoci's unpack of the same images.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{assert_same_tree, fixture, Auth, Registry};
use skiff_images::error::Error;
use skiff_images::unpack::is_overlay_opaque;
use skiff_images::{ImageService, Platform, PullOptions};

fn service(dir: &Path) -> ImageService {
    ImageService::open(&dir.join("images")).unwrap()
}

/// A registry on the fixture storage and an empty store in a fresh temporary directory.
fn registry_and_store(
    fx: &common::Fixture,
    auth: Auth,
) -> (Registry, tempfile::TempDir, ImageService) {
    let reg = Registry::start(&fx.storage, auth);
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());
    (reg, tmp, svc)
}

fn opts() -> PullOptions {
    PullOptions::default()
}

fn for_platform(p: &str) -> PullOptions {
    PullOptions {
        platform: Some(p.parse::<Platform>().unwrap()),
        ..opts()
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn pull_oci_image_matches_umoci() {
    let fx = fixture();
    let (reg, tmp, svc) = registry_and_store(fx, Auth::None);
    let name = format!("{}/busybox:test", reg.addr);
    let report = svc.pull(&name, &opts()).await.unwrap();
    assert_eq!(report.layers_downloaded, 1);
    assert_eq!(report.image.name, name);
    assert_eq!(report.image.platform, "linux/amd64");
    let (digest, _) = common::tag_descriptor(&fx.layout, "busybox-test");
    assert_eq!(report.image.manifest_digest.to_string(), digest);

    let listed = svc.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, name);

    let ours = tmp.path().join("rootfs");
    svc.unpack_rootfs(&name, &ours).await.unwrap();
    let reference = common::umoci_rootfs(fx, "busybox-test", tmp.path());
    assert_same_tree(&ours, &reference);
    // The per-layer directory of a one-layer image is the same tree.
    let img = svc.ensure(&name, &opts()).await.unwrap();
    assert_eq!(img.layers.len(), 1);
    assert_same_tree(&img.layers[0], &reference);

    let c = &img.config;
    assert_eq!(
        c.cmd.as_deref().unwrap(),
        ["sh", "-c", "echo hello from $HOSTNAME"]
    );
    assert_eq!(c.entrypoint, None);
    assert_eq!(c.working_dir.as_deref(), Some("/root"));
    assert_eq!(c.user.as_deref(), Some("0:0"));
    assert!(c
        .env
        .as_ref()
        .unwrap()
        .contains(&"GREETING=hello".to_string()));

    // The unpacked busybox really runs.
    let out = std::process::Command::new("chroot")
        .arg(&ours)
        .args(["/bin/sh", "-c", "echo hello from $HOSTNAME"])
        .env("HOSTNAME", "vm1")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from vm1\n");
}

#[tokio::test]
async fn blobs_in_the_store_are_never_downloaded_again() {
    let fx = fixture();
    let (reg, tmp, svc) = registry_and_store(fx, Auth::None);
    let first = svc
        .pull(&format!("{}/busybox:test", reg.addr), &opts())
        .await
        .unwrap();
    assert_eq!((first.layers_downloaded, first.layers_reused), (1, 0));
    assert!(
        first.bytes_downloaded > 500_000,
        "{}",
        first.bytes_downloaded
    );
    let again = svc
        .pull(&format!("{}/busybox:test", reg.addr), &opts())
        .await
        .unwrap();
    assert_eq!(
        (
            again.layers_downloaded,
            again.layers_reused,
            again.bytes_downloaded
        ),
        (0, 1, 0)
    );
    // Docker v2 media types, same layer blob: shared, not fetched.
    let docker = svc
        .pull(&format!("{}/busybox:test-docker", reg.addr), &opts())
        .await
        .unwrap();
    assert_eq!(
        docker.image.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!((docker.layers_downloaded, docker.layers_reused), (0, 1));
    // One unpacked layer directory serves both images.
    let layers = files_in(&tmp.path().join("images/layers/sha256"));
    assert_eq!(layers.len(), 1);
    let a = svc
        .ensure(&format!("{}/busybox:test", reg.addr), &opts())
        .await
        .unwrap();
    let b = svc
        .ensure(&format!("{}/busybox:test-docker", reg.addr), &opts())
        .await
        .unwrap();
    assert_eq!(a.layers, b.layers);
}

#[tokio::test]
async fn docker_and_zstd_images_match_umoci() {
    let fx = fixture();
    let reg = Registry::start(&fx.storage, Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let reference = common::umoci_rootfs(fx, "busybox-test", tmp.path());
    for tag in ["test-docker", "test-zstd"] {
        let svc = service(&tmp.path().join(tag));
        let name = format!("{}/busybox:{tag}", reg.addr);
        let report = svc.pull(&name, &opts()).await.unwrap();
        if tag == "test-zstd" {
            assert_eq!(
                report.image.layers[0].media_type,
                "application/vnd.oci.image.layer.v1.tar+zstd"
            );
        }
        let ours = tmp.path().join(format!("rootfs-{tag}"));
        svc.unpack_rootfs(&name, &ours).await.unwrap();
        assert_same_tree(&ours, &reference);
    }
}

#[tokio::test]
async fn whiteouts_in_layer_dirs_and_merged_rootfs() {
    let fx = fixture();
    let (reg, tmp, svc) = registry_and_store(fx, Auth::None);
    let name = format!("{}/whiteout:test", reg.addr);
    svc.pull(&name, &opts()).await.unwrap();
    let img = svc.ensure(&name, &opts()).await.unwrap();
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.config.entrypoint.as_deref().unwrap(), ["/bin/cat"]);
    assert_eq!(img.config.working_dir.as_deref(), Some("/data"));
    // Top-most first: the top layer holds the whiteouts, overlayfs style.
    let (top, bottom) = (&img.layers[0], &img.layers[1]);
    let wh = fs::symlink_metadata(top.join("etc/old.txt")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is a 0:0 char device"
    );
    assert!(!top.join("etc/.wh.old.txt").exists());
    assert!(is_overlay_opaque(&top.join("data")).unwrap());
    assert_eq!(files_in(&top.join("data")), ["c.txt"]);
    assert!(bottom.join("etc/old.txt").is_file());
    assert_eq!(files_in(&bottom.join("data")), ["a.txt", "sub"]);

    let ours = tmp.path().join("rootfs");
    svc.unpack_rootfs(&name, &ours).await.unwrap();
    assert!(!ours.join("etc/old.txt").exists());
    assert_eq!(files_in(&ours.join("data")), ["c.txt"]);
    let reference = common::umoci_rootfs(fx, "whiteout-test", tmp.path());
    assert_same_tree(&ours, &reference);
}

#[tokio::test]
async fn multi_platform_index_and_manifest_list() {
    let fx = fixture();
    let (reg, tmp, svc) = registry_and_store(fx, Auth::None);
    for tag in ["test", "test-docker"] {
        let name = format!("{}/multiarch:{tag}", reg.addr);
        // The merged root filesystem's /etc/platform marker.
        let marker = |what: &str| {
            let dir = tmp.path().join(format!("{what}-{tag}"));
            let (svc, name) = (&svc, &name);
            async move {
                svc.unpack_rootfs(name, &dir).await.unwrap();
                fs::read_to_string(dir.join("etc/platform")).unwrap()
            }
        };
        let native = svc.pull(&name, &opts()).await.unwrap();
        assert_eq!(native.image.platform, "linux/amd64");
        assert!(native.image.index_digest.is_some());
        assert_eq!(marker("native").await, "linux/amd64\n");

        let report = svc.pull(&name, &for_platform("linux/arm64")).await.unwrap();
        assert_eq!(report.image.platform, "linux/arm64");
        // Base layer shared with the amd64 image: only the marker layer is new (and the
        // manifest list of the second round has the very same layers).
        let expected = if tag == "test" { (1, 1) } else { (0, 2) };
        assert_eq!((report.layers_downloaded, report.layers_reused), expected);
        assert_eq!(marker("arm").await, "linux/arm64\n");

        // ensure() for another platform than the local one pulls that platform.
        let local = svc.ensure(&name, &opts()).await.unwrap();
        assert_eq!(
            local.platform.architecture, "arm64",
            "the last pull holds the name"
        );
        let amd = svc
            .ensure(&name, &for_platform("linux/amd64"))
            .await
            .unwrap();
        assert_eq!(amd.platform.architecture, "amd64");

        let s390 = for_platform("linux/s390x");
        let err = svc.pull(&name, &s390).await.unwrap_err();
        assert!(matches!(err, Error::NoMatchingPlatform { .. }), "{err}");
        assert!(err.to_string().contains("linux/arm64"), "{err}");
    }
}

#[tokio::test]
async fn pull_by_digest() {
    let fx = fixture();
    let (reg, tmp, svc) = registry_and_store(fx, Auth::None);
    let (digest, _) = common::tag_descriptor(&fx.layout, "whiteout-test");
    let name = format!("{}/whiteout@{digest}", reg.addr);
    let report = svc.pull(&name, &opts()).await.unwrap();
    assert_eq!(report.image.manifest_digest.to_string(), digest);
    assert_eq!(report.image.name, name);
    // Tag and digest: the digest pins the content.
    let both = format!("{}/whiteout:test@{digest}", reg.addr);
    svc.pull(&both, &opts()).await.unwrap();
    // Found locally by digest within its repository only.
    let tagged = ImageService::open(&tmp.path().join("tagged")).unwrap();
    tagged
        .pull(&format!("{}/whiteout:test", reg.addr), &opts())
        .await
        .unwrap();
    let by_digest = tagged.resolve(&name).unwrap();
    assert_eq!(by_digest.name, format!("{}/whiteout:test", reg.addr));
    let elsewhere = format!("{}/elsewhere@{digest}", reg.addr);
    assert!(matches!(
        tagged.resolve(&elsewhere),
        Err(Error::ImageNotFound(_))
    ));
    let missing = format!("{}/whiteout@sha256:{}", reg.addr, "0".repeat(64));
    let err = svc.pull(&missing, &opts()).await.unwrap_err();
    assert!(matches!(err, Error::Registry { status: 404, .. }), "{err}");
}

#[tokio::test]
async fn auth_protected_registry() {
    let fx = fixture();
    let (reg, _tmp, svc) = registry_and_store(fx, Auth::Htpasswd);
    let name = format!("{}/busybox:test", reg.addr);
    let err = svc.pull(&name, &opts()).await.unwrap_err();
    assert!(matches!(err, Error::AuthRequired { .. }), "{err}");
    assert!(err.to_string().contains("skiff login"), "{err}");

    let wrong = skiff_images::auth::Credentials {
        username: common::USER.into(),
        password: "wrong".into(),
    };
    let err = skiff_images::login(&reg.addr, wrong, false, Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err}");
    assert!(skiff_images::auth::lookup(&reg.addr).unwrap().is_none());

    let right = skiff_images::auth::Credentials {
        username: common::USER.into(),
        password: common::PASSWORD.into(),
    };
    let path = skiff_images::login(&reg.addr, right, false, Default::default())
        .await
        .unwrap();
    assert_eq!(path, fx.docker_config.join("config.json"));
    let cfg: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert!(cfg["auths"][&reg.addr]["auth"].is_string());
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);

    let report = svc.pull(&name, &opts()).await.unwrap();
    assert_eq!(report.layers_downloaded, 1);
}

#[tokio::test]
async fn rmi_keeps_shared_content_and_prune_removes_the_rest() {
    let fx = fixture();
    let (reg, tmp, svc) = registry_and_store(fx, Auth::None);
    let store = tmp.path().join("images");
    let bb = format!("{}/busybox:test", reg.addr);
    let ma = format!("{}/multiarch:test", reg.addr);
    svc.pull(&bb, &opts()).await.unwrap();
    svc.pull(&ma, &opts()).await.unwrap();
    assert_eq!(files_in(&store.join("layers/sha256")).len(), 2);

    let (names, gc) = svc.remove(&bb).unwrap();
    assert_eq!(names, std::slice::from_ref(&bb));
    // The base layer is still used by multiarch: only busybox's manifest and config go.
    assert_eq!(gc.layers_removed, 0);
    assert_eq!(files_in(&store.join("layers/sha256")).len(), 2);
    assert!(matches!(svc.resolve(&bb), Err(Error::ImageNotFound(_))));

    // By image ID this time.
    let id = svc.resolve(&ma).unwrap().config_digest.short().to_string();
    let (names, gc) = svc.remove(&id).unwrap();
    assert_eq!(names, [ma]);
    assert_eq!(gc.layers_removed, 2);
    assert!(files_in(&store.join("blobs/sha256")).is_empty());
    assert!(files_in(&store.join("layers/sha256")).is_empty());
    assert!(svc.list().unwrap().is_empty());
    let err = svc.remove(&bb).unwrap_err();
    assert!(matches!(err, Error::ImageNotFound(_)), "{err}");
}

#[tokio::test]
async fn corrupt_or_truncated_blob_leaves_no_trace() {
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let storage = common::copy_storage(fx, tmp.path());
    let (manifest, _) = common::tag_descriptor(&fx.layout, "busybox-test");
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(common::blob_path(&fx.layout, &manifest)).unwrap())
            .unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let data = common::registry_blob_data(&storage, &layer);
    let good = fs::read(&data).unwrap();

    // Same size, one byte flipped: the digest check must catch it.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    fs::write(&data, &bad).unwrap();
    let reg = Registry::start(&storage, Auth::None);
    let svc = service(tmp.path());
    let name = format!("{}/busybox:test", reg.addr);
    let err = svc.pull(&name, &opts()).await.unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&layer), "{err}");
    let store = tmp.path().join("images");
    let assert_clean = || {
        assert!(!store.join("blobs/sha256").join(&layer[7..]).exists());
        assert!(files_in(&store.join("layers/sha256")).is_empty());
        assert!(
            files_in(&store.join("tmp")).is_empty(),
            "{:?}",
            files_in(&store.join("tmp"))
        );
        assert!(svc.list().unwrap().is_empty());
    };
    assert_clean();

    // Truncated: the registry announces fewer bytes than the descriptor.
    fs::write(&data, &good[..good.len() / 3]).unwrap();
    let err = svc.pull(&name, &opts()).await.unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
    assert_clean();

    // Repaired: the same store pulls fine.
    fs::write(&data, &good).unwrap();
    svc.pull(&name, &opts()).await.unwrap();
}

#[tokio::test]
async fn concurrent_pulls_of_the_same_image() {
    let fx = fixture();
    let reg = Registry::start(&fx.storage, Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    // Two services on one store: like two skiff processes.
    let a = service(tmp.path());
    let b = service(tmp.path());
    let name = format!("{}/whiteout:test", reg.addr);
    let o = opts();
    let (ra, rb) = tokio::join!(a.pull(&name, &o), b.pull(&name, &o));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.layers_downloaded + rb.layers_downloaded, 2);
    assert_eq!(ra.image.manifest_digest, rb.image.manifest_digest);
    assert_eq!(a.list().unwrap().len(), 1);
    let dir = tmp.path().join("rootfs");
    b.unpack_rootfs(&name, &dir).await.unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("etc/new.txt")).unwrap(),
        "added by layer 2\n"
    );
}

#[tokio::test]
async fn unpack_refuses_non_empty_target() {
    let fx = fixture();
    let (reg, tmp, svc) = registry_and_store(fx, Auth::None);
    let name = format!("{}/busybox:test", reg.addr);
    svc.pull(&name, &opts()).await.unwrap();
    let dir = tmp.path().join("occupied");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("keep"), "mine").unwrap();
    let err = svc.unpack_rootfs(&name, &dir).await.unwrap_err();
    assert!(err.to_string().contains("non-empty"), "{err}");
    assert_eq!(files_in(&dir), ["keep"]);
    // An empty directory is fine.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    svc.unpack_rootfs(&name, &empty).await.unwrap();
    assert!(empty.join("bin/busybox").is_file());
}

#[tokio::test]
async fn anonymous_bearer_token_flow() {
    let fx = fixture();
    let tokens = common::TokenServer::start();
    let reg = Registry::start(
        &fx.storage,
        Auth::Bearer {
            realm_port: tokens.port,
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());
    let report = svc
        .pull(&format!("{}/busybox:test", reg.addr), &opts())
        .await
        .unwrap();
    assert_eq!(report.layers_downloaded, 1);
    let seen = tokens.requests.lock().unwrap().clone();
    // One token for the whole pull, asked for with the challenge's service and scope.
    assert_eq!(seen.len(), 1, "{seen:?}");
    let line = seen[0].lines().next().unwrap();
    assert!(line.starts_with("GET /token?"), "{line}");
    assert!(line.contains("service=skiff-test"), "{line}");
    assert!(line.contains("scope=repository%3Abusybox%3Apull"), "{line}");
    // Anonymous: no credentials were sent to the token server.
    assert!(
        !seen[0].to_ascii_lowercase().contains("authorization:"),
        "{seen:?}"
    );
}

/// The layer directories, mounted by the kernel's overlayfs as the run path will, give the
/// same tree as umoci's unpack (whiteout devices and opaque xattrs understood by the kernel).
#[tokio::test]
async fn kernel_overlay_of_layer_dirs_matches_umoci() {
    let fx = fixture();
    let (reg, tmp, svc) = registry_and_store(fx, Auth::None);
    let name = format!("{}/whiteout:test", reg.addr);
    let img = svc.ensure(&name, &opts()).await.unwrap();
    let lower: Vec<String> = img.layers.iter().map(|p| p.display().to_string()).collect();
    let (mnt, copy) = (tmp.path().join("mnt"), tmp.path().join("copy"));
    fs::create_dir(&mnt).unwrap();
    fs::create_dir(&copy).unwrap();
    // A private mount namespace: the mount vanishes with the shell.
    common::run(
        "unshare",
        &[
            "-m",
            "sh",
            "-c",
            &format!(
                "mount -t overlay overlay -o ro,lowerdir={} '{}' && cp -a '{}/.' '{}/'",
                lower.join(":"),
                mnt.display(),
                mnt.display(),
                copy.display()
            ),
        ],
    );
    assert_same_tree(
        &copy,
        &common::umoci_rootfs(fx, "whiteout-test", tmp.path()),
    );
}

/// Runs only as a child of `concurrent_pulls_from_two_processes`: pulls the image named in
/// SKIFF_TEST_CHILD_PULL into SKIFF_TEST_CHILD_ROOT and prints the report (ignored in normal
/// runs; the parent runs it with --ignored).
#[tokio::test]
#[ignore = "helper process of concurrent_pulls_from_two_processes"]
async fn child_process_pull() {
    let name = std::env::var("SKIFF_TEST_CHILD_PULL").expect("run by the parent test");
    let root = std::env::var("SKIFF_TEST_CHILD_ROOT").expect("run by the parent test");
    let svc = ImageService::open(Path::new(&root)).unwrap();
    let r = svc.pull(&name, &opts()).await.unwrap();
    println!(
        "CHILD-REPORT {} {}",
        r.layers_downloaded, r.image.manifest_digest
    );
}

#[test]
fn concurrent_pulls_from_two_processes() {
    let fx = fixture();
    let reg = Registry::start(&fx.storage, Auth::None);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("images");
    let name = format!("{}/multiarch:test", reg.addr);
    let me = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&me)
                .args(["--exact", "child_process_pull", "--nocapture", "--ignored"])
                .env("SKIFF_TEST_CHILD_PULL", &name)
                .env("SKIFF_TEST_CHILD_ROOT", &root)
                .env("DOCKER_CONFIG", &fx.docker_config)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut downloaded = 0;
    let mut digests = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.split("CHILD-REPORT ").nth(1))
            .unwrap_or_else(|| panic!("no report in {text}"));
        let (n, digest) = line.split_once(' ').unwrap();
        downloaded += n.parse::<usize>().unwrap();
        digests.push(digest.to_string());
    }
    // Each layer fetched exactly once between the two; both recorded the same image.
    assert_eq!(downloaded, 2);
    assert_eq!(digests[0], digests[1]);
    let svc = ImageService::open(&root).unwrap();
    assert_eq!(svc.list().unwrap().len(), 1);
    assert_eq!(files_in(&root.join("layers/sha256")).len(), 2);
    assert!(files_in(&root.join("tmp")).is_empty());
}

/// With stored credentials, the token server gets them (basic auth) and `login` goes through
/// the token dance too.
#[tokio::test]
async fn bearer_token_with_credentials() {
    let fx = fixture();
    let tokens = common::TokenServer::start();
    let reg = Registry::start(
        &fx.storage,
        Auth::Bearer {
            realm_port: tokens.port,
        },
    );
    let creds = skiff_images::auth::Credentials {
        username: "robot".into(),
        password: "token-pw".into(),
    };
    skiff_images::login(&reg.addr, creds, false, Default::default())
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());
    svc.pull(&format!("{}/whiteout:test", reg.addr), &opts())
        .await
        .unwrap();
    let seen = tokens.requests.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        2,
        "one token for login, one for the pull: {seen:?}"
    );
    // base64("robot:token-pw")
    for req in &seen {
        assert!(
            req.contains("Basic cm9ib3Q6dG9rZW4tcHc="),
            "credentials not sent: {req}"
        );
    }
    assert!(
        seen[1].contains("scope=repository%3Awhiteout%3Apull"),
        "{}",
        seen[1]
    );
}

/// A loopback registry speaking HTTPS with a self-signed certificate: reached over TLS (it
/// refuses plain HTTP), certificate unchecked as for Docker's insecure registries.
#[tokio::test]
async fn https_registry_with_self_signed_certificate() {
    let fx = fixture();
    let reg = Registry::start_tls(&fx.storage);
    let tmp = tempfile::tempdir().unwrap();
    let svc = service(tmp.path());
    let report = svc
        .pull(&format!("{}/busybox:test", reg.addr), &opts())
        .await
        .unwrap();
    assert_eq!(report.layers_downloaded, 1);
}
