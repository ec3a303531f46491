//! Pushes to a real registry (Debian's docker-registry on loopback), read back with skopeo and
//! umoci, with a logging proxy in front where what was sent must be proven (mounts, nothing
//! uploaded twice, chunks, a cut chunk retried).

mod common;

use std::fs;
use std::path::Path;

use common::proxy::{Fault, Proxy, Seen};
use common::{assert_same_tree, fixture, raw_manifest, skopeo_unpack, Auth, Registry};
use skiff_images::auth::Credentials;
use skiff_images::error::Error;
use skiff_images::{CommitOptions, ImageService, PullOptions, PushOptions};

/// A store holding `tag` of the fixture registry (e.g. `whiteout:test`), named as pulled.
async fn store_with(tmp: &Path, tag: &str) -> (ImageService, String) {
    let fx = fixture();
    let reg = Registry::start(&fx.storage, Auth::None);
    let svc = ImageService::open(&tmp.join("images")).unwrap();
    let name = format!("{}/{tag}", reg.addr);
    svc.pull(&name, &PullOptions::default()).await.unwrap();
    (svc, name)
}

/// A registry on fresh, empty storage.
fn empty_registry(tmp: &Path, auth: Auth) -> Registry {
    let storage = tmp.join(format!("storage-{}", rand_suffix()));
    Registry::start(&storage, auth)
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn local_manifest(svc: &ImageService, name: &str) -> Vec<u8> {
    let rec = svc.resolve(name).unwrap();
    fs::read(svc.store().blob_path(&rec.manifest_digest)).unwrap()
}

/// Requests that carried blob bytes (chunks, or a single-request upload).
fn uploads(log: &[Seen]) -> Vec<&Seen> {
    log.iter()
        .filter(|s| s.target.contains("/blobs/uploads/") && s.body_len > 0)
        .collect()
}

#[tokio::test]
async fn pushed_image_reads_back_identically_and_a_second_push_sends_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, pulled) = store_with(tmp.path(), "whiteout:test").await;
    let reg = empty_registry(tmp.path(), Auth::None);
    let proxy = Proxy::start(&reg.addr, Fault::None);
    let target = format!("{}/pushed/whiteout:v1", proxy.addr);
    let report = svc
        .push(&pulled, &target, &PushOptions::default())
        .await
        .unwrap();
    let local = svc.resolve(&pulled).unwrap();
    assert_eq!(report.digest, local.manifest_digest);
    assert_eq!((report.layers_pushed, report.layers_existing), (2, 0));
    assert_eq!(report.tag, "v1");
    assert_eq!(report.size, local_manifest(&svc, &pulled).len() as u64);
    // The exact bytes: the registry's manifest is the local one.
    assert_eq!(raw_manifest(&target), local_manifest(&svc, &pulled));
    let first = proxy.take_log();
    assert_eq!(
        uploads(&first).len(),
        3,
        "2 layers and the config: {first:?}"
    );

    let fx = fixture();
    let ours = skopeo_unpack(&target, None, tmp.path());
    assert_same_tree(
        &ours,
        &common::umoci_rootfs(fx, "whiteout-test", tmp.path()),
    );

    let again = svc
        .push(&pulled, &target, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(again.digest, report.digest);
    assert_eq!((again.layers_pushed, again.layers_existing), (0, 2));
    assert_eq!(again.bytes_uploaded, 0);
    let second = proxy.take_log();
    assert!(uploads(&second).is_empty(), "{second:?}");
    assert!(
        second
            .iter()
            .all(|s| s.method != "POST" && s.method != "PATCH"),
        "no upload session: {second:?}"
    );
}

#[tokio::test]
async fn docker_media_types_are_pushed_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, pulled) = store_with(tmp.path(), "busybox:test-docker").await;
    let reg = empty_registry(tmp.path(), Auth::None);
    let target = format!("{}/docker/busybox:v2", reg.addr);
    let report = svc
        .push(&pulled, &target, &PushOptions::default())
        .await
        .unwrap();
    let raw = raw_manifest(&target);
    assert_eq!(raw, local_manifest(&svc, &pulled));
    let doc: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        doc["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(report.digest, svc.resolve(&pulled).unwrap().manifest_digest);
}

