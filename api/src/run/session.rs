//! One process session, host side: handshake with guest-init, send the spec, then carry stdin,
//! signals and resizes to the guest and its output back until the exit report.
//!
//! The guest is untrusted: everything it sends goes through the bounded [`FrameDecoder`], and any
//! malformed or unexpected frame ends the session with a clear [`Outcome::Lost`], never a panic.

use skiff_protocol::{
    check_hello, ErrorReport, ExitStatus, FrameDecoder, Hello, Message, ProcessList, ProcessSpec,
    ProtocolError, SignalMsg, TerminalSize, DATA_CHUNK,
};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Our `Hello.agent`.
const AGENT: &str = concat!("skiff ", env!("CARGO_PKG_VERSION"));
/// How long guest-init may take to say Hello once connected, or to answer a request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames buffered between the socket reader and the session loop.
const FRAME_QUEUE: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("talking to guest-init: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("guest-init did not send {what} within {after:?}")]
    Timeout { what: &'static str, after: Duration },
}

/// Something for the running process, from the user's side.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    Signal(i32),
    Resize(TerminalSize),
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process ran and exited.
    Exited(ExitStatus),
    /// The process could not be started (or guest-init failed), as reported by the guest.
    Failed(ErrorReport),
    /// The connection ended without a report, or the guest sent something invalid.
    Lost(String),
}

/// Reads frames off the guest's stream into a queue; ends with `Err` or by closing the queue.
async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: R,
    mut decoder: FrameDecoder,
    frames: mpsc::Sender<Result<Message, ProtocolError>>,
) {
    let mut buf = vec![0u8; DATA_CHUNK];
    loop {
        loop {
            match decoder.next_message() {
                Ok(Some(message)) => {
                    if frames.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = frames.send(Err(e)).await;
                    return;
                }
            }
        }
        match reader.read(&mut buf).await {
            Ok(0) => {
                if let Err(e) = decoder.finish() {
                    let _ = frames.send(Err(e)).await;
                }
                return;
            }
            Ok(n) => decoder.push(&buf[..n]),
            Err(e) => {
                let _ = frames.send(Err(e.into())).await;
                return;
            }
        }
    }
}

/// A session whose spec has been sent.
pub struct Session<W> {
    writer: W,
    frames: mpsc::Receiver<Result<Message, ProtocolError>>,
}

async fn send<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Message,
) -> Result<(), ProtocolError> {
    writer.write_all(&message.encode()?).await?;
    Ok(())
}

/// Exchanges `Hello`s over a connected stream.
async fn open<R, W>(reader: R, mut writer: W) -> Result<Session<W>, SessionError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    send(&mut writer, &Message::Hello(Hello::ours(AGENT))).await?;
    let (tx, frames) = mpsc::channel(FRAME_QUEUE);
    tokio::spawn(read_frames(reader, FrameDecoder::new(), tx));
    let mut session = Session { writer, frames };
    check_hello(session.next_frame("Hello").await?)?;
    Ok(session)
}

/// Exchanges `Hello`s over a connected stream and sends the spec.
pub async fn start<R, W>(
    reader: R,
    writer: W,
    spec: &ProcessSpec,
) -> Result<Session<W>, SessionError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let mut session = open(reader, writer).await?;
    send(&mut session.writer, &Message::Spec(spec.clone())).await?;
    Ok(session)
}

/// Asks guest-init for the container's processes, over a stream to its exec port.
pub async fn list_processes<R, W>(reader: R, writer: W) -> Result<ProcessList, SessionError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let mut session = open(reader, writer).await?;
    send(&mut session.writer, &Message::ListProcesses).await?;
    match session.next_frame("Processes").await? {
        Message::Processes(list) => Ok(list),
        other => Err(ProtocolError::Unexpected {
            expected: "Processes",
            got: other.kind(),
        }
        .into()),
    }
}

