//! The `skiff` CLI's container commands, and the client library under them, against skiffd's real
//! HTTP front end with the in-memory engine of `common::fake_engine` (no VMs): `echo ARGS` prints
//! ARGS and exits with `EXIT_CODE`, any other command runs until stopped.

// The docker-py helpers of `common` serve other tests.
#[allow(dead_code)]
mod common;

use common::fake_engine::FakeEngine;
use common::{check, docker_cli, text, TestDaemon};
use skiff_api::client::Client;
use skiff_api::daemon::create::body::CreateBody;
use skiff_api::daemon::handlers::exec::ExecCreateBody;
use skiff_api::daemon::options::{AttachOptions, ListOptions, WaitCondition};
use skiff_api::daemon::server::ListenAddr;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn daemon() -> TestDaemon {
    TestDaemon::start(Arc::new(FakeEngine::default()))
}

/// `skiff ARGS…` with no daemon of the caller's environment, stdin empty.
fn skiff_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff"));
    cmd.args(args).env_remove("SKIFF_HOST").stdin(Stdio::null());
    cmd
}

/// `skiff -H HOST ARGS…`.
fn skiff(host: &str, args: &[&str]) -> Output {
    skiff_cmd(&["-H", host])
        .args(args)
        .output()
        .expect("running skiff")
}

/// Asserts a failure: its exit code and its whole stderr.
#[track_caller]
fn fails_with(out: &Output, code: i32, stderr: &str) {
    assert_eq!(
        (out.status.code(), text(&out.stderr).as_str()),
        (Some(code), stderr)
    );
}

const NO_SUCH: &str = "Error response from daemon: No such container: nope\n";

/// `run -d`: the new container's full ID.
#[track_caller]
fn run_detached(host: &str, args: &[&str]) -> String {
    let mut all = vec!["run", "-d"];
    all.extend(args);
    let out = skiff(host, &all);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "{id:?}");
    id
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

#[test]
fn ps_lists_as_a_table_json_lines_and_ids() {
    let d = daemon();
    let h = d.endpoint.as_str();
    check(
        &skiff(h, &["ps"]),
        0,
        "CONTAINER ID   IMAGE     COMMAND   CREATED   STATUS    PORTS     NAMES\n",
    );
    let web = run_detached(
        h,
        &["--name", "web", "-e", "A=1", "busybox", "sleep", "1000"],
    );
    run_detached(h, &["busybox", "echo", "done"]);

    let out = skiff(h, &["ps"]);
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "only the running one: {lines:?}");
    assert!(
        lines[0].starts_with("CONTAINER ID   IMAGE     COMMAND "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with("   STATUS    PORTS     NAMES"),
        "{}",
        lines[0]
    );
    let cells: Vec<&str> = lines[1]
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(cells[0], &web[..12]);
    assert_eq!(cells[1], "busybox");
    assert_eq!(cells[2], "\"sleep 1000\"");
    assert!(cells[3].ends_with(" ago"), "{cells:?}");
    assert_eq!(&cells[4..], ["Up", "web"]);

    let out = skiff(h, &["ps", "-a", "--format", "json"]);
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 2, "{}", text(&out.stdout));
    let web_row = rows.iter().find(|r| r["Names"] == "web").expect("web");
    assert_eq!(web_row["ID"], web[..12]);
    assert_eq!(web_row["State"], "running");
    assert_eq!(web_row["Command"], "\"sleep 1000\"");
    assert!(rows
        .iter()
        .any(|r| r["State"] == "exited" && r["Command"] == "\"echo done\""));

    check(&skiff(h, &["ps", "-q"]), 0, &format!("{}\n", &web[..12]));
    check(
        &skiff(h, &["ps", "-q", "--no-trunc"]),
        0,
        &format!("{web}\n"),
    );
}

/// `skiff ps --format json` prints what `docker ps --format json` prints for the same daemon.
#[test]
fn ps_json_matches_the_docker_cli() {
    let Some(cli) = docker_cli() else { return };
    let d = daemon();
    let h = d.endpoint.as_str();
    run_detached(h, &["--name", "one", "busybox", "sleep", "1000"]);
    run_detached(
        h,
        &[
            "busybox",
            "sh",
            "-c",
            "a long command line that docker truncates",
        ],
    );
    let docker = d.docker(&cli, &["ps", "-a", "--format", "json"]);
    assert!(docker.status.success(), "{}", text(&docker.stderr));
    let ours = skiff(h, &["ps", "-a", "--format", "json"]);
    let (mut docker, mut ours) = (json_lines(&docker), json_lines(&ours));
    for row in docker.iter_mut().chain(ours.iter_mut()) {
        // Seconds pass between the two commands.
        row["RunningFor"] = serde_json::Value::Null;
    }
    assert_eq!(ours, docker);
}

