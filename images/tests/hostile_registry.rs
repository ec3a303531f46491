//! A registry that lies: a tiny HTTP server in the test serves crafted manifests, configs and
//! layers. Every lie must end in a clear error and leave the store without a trace.

mod hostile;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hostile::{
    config_route, image, reply, serve, Body, Greeting, Image, MANIFEST_ROUTE, OCI_LAYER_GZIP,
    OCI_MANIFEST,
};
use serde_json::json;
use skiff_images::error::Error;
use skiff_images::{Digest, ImageService, PullOptions, RegistryTimeouts, StoreConfig};

fn plain_tar() -> Vec<u8> {
    hostile::Tar::default()
        .file("hello.txt", 0o644, b"hi\n")
        .finish()
}

/// A store whose registry timeouts are short enough for tests (1 s of silence).
fn service(dir: &Path, config: StoreConfig) -> ImageService {
    ImageService::open_with(&dir.join("images"), config).unwrap()
}

fn impatient() -> StoreConfig {
    StoreConfig {
        timeouts: RegistryTimeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(1),
        },
        ..StoreConfig::default()
    }
}

async fn pull_err_with(addr: &str, dir: &Path, config: StoreConfig) -> Error {
    let svc = service(dir, config);
    let err = svc
        .pull(&format!("{addr}/evil:latest"), &PullOptions::default())
        .await
        .unwrap_err();
    // Nothing left: no name, no blob, no layer directory, nothing in tmp/.
    assert!(svc.list().unwrap().is_empty());
    let store = dir.join("images");
    for sub in ["blobs/sha256", "layers/sha256", "tmp"] {
        let left: Vec<_> = fs::read_dir(store.join(sub)).unwrap().collect();
        assert!(left.is_empty(), "{sub} after a failed pull: {left:?}");
    }
    err
}

async fn pull_err(addr: &str, dir: &Path) -> Error {
    pull_err_with(addr, dir, impatient()).await
}

fn layer_route(img: &Image, i: usize) -> String {
    format!(
        "/v2/evil/blobs/{}",
        img.manifest["layers"][i]["digest"].as_str().unwrap()
    )
}

#[tokio::test]
async fn sane_image_pulls() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = image(&[&plain_tar()]).serve();
    let svc = service(tmp.path(), impatient());
    let r = svc
        .pull(&format!("{addr}/evil:latest"), &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(r.layers_downloaded, 1);
}

#[tokio::test]
async fn uncompressed_layer_pulls() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = plain_tar();
    let mut img = image(&[&tar]);
    let d = Digest::of(&tar);
    img.manifest["layers"][0] = json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": tar.len(),
    });
    img.routes.insert(
        format!("/v2/evil/blobs/{d}"),
        reply("application/octet-stream", tar),
    );
    let addr = img.serve();
    let svc = service(tmp.path(), impatient());
    let name = format!("{addr}/evil:latest");
    svc.pull(&name, &PullOptions::default()).await.unwrap();
    let out = tmp.path().join("rootfs");
    svc.unpack_rootfs(&name, &out).await.unwrap();
    assert_eq!(fs::read(out.join("hello.txt")).unwrap(), b"hi\n");
}

#[tokio::test]
async fn enormous_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let mut routes = HashMap::new();
    let mut big = b"{\"schemaVersion\":2,\"x\":\"".to_vec();
    big.resize(5 << 20, b'a');
    routes.insert(MANIFEST_ROUTE.to_string(), reply(OCI_MANIFEST, big));
    let err = pull_err(&serve(routes), tmp.path()).await;
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn malformed_and_unknown_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let mut routes = HashMap::new();
    routes.insert(
        MANIFEST_ROUTE.to_string(),
        reply(
            OCI_MANIFEST,
            b"{\"schemaVersion\": 2, \"layers\": 7".to_vec(),
        ),
    );
    let err = pull_err(&serve(routes), tmp.path()).await;
    assert!(matches!(err, Error::Malformed { .. }), "{err}");

    let mut img = image(&[&plain_tar()]);
    img.manifest["mediaType"] = json!("application/vnd.example.thing+json");
    let err = pull_err(&img.serve(), tmp.path()).await;
    assert!(matches!(err, Error::UnsupportedMediaType { .. }), "{err}");
    assert!(err.to_string().contains("vnd.example.thing"), "{err}");

    let mut img = image(&[&plain_tar()]);
    img.manifest["layers"][0]["mediaType"] = json!("application/vnd.example.layer.v1.tar+lz4");
    let err = pull_err(&img.serve(), tmp.path()).await;
    assert!(matches!(err, Error::UnsupportedMediaType { .. }), "{err}");
}