/// A session already under way, reached through a VMM's attach socket: no hello, no spec (the
/// VMM holds the session with guest-init and relays its frames).
pub fn attached<R, W>(reader: R, writer: W) -> Session<W>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let (tx, frames) = mpsc::channel(FRAME_QUEUE);
    tokio::spawn(read_frames(reader, FrameDecoder::new(), tx));
    Session { writer, frames }
}

/// Where the process's input comes from.
pub enum Input {
    /// Chunks until the channel closes, then end-of-file.
    Forward(mpsc::Receiver<Vec<u8>>),
    /// Empty: end-of-file right away.
    Empty,
    /// Nothing at all, not even end-of-file (a terminal without `-i`: EOF would be ^D).
    None,
}

impl<W> Session<W> {
    /// The next frame, which must come within [`REPLY_TIMEOUT`].
    async fn next_frame(&mut self, what: &'static str) -> Result<Message, SessionError> {
        let frame = tokio::time::timeout(REPLY_TIMEOUT, self.frames.recv())
            .await
            .map_err(|_| SessionError::Timeout {
                what,
                after: REPLY_TIMEOUT,
            })?;
        match frame {
            Some(Ok(message)) => Ok(message),
            Some(Err(e)) => Err(e.into()),
            None => Err(ProtocolError::Closed(what).into()),
        }
    }
}

impl<W: AsyncWrite + Unpin> Session<W> {
    /// Runs the session to its end, writing the process's output to `stdout` and `stderr`.
    /// Write errors on our own outputs (e.g. a closed pipe) drop that output, nothing else.
    pub async fn drive<O, E>(
        mut self,
        mut stdout: O,
        mut stderr: E,
        input: Input,
        mut controls: mpsc::Receiver<Control>,
    ) -> Outcome
    where
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        // With no receiver, `recv_some` reports end-of-file at once: Empty sends just StdinEof.
        let (mut stdin, mut stdin_open) = match input {
            Input::Forward(rx) => (Some(rx), true),
            Input::Empty => (None, true),
            Input::None => (None, false),
        };
        let mut guest_writable = true;
        let mut controls_open = true;
        loop {
            tokio::select! {
                frame = self.frames.recv() => {
                    let message = match frame {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => return Outcome::Lost(format!("invalid data from the guest: {e}")),
                        None => return Outcome::Lost("the guest closed the connection without reporting an exit status".into()),
                    };
                    match message {
                        Message::Started(_) => {}
                        Message::Stdout(data) => {
                            let _ = write_flush(&mut stdout, &data).await;
                        }
                        Message::Stderr(data) => {
                            let _ = write_flush(&mut stderr, &data).await;
                        }
                        Message::Exit(status) => return Outcome::Exited(status),
                        Message::Error(report) => return Outcome::Failed(report),
                        other => return Outcome::Lost(format!("unexpected {} message from the guest", other.kind())),
                    }
                }
                chunk = recv_some(&mut stdin), if stdin_open && guest_writable => {
                    let message = match chunk {
                        Some(data) => Message::Stdin(data),
                        None => {
                            stdin_open = false;
                            Message::StdinEof
                        }
                    };
                    if send(&mut self.writer, &message).await.is_err() {
                        guest_writable = false;
                    }
                }
                control = controls.recv(), if controls_open && guest_writable => {
                    let message = match control {
                        Some(Control::Signal(signal)) => Message::Signal(SignalMsg { signal }),
                        Some(Control::Resize(size)) => Message::Resize(size),
                        None => {
                            controls_open = false;
                            continue;
                        }
                    };
                    if send(&mut self.writer, &message).await.is_err() {
                        guest_writable = false;
                    }
                }
            }
        }
    }
}

async fn recv_some(rx: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

async fn write_flush<O: AsyncWrite + Unpin>(out: &mut O, data: &[u8]) -> std::io::Result<()> {
    out.write_all(data).await?;
    out.flush().await
}

/// Reads this process's stdin on a plain thread (a blocking read must not hold up the runtime's
/// shutdown) and hands the chunks over; the channel closes at end-of-file.
pub fn forward_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(4);
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            use std::io::Read;
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; DATA_CHUNK];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot read stdin: {e}");
    }
    rx
}
