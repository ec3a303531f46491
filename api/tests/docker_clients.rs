//! The real docker CLI and docker-py against skiffd's HTTP front end, with the in-memory fake
//! engine of `common::fake_engine` behind it (or the `Unimplemented` one skiffd ships with now).
//! Each test is skipped, loudly, when its client is not installed. TCP with TLS as `--tlsverify`
//! sets it up is driven with the CLI's own TLS flags, on certificates made on the spot.

#[allow(dead_code)] // engine_daemon is for the real-engine tests
mod common;

use common::fake_engine::FakeEngine;
use common::{check, docker_cli, docker_py, text, TestDaemon};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use skiff_api::daemon::server::{self, ListenAddr, ServerError};
use skiff_api::daemon::tls::{acceptor, TlsOptions};
use skiff_api::daemon::Unimplemented;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn fake() -> TestDaemon {
    TestDaemon::start(Arc::new(FakeEngine::default()))
}

#[test]
fn version_and_info() {
    let Some(cli) = docker_cli() else { return };
    let d = fake();
    let out = d.docker(
        &cli,
        &[
            "version",
            "--format",
            "{{.Server.APIVersion}} {{.Server.Os}}",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "1.47 linux");
    let out = d.docker(
        &cli,
        &[
            "info",
            "--format",
            "{{.OperatingSystem}}|{{.Driver}}|{{.DefaultRuntime}}|{{.Containers}}",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "skiff (microVM)|skiff-overlay|skiff-vm|0"
    );
}

/// attach (101 + frames), wait (headers flushed before start), start, in the CLI's order; the
/// exit code comes from wait; --rm waits for the removal.
#[test]
fn run_prints_output_and_exits_with_the_container_code() {
    let Some(cli) = docker_cli() else { return };
    let d = fake();
    let out = d.docker(
        &cli,
        &[
            "run",
            "--rm",
            "-e",
            "EXIT_CODE=3",
            "busybox",
            "echo",
            "hi",
            "there",
        ],
    );
    check(&out, 3, "hi there\n");
    let out = d.docker(&cli, &["ps", "-aq"]);
    assert_eq!(text(&out.stdout), "", "--rm left the container behind");
}

#[test]
fn detached_container_ps_inspect_exec_logs_rm() {
    let Some(cli) = docker_cli() else { return };
    let d = fake();
    let out = d.docker(
        &cli,
        &["run", "-d", "--name", "web", "busybox", "sleep", "1000"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");

    let out = d.docker(&cli, &["ps", "--format", "{{.ID}} {{.Names}} {{.Image}}"]);
    assert_eq!(
        text(&out.stdout).trim(),
        format!("{} web busybox", &id[..12])
    );

    let out = d.docker(
        &cli,
        &[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Running}} {{.HostConfig.LogConfig.Type}}",
            "web",
        ],
    );
    assert_eq!(
        text(&out.stdout).trim(),
        "running true json-file",
        "{}",
        text(&out.stderr)
    );

    let out = d.docker(
        &cli,
        &["exec", "-e", "EXIT_CODE=4", "web", "echo", "from", "exec"],
    );
    assert_eq!(
        text(&out.stdout),
        "from exec\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(4));

    let out = d.docker(
        &cli,
        &["run", "--name", "done", "busybox", "echo", "logged"],
    );
    assert_eq!(
        text(&out.stdout),
        "logged\n",
        "stderr: {}",
        text(&out.stderr)
    );
    let out = d.docker(&cli, &["logs", "done"]);
    assert_eq!(
        text(&out.stdout),
        "logged\n",
        "stderr: {}",
        text(&out.stderr)
    );

    let out = d.docker(&cli, &["rm", "web"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot remove a running container"),
        "{}",
        text(&out.stderr)
    );
    let out = d.docker(&cli, &["rm", "-f", "web", "done"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = d.docker(&cli, &["ps", "-aq"]);
    assert_eq!(text(&out.stdout), "");
    let out = d.docker(&cli, &["inspect", "web"]);
    assert!(
        text(&out.stderr).contains("No such"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn refused_options_name_the_field() {
    let Some(cli) = docker_cli() else { return };
    let d = fake();
    let out = d.docker(&cli, &["run", "-p", "53:53/sctp", "busybox"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("publishing sctp ports (53/sctp) is not supported by skiff yet"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_shipped_engine_answers_501() {
    let Some(cli) = docker_cli() else { return };
    let d = TestDaemon::start(Arc::new(Unimplemented));
    let out = d.docker(&cli, &["ps"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("container list is not implemented yet in skiffd"),
        "{}",
        text(&out.stderr)
    );
    let out = d.docker(&cli, &["info", "--format", "{{.Containers}} {{.Images}}"]);
    assert_eq!(text(&out.stdout).trim(), "0 0", "{}", text(&out.stderr));
}

/// Runs the Python `script` with docker-py, the daemon's socket as its argument; asserts it
/// exited 0 and returns its output.
fn run_docker_py(py: &std::path::Path, d: &TestDaemon, script: &str) -> std::process::Output {
    let out = Command::new(py)
        .args(["-c", script])
        .arg(&d.socket)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

#[test]
fn docker_py_run_returns_the_output() {
    let Some(py) = docker_py() else { return };
    let d = fake();
    let script = r#"
import sys, docker
c = docker.DockerClient(base_url="unix://" + sys.argv[1])
print(c.version()["ApiVersion"])
out = c.containers.run("busybox", ["echo", "hi", "py"], detach=False, remove=True)
sys.stdout.write(out.decode())
"#;
    let out = run_docker_py(&py, &d, script);
    assert_eq!(text(&out.stdout), "1.47\nhi py\n");
}

#[test]
fn stale_socket_replaced_live_one_kept_removed_on_stop() {
    let d = fake();
    let socket = d.socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(server::bind(&ListenAddr::Unix(socket.clone()), None, None));
    assert!(matches!(err, Err(ServerError::SocketInUse { .. })));
    let _dir = d.stop();
    assert!(!socket.exists(), "the socket outlived the server");

    // A socket file nobody answers on, as a crashed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let bound = rt.block_on(server::bind(&ListenAddr::Unix(socket.clone()), None, None));
    assert!(bound.is_ok(), "stale socket not replaced");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660);
}

/// docker-py reads the 101's headers through a buffered file: output arriving in the same read
/// would be lost, so the 101 must leave on its own before any frame.
#[test]
fn docker_py_exec_run_gets_output_and_exit_code() {
    let Some(py) = docker_py() else { return };
    let d = fake();
    let script = r#"
import sys, docker
c = docker.DockerClient(base_url="unix://" + sys.argv[1])
ctr = c.containers.run("busybox", ["sleep", "100"], detach=True)
for i in range(20):
    r = ctr.exec_run(["echo", "from", "py"], environment={"EXIT_CODE": "5"})
    assert (r.exit_code, r.output) == (5, b"from py\n"), (i, r)
print("ok")
"#;
    let out = run_docker_py(&py, &d, script);
    assert_eq!(text(&out.stdout), "ok\n");
}

#[test]
fn run_with_a_tty_gets_raw_output() {
    let Some(cli) = docker_cli() else { return };
    let d = fake();
    let out = d.docker(&cli, &["run", "--rm", "-t", "busybox", "echo", "raw"]);
    check(&out, 0, "raw\n");
}

/// `docker load` sends its archive chunked; the engine gets it as a stream.
#[test]
fn load_streams_the_chunked_archive() {
    let Some(cli) = docker_cli() else { return };
    let d = fake();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    std::fs::write(&archive, vec![7u8; 3 << 20]).unwrap();
    let out = d.docker(&cli, &["load", "-i", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("Loaded image: fake ({} bytes)\n", 3 << 20)
    );
}

/// Writes ca.pem, server-{cert,key}.pem (for 127.0.0.1) and client-{cert,key}.pem into `dir`.
fn make_certs(dir: &Path) {
    let write = |name: &str, pem: String| std::fs::write(dir.join(name), pem).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    write("ca.pem", ca_cert.pem());
    let issuer = Issuer::new(ca_params, ca_key);
    for (who, names) in [
        ("server", vec!["127.0.0.1".to_string()]),
        ("client", vec![]),
    ] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        write(&format!("{who}-cert.pem"), cert.pem());
        write(&format!("{who}-key.pem"), key.serialize_pem());
    }
}

#[test]
fn tlsverify_admits_only_clients_with_a_certificate_from_the_ca() {
    let Some(cli) = docker_cli() else { return };
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().to_path_buf();
    make_certs(&certs);
    let tls = acceptor(&TlsOptions {
        cert: certs.join("server-cert.pem"),
        key: certs.join("server-key.pem"),
        client_ca: Some(certs.join("ca.pem")),
    })
    .unwrap();
    let d = TestDaemon::start_on(
        Arc::new(FakeEngine::default()),
        ListenAddr::Tcp("127.0.0.1:0".to_string()),
        Some(tls),
        dir,
    );
    let path = |f: &str| certs.join(f).display().to_string();
    let (ca, cert, key) = (
        path("ca.pem"),
        path("client-cert.pem"),
        path("client-key.pem"),
    );
    let version = ["version", "--format", "{{.Server.APIVersion}}"];

    let with_cert = [
        &[
            "--tlsverify",
            "--tlscacert",
            &ca,
            "--tlscert",
            &cert,
            "--tlskey",
            &key,
        ][..],
        &version,
    ]
    .concat();
    let out = d.docker(&cli, &with_cert);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "1.47");
    // The hijacked attach stream over TLS.
    let run = [
        "run",
        "--rm",
        "-e",
        "EXIT_CODE=2",
        "busybox",
        "echo",
        "over",
        "tls",
    ];
    let out = d.docker(&cli, &[&with_cert[..with_cert.len() - 3], &run].concat());
    assert_eq!(text(&out.stdout), "over tls\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(2));

    let without_cert = [&["--tlsverify", "--tlscacert", &ca][..], &version].concat();
    let out = d.docker(&cli, &without_cert);
    assert!(
        !out.status.success(),
        "a client without a certificate got in"
    );

    let out = d.docker(&cli, &version);
    assert!(
        !out.status.success(),
        "plain HTTP got an answer from the TLS port"
    );
}

/// One raw HTTP/1.1 exchange on the Unix socket (the client side of a test, byte for byte).
fn raw_request(d: &TestDaemon, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// Creates container `name` from the JSON `body` over raw HTTP; asserts the 201.
fn raw_create(d: &TestDaemon, name: &str, body: &str) {
    let created = raw_request(
        d,
        &format!(
            "POST /containers/create?name={name} HTTP/1.1\r\nHost: skiff\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
}

/// Sends `request` on a new connection from another thread; its join yields the whole answer.
fn raw_request_in_background(
    d: &TestDaemon,
    request: &'static [u8],
) -> std::thread::JoinHandle<Vec<u8>> {
    let socket = d.socket.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        s.write_all(request).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        answer
    })
}

#[test]
fn plumbing_answers_as_docker_does() {
    let d = TestDaemon::start(Arc::new(Unimplemented));
    let get = |path: &str| {
        raw_request(
            &d,
            &format!("GET {path} HTTP/1.1\r\nHost: skiff\r\nConnection: close\r\n\r\n"),
        )
    };
    let ping = raw_request(
        &d,
        "HEAD /_ping HTTP/1.1\r\nHost: skiff\r\nConnection: close\r\n\r\n",
    );
    for header in [
        "api-version: 1.47",
        "ostype: linux",
        "docker-experimental: false",
        "builder-version: 1",
        "cache-control: no-cache, no-store, must-revalidate",
        "pragma: no-cache",
        "server: skiff/",
    ] {
        assert!(
            ping.to_ascii_lowercase().contains(header),
            "{header} missing in {ping}"
        );
    }
    let nope = get("/v1.47/nope");
    assert!(nope.starts_with("HTTP/1.1 404"), "{nope}");
    assert!(
        nope.ends_with("{\"message\":\"page not found\"}\n"),
        "{nope}"
    );
    let old = get("/v1.12/info");
    assert!(old.starts_with("HTTP/1.1 400"), "{old}");
    assert!(old.contains("client version 1.12 is too old. Minimum supported API version is 1.24"));
    let bad = get("/containers/json?all=maybe");
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    assert!(bad.contains(r#"query parameter \"all\""#), "{bad}");
    let unversioned = get("/version");
    assert!(unversioned.starts_with("HTTP/1.1 200"), "{unversioned}");
    assert!(unversioned.contains("application/json"), "{unversioned}");
}

/// A stop lets in-flight requests run for the grace period (2 s in tests), then cuts them; the
/// wait's headers had left at once.
#[test]
fn stop_cuts_requests_still_running_after_the_grace_period() {
    let d = fake();
    raw_create(&d, "idle", r#"{"Image":"busybox","Cmd":["sleep"]}"#);
    let waiter = raw_request_in_background(
        &d,
        b"POST /containers/idle/wait?condition=next-exit HTTP/1.1\r\nHost: skiff\r\n\r\n",
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = std::time::Instant::now();
    let _dir = d.stop();
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(8),
        "stop took {took:?}"
    );
    let answer = String::from_utf8_lossy(&waiter.join().unwrap()).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("StatusCode"), "{answer}");
}

/// Without `Upgrade: tcp` an attach is a plain 200 whose streamed body carries the frames.
#[test]
fn attach_without_upgrade_streams_a_plain_body() {
    let d = fake();
    raw_create(&d, "plain", r#"{"Image":"busybox","Cmd":["echo","plain"]}"#);
    let attached = raw_request_in_background(
        &d,
        b"POST /containers/plain/attach?stream=1&stdout=1 HTTP/1.1\r\nHost: skiff\r\n\
          Connection: close\r\n\r\n",
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let started = raw_request(
        &d,
        "POST /containers/plain/start HTTP/1.1\r\nHost: skiff\r\nConnection: close\r\n\r\n",
    );
    assert!(started.starts_with("HTTP/1.1 204"), "{started}");
    let answer = attached.join().unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("application/vnd.docker.multiplexed-stream"),
        "{text}"
    );
    let frame = b"\x01\0\0\0\0\0\0\x06plain\n";
    assert!(answer.windows(frame.len()).any(|w| w == frame), "{text}");
}