#[tokio::test]
async fn registry_digest_claim_must_match() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut routes, manifest) = image(&[&plain_tar()]).without_manifest_route();
    let mut r = reply(OCI_MANIFEST, manifest.to_string().into_bytes());
    r.headers.push((
        "Docker-Content-Digest".into(),
        Digest::of(b"other").to_string(),
    ));
    routes.insert(MANIFEST_ROUTE.into(), r);
    let err = pull_err(&serve(routes), tmp.path()).await;
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn oversized_config_descriptor() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut routes, mut manifest) = image(&[&plain_tar()]).without_manifest_route();
    manifest["config"]["size"] = json!(1u64 << 30);
    routes.insert(
        MANIFEST_ROUTE.into(),
        reply(OCI_MANIFEST, manifest.to_string().into_bytes()),
    );
    let err = pull_err(&serve(routes), tmp.path()).await;
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn layer_size_lie() {
    let tmp = tempfile::tempdir().unwrap();
    let mut img = image(&[&plain_tar()]);
    let size = img.manifest["layers"][0]["size"].as_u64().unwrap();
    img.manifest["layers"][0]["size"] = json!(size - 10);
    let err = pull_err(&img.serve(), tmp.path()).await;
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
}

#[tokio::test]
async fn diff_id_lie() {
    let tmp = tempfile::tempdir().unwrap();
    let mut img = image(&[&plain_tar()]);
    img.config["rootfs"]["diff_ids"] = json!([Digest::of(b"not the tar").to_string()]);
    let err = pull_err(&img.serve(), tmp.path()).await;
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("uncompressed layer"), "{err}");
}

#[tokio::test]
async fn escaping_layer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    let name = b"../../../escaped-by-layer";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    let tar = hostile::Tar::default().raw(h.as_bytes(), b"pwned").finish();
    let err = pull_err(&image(&[&tar]).serve(), tmp.path()).await;
    assert!(matches!(err, Error::UnsafeEntry { .. }), "{err}");
    assert!(err.to_string().contains("'..'"), "{err}");
    for dir in [
        tmp.path().to_path_buf(),
        tmp.path().join("images"),
        tmp.path().join("images/layers"),
    ] {
        assert!(!dir.join("escaped-by-layer").exists());
    }
}

fn big_layer_image() -> Image {
    let big: Vec<u8> = (0..2_000_000u64).map(|i| (i * 7919 % 251) as u8).collect();
    let tar = hostile::Tar::default()
        .file("big.bin", 0o644, &big)
        .finish();
    image(&[&tar])
}

/// A download that dies half-way (connection closed, or stalled) fails the pull and leaves no
/// blob and no temporary file.
#[tokio::test]
async fn interrupted_downloads_leave_nothing() {
    for stall in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let mut img = big_layer_image();
        let route = layer_route(&img, 0);
        let r = img.routes.get_mut(&route).unwrap();
        let Body::Full(b) = r.body.clone() else {
            unreachable!()
        };
        r.body = if stall {
            Body::StallAfter(b.clone(), b.len() / 2)
        } else {
            Body::Full(Arc::new(b[..b.len() / 2].to_vec()))
        };
        let ld = route.rsplit('/').next().unwrap().to_string();
        let err = pull_err(&img.serve(), tmp.path()).await;
        if stall {
            assert!(matches!(err, Error::Timeout { .. }), "{err}");
        } else {
            assert!(matches!(err, Error::Http { .. }), "{err}");
        }
        let store = tmp.path().join("images");
        assert!(!store.join("blobs/sha256").join(&ld[7..]).exists());
    }
}

