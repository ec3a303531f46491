//! The container session against guest-init's real session code (run as an ordinary process
//! here, its process spawned on this host), and against guests that lie.

use super::*;
use skiff_guest_init::reaper::Reaper;
use skiff_logfile::reader;
use skiff_protocol::SignalMsg;
use std::io::Write;

struct Fixture {
    dir: tempfile::TempDir,
    spec: ContainerSpec,
}

impl Fixture {
    fn new(args: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let spec = ContainerSpec {
            process: ProcessSpec::new(args.iter().map(|s| s.to_string()).collect()),
            log: dir.path().join("log.json"),
            log_limits: LogLimits::default(),
            exit_file: dir.path().join("exit.json"),
            attach: dir.path().join("attach.sock"),
            open_stdin: false,
            stdin_once: false,
            wait_for_attach: false,
        };
        Fixture { dir, spec }
    }

    fn uds(&self) -> PathBuf {
        self.dir.path().join("vsock.sock")
    }

    /// Starts the session, then a guest-init session connected to it, as the vsock device would.
    fn run_with_guest_init(&self) -> (ContainerSession, std::thread::JoinHandle<()>) {
        let session = ContainerSession::listen(&self.spec, &self.uds())
            .unwrap()
            .start()
            .unwrap();
        let mut guest = self.connect_guest();
        let guest = std::thread::spawn(move || {
            if let Ok(spec) = skiff_guest_init::session::accept_spec(&mut guest) {
                let _ = skiff_guest_init::session::run(&mut guest, &spec, Reaper::own_children());
            }
            // goodbye: wait for the host to close.
            let _ = guest.shutdown(std::net::Shutdown::Write);
            let _ = std::io::copy(&mut guest, &mut std::io::sink());
        });
        (session, guest)
    }

    fn connect_guest(&self) -> UnixStream {
        UnixStream::connect(format!("{}_{CONTROL_PORT}", self.uds().display())).unwrap()
    }

    fn attach(&self) -> UnixStream {
        UnixStream::connect(&self.spec.attach).unwrap()
    }

    fn exit(&self) -> Option<ContainerExit> {
        ContainerExit::read(&self.spec.exit_file).unwrap()
    }