#[tokio::test]
async fn a_second_repository_mounts_instead_of_uploading() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, pulled) = store_with(tmp.path(), "whiteout:test").await;
    let reg = empty_registry(tmp.path(), Auth::None);
    let proxy = Proxy::start(&reg.addr, Fault::None);
    let one = format!("{}/team/one:v1", proxy.addr);
    svc.push(&pulled, &one, &PushOptions::default())
        .await
        .unwrap();
    proxy.take_log();

    let two = format!("{}/team/two:v1", proxy.addr);
    let report = svc
        .push(&pulled, &two, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!((report.layers_mounted, report.layers_pushed), (2, 0));
    let log = proxy.take_log();
    assert!(uploads(&log).is_empty(), "nothing uploaded: {log:?}");
    let mounts: Vec<_> = log
        .iter()
        .filter(|s| s.method == "POST" && s.target.contains("mount=sha256"))
        .collect();
    // Both layers and the config, each answered 201 Created.
    assert_eq!(mounts.len(), 3, "{log:?}");
    assert!(
        mounts.iter().all(|s| s.target.contains("from=team%2Fone")),
        "{mounts:?}"
    );
    assert!(mounts.iter().all(|s| s.status == 201), "{mounts:?}");
    assert_eq!(raw_manifest(&two), local_manifest(&svc, &pulled));
    let fx = fixture();
    assert_same_tree(
        &skopeo_unpack(&two, None, tmp.path()),
        &common::umoci_rootfs(fx, "whiteout-test", tmp.path()),
    );
}

/// Tiny chunks, the first PATCH cut: before the registry saw anything (resumed from the
/// session's Range), and halfway through its body (distribution then drops the session: the
/// push starts that blob again).
#[tokio::test]
async fn chunked_upload_survives_a_cut_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, pulled) = store_with(tmp.path(), "busybox:test").await;
    let reg = empty_registry(tmp.path(), Auth::None);
    let fx = fixture();
    let reference = common::umoci_rootfs(fx, "busybox-test", tmp.path());
    for (name, forward) in [("resumed", 0), ("restarted", 20_000)] {
        let proxy = Proxy::start(&reg.addr, Fault::CutFirstPatch { forward });
        let target = format!("{}/chunked/{name}:v1", proxy.addr);
        let opts = PushOptions {
            chunk_size: 64 << 10,
            ..PushOptions::default()
        };
        let report = svc.push(&pulled, &target, &opts).await.unwrap();
        assert_eq!(report.digest, svc.resolve(&pulled).unwrap().manifest_digest);
        let log = proxy.take_log();
        let patches: Vec<_> = log.iter().filter(|s| s.method == "PATCH").collect();
        assert!(patches.len() > 8, "{name}: {} chunks", patches.len());
        assert_eq!(patches[0].status, 0, "{name}: the first chunk was cut");
        // The registry may still be writing the cut chunk's bytes when its status is read:
        // the next chunk can then be refused (416), or its connection dropped while it is sent
        // (logged 0, seen once in a loaded CI run), and is retried from the new status.
        let failed: Vec<u16> = patches
            .iter()
            .map(|s| s.status)
            .filter(|s| *s != 202)
            .collect();
        assert!(failed.len() <= 1 + 3, "{name}: retries {failed:?}");
        assert!(
            failed[1..].iter().all(|s| *s == 0 || *s >= 400),
            "{name}: {failed:?}"
        );
        assert!(
            patches.iter().all(|s| s.body_len <= 64 << 10),
            "{name}: chunk sizes"
        );
        let cut = log.iter().position(|s| s.method == "PATCH").unwrap();
        assert_eq!(
            log[cut + 1].method,
            "GET",
            "{name}: status read after the cut: {log:?}"
        );
        assert_same_tree(&skopeo_unpack(&target, None, tmp.path()), &reference);
    }
}

