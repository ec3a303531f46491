//! The streaming answers Docker clients rely on: the 8-byte stdout/stderr frames, the hijacked
//! connection of attach and exec start (101 UPGRADED, then raw bytes both ways), a response whose
//! headers leave at once and whose body follows later (wait), and JSON-lines progress.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{Future, FutureExt, Stream, StreamExt};
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::os::fd::RawFd;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::body::{streamed, with_type, Resp, JSON};
use super::options::{AttachStreams, OutputChunk, OutputStream};
use super::server::Connection;

pub const RAW_STREAM: &str = "application/vnd.docker.raw-stream";
pub const MULTIPLEXED_STREAM: &str = "application/vnd.docker.multiplexed-stream";
pub const JSON_LINES: &str = "application/json";

/// One chunk as it goes on the wire: raw with a TTY, else behind Docker's header
/// `[stream, 0, 0, 0, length as u32 big-endian]` (split into several frames past 4 GiB).
pub fn encode_chunk(chunk: &OutputChunk, tty: bool) -> Bytes {
    if tty {
        return chunk.data.clone();
    }
    let mut out = BytesMut::with_capacity(chunk.data.len() + 8);
    for piece in chunk.data.chunks(u32::MAX as usize) {
        out.put_u8(chunk.stream as u8);
        out.put_bytes(0, 3);
        // The chunking above bounds every piece to u32::MAX bytes.
        out.put_u32(u32::try_from(piece.len()).unwrap_or(u32::MAX));
        out.put_slice(piece);
    }
    out.freeze()
}

/// An output stream as wire bytes.
pub fn encode_output(output: OutputStream, tty: bool) -> impl Stream<Item = Bytes> + Send {
    output.map(move |chunk| encode_chunk(&chunk, tty))
}

pub fn stream_content_type(tty: bool) -> &'static str {
    if tty {
        RAW_STREAM
    } else {
        MULTIPLEXED_STREAM
    }
}

/// Whether the client asked to take the connection over (`Connection: Upgrade` and an
/// `Upgrade` header, which the docker CLI sets to `tcp`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers.get_all(CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    connection_upgrade && headers.contains_key(UPGRADE)
}