    /// Waits (at most 5 s) until the log holds `n` lines.
    fn wait_for_log_lines(&self, n: usize) {
        for _ in 0..500 {
            if self.log().len() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log(&self) -> Vec<(Stream, String)> {
        reader::read_all(&self.spec.log)
            .unwrap()
            .into_iter()
            .map(|r| (r.stream, String::from_utf8(r.log).unwrap()))
            .collect()
    }
}

/// Frames an attach client gets, until the exit report (included).
fn read_until_exit(stream: &mut UnixStream) -> Vec<Message> {
    let mut got = Vec::new();
    while let Some(message) = read_message(stream).unwrap() {
        let last = matches!(message, Message::Exit(_) | Message::Error(_));
        got.push(message);
        if last {
            break;
        }
    }
    got
}

fn stdout_of(frames: &[Message]) -> String {
    frames
        .iter()
        .filter_map(|m| match m {
            Message::Stdout(d) => Some(String::from_utf8_lossy(d).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn output_goes_to_the_log_and_the_status_to_the_exit_file() {
    let f = Fixture::new(&[
        "sh",
        "-c",
        "echo out; echo err >&2; read x || echo eof; exit 3",
    ]);
    let (session, guest) = f.run_with_guest_init();
    guest.join().unwrap();
    session.finish(Duration::from_secs(5));
    let exit = f.exit().expect("an exit file");
    assert_eq!(exit.outcome, ExitOutcome::Exited(ExitStatus::Code(3)));
    assert_eq!(exit.code(), 3);
    let mut log = f.log();
    log.sort_by_key(|(s, _)| *s == Stream::Stderr);
    assert_eq!(
        log,
        vec![
            (Stream::Stdout, "out\n".to_string()),
            (Stream::Stdout, "eof\n".to_string()),
            (Stream::Stderr, "err\n".to_string())
        ]
    );
}

#[test]
fn a_process_that_cannot_start_is_reported_failed() {
    let f = Fixture::new(&["/no/such/program"]);
    let (session, guest) = f.run_with_guest_init();
    guest.join().unwrap();
    session.finish(Duration::from_secs(5));
    let exit = f.exit().expect("an exit file");
    assert_eq!(exit.code(), 127);
    assert!(matches!(exit.outcome, ExitOutcome::Failed(_)));
}

#[test]
fn an_attached_client_sees_all_output_feeds_stdin_and_gets_the_exit() {
    let mut f = Fixture::new(&["sh", "-c", "echo first; read x; echo got:$x; exit 5"]);
    f.spec.open_stdin = true;
    f.spec.stdin_once = true;
    f.spec.wait_for_attach = true;
    let (session, guest) = f.run_with_guest_init();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        f.log().is_empty(),
        "the process waits for its first attach client"
    );
    let mut client = f.attach();
    write_message(&mut client, &Message::Stdin(b"hello\n".to_vec())).unwrap();
    let frames = read_until_exit(&mut client);
    assert_eq!(stdout_of(&frames), "first\ngot:hello\n");
    assert_eq!(frames.last(), Some(&Message::Exit(ExitStatus::Code(5))));
    guest.join().unwrap();
    session.finish(Duration::from_secs(5));
    assert_eq!(f.exit().unwrap().code(), 5);
    // A client that comes after the end gets the exit report at once.
    let mut late = f.attach();
    assert_eq!(
        read_message(&mut late).unwrap(),
        Some(Message::Exit(ExitStatus::Code(5)))
    );
}

#[test]
fn without_stdin_once_a_client_s_end_of_input_leaves_stdin_open_for_the_next() {
    let mut f = Fixture::new(&["sh", "-c", "read a; echo a:$a; read b; echo b:$b; exit 4"]);
    f.spec.open_stdin = true;
    let (session, guest) = f.run_with_guest_init();
    let mut first = f.attach();
    write_message(&mut first, &Message::Stdin(b"one\n".to_vec())).unwrap();
    write_message(&mut first, &Message::StdinEof).unwrap();
    f.wait_for_log_lines(1);
    drop(first);
    let mut second = f.attach();
    write_message(&mut second, &Message::Stdin(b"two\n".to_vec())).unwrap();
    let frames = read_until_exit(&mut second);
    assert_eq!(frames.last(), Some(&Message::Exit(ExitStatus::Code(4))));
    guest.join().unwrap();
    session.finish(Duration::from_secs(5));
    let lines: Vec<String> = f.log().into_iter().map(|(_, l)| l).collect();
    assert_eq!(lines, ["a:one\n", "b:two\n"]);
}

#[test]
fn a_signal_from_a_client_reaches_the_process() {
    let f = Fixture::new(&["sh", "-c", "echo up; exec sleep 100"]);
    let (session, guest) = f.run_with_guest_init();
    let mut client = f.attach();
    // Wait for the process to be up, then signal it.
    f.wait_for_log_lines(1);
    write_message(&mut client, &Message::Signal(SignalMsg { signal: 15 })).unwrap();
    let frames = read_until_exit(&mut client);
    assert_eq!(frames.last(), Some(&Message::Exit(ExitStatus::Signal(15))));
    guest.join().unwrap();
    session.finish(Duration::from_secs(5));
    assert_eq!(f.exit().unwrap().code(), 143);
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_the_container_goes_on() {
    let mut f = Fixture::new(&["sh", "-c", "head -c 4000000 /dev/zero | tr '\\0' x; echo"]);
    f.spec.wait_for_attach = true;
    let (session, guest) = f.run_with_guest_init();
    let stalled = f.attach();
    guest.join().unwrap();
    session.finish(Duration::from_secs(5));
    assert_eq!(f.exit().unwrap().code(), 0);
    let logged: usize = f.log().iter().map(|(_, l)| l.len()).sum();
    assert_eq!(logged, 4_000_001, "every byte is in the log");
    drop(stalled);
}

#[test]
fn a_guest_that_breaks_the_protocol_leaves_no_exit_file() {
    let f = Fixture::new(&["true"]);
    let session = ContainerSession::listen(&f.spec, &f.uds())
        .unwrap()
        .start()
        .unwrap();
    let mut guest = f.connect_guest();
    // A hello, then a frame header announcing more than the protocol allows.
    write_message(&mut guest, &Message::Hello(Hello::ours("liar"))).unwrap();
    assert!(matches!(
        read_message(&mut guest),
        Ok(Some(Message::Hello(_)))
    ));
    assert!(matches!(
        read_message(&mut guest),
        Ok(Some(Message::Spec(_)))
    ));
    guest.write_all(&[0x06, 0xff, 0xff, 0xff, 0xff]).unwrap();
    session.finish(Duration::from_secs(5));
    assert_eq!(f.exit(), None);
    // A frame the guest must not send (stdin) ends the session the same way.
    let f = Fixture::new(&["true"]);
    let session = ContainerSession::listen(&f.spec, &f.uds())
        .unwrap()
        .start()
        .unwrap();
    let mut guest = f.connect_guest();
    write_message(&mut guest, &Message::Hello(Hello::ours("liar"))).unwrap();
    write_message(&mut guest, &Message::Stdin(b"x".to_vec())).unwrap();
    session.finish(Duration::from_secs(5));
    assert_eq!(f.exit(), None);
}

#[test]
fn an_exit_file_that_is_a_symlink_a_fifo_or_huge_is_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere.json");
    let report = ContainerExit {
        outcome: ExitOutcome::Failed(ErrorReport {
            message: "m".into(),
            exit_code: 127,
        }),
        finished_at: "t".into(),
    };
    std::fs::write(&target, serde_json::to_vec(&report).unwrap()).unwrap();
    assert_eq!(ContainerExit::read(&target).unwrap(), Some(report));
    let link = dir.path().join("exit.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(ContainerExit::read(&link).is_err());
    let fifo = dir.path().join("fifo.json");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert!(ContainerExit::read(&fifo).is_err(), "read without blocking");
    let huge = dir.path().join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(MAX_EXIT_FILE + 1)
        .unwrap();
    let err = ContainerExit::read(&huge).unwrap_err().to_string();
    assert!(err.ends_with("is too long"), "{err}");
    assert_eq!(ContainerExit::read(&dir.path().join("none")).unwrap(), None);
}
