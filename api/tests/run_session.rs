//! The host side of a session (`skiff_api::run::session`) against guest-init's real process
//! runner over a Unix socket pair — both halves of the protocol, no VM — and against a hostile
//! fake guest that sends garbage.

use skiff_api::run::session::{self, Control, Input, Outcome};
use skiff_guest_init::reaper::Reaper;
use skiff_protocol::{read_message, write_message, ExitStatus, Hello, Message, ProcessSpec};
use std::io::Write;
use std::time::Duration;
use tokio::sync::mpsc;

/// A connected pair: the tokio end for the host, the std end for a guest thread.
fn pair() -> (tokio::net::UnixStream, std::os::unix::net::UnixStream) {
    let (host, guest) = std::os::unix::net::UnixStream::pair().unwrap();
    host.set_nonblocking(true).unwrap();
    (tokio::net::UnixStream::from_std(host).unwrap(), guest)
}

/// Runs `spec` through the real guest runner; returns the outcome, stdout and stderr.
async fn run_real(
    spec: ProcessSpec,
    input: Input,
    controls: mpsc::Receiver<Control>,
) -> (Outcome, Vec<u8>, Vec<u8>) {
    let (host, mut guest) = pair();
    std::thread::spawn(move || {
        if let Ok(spec) = skiff_guest_init::session::accept_spec(&mut guest) {
            let _ = skiff_guest_init::session::run(&mut guest, &spec, Reaper::own_children());
        }
    });
    let (reader, writer) = host.into_split();
    let session = session::start(reader, writer, &spec).await.unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        session.drive(&mut out, &mut err, input, controls),
    )
    .await
    .expect("session hung");
    (outcome, out, err)
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new(vec!["sh".into(), "-c".into(), script.into()])
}

fn no_controls() -> mpsc::Receiver<Control> {
    mpsc::channel(1).1
}

#[tokio::test]
async fn output_and_exit_code_come_back() {
    let (outcome, out, err) = run_real(
        sh("echo out; echo err >&2; exit 3"),
        Input::Empty,
        no_controls(),
    )
    .await;
    assert_eq!(outcome, Outcome::Exited(ExitStatus::Code(3)));
    assert_eq!(out, b"out\n");
    assert_eq!(err, b"err\n");
}

#[tokio::test]
async fn forwarded_input_reaches_the_process() {
    let (tx, rx) = mpsc::channel(4);
    tx.send(b"abc\n".to_vec()).await.unwrap();
    tx.send(b"def\n".to_vec()).await.unwrap();
    drop(tx);
    let spec = ProcessSpec::new(vec!["cat".into()]);
    let (outcome, out, _) = run_real(spec, Input::Forward(rx), no_controls()).await;
    assert_eq!(outcome, Outcome::Exited(ExitStatus::Code(0)));
    assert_eq!(out, b"abc\ndef\n");
}

#[tokio::test]
async fn signals_are_forwarded() {
    let (tx, rx) = mpsc::channel(4);
    let waiter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send(Control::Signal(libc::SIGTERM)).await.unwrap();
        tx
    });
    let (outcome, _, _) = run_real(sh("exec sleep 30"), Input::Empty, rx).await;
    assert_eq!(outcome, Outcome::Exited(ExitStatus::Signal(libc::SIGTERM)));
    drop(waiter.await);
}

#[tokio::test]
async fn failed_start_is_reported() {
    let spec = ProcessSpec::new(vec!["/no/such/binary".into()]);
    let (outcome, _, _) = run_real(spec, Input::Empty, no_controls()).await;
    match outcome {
        Outcome::Failed(report) => {
            assert_eq!(report.exit_code, 127);
            assert_eq!(
                report.message,
                "exec: \"/no/such/binary\": no such file or directory"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A fake guest that says Hello, reads the Hello, spec and stdin EOF, then sends `bytes` and hangs
/// up (having read everything, so the close is an orderly end-of-file, not a reset).
async fn hostile(bytes: Vec<u8>) -> Outcome {
    let (host, mut guest) = pair();
    std::thread::spawn(move || {
        write_message(&mut guest, &Message::Hello(Hello::ours("evil"))).unwrap();
        for _ in 0..3 {
            let _ = read_message(&mut guest);
        }
        let _ = guest.write_all(&bytes);
        // Keep the stream open a little: the host must not wait for more than it was promised.
        std::thread::sleep(Duration::from_millis(200));
    });
    let (reader, writer) = host.into_split();
    let session = session::start(reader, writer, &sh("true")).await.unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    tokio::time::timeout(
        Duration::from_secs(10),
        session.drive(&mut out, &mut err, Input::Empty, no_controls()),
    )
    .await
    .expect("host hung on a hostile guest")
}

fn lost(outcome: Outcome) -> String {
    match outcome {
        Outcome::Lost(why) => why,
        other => panic!("expected Lost, got {other:?}"),
    }
}

#[tokio::test]
async fn hostile_guest_frames_end_the_session_with_clear_errors() {
    let huge = {
        let mut f = vec![0x06];
        f.extend_from_slice(&u32::MAX.to_be_bytes());
        f
    };
    assert_eq!(
        lost(hostile(huge).await),
        "invalid data from the guest: frame of 4294967295 bytes exceeds the limit of 1048576 bytes"
    );
    assert_eq!(
        lost(hostile(vec![0xee, 0, 0, 0, 0]).await),
        "invalid data from the guest: unknown frame type 0xee"
    );
    let bad_json = {
        let mut f = vec![0x0a, 0, 0, 0, 3];
        f.extend_from_slice(b"{{{");
        f
    };
    assert!(lost(hostile(bad_json).await)
        .starts_with("invalid data from the guest: malformed Exit message"));
    assert_eq!(
        lost(hostile(vec![0x06, 0, 0, 0, 10, b'x']).await),
        "invalid data from the guest: peer closed the stream in the middle of a frame (6 of 15 bytes)"
    );
    let stdin_from_guest = Message::Stdin(b"x".to_vec()).encode().unwrap();
    assert_eq!(
        lost(hostile(stdin_from_guest).await),
        "unexpected Stdin message from the guest"
    );
    assert_eq!(
        lost(hostile(Vec::new()).await),
        "the guest closed the connection without reporting an exit status"
    );
}

#[tokio::test]
async fn guest_with_another_protocol_version_is_refused() {
    let (host, mut guest) = pair();
    std::thread::spawn(move || {
        let future = Hello {
            version: 2,
            agent: "future".into(),
        };
        write_message(&mut guest, &Message::Hello(future)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    let (reader, writer) = host.into_split();
    let err = session::start(reader, writer, &sh("true"))
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "talking to guest-init: peer speaks protocol version 2, this side speaks 1"
    );
}
