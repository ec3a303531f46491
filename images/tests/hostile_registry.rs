//! A registry that lies: a tiny HTTP server in the test serves crafted manifests, configs and
//! layers. Every lie must end in a clear error and leave the store without a trace.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use skiff_images::error::Error;
use skiff_images::{Digest, ImageService, PullOptions};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Clone)]
struct Reply {
    content_type: &'static str,
    headers: Vec<(String, String)>,
    body: Arc<Vec<u8>>,
    /// Send only this many body bytes, then stall (true) or hang up (false).
    cut: Option<(usize, bool)>,
}

fn reply(content_type: &'static str, body: Vec<u8>) -> Reply {
    Reply {
        content_type,
        headers: Vec::new(),
        body: Arc::new(body),
        cut: None,
    }
}

/// Serves fixed replies by request path (404 otherwise) on a free loopback port.
fn serve(routes: HashMap<String, Reply>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let routes = routes.clone();
            std::thread::spawn(move || {
                // Like a real server, refuse a TLS hello at once (the client then falls back
                // to plain HTTP).
                let mut first_byte = [0u8; 1];
                if conn.peek(&mut first_byte).is_err() || first_byte[0] == 0x16 {
                    return;
                }
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                reader.read_line(&mut first).unwrap_or(0);
                loop {
                    let mut l = String::new();
                    if reader.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                        break;
                    }
                }
                let path = first.split(' ').nth(1).unwrap_or("").to_string();
                let (status, r) = match routes.get(&path) {
                    Some(r) => ("200 OK", r.clone()),
                    None => ("404 Not Found", reply("text/plain", b"not here".to_vec())),
                };
                let mut head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                    r.content_type,
                    r.body.len()
                );
                for (k, v) in &r.headers {
                    head += &format!("{k}: {v}\r\n");
                }
                head += "\r\n";
                let _ = conn.write_all(head.as_bytes());
                match r.cut {
                    None => {
                        let _ = conn.write_all(&r.body);
                    }
                    Some((n, stall)) => {
                        let _ = conn.write_all(&r.body[..n]);
                        if stall {
                            std::thread::sleep(std::time::Duration::from_secs(30));
                        }
                    }
                }
            });
        }
    });
    addr
}

/// An image: config + one gzip layer built from `tar`, served under /v2/evil/.
struct Image {
    routes: HashMap<String, Reply>,
    manifest: serde_json::Value,
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn image(tar: &[u8]) -> Image {
    let layer = gzip(tar);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(tar).to_string()]},
    })
    .to_string()
    .into_bytes();
    let mut routes = HashMap::new();
    let (cd, ld) = (Digest::of(&config), Digest::of(&layer));
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld.to_string(), "size": layer.len()}],
    });
    routes.insert(
        format!("/v2/evil/blobs/{cd}"),
        reply("application/octet-stream", config),
    );
    routes.insert(
        format!("/v2/evil/blobs/{ld}"),
        reply("application/octet-stream", layer),
    );
    Image { routes, manifest }
}

fn plain_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, "hello.txt", &b"hi\n"[..]).unwrap();
    b.into_inner().unwrap()
}

impl Image {
    fn serve(mut self) -> String {
        let body = self.manifest.to_string().into_bytes();
        self.routes.insert(
            "/v2/evil/manifests/latest".into(),
            reply(OCI_MANIFEST, body),
        );
        serve(self.routes)
    }
}

async fn pull_err(addr: &str, dir: &Path) -> Error {
    let svc = ImageService::open(&dir.join("images")).unwrap();
    let err = svc
        .pull(&format!("{addr}/evil:latest"), &PullOptions::default())
        .await
        .unwrap_err();
    // Nothing visible: no name, no layer directory, nothing left in tmp/.
    assert!(svc.list().unwrap().is_empty());
    let store = dir.join("images");
    assert_eq!(
        fs::read_dir(store.join("layers/sha256")).unwrap().count(),
        0
    );
    assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0);
    err
}

