//! The client's side of the daemon's streams: container output demultiplexed from Docker's 8-byte
//! frames (or raw with a TTY), a hijacked attach or exec connection split into its output and
//! the container's stdin, a wait whose answer comes later, and JSON-lines progress.

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::upgrade::Upgraded;
use hyper::Response;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};

use super::{ClientError, Result};
use crate::daemon::model::WaitResponse;
use crate::daemon::options::{OutputChunk, StdStream};
use crate::daemon::streams::RAW_STREAM;

/// Bytes of a frame header: `[stream, 0, 0, 0, length as u32 big-endian]`.
const HEADER: usize = 8;

/// Splits a byte stream back into the chunks `daemon::streams::encode_chunk` framed.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, None until one has arrived. Stdin frames (stream 0) count as
    /// stdout, as in Docker's `stdcopy`.
    pub fn next_chunk(&mut self) -> Result<Option<OutputChunk>> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let stream = match self.buf[0] {
            0 | 1 => StdStream::Stdout,
            2 => StdStream::Stderr,
            other => {
                return Err(ClientError::Protocol(format!(
                    "unrecognized stream {other} in a multiplexed answer"
                )))
            }
        };
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
        let end = HEADER + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        self.buf.advance(HEADER);
        let data = self.buf.split_to(len as usize).freeze();
        Ok(Some(OutputChunk { stream, data }))
    }

    /// Bytes of an unfinished frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Where a stream's bytes come from: an answer's body, or a taken-over connection.
enum Source {
    Body(Incoming),
    Raw(ReadHalf<TokioIo<Upgraded>>),
}

impl Source {
    /// The next bytes; None at the end.
    async fn next(&mut self) -> Result<Option<Bytes>> {
        match self {
            Source::Body(body) => loop {
                match body.frame().await.transpose()? {
                    None => return Ok(None),
                    Some(frame) => {
                        if let Ok(data) = frame.into_data() {
                            return Ok(Some(data));
                        }
                    }
                }
            },
            Source::Raw(rd) => {
                let mut buf = BytesMut::with_capacity(32 * 1024);
                match rd.read_buf(&mut buf).await? {
                    0 => Ok(None),
                    _ => Ok(Some(buf.freeze())),
                }
            }
        }
    }
}

/// Whether an answer carries raw TTY bytes rather than frames (from its content type).
fn is_raw<T>(resp: &Response<T>) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(RAW_STREAM))
}

/// A container's or exec session's output (logs, attach, exec start), chunk by chunk.
pub struct OutputReader {
    source: Source,
    /// None: raw TTY bytes, all of them stdout.
    frames: Option<FrameDecoder>,
}

impl OutputReader {
    pub(super) fn from_body(resp: Response<Incoming>) -> OutputReader {
        let raw = is_raw(&resp);
        OutputReader {
            source: Source::Body(resp.into_body()),
            frames: (!raw).then(FrameDecoder::default),
        }
    }

    /// True for Docker's 8-byte frames (no TTY), false for raw TTY bytes.
    pub fn is_multiplexed(&self) -> bool {
        self.frames.is_some()
    }

    /// The next chunk; None once the stream has ended.
    pub async fn next(&mut self) -> Result<Option<OutputChunk>> {
        loop {
            let Some(frames) = self.frames.as_mut() else {
                let data = self.source.next().await?;
                return Ok(data.map(|data| OutputChunk {
                    stream: StdStream::Stdout,
                    data,
                }));
            };
            if let Some(chunk) = frames.next_chunk()? {
                return Ok(Some(chunk));
            }
            match self.source.next().await? {
                Some(bytes) => frames.push(&bytes),
                None if frames.pending() == 0 => return Ok(None),
                None => {
                    return Err(ClientError::Protocol(format!(
                        "the stream ended inside a frame ({} bytes left over)",
                        frames.pending()
                    )))
                }
            }
        }
    }

    /// Writes every chunk to `stdout` or `stderr` as it arrives, flushing each one.
    pub async fn copy_to<O, E>(&mut self, stdout: &mut O, stderr: &mut E) -> Result<()>
    where
        O: AsyncWrite + Unpin,
        E: AsyncWrite + Unpin,
    {
        while let Some(chunk) = self.next().await? {
            write_chunk(&chunk, stdout, stderr).await?;
        }
        Ok(())
    }

    /// All that is left, as (stdout, stderr).
    pub async fn read_to_end(&mut self) -> Result<(Vec<u8>, Vec<u8>)> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        self.copy_to(&mut out, &mut err).await?;
        Ok((out, err))
    }
}

/// Writes one chunk where it belongs and flushes it (a prompt must show before its newline).
pub async fn write_chunk<O, E>(chunk: &OutputChunk, stdout: &mut O, stderr: &mut E) -> Result<()>
where
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    match chunk.stream {
        StdStream::Stderr => {
            stderr.write_all(&chunk.data).await?;
            stderr.flush().await?;
        }
        StdStream::Stdout | StdStream::Stdin => {
            stdout.write_all(&chunk.data).await?;
            stdout.flush().await?;
        }
    }
    Ok(())
}

