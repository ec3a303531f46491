//! Response bodies and the common responses: JSON, errors, empty, streamed.

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http_body_util::{
    combinators::UnsyncBoxBody, BodyDataStream, BodyExt, Empty, Full, Limited, StreamBody,
};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::error::ApiError;
use super::options::ByteStream;

/// Every response body skiffd sends: whole, empty, or streamed as it is produced.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;
pub type Resp = Response<Body>;

pub const JSON: &str = "application/json";

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body sent piece by piece; each piece leaves as soon as the stream yields it.
pub fn streamed<S>(stream: S) -> Body
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync()
}

pub fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Resp {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    match serde_json::to_vec(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            with_type(status, JSON, full(bytes))
        }
        Err(e) => error(&ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        )),
    }
}

/// `{"message": ...}` with the error's status; 304 has no body.
pub fn error(e: &ApiError) -> Resp {
    if e.status == StatusCode::NOT_MODIFIED {
        let mut resp = Response::new(empty());
        *resp.status_mut() = e.status;
        return resp;
    }
    let body = serde_json::json!({ "message": e.message });
    let mut bytes = body.to_string().into_bytes();
    bytes.push(b'\n');
    with_type(e.status, JSON, full(bytes))
}

pub fn no_content() -> Resp {
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// Reads a whole request body of at most `limit` bytes (JSON bodies are small).
pub async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// A request body (chunked or not) as a stream, handed on as it arrives (`docker load`).
/// Dropped before its end (a refused request, a failed build), the rest is read and thrown
/// away while the answer goes out: closing a connection with unread bytes resets it, and a
/// client still sending would see "broken pipe" instead of skiffd's error.
pub fn request_stream(body: Incoming) -> ByteStream {
    Box::pin(DrainedOnDrop {
        inner: Some(BodyDataStream::new(body)),
    })
}

/// How much of an abandoned body is read to let its client see the answer; past that the
/// connection is closed.
const DRAIN_LIMIT: u64 = 256 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(60);

struct DrainedOnDrop {
    /// `None` once the body has ended.
    inner: Option<BodyDataStream<Incoming>>,
}

impl Stream for DrainedOnDrop {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let Some(inner) = self.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let next = std::pin::Pin::new(inner).poll_next(cx);
        if let std::task::Poll::Ready(None | Some(Err(_))) = &next {
            self.inner = None;
        }
        next.map(|item| item.map(|r| r.map_err(std::io::Error::other)))
    }
}

impl Drop for DrainedOnDrop {
    fn drop(&mut self) {
        let (Some(mut rest), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(async move {
            let drain = async {
                let mut left = DRAIN_LIMIT;
                while let Some(Ok(chunk)) = rest.next().await {
                    left = left.saturating_sub(chunk.len() as u64);
                    if left == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }
}
