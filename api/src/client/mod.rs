//! A client of skiffd's Docker Engine API (and of any Docker-compatible daemon), over a Unix
//! socket or plain `tcp://`. The `skiff` CLI and the tests use it.
//!
//! Requests and answers are the daemon's own types (`daemon::model`, `daemon::create::body`,
//! `daemon::options`), so both ends of the wire agree by construction. Each request opens its own
//! HTTP/1.1 connection: a hijacked attach or a pending wait holds its connection for as long as it
//! lives, and a local socket costs next to nothing to open.
//!
//! - `error`: failures, with the daemon's `{"message": …}` and status kept apart from transport.
//! - `containers`: the calls (ping, version, containers, exec, pull); `images`: push, tag.
//! - `stream`: 8-byte frame demultiplexing, hijacked connections, pending waits, JSON lines.

pub mod containers;
pub mod error;
pub mod images;
pub mod model;
pub mod networks;
pub mod stream;
pub mod volumes;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpStream, UnixStream};

use crate::daemon::error::ApiError;
use crate::daemon::router::API_VERSION;
use crate::daemon::server::{Io, ListenAddr};

pub use error::ClientError;
pub use stream::{FrameDecoder, Hijacked, JsonLines, OutputReader, PendingWait, StdinWriter};

pub type Result<T> = std::result::Result<T, ClientError>;

/// Where a daemon listens: `unix:///PATH` or `tcp://HOST:PORT`, as `-H` takes it.
pub type Host = ListenAddr;

/// A handle on one daemon; cheap to clone, holds no connection.
#[derive(Debug, Clone)]
pub struct Client {
    host: Host,
}

/// A request body too big to hold at once (a build context), sent as it is produced.
pub type StreamedBody = BoxBody<Bytes, std::io::Error>;

/// What a request carries.
enum Body {
    Empty,
    Json(Vec<u8>),
    /// A content type and the bytes as they come.
    Streamed(&'static str, StreamedBody),
}

/// A request before it is sent: method, path below the version prefix (query included), body.
struct Call {
    method: Method,
    path: String,
    body: Body,
    upgrade: bool,
    /// Extra request headers (`X-Registry-Auth`).
    headers: Vec<(&'static str, String)>,
}

impl Call {
    fn new(method: Method, path: String) -> Call {
        Call {
            method,
            path,
            body: Body::Empty,
            upgrade: false,
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: String) -> Call {
        self.headers.push((name, value));
        self
    }

    /// A JSON body, with the fields left unset (`null`) removed: the daemon refuses fields it
    /// does not honour unless they hold their default, and `null` is only noise on the wire.
    fn json<T: Serialize>(mut self, body: &T) -> Result<Call> {
        let mut value =
            serde_json::to_value(body).map_err(|e| ClientError::Encode(e.to_string()))?;
        strip_nulls(&mut value);
        self.body = Body::Json(value.to_string().into_bytes());
        Ok(self)
    }

    /// A body streamed with its content type.
    fn streamed(mut self, content_type: &'static str, body: StreamedBody) -> Call {
        self.body = Body::Streamed(content_type, body);
        self
    }

    /// Asks to take the connection over (attach, exec start).
    fn upgrade(mut self) -> Call {
        self.upgrade = true;
        self
    }
}

fn strip_nulls(value: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = value {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

impl Client {
    pub fn new(host: Host) -> Client {
        Client { host }
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Opens a connection and starts driving it; upgrades are allowed on every one.
    async fn connect(&self) -> Result<hyper::client::conn::http1::SendRequest<StreamedBody>> {
        let io: std::io::Result<Box<dyn Io>> = match &self.host {
            ListenAddr::Unix(path) => UnixStream::connect(path).await.map(|s| Box::new(s) as _),
            ListenAddr::Tcp(addr) => TcpStream::connect(addr).await.map(|s| Box::new(s) as _),
        };
        let io = io.map_err(|error| ClientError::Connect {
            host: self.host.to_string(),
            error,
        })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("client connection ended: {e}");
            }
        });
        Ok(sender)
    }

    /// Sends `call` and returns the answer once its headers are in; an error status becomes
    /// `ClientError::Api` with the daemon's message. 1xx–3xx are successes, as in Docker's own
    /// client (304 answers a start of a running container or a stop of a stopped one).
    async fn send(&self, call: Call) -> Result<Response<Incoming>> {
        let mut sender = self.connect().await?;
        let host = match &self.host {
            ListenAddr::Unix(_) => "localhost".to_string(),
            ListenAddr::Tcp(addr) => addr.clone(),
        };
        let mut req = Request::builder()
            .method(call.method)
            .uri(format!("/v{API_VERSION}{}", call.path))
            .header(HOST, host);
        let body = match call.body {
            Body::Empty => Full::default().map_err(|never| match never {}).boxed(),
            Body::Json(bytes) => {
                req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Full::new(Bytes::from(bytes))
                    .map_err(|never| match never {})
                    .boxed()
            }
            Body::Streamed(content_type, body) => {
                req = req.header(CONTENT_TYPE, HeaderValue::from_static(content_type));
                body
            }
        };
        for (name, value) in &call.headers {
            req = req.header(*name, value);
        }
        if call.upgrade {
            req = req
                .header(CONNECTION, HeaderValue::from_static("Upgrade"))
                .header(UPGRADE, HeaderValue::from_static("tcp"));
        }
        let req = req
            .body(body)
            .map_err(|e| ClientError::Encode(e.to_string()))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        if status.is_client_error() || status.is_server_error() {
            let bytes = resp.into_body().collect().await?.to_bytes();
            return Err(ClientError::Api(api_error(status, &bytes)));
        }
        Ok(resp)
    }

    /// Sends `call` and decodes its JSON answer.
    async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T> {
        let what = call.path.clone();
        let bytes = self
            .send(call)
            .await?
            .into_body()
            .collect()
            .await?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|error| ClientError::Decode { what, error })
    }

