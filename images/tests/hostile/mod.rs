//! Hostile inputs built in the test itself: layer tars entry by entry, OCI layout directories
//! around them, and a loopback "registry" that serves crafted replies.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use skiff_images::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Runs a command that must succeed.
pub fn run(cmd: &str, args: &[&str]) {
    let status = std::process::Command::new(cmd).args(args).status().unwrap();
    assert!(status.success(), "{cmd} {args:?}: {status}");
}

/// A tar built entry by entry with full control of each header.
#[derive(Default)]
pub struct Tar {
    b: Vec<u8>,
}

impl Tar {
    pub fn entry(self, kind: tar::EntryType, path: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        // Written raw: set_path refuses the `..` names hostile layers carry.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        self.raw(h.as_bytes(), data)
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.entry(tar::EntryType::Directory, path, mode, b"")
    }

    pub fn file(self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.entry(tar::EntryType::Regular, path, mode, data)
    }

    /// A header block as given, then `data` padded to whole blocks.
    pub fn raw(mut self, header: &[u8; 512], data: &[u8]) -> Self {
        self.b.extend_from_slice(header);
        self.b.extend_from_slice(data);
        self.b
            .extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.b.extend_from_slice(&[0u8; 1024]);
        self.b
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// The config blob of an image with these uncompressed layers.
pub fn config_for(layers: &[&[u8]], extra: serde_json::Value) -> Vec<u8> {
    let mut c = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| Digest::of(l).to_string()).collect::<Vec<_>>()},
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        c.extend(extra.clone());
    }
    c.to_string().into_bytes()
}

/// Writes an OCI layout directory holding one image of uncompressed `layers`, tagged `test`.
pub fn oci_layout(dir: &Path, layers: &[&[u8]], config_extra: serde_json::Value) -> PathBuf {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = Digest::of(bytes);
        fs::write(blobs.join(d.hex()), bytes).unwrap();
        d
    };
    let config = config_for(layers, config_extra);
    let cd = put(&config);
    let layer_descs: Vec<_> = layers
        .iter()
        .map(|l| json!({"mediaType": OCI_LAYER_TAR, "digest": put(l).to_string(), "size": l.len()}))
        .collect();
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd.to_string(), "size": config.len()},
        "layers": layer_descs,
    })
    .to_string()
    .into_bytes();
    let md = put(&manifest);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": md.to_string(), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "test"}}],
    });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir.to_path_buf()
}

/// What the fake registry does after sending a reply's head.
#[derive(Clone)]
pub enum Body {
    /// The whole body.
    Full(Arc<Vec<u8>>),
    /// The first `n` bytes, then silence for a long time (a stalled registry).
    StallAfter(Arc<Vec<u8>>, usize),
    /// Endless garbage (a registry filling the disk).
    Endless,
}

#[derive(Clone)]
pub struct Reply {
    pub status: &'static str,
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    /// The Content-Length header, when it is sent.
    pub length: Option<u64>,
    pub body: Body,
}

pub fn reply(content_type: &'static str, body: Vec<u8>) -> Reply {
    Reply {
        status: "200 OK",
        content_type,
        headers: Vec::new(),
        length: Some(body.len() as u64),
        body: Body::Full(Arc::new(body)),
    }
}

/// What the server does with a connection before answering anything.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    Answer,
    /// Accepts the connection, reads the request, never answers.
    Silence,
}

/// Serves replies by request path (404 otherwise) on a free loopback port.
pub fn serve(routes: HashMap<String, Reply>) -> String {
    serve_with(routes, Greeting::Answer)
}

pub fn serve_with(routes: HashMap<String, Reply>, greeting: Greeting) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let routes = routes.clone();
            std::thread::spawn(move || {
                // Like a real plain-HTTP server, refuse a TLS hello at once (the client then
                // falls back to plain HTTP).
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
                if greeting == Greeting::Silence {
                    std::thread::sleep(Duration::from_secs(120));
                    return;
                }
                let path = first.split(' ').nth(1).unwrap_or("").to_string();
                let r = routes.get(&path).cloned().unwrap_or_else(|| Reply {
                    status: "404 Not Found",
                    ..reply("text/plain", b"not here".to_vec())
                });
                let mut head = format!(
                    "HTTP/1.1 {}\r\nContent-Type: {}\r\nConnection: close\r\n",
                    r.status, r.content_type
                );
                if let Some(n) = r.length {
                    head += &format!("Content-Length: {n}\r\n");
                }
                for (k, v) in &r.headers {
                    head += &format!("{k}: {v}\r\n");
                }
                head += "\r\n";
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                match r.body {
                    Body::Full(b) => {
                        let _ = conn.write_all(&b);
                    }
                    Body::StallAfter(b, n) => {
                        let _ = conn.write_all(&b[..n]);
                        std::thread::sleep(Duration::from_secs(120));
                    }
                    Body::Endless => {
                        let junk = vec![0x5a_u8; 64 << 10];
                        while conn.write_all(&junk).is_ok() {}
                    }
                }
            });
        }
    });
    addr
}

/// The routes of an image under `/v2/evil/`: config and gzip layers from uncompressed tars, the
/// manifest at `latest` (to be served once the caller has altered what it wants).
pub struct Image {
    pub routes: HashMap<String, Reply>,
    pub manifest: serde_json::Value,
    pub config: serde_json::Value,
}

pub fn image(tars: &[&[u8]]) -> Image {
    let config: serde_json::Value = serde_json::from_slice(&config_for(tars, json!({}))).unwrap();
    let mut routes = HashMap::new();
    let mut layers = Vec::new();
    for tar in tars {
        let layer = gzip(tar);
        let ld = Digest::of(&layer);
        layers.push(
            json!({"mediaType": OCI_LAYER_GZIP, "digest": ld.to_string(), "size": layer.len()}),
        );
        routes.insert(
            format!("/v2/evil/blobs/{ld}"),
            reply("application/octet-stream", layer),
        );
    }
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "", "size": 0},
        "layers": layers,
    });
    Image {
        routes,
        manifest,
        config,
    }
}

pub const MANIFEST_ROUTE: &str = "/v2/evil/manifests/latest";

impl Image {
    pub fn serve(self) -> String {
        self.serve_with(Greeting::Answer)
    }

    pub fn serve_with(self, greeting: Greeting) -> String {
        let (mut routes, manifest) = self.without_manifest_route();
        let body = manifest.to_string().into_bytes();
        routes.insert(MANIFEST_ROUTE.into(), reply(OCI_MANIFEST, body));
        serve_with(routes, greeting)
    }

    /// The routes with the config in place and the manifest pointing at it, for a test to
    /// serve the manifest its own way.
    pub fn without_manifest_route(mut self) -> (HashMap<String, Reply>, serde_json::Value) {
        let config = self.config.to_string().into_bytes();
        let cd = Digest::of(&config);
        self.manifest["config"]["digest"] = json!(cd.to_string());
        self.manifest["config"]["size"] = json!(config.len());
        self.routes.insert(
            config_route(&self.manifest),
            reply("application/octet-stream", config),
        );
        (self.routes, self.manifest)
    }
}

pub fn config_route(manifest: &serde_json::Value) -> String {
    format!(
        "/v2/evil/blobs/{}",
        manifest["config"]["digest"].as_str().unwrap()
    )
}

/// Every file and directory under `dir`, as paths relative to it.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}
