//! A process session (a container's, through its VMM's attach socket, or an exec's, straight to
//! guest-init) turned into the streams the API hands a client.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::daemon::options::{AttachStreams, OutputChunk, StdStream};
use crate::run::session::{Control, Input, Outcome, Session};

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
    /// The client's chunks, then end-of-file when it closes its side.
    Forward,
    /// End-of-file at once.
    Empty,
    /// Nothing: the client did not ask for stdin.
    None,
}

/// Drives `session` on a task of its own. `on_end` gets the outcome before the output stream
/// ends, so a client that asks right after the stream closed (`docker exec` reads the exit code
/// at once) finds it recorded.
pub fn pump<W>(
    session: Session<W>,
    tty: bool,
    stdin: StdinPlan,
    on_end: impl FnOnce(Outcome) + Send + 'static,
) -> AttachStreams
where
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<OutputChunk>(OUTPUT_QUEUE);
    let (stdin_tx, input) = match stdin {
        StdinPlan::Forward => {
            let (client_tx, mut client_rx) = mpsc::channel::<Bytes>(4);
            let (guest_tx, guest_rx) = mpsc::channel::<Vec<u8>>(4);
            tokio::spawn(async move {
                while let Some(chunk) = client_rx.recv().await {
                    if guest_tx.send(chunk.to_vec()).await.is_err() {
                        break;
                    }
                }
            });
            (Some(client_tx), Input::Forward(guest_rx))
        }
        StdinPlan::Empty => (None, Input::Empty),
        StdinPlan::None => (None, Input::None),
    };
    let keep = tx.clone();
    tokio::spawn(async move {
        let (_controls, controls_rx) = mpsc::channel::<Control>(1);
        let out = ChunkWriter {
            stream: StdStream::Stdout,
            tx: PollSender::new(tx.clone()),
        };
        let err = ChunkWriter {
            stream: StdStream::Stderr,
            tx: PollSender::new(tx),
        };
        let outcome = session.drive(out, err, input, controls_rx).await;
        on_end(outcome);
        drop(keep);
    });
    let output = tokio_stream_from(rx);
    AttachStreams {
        tty,
        output,
        stdin: stdin_tx,
    }
}

fn tokio_stream_from(
    rx: mpsc::Receiver<OutputChunk>,
) -> futures_util::stream::BoxStream<'static, OutputChunk> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
    .boxed()
}
