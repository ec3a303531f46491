//! The entry point of every request: the optional `/v1.NN` prefix, the route table, and the
//! headers Docker puts on every answer.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, SERVER};
use hyper::{Method, Request};

use super::backend::ContainerBackend;
use super::body::{self, Resp};
use super::error::ApiError;
use super::handlers::{build, containers, exec, images, networks, system, volumes};
use super::host::HostFacts;
use super::query::Query;

/// The API version skiffd speaks; the docker CLI uses min(this, its own).
pub const API_VERSION: &str = "1.47";
/// The oldest API version skiffd answers.
pub const MIN_API_VERSION: &str = "1.24";
/// skiff's own version, as the `Server` header and `/version` report it.
pub const SKIFF_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What every request handler can reach.
pub struct Daemon {
    pub backend: Arc<dyn ContainerBackend>,
    pub host: HostFacts,
    /// A stable identity of this daemon (kept in its root directory).
    pub engine_id: String,
    /// The daemon's root directory, as `/info` reports it.
    pub root_dir: String,
}

/// Answers one request; errors become Docker's `{"message": ...}` answers.
pub async fn serve(daemon: Arc<Daemon>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut resp = match route(&daemon, req).await {
        Ok(resp) => resp,
        Err(e) => body::error(&e),
    };
    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static("api-version"),
        HeaderValue::from_static(API_VERSION),
    );
    h.insert(
        HeaderName::from_static("ostype"),
        HeaderValue::from_static("linux"),
    );
    h.insert(
        SERVER,
        HeaderValue::from_static(concat!("skiff/", env!("CARGO_PKG_VERSION"))),
    );
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    Ok(resp)
}

/// `1.47` → [1, 47]; None unless it is dot-separated digits.
fn parse_version(v: &str) -> Option<Vec<u64>> {
    v.split('.').map(|p| p.parse().ok()).collect()
}