    /// Sends `call` and reads its (empty or ignored) answer to the end.
    async fn unit(&self, call: Call) -> Result<()> {
        self.send(call).await?.into_body().collect().await?;
        Ok(())
    }
}

/// The daemon's `{"message": …}`, or the body as text when it is something else (a proxy's page).
fn api_error(status: StatusCode, body: &[u8]) -> ApiError {
    #[derive(serde::Deserialize)]
    struct Message {
        message: String,
    }
    let message = match serde_json::from_slice::<Message>(body) {
        Ok(m) => m.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        message
    };
    ApiError::new(status, message)
}

/// What a path segment keeps as is: IDs and names (`[a-zA-Z0-9][a-zA-Z0-9_.-]`) pass unchanged.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

/// `id` (an ID, a prefix or a name, as the user typed it) as one path segment.
fn segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, SEGMENT).to_string()
}

/// `?k=v&…` from the pairs given (an empty list gives an empty string).
fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, &v);
    }
    let q = q.finish();
    if q.is_empty() {
        q
    } else {
        format!("?{q}")
    }
}

/// Docker's spelling of a boolean query parameter.
/// The `filters` query pair Docker's API takes (JSON), none for no filters.
fn filters_pair(
    filters: &crate::daemon::options::Filters,
) -> Result<Option<(&'static str, String)>> {
    if filters.is_empty() {
        return Ok(None);
    }
    let json = serde_json::to_string(filters).map_err(|e| ClientError::Encode(e.to_string()))?;
    Ok(Some(("filters", json)))
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_are_left_out_at_every_level() {
        let mut v = serde_json::json!({"A": null, "B": 1, "C": {"D": null, "E": [null]}});
        strip_nulls(&mut v);
        assert_eq!(v, serde_json::json!({"B": 1, "C": {"E": [null]}}));
    }

    #[test]
    fn error_bodies() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"message":"No such container: x"}"#,
        );
        assert_eq!(e.message, "No such container: x");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e = api_error(StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert_eq!(e.message, "upstream down");
        let e = api_error(StatusCode::CONFLICT, b"");
        assert_eq!(e.message, "Conflict");
    }

    #[test]
    fn ids_and_queries_are_encoded() {
        assert_eq!(segment("web/1 x"), "web%2F1%20x");
        assert_eq!(segment("my_web.1-a"), "my_web.1-a");
        assert_eq!(
            query([("t", "5".into()), ("signal", "SIG INT".into())]),
            "?t=5&signal=SIG+INT"
        );
        assert_eq!(query([]), "");
    }
}
