//! Test fixtures from real parts: images built offline from Debian's busybox-static with GNU tar
//! and umoci, pushed with skopeo to Debian's `docker-registry` on 127.0.0.1.
//!
//! The images are built and pushed once per test process into a registry storage directory;
//! each test then starts its own registry on that storage (a free port, killed on drop, so a
//! failing test stops it too).

#![allow(dead_code)]

pub mod proxy;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// 2024-01-01T00:00:00Z: fixed times give reproducible digests.
const EPOCH: &str = "2024-01-01T00:00:00Z";
const EPOCH_SECS: &str = "@1704067200";
pub const USER: &str = "tester";
pub const PASSWORD: &str = "s3cret-pw";

/// Debian packages the fixtures need, by the binary that shows each is there.
const TOOLS: &[(&str, &str)] = &[
    ("/usr/bin/docker-registry", "docker-registry"),
    ("/usr/bin/skopeo", "skopeo"),
    ("/usr/bin/umoci", "umoci"),
    ("/bin/busybox", "busybox-static"),
    ("/usr/bin/htpasswd", "apache2-utils"),
    ("/usr/bin/zstd", "zstd"),
    ("/usr/bin/openssl", "openssl"),
];

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(script: &str) {
    run("bash", &["-euo", "pipefail", "-c", script]);
}