/// Hole 4: a layer declaring a petabyte is refused before a byte is downloaded, whatever the
/// blob route would send; so is an image whose layers together pass the image cap.
#[tokio::test]
async fn declared_sizes_are_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut img = image(&[&plain_tar()]);
    let route = layer_route(&img, 0);
    img.routes.get_mut(&route).unwrap().body = Body::Endless;
    img.routes.get_mut(&route).unwrap().length = None;
    img.manifest["layers"][0]["size"] = json!(10u64.pow(15));
    let err = pull_err(&img.serve(), tmp.path()).await;
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("1000000000000000"), "{err}");

    let tars = [
        plain_tar(),
        hostile::Tar::default().file("b", 0o644, b"b").finish(),
    ];
    let img = image(&[&tars[0], &tars[1]]);
    let sizes: u64 = (0..2)
        .map(|i| img.manifest["layers"][i]["size"].as_u64().unwrap())
        .sum();
    let config = StoreConfig {
        max_image_bytes: sizes - 1,
        ..impatient()
    };
    let err = pull_err_with(&img.serve(), tmp.path(), config).await;
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("image"), "{err}");
}

/// Hole 4: once the streaming unpacker has failed, the download stops: the error is the
/// unpacker's (an endless garbage blob under a generous declared size would otherwise be
/// downloaded to the end) and nothing stays in tmp/.
#[tokio::test]
async fn failed_unpack_stops_the_download() {
    let tmp = tempfile::tempdir().unwrap();
    let mut img = image(&[&plain_tar()]);
    let route = layer_route(&img, 0);
    let r = img.routes.get_mut(&route).unwrap();
    r.body = Body::Endless;
    r.length = None;
    img.manifest["layers"][0]["size"] = json!(8u64 << 30);
    img.manifest["layers"][0]["mediaType"] = json!(OCI_LAYER_GZIP);
    let err = pull_err(&img.serve(), tmp.path()).await;
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("gzip"), "{err}");
}

/// Hole 5: a registry that accepts the connection and says nothing, or stalls inside a
/// manifest, config or layer body, fails the pull with an error naming it and the stage.
#[tokio::test]
async fn stalled_registry_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = image(&[&plain_tar()]).serve_with(Greeting::Silence);
    let err = pull_err(&addr, tmp.path()).await;
    let text = err.to_string();
    assert!(matches!(err, Error::Timeout { .. }), "{text}");
    assert!(
        text.contains(&addr) && text.contains("manifest latest"),
        "{text}"
    );

    // A token server that never answers (the registry asks for a bearer token).
    let tmp = tempfile::tempdir().unwrap();
    let token_server = hostile::serve_with(HashMap::new(), Greeting::Silence);
    let mut challenge = reply("application/json", b"{}".to_vec());
    challenge.status = "401 Unauthorized";
    challenge.headers.push((
        "WWW-Authenticate".into(),
        format!("Bearer realm=\"http://{token_server}/token\",service=\"evil\""),
    ));
    let routes = HashMap::from([(MANIFEST_ROUTE.to_string(), challenge)]);
    let err = pull_err(&serve(routes), tmp.path()).await;
    let text = err.to_string();
    assert!(matches!(err, Error::Timeout { .. }), "{text}");
    assert!(text.contains("token"), "{text}");

    for (what, stage) in [("manifest", "manifest latest"), ("config", "image config")] {
        let tmp = tempfile::tempdir().unwrap();
        let (mut routes, manifest) = image(&[&plain_tar()]).without_manifest_route();
        routes.insert(
            MANIFEST_ROUTE.into(),
            reply(OCI_MANIFEST, manifest.to_string().into_bytes()),
        );
        let route = if what == "manifest" {
            MANIFEST_ROUTE.to_string()
        } else {
            config_route(&manifest)
        };
        let r = routes.get_mut(&route).unwrap();
        let Body::Full(b) = r.body.clone() else {
            unreachable!()
        };
        r.body = Body::StallAfter(b.clone(), b.len() / 2);
        let err = pull_err(&serve(routes), tmp.path()).await;
        let text = err.to_string();
        assert!(matches!(err, Error::Timeout { .. }), "{what}: {text}");
        assert!(text.contains(stage), "{what}: {text}");
    }
}

