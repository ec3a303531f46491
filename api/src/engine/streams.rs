//! A process session (a container's, through its VMM's attach socket, or an exec's, straight to
//! guest-init) turned into the streams the API hands a client.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};

use super::detach_keys::{Scanned, Scanner};
use super::{lifecycle, Inner};
use crate::daemon::options::{AttachStreams, OutputChunk, StdStream};
use crate::run::session::{self, Control, Input, Outcome, Session};
use std::sync::Arc;

/// Output chunks queued between a session and its HTTP client.
const OUTPUT_QUEUE: usize = 16;

/// An `AsyncWrite` whose writes become output chunks of one stream (with backpressure).
struct ChunkWriter {
    stream: StdStream,
    tx: PollSender<OutputChunk>,
}

impl AsyncWrite for ChunkWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let closed = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        match self.tx.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(closed())),
            Poll::Ready(Ok(())) => {
                let chunk = OutputChunk {
                    stream: self.stream,
                    data: Bytes::copy_from_slice(buf),
                };
                match self.tx.send_item(chunk) {
                    Ok(()) => Poll::Ready(Ok(buf.len())),
                    Err(_) => Poll::Ready(Err(closed())),
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// How a client's stdin feeds the session.
pub enum StdinPlan {
    /// The client's chunks, then end-of-file when it closes its side; the detach keys (parsed
    /// by `detach_keys::parse`) in them end the client's attachment instead.
    Forward { detach_keys: Vec<u8> },
    /// End-of-file at once.
    Empty,
    /// Nothing: the client did not ask for stdin.
    None,
}

/// Drives `session` on a task of its own. `on_end` gets the outcome before the output stream
/// ends, so a client that asks right after the stream closed (`docker exec` reads the exit code
/// at once) finds it recorded.
/// `on_detach`: what the detach keys end besides the client's streams.
pub fn pump<W>(
    session: Session<W>,
    tty: bool,
    stdin: StdinPlan,
    controls: mpsc::Receiver<Control>,
    on_detach: OnDetach,
    on_end: impl FnOnce(Outcome) + Send + 'static,
) -> AttachStreams
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<OutputChunk>(OUTPUT_QUEUE);
    let detached = CancellationToken::new();
    let (stdin_tx, input) = match stdin {
        StdinPlan::Forward { detach_keys } => {
            let (client_tx, client_rx) = mpsc::channel::<Bytes>(4);
            let (guest_tx, guest_rx) = mpsc::channel::<Vec<u8>>(4);
            let scanner = Scanner::new(detach_keys);
            tokio::spawn(forward_input(
                client_rx,
                guest_tx,
                scanner,
                detached.clone(),
            ));
            (Some(client_tx), Input::Forward(guest_rx))
        }
        StdinPlan::Empty => (None, Input::Empty),
        StdinPlan::None => (None, Input::None),
    };
    let keep = tx.clone();
    let session_detached = detached.clone();
    tokio::spawn(async move {
        let out = ChunkWriter {
            stream: StdStream::Stdout,
            tx: PollSender::new(tx.clone()),
        };
        let err = ChunkWriter {
            stream: StdStream::Stderr,
            tx: PollSender::new(tx),
        };
        let drive = session.drive(out, err, input, controls);
        let outcome = match on_detach {
            OnDetach::KeepSession => drive.await,
            OnDetach::EndSession => tokio::select! {
                outcome = drive => outcome,
                // Dropping the session closes its connection; the process runs on.
                () = session_detached.cancelled() => return,
            },
        };
        on_end(outcome);
        drop(keep);
    });
    let output = receiver_stream(rx)
        .take_until(detached.cancelled_owned())
        .boxed();
    AttachStreams {
        tty,
        output,
        stdin: stdin_tx,
    }
}

/// What detaching ends besides the client's streams.
#[derive(Debug, Clone, Copy)]
pub enum OnDetach {
    /// The session too (an attachment to a container: its VMM holds the real session).
    EndSession,
    /// Nothing else: the session goes on without a client and records its end (an exec's).
    KeepSession,
}

/// Carries a client's input to the session until it ends or types the detach keys. After
/// detaching, the input stays open (no end-of-file) for as long as the session runs.
async fn forward_input(
    mut client: mpsc::Receiver<Bytes>,
    guest: mpsc::Sender<Vec<u8>>,
    mut scanner: Scanner,
    detached: CancellationToken,
) {
    while let Some(chunk) = client.recv().await {
        let (data, detach) = match scanner.scan(&chunk) {
            Scanned::Input(data) => (data, false),
            Scanned::Detach(data) => (data, true),
        };
        if !data.is_empty() && guest.send(data).await.is_err() {
            return;
        }
        if detach {
            detached.cancel();
            guest.closed().await;
            return;
        }
    }
}

/// The chunks of a channel as a stream that ends when every sender is gone.
pub(super) fn receiver_stream(
    mut rx: mpsc::Receiver<OutputChunk>,
) -> futures_util::stream::BoxStream<'static, OutputChunk> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Attach streams at once; the connection to the VMM follows once the container runs (`docker
/// run` attaches before it starts the container; the VMM then waits for this first client).
pub(super) fn deferred_attach(
    inner: Arc<Inner>,
    id: String,
    tty: bool,
    stdin: StdinPlan,
    before_start: bool,
) -> AttachStreams {
    let (out_tx, out_rx) = mpsc::channel::<OutputChunk>(16);
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Bytes>(4);
    let forward_stdin = matches!(stdin, StdinPlan::Forward { .. });
    let mut phase = inner.phase(&id).subscribe();
    let seen = phase.borrow().starts;
    if before_start {
        *inner
            .waiting_attach
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_default() += 1;
    }
    tokio::spawn(async move {
        if before_start {
            let _ = phase.wait_for(|p| p.starts > seen || p.removed).await;
        }
        let connected = lifecycle::connect_attach(&inner.paths(&id)).await;
        if before_start {
            if let Some(n) = inner
                .waiting_attach
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&id)
            {
                *n = n.saturating_sub(1);
            }
        }
        let Ok(stream) = connected else { return };
        let (reader, writer) = stream.into_split();
        // Resizes reach the VMM on connections of their own (`lifecycle::send_control`).
        let (_, no_controls) = mpsc::channel(1);
        let inner_streams = pump(
            session::attached(reader, writer),
            tty,
            stdin,
            no_controls,
            OnDetach::EndSession,
            |_| {},
        );
        if let Some(guest_stdin) = inner_streams.stdin {
            tokio::spawn(async move {
                while let Some(chunk) = stdin_rx.recv().await {
                    if guest_stdin.send(chunk).await.is_err() {
                        break;
                    }
                }
            });
        }
        let mut output = inner_streams.output;
        while let Some(chunk) = output.next().await {
            if out_tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let output = receiver_stream(out_rx);
    AttachStreams {
        tty,
        output,
        stdin: forward_stdin.then_some(stdin_tx),
    }
}