#[tokio::test]
async fn protected_registry_needs_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, pulled) = store_with(tmp.path(), "busybox:test").await;
    let reg = empty_registry(tmp.path(), Auth::Htpasswd);
    let target = format!("{}/private/busybox:v1", reg.addr);
    let err = svc
        .push(&pulled, &target, &PushOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthRequired { .. }), "{err}");
    assert!(err.to_string().contains(&reg.addr), "{err}");

    let creds = |password: &str| PushOptions {
        credentials: Some(Credentials {
            username: common::USER.into(),
            password: password.into(),
        }),
        ..PushOptions::default()
    };
    let err = svc
        .push(&pulled, &target, &creds("wrong"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err}");
    let report = svc
        .push(&pulled, &target, &creds(common::PASSWORD))
        .await
        .unwrap();
    assert_eq!(report.layers_pushed, 1);
}

/// A token registry: one token for the whole push, asked for with `pull,push` on the target.
#[tokio::test]
async fn token_asks_for_pull_and_push() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, pulled) = store_with(tmp.path(), "busybox:test").await;
    let tokens = common::TokenServer::start();
    let reg = empty_registry(
        tmp.path(),
        Auth::Bearer {
            realm_port: tokens.port,
        },
    );
    let target = format!("{}/tokened/busybox:v1", reg.addr);
    svc.push(&pulled, &target, &PushOptions::default())
        .await
        .unwrap();
    let seen = tokens.requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].contains("scope=repository%3Atokened%2Fbusybox%3Apull%2Cpush"),
        "{}",
        seen[0]
    );
}

/// `skiff commit`'s image, pushed and pulled back into another store: same digest, same tree.
#[tokio::test]
async fn a_committed_image_pulls_back_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, pulled) = store_with(tmp.path(), "busybox:test").await;
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("srv/app")).unwrap();
    fs::write(upper.join("srv/app/hello.txt"), "hello from a commit\n").unwrap();
    std::os::unix::fs::symlink("hello.txt", upper.join("srv/app/link")).unwrap();
    std::os::unix::fs::chown(upper.join("srv/app/hello.txt"), Some(1000), Some(1000)).unwrap();
    let opts = CommitOptions {
        created: "2024-01-02T00:00:00Z".into(),
        created_by: "sh -c make-app".into(),
        ..CommitOptions::default()
    };
    let committed = svc.commit(&pulled, &upper, opts).await.unwrap();
    let reg = empty_registry(tmp.path(), Auth::None);
    let target = format!("{}/committed/app:v1", reg.addr);
    let report = svc
        .push(
            &committed.config_digest.to_string(),
            &target,
            &PushOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.digest, committed.manifest_digest);
    // The base layer came from another registry: uploaded, not mounted.
    assert_eq!(report.layers_pushed, 2);

    let other = ImageService::open(&tmp.path().join("other")).unwrap();
    let back = other.pull(&target, &PullOptions::default()).await.unwrap();
    assert_eq!(back.image.manifest_digest, committed.manifest_digest);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    svc.unpack_rootfs(&committed.config_digest.to_string(), &a)
        .await
        .unwrap();
    other.unpack_rootfs(&target, &b).await.unwrap();
    assert_same_tree(&a, &b);
    assert_eq!(
        fs::read_to_string(b.join("srv/app/hello.txt")).unwrap(),
        "hello from a commit\n"
    );
    let (_, history) = other.history(&target).unwrap();
    let by: Vec<_> = history
        .iter()
        .map(|h| h.entry.created_by.clone().unwrap_or_default())
        .collect();
    assert_eq!(by.last().unwrap(), "sh -c make-app");
}

#[tokio::test]
async fn push_refuses_a_digest_target_and_an_unknown_image() {
    let tmp = tempfile::tempdir().unwrap();
    let (svc, pulled) = store_with(tmp.path(), "busybox:test").await;
    let digest = svc.resolve(&pulled).unwrap().manifest_digest;
    let err = svc
        .push(
            &pulled,
            &format!("127.0.0.1:1/x@{digest}"),
            &PushOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidReference { .. }), "{err}");
    let err = svc
        .push(
            "127.0.0.1:1/nothing:here",
            "127.0.0.1:1/nothing:here",
            &PushOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ImageNotFound(_)), "{err}");
}