#[tokio::test]
async fn sane_image_pulls() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = image(&plain_tar()).serve();
    let svc = ImageService::open(&tmp.path().join("images")).unwrap();
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
    let mut img = image(&tar);
    let d = Digest::of(&tar);
    img.manifest["layers"][0] = json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": tar.len(),
    });
    img.routes.insert(
        format!("/v2/evil/blobs/{d}"),
        reply("application/octet-stream", tar),
    );
    let addr = img.serve();
    let svc = ImageService::open(&tmp.path().join("images")).unwrap();
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
    routes.insert(
        "/v2/evil/manifests/latest".to_string(),
        reply(OCI_MANIFEST, big),
    );
    let err = pull_err(&serve(routes), tmp.path()).await;
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn malformed_and_unknown_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let mut routes = HashMap::new();
    routes.insert(
        "/v2/evil/manifests/latest".to_string(),
        reply(
            OCI_MANIFEST,
            b"{\"schemaVersion\": 2, \"layers\": 7".to_vec(),
        ),
    );
    let err = pull_err(&serve(routes), tmp.path()).await;
    assert!(matches!(err, Error::Malformed { .. }), "{err}");

    let mut img = image(&plain_tar());
    img.manifest["mediaType"] = json!("application/vnd.example.thing+json");
    let err = pull_err(&img.serve(), tmp.path()).await;
    assert!(matches!(err, Error::UnsupportedMediaType { .. }), "{err}");
    assert!(err.to_string().contains("vnd.example.thing"), "{err}");

    let mut img = image(&plain_tar());
    img.manifest["layers"][0]["mediaType"] = json!("application/vnd.example.layer.v1.tar+lz4");
    let err = pull_err(&img.serve(), tmp.path()).await;
    assert!(matches!(err, Error::UnsupportedMediaType { .. }), "{err}");
}

#[tokio::test]
async fn registry_digest_claim_must_match() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(&plain_tar());
    let body = img.manifest.to_string().into_bytes();
    let mut routes = img.routes;
    let mut r = reply(OCI_MANIFEST, body);
    r.headers.push((
        "Docker-Content-Digest".into(),
        Digest::of(b"other").to_string(),
    ));
    routes.insert("/v2/evil/manifests/latest".into(), r);
    let err = pull_err(&serve(routes), tmp.path()).await;
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn oversized_config_descriptor() {
    let tmp = tempfile::tempdir().unwrap();
    let mut img = image(&plain_tar());
    img.manifest["config"]["size"] = json!(1u64 << 30);
    let err = pull_err(&img.serve(), tmp.path()).await;
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn layer_size_lie() {
    let tmp = tempfile::tempdir().unwrap();
    let mut img = image(&plain_tar());
    let size = img.manifest["layers"][0]["size"].as_u64().unwrap();
    img.manifest["layers"][0]["size"] = json!(size - 10);
    let err = pull_err(&img.serve(), tmp.path()).await;
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
}

#[tokio::test]
async fn diff_id_lie() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = plain_tar();
    let img = image(&tar);
    // Re-serve the config with a wrong diff_id (and the manifest pointing at it).
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(b"not the tar").to_string()]},
    })
    .to_string()
    .into_bytes();
    let cd = Digest::of(&config);
    let mut img = img;
    img.manifest["config"] = json!({"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()});
    img.routes.insert(
        format!("/v2/evil/blobs/{cd}"),
        reply("application/octet-stream", config),
    );
    let err = pull_err(&img.serve(), tmp.path()).await;
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("uncompressed layer"), "{err}");
}

#[tokio::test]
async fn escaping_layer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    let name = b"../../../escaped-by-layer";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    b.append(&h, &b"pwned"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let err = pull_err(&image(&tar).serve(), tmp.path()).await;
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

/// A download that dies half-way (connection closed, or stalled and abandoned) leaves no blob
/// and no temporary file.
#[tokio::test]
async fn interrupted_downloads_leave_nothing() {
    for stall in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..2_000_000u64).map(|i| (i * 7919 % 251) as u8).collect();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(big.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "big.bin", &big[..]).unwrap();
        let mut img = image(&b.into_inner().unwrap());
        let ld = img.manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let route = format!("/v2/evil/blobs/{ld}");
        let r = img.routes.get_mut(&route).unwrap();
        r.cut = Some((r.body.len() / 2, stall));
        let addr = img.serve();
        let svc = ImageService::open(&tmp.path().join("images")).unwrap();
        let (name, opts) = (format!("{addr}/evil:latest"), PullOptions::default());
        let pull = svc.pull(&name, &opts);
        match tokio::time::timeout(std::time::Duration::from_secs(3), pull).await {
            Ok(Ok(_)) => panic!("a truncated layer was accepted"),
            Ok(Err(e)) => assert!(!stall && matches!(e, Error::Http { .. }), "{e}"),
            Err(_elapsed) => assert!(stall, "hang-up was not noticed"),
        }
        // Dropping the pull aborts its download tasks; aborted tasks are dropped (and their
        // temporary files with them) the next time the runtime runs.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let store = tmp.path().join("images");
        assert!(!store.join("blobs/sha256").join(&ld[7..]).exists());
        assert_eq!(fs::read_dir(store.join("tmp")).unwrap().count(), 0);
        assert!(svc.list().unwrap().is_empty());
    }
}