/// Refuses API versions below the minimum or above ours, with Docker's text and status (400).
fn check_version(v: &str) -> Result<(), ApiError> {
    let asked = parse_version(v).ok_or_else(ApiError::not_found_page)?;
    let min = parse_version(MIN_API_VERSION).unwrap_or_default();
    let max = parse_version(API_VERSION).unwrap_or_default();
    if asked < min {
        return Err(ApiError::bad_request(format!(
            "client version {v} is too old. Minimum supported API version is {MIN_API_VERSION}, \
             please upgrade your client to a newer version"
        )));
    }
    if asked > max {
        return Err(ApiError::bad_request(format!(
            "client version {v} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    Ok(())
}

fn is_version_segment(s: &str) -> bool {
    s.strip_prefix('v')
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
}

async fn route(d: &Daemon, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let decoded: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let mut segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    if let Some(first) = segs.first().copied().filter(|s| is_version_segment(s)) {
        check_version(&first[1..])?;
        segs.remove(0);
    }
    let q = Query::parse(req.uri().query());
    let method = req.method().clone();
    match (&method, segs.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(system::ping(&method)),
        (&Method::GET, ["version"]) => Ok(system::version(d)),
        (&Method::GET, ["info"]) => system::info(d).await,
        (&Method::GET, ["events"]) => system::events(d, &q).await,
        (&Method::GET, ["system", "df"]) => system::df(d).await,

        (&Method::GET, ["containers", "json"]) => containers::list(d, &q).await,
        (&Method::POST, ["containers", "create"]) => containers::create(d, &q, req).await,
        (&Method::GET, ["containers", id, "json"]) => containers::inspect(d, id).await,
        (&Method::POST, ["containers", id, "start"]) => containers::start(d, id).await,
        (&Method::POST, ["containers", id, "stop"]) => containers::stop(d, id, &q).await,
        (&Method::POST, ["containers", id, "restart"]) => containers::restart(d, id, &q).await,
        (&Method::POST, ["containers", id, "kill"]) => containers::kill(d, id, &q).await,
        (&Method::POST, ["containers", id, "wait"]) => containers::wait(d, id, &q).await,
        (&Method::POST, ["containers", id, "attach"]) => containers::attach(d, id, &q, req).await,
        (&Method::POST, ["containers", id, "resize"]) => containers::resize(d, id, &q).await,
        (&Method::POST, ["containers", id, "rename"]) => containers::rename(d, id, &q).await,
        (&Method::GET, ["containers", id, "logs"]) => containers::logs(d, id, &q).await,
        (&Method::GET, ["containers", id, "top"]) => containers::top(d, id, &q).await,
        (&Method::GET, ["containers", id, "stats"]) => containers::stats(d, id, &q).await,
        (&Method::DELETE, ["containers", id]) => containers::remove(d, id, &q).await,

        (&Method::POST, ["containers", id, "exec"]) => exec::create(d, id, req).await,
        (&Method::POST, ["exec", id, "start"]) => exec::start(d, id, req).await,
        (&Method::GET, ["exec", id, "json"]) => exec::inspect(d, id).await,
        (&Method::POST, ["exec", id, "resize"]) => exec::resize(d, id, &q).await,

        (&Method::GET, ["networks"]) => networks::list(d, &q).await,
        (&Method::POST, ["networks", "create"]) => networks::create(d, req).await,
        (&Method::POST, ["networks", "prune"]) => networks::prune(d, &q).await,
        (&Method::GET, ["networks", name]) => networks::inspect(d, name).await,
        (&Method::DELETE, ["networks", name]) => networks::remove(d, name).await,
        (&Method::POST, ["networks", name, "connect"]) => networks::connect(d, name, req).await,
        (&Method::POST, ["networks", name, "disconnect"]) => {
            networks::disconnect(d, name, req).await
        }
        (&Method::GET, ["volumes"]) => volumes::list(d, &q).await,
        (&Method::POST, ["volumes", "create"]) => volumes::create(d, req).await,
        (&Method::POST, ["volumes", "prune"]) => volumes::prune(d, &q).await,
        (&Method::GET, ["volumes", name]) => volumes::inspect(d, name).await,
        (&Method::DELETE, ["volumes", name]) => volumes::remove(d, name, &q).await,

        (&Method::POST, ["commit"]) => images::commit(d, &q, req).await,
        (&Method::POST, ["build"]) => build::build(d, &q, req).await,
        (&Method::GET, ["images", "json"]) => images::list(d, &q).await,
        (&Method::POST, ["images", "create"]) => images::pull(d, &q, req.headers()).await,
        (&Method::POST, ["images", "load"]) => images::load(d, &q, req).await,
        (&Method::GET, ["images", "get"]) => images::save(d, q.all("names")).await,
        (&Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            images::inspect(d, &name.join("/")).await
        }
        (&Method::GET, ["images", name @ .., "get"]) if !name.is_empty() => {
            images::save(d, vec![name.join("/")]).await
        }
        (&Method::POST, ["images", name @ .., "tag"]) if !name.is_empty() => {
            images::tag(d, &name.join("/"), &q).await
        }
        (&Method::POST, ["images", name @ .., "push"]) if !name.is_empty() => {
            images::push(d, &name.join("/"), &q, req.headers()).await
        }
        (&Method::GET, ["images", name @ .., "history"]) if !name.is_empty() => {
            images::history(d, &name.join("/")).await
        }
        (&Method::DELETE, ["images", name @ ..]) if !name.is_empty() => {
            images::remove(d, &name.join("/"), &q).await
        }
        _ => Err(ApiError::not_found_page()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_bounded() {
        assert!(check_version("1.47").is_ok());
        assert!(check_version("1.24").is_ok());
        assert!(check_version("1.41").is_ok());
        let old = check_version("1.23").unwrap_err();
        assert_eq!(old.status, hyper::StatusCode::BAD_REQUEST);
        assert_eq!(
            old.message,
            "client version 1.23 is too old. Minimum supported API version is 1.24, please \
             upgrade your client to a newer version"
        );
        assert!(check_version("1.48")
            .unwrap_err()
            .message
            .contains("too new"));
        assert_eq!(
            check_version("1..").unwrap_err().status,
            hyper::StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn version_segments() {
        assert!(is_version_segment("v1.47"));
        assert!(!is_version_segment("v"));
        assert!(!is_version_segment("version"));
    }
}