/// Answers an attach or exec start. With an upgrade request: `101 UPGRADED`, then, once the
/// client has read it, output to the client and the client's bytes to stdin until the output
/// ends. Without: a plain 200 whose streamed body is the output (stdin closed).
pub fn hijack<B: Send + 'static>(req: Request<B>, streams: AttachStreams) -> Resp {
    let content_type = stream_content_type(streams.tty);
    if !wants_upgrade(req.headers()) {
        let body = encode_output(streams.output, streams.tty).map(Ok);
        return with_type(StatusCode::OK, content_type, streamed(body));
    }
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(upgraded) => upgraded,
            Err(e) => return tracing::debug!("attach: upgrade failed: {e}"),
        };
        match upgraded.downcast::<Connection>() {
            Ok(parts) => {
                let io = parts.io.into_inner();
                until_peer_has_read(io.as_raw_fd()).await;
                pump(io, streams, parts.read_buf).await
            }
            Err(upgraded) => pump(TokioIo::new(upgraded), streams, Bytes::new()).await,
        }
    });
    let mut resp = Response::new(super::body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// How long the first frame may wait for the client to read the 101.
const PEER_READ_WAIT: Duration = Duration::from_secs(2);

/// Waits until the client has read everything sent so far (`SIOCOUTQ`: on a Unix socket, the
/// bytes its peer has not consumed; on TCP, those not yet acknowledged), for `PEER_READ_WAIT`
/// at most. docker-py reads the 101's headers through a buffered file and then reads frames from
/// the bare socket: a frame that arrived with the headers would be lost.
async fn until_peer_has_read(fd: RawFd) {
    let deadline = Instant::now() + PEER_READ_WAIT;
    loop {
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (TIOCOUTQ) writes one c_int through the pointer, which points to
        // `queued`; `fd` is the connection's descriptor, open for the duration of the call.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
        if rc != 0 || queued == 0 || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Moves bytes over a taken-over connection until the output ends, then closes it (the client
/// sees EOF and asks for the exit code). The client's half-close ends stdin only. `already_read`:
/// bytes the client sent right after its request, read along with it.
pub async fn pump<IO>(io: IO, streams: AttachStreams, already_read: Bytes)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let stdin_task = streams.stdin.map(|tx| {
        tokio::spawn(async move {
            if !already_read.is_empty() && tx.send(already_read).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }
        })
    });
    let mut output = encode_output(streams.output, streams.tty).boxed();
    while let Some(bytes) = output.next().await {
        if let Err(e) = wr.write_all(&bytes).await {
            tracing::debug!("attach: client went away: {e}");
            break;
        }
        if wr.flush().await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
    if let Some(task) = stdin_task {
        task.abort();
    }
}

/// A 200 JSON answer whose headers leave now and whose body follows when `value` resolves
/// (`POST /containers/{id}/wait`: `docker run` sends `start` only once it has the headers).
pub fn json_later<F, T>(value: F) -> Resp
where
    F: Future<Output = T> + Send + 'static,
    T: Serialize,
{
    let body = value
        .map(|v| {
            let mut bytes = serde_json::to_vec(&v).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            Ok(Bytes::from(bytes))
        })
        .into_stream();
    with_type(StatusCode::OK, JSON, streamed(body))
}

/// A 200 answer of one JSON document per line, each sent as soon as it is produced (pull, load,
/// events, stats).
pub fn json_lines<S, T>(items: S) -> Resp
where
    S: Stream<Item = T> + Send + 'static,
    T: Serialize,
{
    let body = items.map(|item| {
        let mut bytes = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        Ok(Bytes::from(bytes))
    });
    with_type(StatusCode::OK, JSON_LINES, streamed(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::options::StdStream;
    use tokio::sync::mpsc;

    fn chunk(stream: StdStream, data: &'static [u8]) -> OutputChunk {
        OutputChunk {
            stream,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn frames_carry_stream_and_big_endian_length() {
        let framed = encode_chunk(&chunk(StdStream::Stderr, b"hello"), false);
        assert_eq!(&framed[..], b"\x02\x00\x00\x00\x00\x00\x00\x05hello");
        assert!(encode_chunk(&chunk(StdStream::Stdout, b""), false).is_empty());
    }

    #[test]
    fn tty_output_is_raw() {
        assert_eq!(
            &encode_chunk(&chunk(StdStream::Stdout, b"hi\n"), true)[..],
            b"hi\n"
        );
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, HeaderValue::from_static("tcp"));
        assert!(!wants_upgrade(&h));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(wants_upgrade(&h));
    }

    #[tokio::test]
    async fn pump_frames_output_and_forwards_stdin_until_half_close() {
        let (client, server) = tokio::io::duplex(1024);
        let (stdin_tx, mut stdin_rx) = mpsc::channel(4);
        let output = futures_util::stream::iter(vec![
            chunk(StdStream::Stdout, b"out"),
            chunk(StdStream::Stderr, b"err"),
        ])
        .chain(
            futures_util::stream::pending()
                .take_until(tokio::time::sleep(std::time::Duration::from_millis(200))),
        )
        .boxed();
        let task = tokio::spawn(pump(
            server,
            AttachStreams {
                tty: false,
                output,
                stdin: Some(stdin_tx),
            },
            Bytes::from_static(b"early "),
        ));
        let (mut crd, mut cwr) = tokio::io::split(client);
        cwr.write_all(b"typed").await.unwrap();
        cwr.shutdown().await.unwrap();
        assert_eq!(stdin_rx.recv().await.as_deref(), Some(&b"early "[..]));
        assert_eq!(stdin_rx.recv().await.as_deref(), Some(&b"typed"[..]));
        assert_eq!(stdin_rx.recv().await, None, "half-close ends stdin");
        let mut got = Vec::new();
        crd.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"\x01\0\0\0\0\0\0\x03out\x02\0\0\0\0\0\0\x03err");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn json_lines_are_newline_terminated() {
        use http_body_util::BodyExt;
        let resp = json_lines(futures_util::stream::iter(vec![1, 2]));
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"1\n2\n");
    }
}
