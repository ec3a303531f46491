//! The guest-side session runner, run as an ordinary process over a Unix socket pair: a real
//! `/bin/sh` child, real pipes and ptys, the real wire protocol.

use skiff_guest_init::protocol::{
    read_message, write_message, ExitStatus, Hello, Message, ProcessSpec, SignalMsg, TerminalSize,
};
use skiff_guest_init::reaper::Reaper;
use skiff_guest_init::session;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::thread;

/// Everything the host saw in one session.
#[derive(Debug, Default)]
struct Seen {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    started: bool,
    exit: Option<ExitStatus>,
    error: Option<(String, i32)>,
}

/// Starts the guest side on a thread; returns the host end after the handshake and spec.
fn start(spec: ProcessSpec) -> (UnixStream, thread::JoinHandle<i32>) {
    let (mut host, mut guest) = UnixStream::pair().unwrap();
    let runner = thread::spawn(move || {
        let spec = session::accept_spec(&mut guest).unwrap();
        session::run(&mut guest, &spec, Reaper::global()).unwrap()
    });
    write_message(&mut host, &Message::Hello(Hello::ours("test-host"))).unwrap();
    match read_message(&mut host).unwrap() {
        Some(Message::Hello(h)) => assert_eq!(h.version, 1),
        other => panic!("expected Hello, got {other:?}"),
    }
    write_message(&mut host, &Message::Spec(spec)).unwrap();
    (host, runner)
}

fn collect(host: &mut UnixStream) -> Seen {
    let mut seen = Seen::default();
    while let Some(m) = read_message(host).unwrap() {
        match m {
            Message::Started(_) => seen.started = true,
            Message::Stdout(d) => seen.stdout.extend(d),
            Message::Stderr(d) => seen.stderr.extend(d),
            Message::Exit(s) => seen.exit = Some(s),
            Message::Error(e) => seen.error = Some((e.message, e.exit_code)),
            other => panic!("unexpected {other:?}"),
        }
    }
    seen
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new(vec!["sh".into(), "-c".into(), script.into()])
}

#[test]
fn output_streams_and_exit_code_arrive() {
    let (mut host, runner) = start(sh("echo out; echo err >&2; exit 7"));
    write_message(&mut host, &Message::StdinEof).unwrap();
    let seen = collect(&mut host);
    assert!(seen.started);
    assert_eq!(seen.stdout, b"out\n");
    assert_eq!(seen.stderr, b"err\n");
    assert_eq!(seen.exit, Some(ExitStatus::Code(7)));
    assert_eq!(runner.join().unwrap(), 7);
}

#[test]
fn stdin_is_forwarded_until_eof() {
    let (mut host, runner) = start(ProcessSpec::new(vec!["cat".into()]));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for chunk in big.chunks(10_000) {
        write_message(&mut host, &Message::Stdin(chunk.to_vec())).unwrap();
    }
    write_message(&mut host, &Message::StdinEof).unwrap();
    let seen = collect(&mut host);
    assert_eq!(seen.stdout.len(), big.len());
    assert!(seen.stdout == big);
    assert_eq!(seen.exit, Some(ExitStatus::Code(0)));
    assert_eq!(runner.join().unwrap(), 0);
}

#[test]
fn env_cwd_and_default_path_are_applied() {
    let mut spec = sh("echo \"$FOO|$(pwd)|$PATH|$HOME\"");
    spec.env = vec!["FOO=bar baz".into()];
    spec.cwd = "/tmp".into();
    let (mut host, _runner) = start(spec);
    let seen = collect(&mut host);
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout),
        "bar baz|/tmp|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/root\n"
    );
}

#[test]
fn rlimits_are_applied() {
    let mut spec = sh("ulimit -n");
    spec.rlimits = vec![skiff_guest_init::protocol::Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 77,
        hard: 77,
    }];
    let (mut host, _runner) = start(spec);
    assert_eq!(collect(&mut host).stdout, b"77\n");
}

#[test]
fn signal_from_host_kills_with_that_signal() {
    let (mut host, runner) = start(sh("echo ready; exec sleep 30"));
    match read_message(&mut host).unwrap() {
        Some(Message::Started(_)) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        read_message(&mut host).unwrap(),
        Some(Message::Stdout(b"ready\n".to_vec()))
    );
    write_message(&mut host, &Message::Signal(SignalMsg { signal: 15 })).unwrap();
    let seen = collect(&mut host);
    assert_eq!(seen.exit, Some(ExitStatus::Signal(15)));
    assert_eq!(runner.join().unwrap(), 143);
}

#[test]
fn missing_program_reports_error_127() {
    let (mut host, runner) = start(ProcessSpec::new(vec!["no-such-program-xyz".into()]));
    let seen = collect(&mut host);
    assert!(!seen.started);
    let (message, code) = seen.error.unwrap();
    assert_eq!(
        message,
        "exec: \"no-such-program-xyz\": executable file not found in $PATH"
    );
    assert_eq!(code, 127);
    assert_eq!(runner.join().unwrap(), 127);
}

#[test]
fn missing_absolute_program_and_bad_cwd_report_errors() {
    let (mut host, _r) = start(ProcessSpec::new(vec!["/nonexistent/prog".into()]));
    let (message, code) = collect(&mut host).error.unwrap();
    assert_eq!(
        message,
        "exec: \"/nonexistent/prog\": no such file or directory"
    );
    assert_eq!(code, 127);

    let mut spec = sh("true");
    spec.cwd = "/nonexistent-dir".into();
    let (mut host, _r) = start(spec);
    let (message, code) = collect(&mut host).error.unwrap();
    assert_eq!(
        message,
        "chdir to cwd \"/nonexistent-dir\": No such file or directory"
    );
    assert_eq!(code, 126);
}

#[test]
fn tty_mode_runs_on_a_terminal_of_the_given_size() {
    let mut spec = sh("[ -t 0 ] && [ -t 1 ] && echo tty; stty size; echo err >&2");
    spec.tty = true;
    spec.terminal_size = Some(TerminalSize {
        rows: 33,
        cols: 101,
    });
    let (mut host, runner) = start(spec);
    let seen = collect(&mut host);
    let out = String::from_utf8_lossy(&seen.stdout);
    assert_eq!(out, "tty\r\n33 101\r\nerr\r\n");
    assert!(seen.stderr.is_empty());
    assert_eq!(runner.join().unwrap(), 0);
}

#[test]
fn host_hanging_up_kills_the_process() {
    let (mut host, runner) = start(sh("exec sleep 30"));
    assert!(matches!(
        read_message(&mut host).unwrap(),
        Some(Message::Started(_))
    ));
    drop(host);
    // The runner must notice, kill the child and return rather than wait 30 s.
    let started = std::time::Instant::now();
    assert_eq!(runner.join().unwrap(), 128 + 9);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn garbage_from_the_host_ends_the_session_without_panicking() {
    let (mut host, runner) = start(sh("exec sleep 30"));
    host.write_all(&[0x7f, 0, 0, 0, 1, 0]).unwrap();
    let _ = collect(&mut host);
    assert_eq!(runner.join().unwrap(), 128 + 9);
}

#[test]
fn wrong_protocol_version_is_refused() {
    let (mut host, mut guest) = UnixStream::pair().unwrap();
    let runner = thread::spawn(move || session::accept_spec(&mut guest).map(|_| ()));
    let old = Hello {
        version: 99,
        agent: "future".into(),
    };
    write_message(&mut host, &Message::Hello(old)).unwrap();
    let err = runner.join().unwrap().unwrap_err();
    assert_eq!(
        err.to_string(),
        "peer speaks protocol version 99, this side speaks 1"
    );
}