/// Installs missing tools with apt-get (CI machines start fresh).
fn ensure_tools() {
    // Debian's plain `busybox` package also ships /bin/busybox, but linked dynamically: useless
    // inside an image. `ldd` succeeds only for dynamic executables.
    let dynamic_busybox = |bin: &str| {
        bin == "/bin/busybox"
            && Command::new("ldd")
                .arg(bin)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    };
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(bin, _)| !Path::new(bin).exists() || dynamic_busybox(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("installing test tools: {missing:?}");
    run("apt-get", &["update", "-qq"]);
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    let st = Command::new("apt-get")
        .args(&args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .expect("apt-get");
    assert!(st.success(), "apt-get install {missing:?} failed");
}

pub struct Fixture {
    pub dir: PathBuf,
    /// OCI layout with tags busybox-test, whiteout-test, multiarch-test, busybox-zstd.
    pub layout: PathBuf,
    /// Registry storage holding busybox:{test,test-docker,test-zstd}, whiteout:test,
    /// multiarch:{test,test-docker}.
    pub storage: PathBuf,
    pub archives: PathBuf,
    /// DOCKER_CONFIG of this test process (credentials written by login tests).
    pub docker_config: PathBuf,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    ensure_tools();
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    remove_stale_fixtures(&base);
    let dir = base.join(format!("images-fixture-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let docker_config = dir.join("docker-config");
    fs::create_dir_all(&docker_config).unwrap();
    // Process-wide, set once before any test reads it: no test sees credentials of the host.
    std::env::set_var("DOCKER_CONFIG", &docker_config);
    let fx = Fixture {
        layout: dir.join("oci"),
        storage: dir.join("storage"),
        archives: dir.join("archives"),
        docker_config,
        dir,
    };
    build_images(&fx);
    let reg = Registry::start(&fx.storage, Auth::None);
    push_images(&fx, &reg.addr);
    drop(reg);
    fx
}

/// Fixture directories of test processes that are gone.
fn remove_stale_fixtures(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("images-fixture-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A reproducible uncompressed layer tar of `src` (numeric owners as on disk).
pub fn layer_tar(src: &Path, out: &Path) {
    sh(&format!(
        "cd '{}' && tar --format=posix --pax-option=delete=atime,delete=ctime --sort=name \
         --mtime={EPOCH_SECS} --numeric-owner -cf '{}' $(ls -A | LC_ALL=C sort)",
        src.display(),
        out.display()
    ));
}

pub fn umoci(args: &[&str]) {
    run("umoci", args);
}

pub fn add_layer(layout: &Path, tag: &str, tar: &Path) {
    let image = format!("{}:{tag}", layout.display());
    umoci(&[
        "raw",
        "add-layer",
        "--image",
        &image,
        "--history.created",
        EPOCH,
        "--history.created_by",
        "fixture",
        tar.to_str().unwrap(),
    ]);
}

pub fn set_config(layout: &Path, tag: &str, args: &[&str]) {
    let image = format!("{}:{tag}", layout.display());
    let mut all = vec![
        "config",
        "--image",
        &image,
        "--created",
        EPOCH,
        "--history.created",
        EPOCH,
        "--history.created_by",
        "fixture",
        "--os",
        "linux",
    ];
    all.extend_from_slice(args);
    umoci(&all);
}

fn build_images(fx: &Fixture) {
    let b = fx.dir.join("build");
    let base = b.join("base");
    for d in ["bin", "etc", "root", "tmp", "home/user", "usr/bin"] {
        fs::create_dir_all(base.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", base.join("bin/busybox")).unwrap();
    for a in ["sh", "echo", "cat", "ls", "env"] {
        std::os::unix::fs::symlink("busybox", base.join("bin").join(a)).unwrap();
    }
    std::os::unix::fs::symlink("../../bin/busybox", base.join("usr/bin/env")).unwrap();
    fs::hard_link(base.join("bin/busybox"), base.join("bin/true")).unwrap();
    fs::write(
        base.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .unwrap();
    fs::write(base.join("home/user/.profile"), "export PS1='$ '\n").unwrap();
    fs::write(base.join("bin/setuid-marker"), "not really a program\n").unwrap();
    set_mode(&base.join("bin/setuid-marker"), 0o4755);
    set_mode(&base.join("tmp"), 0o1777);
    set_mode(&base.join("root"), 0o700);
    for p in ["home/user", "home/user/.profile"] {
        std::os::unix::fs::chown(base.join(p), Some(1000), Some(1000)).unwrap();
    }
    fs::create_dir_all(&b).unwrap();
    layer_tar(&base, &b.join("base.tar"));

    let l = &fx.layout;
    let lp = l.to_str().unwrap();
    umoci(&["init", "--layout", lp]);

    umoci(&["new", "--image", &format!("{lp}:busybox-test")]);
    add_layer(l, "busybox-test", &b.join("base.tar"));
    set_config(
        l,
        "busybox-test",
        &[
            "--architecture",
            "amd64",
            "--config.cmd",
            "sh",
            "--config.cmd",
            "-c",
            "--config.cmd",
            "echo hello from $HOSTNAME",
            "--config.env",
            "PATH=/usr/bin:/bin",
            "--config.env",
            "GREETING=hello",
            "--config.workingdir",
            "/root",
            "--config.user",
            "0:0",
        ],
    );

    // whiteout-test: layer 2 deletes /etc/old.txt and makes /data opaque.
    let w1 = b.join("w1");
    sh(&format!("cp -a '{}' '{}'", base.display(), w1.display()));
    fs::write(w1.join("etc/old.txt"), "deleted by layer 2\n").unwrap();
    fs::create_dir_all(w1.join("data/sub")).unwrap();
    fs::write(w1.join("data/a.txt"), "a\n").unwrap();
    fs::write(w1.join("data/sub/b.txt"), "b\n").unwrap();
    layer_tar(&w1, &b.join("w1.tar"));
    let w2 = b.join("w2");
    fs::create_dir_all(w2.join("etc")).unwrap();
    fs::create_dir_all(w2.join("data")).unwrap();
    fs::write(w2.join("etc/.wh.old.txt"), "").unwrap();
    fs::write(w2.join("etc/new.txt"), "added by layer 2\n").unwrap();
    fs::write(w2.join("data/.wh..wh..opq"), "").unwrap();
    fs::write(w2.join("data/c.txt"), "c\n").unwrap();
    layer_tar(&w2, &b.join("w2.tar"));
    umoci(&["new", "--image", &format!("{lp}:whiteout-test")]);
    add_layer(l, "whiteout-test", &b.join("w1.tar"));
    add_layer(l, "whiteout-test", &b.join("w2.tar"));
    set_config(
        l,
        "whiteout-test",
        &[
            "--architecture",
            "amd64",
            "--config.entrypoint",
            "/bin/cat",
            "--config.cmd",
            "/etc/new.txt",
            "--config.workingdir",
            "/data",
        ],
    );

    // multiarch-test: an index over amd64 and arm64 images (marker file /etc/platform).
    let mut entries = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let p = b.join(format!("plat-{arch}"));
        fs::create_dir_all(p.join("etc")).unwrap();
        fs::write(p.join("etc/platform"), format!("linux/{arch}\n")).unwrap();
        let tar = b.join(format!("plat-{arch}.tar"));
        layer_tar(&p, &tar);
        let tag = format!("multiarch-{arch}");
        umoci(&["new", "--image", &format!("{lp}:{tag}")]);
        add_layer(l, &tag, &b.join("base.tar"));
        add_layer(l, &tag, &tar);
        set_config(
            l,
            &tag,
            &[
                "--architecture",
                arch,
                "--config.cmd",
                "cat",
                "--config.cmd",
                "/etc/platform",
            ],
        );
        let (digest, size) = tag_descriptor(l, &tag);
        let mut platform = json!({"os": "linux", "architecture": arch});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        entries.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size, "platform": platform,
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries,
    });
    add_blob_ref(
        l,
        "multiarch-test",
        index.to_string().as_bytes(),
        "application/vnd.oci.image.index.v1+json",
    );

    // busybox-zstd: busybox-test with its layer zstd-compressed (umoci 0.4 writes only gzip).
    run(
        "zstd",
        &["-q", "-19", "-f", b.join("base.tar").to_str().unwrap()],
    );
    let zst = fs::read(b.join("base.tar.zst")).unwrap();
    let zst_digest = write_blob(l, &zst);
    let (bb_digest, _) = tag_descriptor(l, "busybox-test");
    let mut m: Value =
        serde_json::from_slice(&fs::read(blob_path(l, &bb_digest)).unwrap()).unwrap();
    m["layers"] = json!([{
        "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
        "digest": zst_digest, "size": zst.len(),
    }]);
    add_blob_ref(
        l,
        "busybox-zstd",
        m.to_string().as_bytes(),
        "application/vnd.oci.image.manifest.v1+json",
    );
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn write_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = format!("sha256:{}", sha256_hex(bytes));
    fs::write(blob_path(layout, &digest), bytes).unwrap();
    digest
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// (digest, size) of the manifest a tag of the layout points at.
pub fn tag_descriptor(layout: &Path, tag: &str) -> (String, u64) {
    let index: Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", layout.display()));
    (
        m["digest"].as_str().unwrap().to_string(),
        m["size"].as_u64().unwrap(),
    )
}

fn add_blob_ref(layout: &Path, tag: &str, bytes: &[u8], media_type: &str) {
    let digest = write_blob(layout, bytes);
    let p = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    index["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": media_type, "digest": digest, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    fs::write(&p, index.to_string()).unwrap();
}

fn push_images(fx: &Fixture, addr: &str) {
    let l = fx.layout.display();
    let push = |src: &str, dst: &str, extra: &[&str]| {
        let src = format!("oci:{l}:{src}");
        let dst = format!("docker://{addr}/{dst}");
        let mut args = vec!["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"];
        args.extend_from_slice(extra);
        args.extend([src.as_str(), dst.as_str()]);
        run("skopeo", &args);
    };
    push("busybox-test", "busybox:test", &[]);
    push("busybox-test", "busybox:test-docker", &["--format", "v2s2"]);
    push("busybox-zstd", "busybox:test-zstd", &[]);
    push("whiteout-test", "whiteout:test", &[]);
    push("multiarch-test", "multiarch:test", &["--all"]);
    push(
        "multiarch-test",
        "multiarch:test-docker",
        &["--all", "--format", "v2s2"],
    );

    fs::create_dir_all(&fx.archives).unwrap();
    let a = fx.archives.display();
    let save = |src: &str, dst: String, extra: &[&str]| {
        let src = format!("oci:{l}:{src}");
        let mut args = vec!["--insecure-policy", "copy", "-q"];
        args.extend_from_slice(extra);
        args.extend([src.as_str(), dst.as_str()]);
        run("skopeo", &args);
    };
    save(
        "busybox-test",
        format!("docker-archive:{a}/busybox.docker.tar:busybox:test"),
        &[],
    );
    save(
        "whiteout-test",
        format!("oci-archive:{a}/whiteout.oci.tar:whiteout:test"),
        &[],
    );
    save(
        "multiarch-test",
        format!("oci-archive:{a}/multiarch.oci.tar:multiarch:test"),
        &["--all"],
    );
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    /// Basic auth with USER/PASSWORD (htpasswd, bcrypt).
    Htpasswd,
    /// distribution's "silly" token auth: 401 with a Bearer challenge pointing at `realm`
    /// unless the request carries any Authorization header.
    Bearer {
        realm_port: u16,
    },
}

/// A `docker-registry` process on a free loopback port, killed when dropped.
pub struct Registry {
    child: Child,
    pub addr: String,
    _config_dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(storage: &Path, auth: Auth) -> Registry {
        Registry::spawn(storage, auth, false)
    }

    /// HTTPS with a self-signed certificate for 127.0.0.1 (made for this registry).
    pub fn start_tls(storage: &Path) -> Registry {
        Registry::spawn(storage, Auth::None, true)
    }

    /// The free port is found before the registry binds it: if another process took it in
    /// between, the registry exits, and we try again on another port.
    fn spawn(storage: &Path, auth: Auth, tls: bool) -> Registry {
        let mut last = String::new();
        for _ in 0..3 {
            match Registry::spawn_once(storage, auth, tls) {
                Ok(reg) => return reg,
                Err(log) => last = log,
            }
        }
        panic!("docker-registry keeps exiting: {last}");
    }

    fn spawn_once(storage: &Path, auth: Auth, tls: bool) -> Result<Registry, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = tempfile::tempdir().unwrap();
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: skiff-test\n",
            storage.display()
        );
        if tls {
            let (cert, key) = (cfg.path().join("cert.pem"), cfg.path().join("key.pem"));
            run(
                "openssl",
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-keyout",
                    key.to_str().unwrap(),
                    "-out",
                    cert.to_str().unwrap(),
                ],
            );
            yaml += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Auth::Bearer { realm_port } = auth {
            yaml += &format!(
                "auth:\n  silly:\n    realm: http://127.0.0.1:{realm_port}/token\n    service: skiff-test\n"
            );
        }
        if auth == Auth::Htpasswd {
            let htpasswd = cfg.path().join("htpasswd");
            let line = run("htpasswd", &["-Bbn", USER, PASSWORD]);
            fs::write(&htpasswd, line).unwrap();
            yaml += &format!(
                "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = cfg.path().join("config.yml");
        fs::write(&config, yaml).unwrap();
        let log = fs::File::create(cfg.path().join("registry.log")).unwrap();
        let mut cmd = Command::new("/usr/bin/docker-registry");
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Also killed if the test process dies without unwinding (the spawning thread's
        // death sends SIGKILL; a Registry never outlives its thread).
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start docker-registry");
        let mut reg = Registry {
            child,
            addr: format!("127.0.0.1:{port}"),
            _config_dir: cfg,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        // Listening on the port is not enough: another test's registry may have taken it first
        // (ours then exits); the listening socket must be one of our child's.
        while !listens_on(reg.child.id(), port) {
            if let Ok(Some(st)) = reg.child.try_wait() {
                let log = fs::read_to_string(reg._config_dir.path().join("registry.log"))
                    .unwrap_or_default();
                return Err(format!("exited ({st}): {log}"));
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}",
                reg.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(reg)
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port` (/proc/net/tcp's inode
/// among the process's descriptors).
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // local_address is 0100007F:PORT in hex; state 0A is LISTEN; field 9 is the inode.
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// skopeo's copy of `reference` (its `arch` image when it is an index) into an OCI layout,
/// then umoci's unpack of it: the root filesystem.
pub fn skopeo_unpack(reference: &str, arch: Option<&str>, tmp: &Path) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let layout = tmp.join(format!("copied-{n}"));
    let mut args = vec!["--insecure-policy"];
    if let Some(arch) = arch {
        args.extend(["--override-arch", arch]);
    }
    let (src, dest) = (
        format!("docker://{reference}"),
        format!("oci:{}:t", layout.display()),
    );
    args.extend(["copy", "-q", "--src-tls-verify=false", &src, &dest]);
    run("skopeo", &args);
    let bundle = tmp.join(format!("bundle-{n}"));
    umoci(&[
        "unpack",
        "--image",
        &format!("{}:t", layout.display()),
        bundle.to_str().unwrap(),
    ]);
    bundle.join("rootfs")
}

/// The manifest or index `reference` names, as the registry holds it (skopeo's view).
pub fn raw_manifest(reference: &str) -> Vec<u8> {
    run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    )
    .into_bytes()
}

/// A private copy of the registry storage (for tests that damage it).
pub fn copy_storage(fx: &Fixture, dest: &Path) -> PathBuf {
    let out = dest.join("storage");
    run(
        "cp",
        &["-a", fx.storage.to_str().unwrap(), out.to_str().unwrap()],
    );
    out
}

/// The registry's file holding a blob.
pub fn registry_blob_data(storage: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    storage.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ))
}

/// umoci's unpack of a layout tag: the reference root filesystem.
pub fn umoci_rootfs(fx: &Fixture, tag: &str, dest: &Path) -> PathBuf {
    let bundle = dest.join(format!("umoci-{tag}"));
    umoci(&[
        "unpack",
        "--image",
        &format!("{}:{tag}", fx.layout.display()),
        bundle.to_str().unwrap(),
    ]);
    bundle.join("rootfs")
}

/// Compares two trees entry by entry: type, mode, owner, mtime (non-directories), content,
/// symlink targets and hard-link groups.
pub fn assert_same_tree(ours: &Path, reference: &Path) {
    let a = walk(ours);
    let b = walk(reference);
    let names_a: Vec<_> = a.iter().map(|e| &e.0).collect();
    let names_b: Vec<_> = b.iter().map(|e| &e.0).collect();
    assert_eq!(names_a, names_b, "different entries");
    let mut inode_a = std::collections::HashMap::new();
    let mut inode_b = std::collections::HashMap::new();
    for ((rel, ma), (_, mb)) in a.iter().zip(&b) {
        let pa = ours.join(rel);
        let pb = reference.join(rel);
        let what = rel.display();
        assert_eq!(
            ma.mode(),
            mb.mode(),
            "{what}: mode {:o} vs {:o}",
            ma.mode(),
            mb.mode()
        );
        assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "{what}: owner");
        if ma.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&pa).unwrap(),
                fs::read_link(&pb).unwrap(),
                "{what}: link"
            );
        } else if ma.is_file() {
            assert_eq!(
                fs::read(&pa).unwrap(),
                fs::read(&pb).unwrap(),
                "{what}: content"
            );
            inode_a
                .entry(ma.ino())
                .or_insert_with(Vec::new)
                .push(rel.clone());
            inode_b
                .entry(mb.ino())
                .or_insert_with(Vec::new)
                .push(rel.clone());
        }
        if !ma.is_dir() {
            assert_eq!(ma.mtime(), mb.mtime(), "{what}: mtime");
        }
    }
    let groups = |m: std::collections::HashMap<u64, Vec<PathBuf>>| {
        let mut g: Vec<Vec<PathBuf>> = m.into_values().filter(|v| v.len() > 1).collect();
        g.sort();
        g
    };
    assert_eq!(groups(inode_a), groups(inode_b), "hard link groups");
}

fn walk(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut children: Vec<_> = fs::read_dir(root.join(&rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        children.sort();
        for c in children {
            let r = rel.join(c);
            let m = fs::symlink_metadata(root.join(&r)).unwrap();
            if m.is_dir() {
                stack.push(r.clone());
            }
            out.push((r, m));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// A token endpoint for the Bearer flow: answers every request with a fixed token and keeps
/// the request lines it saw.
pub struct TokenServer {
    pub port: u16,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub const TOKEN: &str = "test-token-123";

impl TokenServer {
    pub fn start() -> TokenServer {
        use std::io::{BufRead, BufReader, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut lines = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    lines.push(line.trim_end().to_string());
                }
                seen.lock().unwrap().push(lines.join("\n"));
                let body = format!("{{\"token\":\"{TOKEN}\",\"expires_in\":300}}");
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer { port, requests }
    }
}