/// The container's stdin on a hijacked connection; `shutdown` half-closes it, which the daemon
/// takes as stdin's end of file.
pub type StdinWriter = WriteHalf<TokioIo<Upgraded>>;

/// A connection taken over after `101 UPGRADED` (attach, exec start): output one way, stdin the
/// other, until the daemon closes it when the output ends.
pub struct Hijacked {
    io: TokioIo<Upgraded>,
    raw: bool,
}

impl Hijacked {
    pub(super) async fn from_response(resp: Response<Incoming>) -> Result<Hijacked> {
        if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            return Err(ClientError::Protocol(format!(
                "expected 101 Switching Protocols, the daemon answered {}",
                resp.status()
            )));
        }
        let raw = is_raw(&resp);
        let upgraded = hyper::upgrade::on(resp).await?;
        Ok(Hijacked {
            io: TokioIo::new(upgraded),
            raw,
        })
    }

    /// True for Docker's 8-byte frames (no TTY), false for raw TTY bytes.
    pub fn is_multiplexed(&self) -> bool {
        !self.raw
    }

    /// The output to read and the stdin to write, usable from separate tasks.
    pub fn split(self) -> (OutputReader, StdinWriter) {
        let (rd, wr) = tokio::io::split(self.io);
        let reader = OutputReader {
            source: Source::Raw(rd),
            frames: (!self.raw).then(FrameDecoder::default),
        };
        (reader, wr)
    }
}

/// A wait whose headers have arrived (so the container may now be started) and whose answer
/// comes when the condition is met.
pub struct PendingWait {
    body: Incoming,
    what: String,
}

impl PendingWait {
    pub(super) fn new(resp: Response<Incoming>, what: String) -> PendingWait {
        PendingWait {
            body: resp.into_body(),
            what,
        }
    }

    /// The exit code (and error, if any) once the condition is met.
    pub async fn outcome(self) -> Result<WaitResponse> {
        let bytes = self.body.collect().await?.to_bytes();
        serde_json::from_slice(&bytes).map_err(|error| ClientError::Decode {
            what: self.what,
            error,
        })
    }
}

/// An answer of one JSON document per line (pull progress), read as they arrive.
pub struct JsonLines<T> {
    source: Source,
    buf: BytesMut,
    what: String,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> JsonLines<T> {
    pub(super) fn new(resp: Response<Incoming>, what: String) -> JsonLines<T> {
        JsonLines {
            source: Source::Body(resp.into_body()),
            buf: BytesMut::new(),
            what,
            _item: std::marker::PhantomData,
        }
    }

    /// The next document; None at the end. Blank lines are skipped.
    pub async fn next(&mut self) -> Result<Option<T>> {
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(nl + 1);
                if let Some(item) = self.decode(&line)? {
                    return Ok(Some(item));
                }
                continue;
            }
            match self.source.next().await? {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => {
                    let rest = self.buf.split();
                    return self.decode(&rest);
                }
            }
        }
    }

    fn decode(&self, line: &[u8]) -> Result<Option<T>> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(line)
            .map(Some)
            .map_err(|error| ClientError::Decode {
                what: self.what.clone(),
                error,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::streams::encode_chunk;

    fn chunk(stream: StdStream, data: &'static [u8]) -> OutputChunk {
        let data = Bytes::from_static(data);
        OutputChunk { stream, data }
    }

    #[test]
    fn frames_round_trip_whatever_the_split() {
        let sent = [
            chunk(StdStream::Stdout, b"hello\n"),
            chunk(StdStream::Stderr, b"oops"),
            chunk(StdStream::Stdout, b""),
            chunk(StdStream::Stdout, b"x"),
        ];
        let wire: Vec<u8> = sent
            .iter()
            .flat_map(|c| encode_chunk(c, false).to_vec())
            .collect();
        // Byte by byte: every frame boundary falls inside a push at some point.
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        for b in &wire {
            d.push(&[*b]);
            while let Some(c) = d.next_chunk().unwrap() {
                got.push(c);
            }
        }
        let expected: Vec<_> = sent
            .iter()
            .filter(|c| !c.data.is_empty())
            .cloned()
            .collect();
        assert_eq!(got, expected);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn stdin_frames_count_as_stdout_and_unknown_streams_fail() {
        let mut d = FrameDecoder::default();
        d.push(b"\x00\0\0\0\0\0\0\x02in");
        assert_eq!(
            d.next_chunk().unwrap(),
            Some(chunk(StdStream::Stdout, b"in"))
        );
        d.push(b"\x07\0\0\0\0\0\0\x01z");
        assert!(matches!(d.next_chunk(), Err(ClientError::Protocol(_))));
    }
}
