//! `docker logs` from a container's json-file log: all of it or its tail, filtered by stream and
//! time, then (when following) what comes until the container stops.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::daemon::options::{LogsOptions, OutputChunk, OutputStream, StdStream};

/// How often a followed log is read for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// A container's log as output chunks: what is there (or its tail), then, when following, what
/// comes until the container stops.
pub fn stream(
    path: std::path::PathBuf,
    opts: LogsOptions,
    mut phase: tokio::sync::watch::Receiver<super::Phase>,
) -> OutputStream {
    use skiff_logfile::reader::{self, Follower, Record};
    let since = (opts.since > 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(opts.since));
    let until = (opts.until > 0.0).then(|| UNIX_EPOCH + Duration::from_secs_f64(opts.until));
    let to_chunk = move |r: Record| -> Option<OutputChunk> {
        let stream = match r.stream {
            skiff_logfile::writer::Stream::Stdout if opts.stdout => StdStream::Stdout,
            skiff_logfile::writer::Stream::Stderr if opts.stderr => StdStream::Stderr,
            _ => return None,
        };
        if !reader::within(&r, since, until) {
            return None;
        }
        let mut data = Vec::with_capacity(r.log.len() + 32);
        if opts.timestamps {
            data.extend_from_slice(r.time_text.as_bytes());
            data.push(b' ');
        }
        data.extend_from_slice(&r.log);
        Some(OutputChunk {
            stream,
            data: Bytes::from(data),
        })
    };
    let (tx, rx) = mpsc::channel::<OutputChunk>(64);
    tokio::spawn(async move {
        let initial = if opts.follow {
            Follower::from_start(&path).and_then(|mut follower| {
                let mut first = Vec::new();
                loop {
                    let more = follower.poll()?;
                    if more.is_empty() {
                        break;
                    }
                    first.extend(more);
                }
                Ok((Some(follower), first))
            })
        } else {
            match opts.tail {
                Some(n) => reader::tail(&path, n).map(|r| (None, r)),
                None => reader::read_all(&path).map(|r| (None, r)),
            }
        };
        let Ok((follower, mut first)) = initial else {
            return;
        };
        if let (true, Some(n)) = (opts.follow, opts.tail) {
            first.drain(..first.len().saturating_sub(n));
        }
        for record in first {
            if let Some(chunk) = to_chunk(record) {
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        }
        let Some(mut follower) = follower else { return };
        loop {
            let running = phase.borrow_and_update().running;
            tokio::time::sleep(FOLLOW_POLL).await;
            // A poll returns at most about 1 MiB: only an empty one means caught up.
            loop {
                let records = follower.poll().unwrap_or_default();
                if records.is_empty() {
                    break;
                }
                for record in records {
                    if let Some(chunk) = to_chunk(record) {
                        if tx.send(chunk).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if !running {
                return;
            }
        }
    });
    super::streams::receiver_stream(rx)
}