fn assert_no_controls(what: &str, text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control()),
        "{what} reaches the terminal raw: {text:?}"
    );
}

/// Hole 8: registry error bodies, tar errors and an image config's os/architecture/created
/// reach errors and image records with their control characters escaped.
#[tokio::test]
async fn untrusted_text_is_escaped() {
    let clear = "\x1b[2J\x1b]0;pwned\x07\u{9b}31m";
    let bodies = [
        json!({"errors": [{"code": format!("DENIED{clear}"), "message": clear}]}).to_string(),
        format!("<html>{clear}</html>"),
    ];
    for body in bodies {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = reply("application/json", body.into_bytes());
        r.status = "500 Internal Server Error";
        let routes = HashMap::from([(MANIFEST_ROUTE.to_string(), r)]);
        let err = pull_err(&serve(routes), tmp.path()).await;
        assert!(matches!(err, Error::Registry { .. }), "{err}");
        let text = err.to_string();
        assert_no_controls("registry error body", &text);
        assert!(text.contains("\\x1b[2J"), "{text}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let tar = hostile::Tar::default()
        .file(&format!("../{clear}"), 0o644, b"x")
        .finish();
    let err = pull_err(&image(&[&tar]).serve(), tmp.path()).await;
    assert_no_controls("tar entry name", &err.to_string());

    let tmp = tempfile::tempdir().unwrap();
    let mut img = image(&[&plain_tar()]);
    img.config["os"] = json!(format!("linux{clear}"));
    img.config["architecture"] = json!(format!("amd64{clear}"));
    img.config["created"] = json!(format!("2024-01-01{clear}"));
    let addr = img.serve();
    let svc = service(tmp.path(), impatient());
    let report = svc
        .pull(&format!("{addr}/evil:latest"), &PullOptions::default())
        .await
        .unwrap();
    for rec in [report.image, svc.list().unwrap().remove(0)] {
        assert_no_controls("platform", &rec.platform);
        assert_no_controls("created", rec.created.as_deref().unwrap());
    }
}

/// A failed pull takes back what it added: here the first layer and the config arrive and
/// are unpacked, the second layer lies about its diff_id (pull_err checks the store).
#[tokio::test]
async fn failed_pull_leaves_no_orphans() {
    let tmp = tempfile::tempdir().unwrap();
    let second = hostile::Tar::default().file("b", 0o644, b"b").finish();
    let mut img = image(&[&plain_tar(), &second]);
    img.config["rootfs"]["diff_ids"][1] = json!(Digest::of(b"not the tar").to_string());
    let err = pull_err(&img.serve(), tmp.path()).await;
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

/// The per-image cap: each layer is within the per-layer limit, together they are not.
#[tokio::test]
async fn image_cap_counts_all_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let big = vec![b'z'; 600 << 10];
    let tars = [
        hostile::Tar::default().file("a", 0o644, &big).finish(),
        hostile::Tar::default().file("b", 0o644, &big).finish(),
    ];
    let mut config = impatient();
    config.unpack.limits.max_image_bytes = 1 << 20;
    let err = pull_err_with(&image(&[&tars[0], &tars[1]]).serve(), tmp.path(), config).await;
    assert!(matches!(err, Error::LimitExceeded(_)), "{err}");
}