#[test]
fn run_detached_then_logs() {
    let d = daemon();
    let h = d.endpoint.as_str();
    let id = run_detached(h, &["--name", "hello", "busybox", "echo", "hello", "world"]);
    check(&skiff(h, &["logs", "hello"]), 0, "hello world\n");
    check(&skiff(h, &["logs", &id[..8]]), 0, "hello world\n");
    check(
        &skiff(h, &["logs", "-t", "--tail", "5", "hello"]),
        0,
        "hello world\n",
    );
    let out = skiff(h, &["logs", "--tail", "many", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--tail"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_in_the_foreground_streams_output_and_exits_with_the_code() {
    let d = daemon();
    let h = d.endpoint.as_str();
    let out = skiff(
        h,
        &[
            "run",
            "-e",
            "EXIT_CODE=3",
            "--name",
            "kept",
            "busybox",
            "echo",
            "hi",
        ],
    );
    check(&out, 3, "hi\n");
    let out = skiff(
        h,
        &["run", "--rm", "-t", "busybox", "echo", "on", "a", "tty"],
    );
    check(&out, 0, "on a tty\n");
    let out = skiff(h, &["ps", "-a", "--format", "json"]);
    let names: Vec<_> = json_lines(&out)
        .iter()
        .map(|r| r["Names"].clone())
        .collect();
    assert_eq!(names, ["kept"], "--rm removed the other one");
    check(&skiff(h, &["wait", "kept"]), 0, "3\n");
}

#[test]
fn a_tcp_host_works_too() {
    let dir = tempfile::tempdir().unwrap();
    let d = TestDaemon::start_on(
        Arc::new(FakeEngine::default()),
        ListenAddr::Tcp("127.0.0.1:0".into()),
        None,
        dir,
    );
    assert!(d.endpoint.starts_with("tcp://"), "{}", d.endpoint);
    let out = skiff(
        &d.endpoint,
        &["run", "-e", "EXIT_CODE=2", "busybox", "echo", "over", "tcp"],
    );
    check(&out, 2, "over tcp\n");
}

/// Ctrl-C (or any terminating signal) to an attached `skiff run` goes to the container, as
/// docker's sig-proxy does; the fake engine ends a killed container with 137.
#[test]
fn signals_to_an_attached_run_are_passed_on() {
    let d = daemon();
    let h = d.endpoint.as_str();
    let child = skiff_cmd(&["-H", h, "run", "--name", "fg", "busybox", "sleep", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while text(&skiff(h, &["ps", "-q"]).stdout).is_empty() {
        assert!(Instant::now() < deadline, "the container never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    check(&child.wait_with_output().unwrap(), 137, "");
    check(&skiff(h, &["ps", "-q"]), 0, "");
}

/// A missing image is pulled through the daemon and the create retried, as `docker run` does.
#[test]
fn run_pulls_a_missing_image() {
    let d = daemon();
    let h = d.endpoint.as_str();
    let out = skiff(h, &["run", "--rm", "remote/img", "echo", "pulled"]);
    check(&out, 0, "pulled\n");
    assert_eq!(
        text(&out.stderr),
        "Unable to find image 'remote/img' locally\nPulling from remote/img\n\
         Status: Downloaded newer image for remote/img\n"
    );
}

#[test]
fn create_start_inspect_and_start_attached() {
    let d = daemon();
    let h = d.endpoint.as_str();
    let out = skiff(
        h,
        &[
            "create",
            "--name",
            "c1",
            "-e",
            "EXIT_CODE=5",
            "busybox",
            "echo",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let out = skiff(h, &["inspect", "c1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspected[0]["Id"], id);
    assert_eq!(inspected[0]["State"]["Status"], "created");
    assert_eq!(inspected[0]["Config"]["Env"][0], "EXIT_CODE=5");
    check(&skiff(h, &["start", "-a", "c1"]), 5, "x\n");
    check(&skiff(h, &["start", "c1"]), 0, "c1\n");
    let out = skiff(h, &["inspect", "c1", "nope"]);
    fails_with(&out, 1, NO_SUCH);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["Name"], "/c1", "the ones found are still shown");
}

#[test]
fn stop_kill_wait_and_rm() {
    let d = daemon();
    let h = d.endpoint.as_str();
    run_detached(h, &["--name", "web", "busybox", "sleep", "1000"]);
    run_detached(h, &["--name", "kk", "busybox", "sleep", "1000"]);
    let out = skiff(h, &["rm", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("Error response from daemon: You cannot remove a running"),
        "{}",
        text(&out.stderr)
    );
    check(&skiff(h, &["stop", "-t", "1", "web"]), 0, "web\n");
    check(&skiff(h, &["wait", "web"]), 0, "143\n");
    check(&skiff(h, &["kill", "-s", "KILL", "kk"]), 0, "kk\n");
    check(&skiff(h, &["wait", "kk", "web"]), 0, "137\n143\n");
    check(&skiff(h, &["rm", "web", "kk"]), 0, "web\nkk\n");
    run_detached(h, &["--name", "forced", "busybox", "sleep", "1000"]);
    check(&skiff(h, &["rm", "-f", "forced"]), 0, "forced\n");
    check(&skiff(h, &["ps", "-a", "-q"]), 0, "");
}

#[test]
fn restart_rename_top_and_stats() {
    let d = daemon();
    let h = d.endpoint.as_str();
    run_detached(h, &["--name", "web", "busybox", "sleep", "1000"]);
    check(&skiff(h, &["restart", "-t", "1", "web"]), 0, "web\n");
    check(&skiff(h, &["rename", "web", "api"]), 0, "");
    fails_with(
        &skiff(h, &["rename", "api", "api"]),
        1,
        "Error response from daemon: the name \"/api\" is already in use\n",
    );
    check(
        &skiff(h, &["top", "api"]),
        0,
        "UID       PID       PPID      C         STIME     TTY       TIME       CMD\n\
         root      7         1         0         10:30     ?         00:00:00   sleep 1000\n",
    );
    let stats = skiff(h, &["stats", "--no-stream", "api"]);
    let lines: Vec<String> = text(&stats.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let row: Vec<&str> = lines[1]
        .split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(row[1..], ["api", "25.00%", "32MiB / 128MiB", "25.00%"]);
    // Without names: every running container.
    let all = skiff(h, &["stats", "--no-stream"]);
    assert_eq!(text(&all.stdout).lines().count(), 2);
    fails_with(&skiff(h, &["top", "nope"]), 1, NO_SUCH);
}

#[test]
fn attach_follows_a_running_container_to_its_exit_code() {
    let d = daemon();
    let h = d.endpoint.as_str();
    run_detached(h, &["--name", "web", "busybox", "sleep", "1000"]);
    let attach = skiff_cmd(&["-H", h, "attach", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("skiff attach");
    std::thread::sleep(Duration::from_secs(1));
    check(&skiff(h, &["stop", "web"]), 0, "web\n");
    let out = attach.wait_with_output().expect("attach ends");
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    fails_with(
        &skiff(h, &["attach", "web"]),
        1,
        "You cannot attach to a stopped container, start it first\n",
    );
}

#[test]
fn unknown_containers_fail_with_dockers_message() {
    let d = daemon();
    let h = d.endpoint.as_str();
    run_detached(h, &["--name", "real", "busybox", "sleep", "1000"]);
    for cmd in ["stop", "kill", "rm", "wait", "start", "logs"] {
        fails_with(&skiff(h, &[cmd, "nope"]), 1, NO_SUCH);
    }
    // The other containers named are still acted on.
    let out = skiff(h, &["stop", "nope", "real"]);
    check(&out, 1, "real\n");
    fails_with(&skiff(h, &["exec", "nope", "echo", "x"]), 1, NO_SUCH);
}

#[test]
fn exec_runs_in_a_running_container() {
    let d = daemon();
    let h = d.endpoint.as_str();
    run_detached(h, &["--name", "box", "busybox", "sleep", "1000"]);
    check(
        &skiff(h, &["exec", "box", "echo", "from", "exec"]),
        0,
        "from exec\n",
    );
    check(
        &skiff(h, &["exec", "-t", "-e", "EXIT_CODE=4", "box", "echo", "y"]),
        4,
        "y\n",
    );
    check(&skiff(h, &["stop", "box"]), 0, "box\n");
    let out = skiff(h, &["exec", "box", "echo", "late"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not running"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn no_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("unix://{}", dir.path().join("none.sock").display());
    let out = skiff(&host, &["ps"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("cannot connect to skiffd at {host}: "))
            && err.contains("is skiffd running?"),
        "{err}"
    );
    // SKIFF_HOST is the default for -H.
    let out = skiff_cmd(&["ps"])
        .env("SKIFF_HOST", &host)
        .output()
        .unwrap();
    assert_eq!(text(&out.stderr), err);
    let out = skiff(&host, &["run", "-d", "busybox", "sleep", "1"]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("skiff: skiff run -d needs a running skiffd: cannot connect to skiffd at ")
            && err.contains(&host),
        "{err}"
    );
    let out = skiff_cmd(&["-H", "http://x", "ps"]).output().unwrap();
    assert!(text(&out.stderr).contains("expected unix:///PATH or tcp://HOST:PORT"));
}

/// Without a daemon, `skiff run IMAGE` runs in-process: here it fails at once on the missing
/// kernel, which shows it neither waited on the socket nor went through it.
#[test]
fn run_without_a_daemon_falls_back_to_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("unix://{}", dir.path().join("none.sock").display());
    let started = Instant::now();
    let out = skiff_cmd(&["-H", &host, "run", "busybox", "true"])
        .env("SKIFF_ROOT", dir.path().join("root"))
        .env("SKIFF_KERNEL", dir.path().join("no-vmlinux"))
        .output()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).starts_with("skiff: guest kernel not found at "),
        "{}",
        text(&out.stderr)
    );
    let out = skiff_cmd(&["-H", &host, "run", "--name", "x", "busybox", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("--name needs skiffd"),
        "{}",
        text(&out.stderr)
    );
}

/// The library as the CLI drives it for `run`: attach, wait, start, output, exit code.
#[tokio::test]
async fn client_runs_a_container_like_the_docker_cli() {
    let d = daemon();
    let client = Client::new(d.endpoint.parse().unwrap());
    client.ping().await.unwrap();
    assert_eq!(client.version().await.unwrap().api_version, "1.47");
    let body = CreateBody {
        image: Some("busybox".into()),
        cmd: Some(vec!["echo".into(), "via".into(), "client".into()]),
        env: Some(vec!["EXIT_CODE=9".into()]),
        ..CreateBody::default()
    };
    let id = client.create(Some("lib"), &body).await.unwrap().id;
    let opts = AttachOptions {
        stream: true,
        stdout: true,
        stderr: true,
        ..AttachOptions::default()
    };
    let attached = client.attach("lib", &opts).await.unwrap();
    assert!(attached.is_multiplexed());
    let waiting = client.wait(&id, WaitCondition::NextExit).await.unwrap();
    client.start(&id[..10]).await.unwrap();
    let (mut output, _stdin) = attached.split();
    let (out, err) = output.read_to_end().await.unwrap();
    assert_eq!(
        (out.as_slice(), err.as_slice()),
        (&b"via client\n"[..], &b""[..])
    );
    assert_eq!(waiting.outcome().await.unwrap().status_code, 9);
    let listed = client
        .list(&ListOptions {
            all: true,
            ..ListOptions::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].names, ["/lib"]);
    assert_eq!(client.inspect("lib").await.unwrap().state.exit_code, 9);
    client.resize("lib", 24, 80).await.unwrap();
    // An exec session started detached, its code read afterwards (the container must run).
    let sleeper = CreateBody {
        image: Some("busybox".into()),
        cmd: Some(vec!["sleep".into(), "1000".into()]),
        ..CreateBody::default()
    };
    client.create(Some("runs"), &sleeper).await.unwrap();
    client.start("runs").await.unwrap();
    let exec = ExecCreateBody {
        cmd: Some(vec!["echo".into(), "bg".into()]),
        env: Some(vec!["EXIT_CODE=6".into()]),
        ..ExecCreateBody::default()
    };
    let exec_id = client.exec_create("runs", &exec).await.unwrap();
    client.exec_start_detached(&exec_id).await.unwrap();
    assert_eq!(
        client.exec_inspect(&exec_id).await.unwrap().exit_code,
        Some(6)
    );
    let err = client.inspect("nope").await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    assert_eq!(
        err.to_string(),
        "Error response from daemon: No such container: nope"
    );
}
