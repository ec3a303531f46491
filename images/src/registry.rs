//! A client for the OCI distribution API (`/v2/...`) of one repository: manifests and blobs,
//! with anonymous bearer tokens and basic auth.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderName, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::Mutex;
use tracing::debug;

use crate::auth::Credentials;
use crate::config::RegistryTimeouts;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{media, MAX_MANIFEST_BYTES};
use crate::reference::Reference;

mod upload;
pub use upload::{parse_range, with_query, Mount};

/// Token answers are small JSON documents; anything bigger is not one.
const MAX_TOKEN_BYTES: u64 = 1 << 20;
const MAX_ERROR_BODY_BYTES: u64 = 64 << 10;
const TLS_UNKNOWN: u8 = 0;
const TLS_YES: u8 = 1;
const TLS_NO: u8 = 2;
/// How long the first HTTPS attempt at an insecure registry may take before plain HTTP is
/// tried instead.
const TLS_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RegistryClient {
    http: reqwest::Client,
    /// host[:port] the API is on.
    host: String,
    /// For an insecure registry: TLS_UNKNOWN until the first answer tells whether it speaks
    /// TLS (TLS_YES) or not (TLS_NO, plain HTTP from then on).
    tls: AtomicU8,
    registry: String,
    repository: String,
    creds: Option<Credentials>,
    /// The Authorization header that worked last (bearer token or basic).
    authorization: Mutex<Option<String>>,
    timeouts: RegistryTimeouts,
    /// Token scopes asked for besides the challenge's (a push: `pull,push` on its repository
    /// and `pull` on the repositories it mounts from), so one token serves every request.
    scopes: Vec<String>,
}

pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    /// What the registry says the digest is (checked against the bytes by the caller).
    pub docker_content_digest: Option<String>,
}

/// How a registry is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// HTTPS with verified certificates: every registry not on loopback, unless asked.
    Https,
    /// Loopback, or `--insecure`: HTTPS without certificate checks, and plain HTTP when the
    /// registry does not speak TLS (Docker's insecure-registry behaviour). Elsewhere this
    /// would let credentials and content cross the network unprotected.
    Insecure,
}

pub fn transport(api_host: &str, insecure: bool) -> Transport {
    if insecure || is_loopback(api_host) {
        Transport::Insecure
    } else {
        Transport::Https
    }
}

fn is_loopback(api_host: &str) -> bool {
    let host = if let Some(rest) = api_host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        api_host.split(':').next().unwrap_or(api_host)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl RegistryClient {
    pub fn new(
        r: &Reference,
        insecure: bool,
        creds: Option<Credentials>,
        timeouts: RegistryTimeouts,
    ) -> Result<RegistryClient> {
        let transport = transport(r.api_host(), insecure);
        let http = reqwest::Client::builder()
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeouts.connect)
            // Per read: a registry that goes quiet (before its headers or inside a body)
            // fails the request; a slow but steady download does not.
            .read_timeout(timeouts.read)
            .danger_accept_invalid_certs(transport == Transport::Insecure)
            .build()
            .map_err(|source| Error::Http {
                url: r.api_host().to_string(),
                source,
            })?;
        Ok(RegistryClient {
            http,
            host: r.api_host().to_string(),
            tls: AtomicU8::new(if transport == Transport::Https {
                TLS_YES
            } else {
                TLS_UNKNOWN
            }),
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            creds,
            authorization: Mutex::new(None),
            timeouts,
            scopes: Vec::new(),
        })
    }

    /// The same client asking for these token scopes too.
    pub fn with_scopes(mut self, scopes: Vec<String>) -> RegistryClient {
        self.scopes = scopes;
        self
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// GET /v2/: checks reachability and credentials (`skiff login`).
    pub async fn ping(&self) -> Result<()> {
        self.send(Method::GET, "/v2/", None, "checking the API endpoint")
            .await
            .map(drop)
    }

    pub async fn manifest(&self, reference: &str) -> Result<FetchedManifest> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let stage = format!("fetching manifest {reference}");
        let resp = self
            .send(Method::GET, &path, Some(media::ACCEPT_MANIFESTS), &stage)
            .await?;
        let url = resp.url().to_string();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(CONTENT_TYPE.as_str());
        let docker_content_digest = header("docker-content-digest");
        let bytes = self
            .read_capped(resp, MAX_MANIFEST_BYTES, &url, &stage)
            .await?;
        Ok(FetchedManifest {
            bytes,
            content_type,
            docker_content_digest,
        })
    }

    /// Starts a blob download; the caller streams and verifies the body (mapping its errors
    /// with `net_error`).
    pub async fn blob(&self, d: &Digest, what: &str) -> Result<Response> {
        let path = format!("/v2/{}/blobs/{d}", self.repository);
        self.send(Method::GET, &path, None, &format!("fetching {what}"))
            .await
    }

    pub async fn blob_bytes(&self, d: &Digest, max: u64, what: &str) -> Result<Vec<u8>> {
        let resp = self.blob(d, what).await?;
        let url = resp.url().to_string();
        self.read_capped(resp, max, &url, &format!("reading {what}"))
            .await
    }

    /// For `map_err` on reqwest results: a timeout becomes an error naming the registry and
    /// what we were waiting for (`stage`).
    pub fn net_error<'a>(
        &'a self,
        url: &'a str,
        stage: &'a str,
    ) -> impl FnOnce(reqwest::Error) -> Error + 'a {
        move |source| {
            if !source.is_timeout() {
                return Error::Http {
                    url: url.to_string(),
                    source,
                };
            }
            let after = if source.is_connect() {
                self.timeouts.connect
            } else {
                self.timeouts.read
            };
            Error::Timeout {
                registry: self.host.clone(),
                stage: stage.to_string(),
                secs: after.as_secs(),
            }
        }
    }

    /// `path` on this registry, by plain HTTP when the registry's `tls` state says so.
    fn url(&self, path: &str, tls: u8) -> String {
        let scheme = if tls == TLS_NO { "http" } else { "https" };
        format!("{scheme}://{}{path}", self.host)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        stage: &str,
    ) -> Result<Response> {
        let mut req = RegistryRequest::new(method, path, stage);
        req.accept = accept;
        let resp = self.execute(&req).await?;
        if !resp.status().is_success() {
            let url = resp.url().to_string();
            return Err(self.registry_error(&url, resp).await);
        }
        Ok(resp)
    }

    /// Sends `req` (authenticating on a 401 and retrying once) and returns the answer whatever
    /// its status but 401: pushes read 202, 204 and 404 as answers, not failures.
    async fn execute(&self, req: &RegistryRequest<'_>) -> Result<Response> {
        let mut retried = false;
        loop {
            // One reading of the state for both the URL and the probe: requests run
            // concurrently, and one that went out by HTTPS while another found plain HTTP must
            // still be tried again by HTTP.
            let tls = self.tls.load(Ordering::Relaxed);
            let url = self.target_url_as(req.target, tls)?;
            let mut rb = self.http.request(req.method.clone(), &url);
            let probing = tls == TLS_UNKNOWN;
            if probing {
                // A plain-HTTP server may sit on a TLS hello instead of refusing it.
                rb = rb.timeout(TLS_PROBE_TIMEOUT);
            }
            if let Some(a) = req.accept {
                rb = rb.header(ACCEPT, a);
            }
            for (name, value) in &req.headers {
                rb = rb.header(name, value);
            }
            if let Some(body) = &req.body {
                // Bytes: cloned without copying, so a 401 can be answered by sending again.
                rb = rb.body(body.clone());
            }
            if let Some(h) = self.authorization.lock().await.clone() {
                rb = rb.header(AUTHORIZATION, h);
            }
            let resp = match rb.send().await {
                Err(e) if probing && (e.is_connect() || e.is_timeout()) => {
                    debug!(host = %self.host, error = %e, "no TLS there, trying plain HTTP");
                    self.tls.store(TLS_NO, Ordering::Relaxed);
                    continue;
                }
                r => r.map_err(self.net_error(&url, req.stage))?,
            };
            if probing && url.starts_with("https:") {
                self.tls.store(TLS_YES, Ordering::Relaxed);
            }
            if resp.status() == StatusCode::UNAUTHORIZED {
                if retried {
                    return Err(self.auth_error("the registry refused the credentials"));
                }
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                self.authenticate(challenge.as_deref()).await?;
                retried = true;
                continue;
            }
            return Ok(resp);
        }
    }

    /// A path on this registry, or a URL it handed out (an upload's `Location`), which may
    /// be relative to the registry's own address.
    fn target_url(&self, target: &str) -> Result<String> {
        self.target_url_as(target, self.tls.load(Ordering::Relaxed))
    }

    fn target_url_as(&self, target: &str, tls: u8) -> Result<String> {
        if target.starts_with('/') && !target.starts_with("//") {
            return Ok(self.url(target, tls));
        }
        resolve_location(&self.url("/", tls), target)
    }

    fn auth_error(&self, reason: &str) -> Error {
        if self.creds.is_some() {
            Error::AuthFailed {
                registry: self.registry.clone(),
                reason: reason.to_string(),
            }
        } else {
            Error::AuthRequired {
                registry: self.registry.clone(),
            }
        }
    }

    async fn authenticate(&self, challenge: Option<&str>) -> Result<()> {
        let Some((scheme, params)) = challenge.and_then(parse_challenge) else {
            return Err(self.auth_error("401 without a usable WWW-Authenticate challenge"));
        };
        let header = match scheme.to_ascii_lowercase().as_str() {
            "basic" => match &self.creds {
                Some(c) => c.basic_header(),
                None => return Err(self.auth_error("basic auth required")),
            },
            "bearer" => format!("Bearer {}", self.fetch_token(&params).await?),
            other => {
                return Err(Error::AuthFailed {
                    registry: self.registry.clone(),
                    reason: format!("unsupported auth scheme {other:?}"),
                })
            }
        };
        *self.authorization.lock().await = Some(header);
        Ok(())
    }

    /// The token dance of the distribution spec: GET realm?service=..&scope=.. (with basic
    /// credentials if we have them, anonymously otherwise).
    async fn fetch_token(&self, params: &HashMap<String, String>) -> Result<String> {
        let realm = params.get("realm").ok_or_else(|| Error::AuthFailed {
            registry: self.registry.clone(),
            reason: "bearer challenge without realm".into(),
        })?;
        let mut scopes: Vec<String> = params.get("scope").cloned().into_iter().collect();
        if scopes.is_empty() && self.scopes.is_empty() {
            scopes.push(format!("repository:{}:pull", self.repository));
        }
        for s in &self.scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        let mut query: Vec<(&str, String)> = scopes.into_iter().map(|s| ("scope", s)).collect();
        if let Some(s) = params.get("service") {
            query.push(("service", s.clone()));
        }
        let mut rb = self.http.get(realm).query(&query);
        if let Some(c) = &self.creds {
            rb = rb.basic_auth(&c.username, Some(&c.password));
        }
        let stage = "fetching a token";
        let resp = rb.send().await.map_err(self.net_error(realm, stage))?;
        if matches!(
            resp.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(self.auth_error(&format!("token server answered {}", resp.status())));
        }
        if !resp.status().is_success() {
            return Err(self.registry_error(realm, resp).await);
        }
        let body = self
            .read_capped(resp, MAX_TOKEN_BYTES, realm, "reading the token response")
            .await?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: TokenAnswer = serde_json::from_slice(&body).map_err(|e| Error::Malformed {
            what: "token response".into(),
            reason: e.to_string(),
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Malformed {
                what: "token response".into(),
                reason: "no token in it".into(),
            })
    }

    /// A response body read into memory, refused past `max` bytes; `stage` says what it is.
    async fn read_capped(
        &self,
        resp: Response,
        max: u64,
        url: &str,
        stage: &str,
    ) -> Result<Vec<u8>> {
        let too_large = || Error::TooLarge {
            what: format!("{stage} from {url}"),
            limit: max,
        };
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let mut out = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.net_error(url, stage))?;
            if out.len() as u64 + chunk.len() as u64 > max {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// A registry error with the first `errors[].code: message` of its JSON body when present.
    async fn registry_error(&self, url: &str, resp: Response) -> Error {
        let status = resp.status().as_u16();
        let body = self
            .read_capped(resp, MAX_ERROR_BODY_BYTES, url, "reading an error body")
            .await
            .unwrap_or_default();
        #[derive(serde::Deserialize)]
        struct Errors {
            errors: Vec<ErrorItem>,
        }
        #[derive(serde::Deserialize)]
        struct ErrorItem {
            code: Option<String>,
            message: Option<String>,
        }
        let message = serde_json::from_slice::<Errors>(&body)
            .ok()
            .and_then(|e| e.errors.into_iter().next())
            .map(|e| {
                format!(
                    "{}: {}",
                    e.code.unwrap_or_default(),
                    e.message.unwrap_or_default()
                )
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        Error::Registry {
            url: url.to_string(),
            status,
            message,
        }
    }
}

/// One request to a registry: what `RegistryClient::execute` sends.
pub(crate) struct RegistryRequest<'a> {
    pub method: Method,
    /// A path below the registry's address, or a URL (absolute or relative) it gave us.
    pub target: &'a str,
    pub accept: Option<&'a str>,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Option<Bytes>,
    /// What we are doing, for errors and timeouts.
    pub stage: &'a str,
}

impl<'a> RegistryRequest<'a> {
    pub fn new(method: Method, target: &'a str, stage: &'a str) -> RegistryRequest<'a> {
        RegistryRequest {
            method,
            target,
            accept: None,
            headers: Vec::new(),
            body: None,
            stage,
        }
    }
}

/// `location` (a `Location` header: absolute, or relative to `base`) as an absolute URL.
pub fn resolve_location(base: &str, location: &str) -> Result<String> {
    let malformed = |reason: String| Error::Malformed {
        what: format!("registry location {location:?}"),
        reason,
    };
    let base = reqwest::Url::parse(base).map_err(|e| malformed(e.to_string()))?;
    let url = base.join(location).map_err(|e| malformed(e.to_string()))?;
    match url.scheme() {
        "http" | "https" => Ok(url.into()),
        other => Err(malformed(format!("scheme {other} is not HTTP"))),
    }
}

/// Parses `Bearer realm="https://auth",service="reg",scope="repository:x:pull"`.
pub fn parse_challenge(h: &str) -> Option<(String, HashMap<String, String>)> {
    let h = h.trim();
    let (scheme, rest) = match h.split_once(' ') {
        Some((s, r)) => (s, r),
        None => (h, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some((scheme.to_string(), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        let (s, p) = parse_challenge(r#"Basic realm="test-registry""#).unwrap();
        assert_eq!(
            (s.as_str(), p["realm"].as_str()),
            ("Basic", "test-registry")
        );
        // Commas inside quoted values (multi-scope) stay in the value.
        let (_, p) = parse_challenge(r#"Bearer realm="r",scope="repository:a:pull,push""#).unwrap();
        assert_eq!(p["scope"], "repository:a:pull,push");
    }

    /// A plain-HTTP registry on loopback, as docker-registry answers: a TLS hello gets an
    /// HTTP 400, any request a 200.
    fn plain_http_registry() -> std::net::SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 4096];
                    while let Ok(1..) = conn.read(&mut buf) {
                        let answer = if buf[0] == 0x16 {
                            "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
                        } else {
                            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                        };
                        let _ = conn.write_all(answer.as_bytes());
                        if buf[0] == 0x16 {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn concurrent_first_requests_to_a_plain_http_registry_all_fall_back_to_http() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .unwrap();
        for _ in 0..20 {
            let addr = plain_http_registry();
            let r = Reference::parse(&format!("{addr}/a/b:c")).unwrap();
            let client = RegistryClient::new(&r, false, None, RegistryTimeouts::default()).unwrap();
            let results = runtime.block_on(futures_util::future::join_all(
                (0..16).map(|_| client.send(Method::GET, "/v2/", None, "pinging")),
            ));
            for result in results {
                assert!(result.is_ok(), "{:?}", result.err());
            }
            assert_eq!(client.tls.load(Ordering::Relaxed), TLS_NO);
        }
    }

    #[test]
    fn unverified_or_plain_only_for_loopback_or_insecure() {
        assert_eq!(transport("127.0.0.1:5000", false), Transport::Insecure);
        assert_eq!(transport("localhost:5000", false), Transport::Insecure);
        assert_eq!(transport("[::1]:5000", false), Transport::Insecure);
        assert_eq!(transport("registry-1.docker.io", false), Transport::Https);
        assert_eq!(transport("10.0.0.1:5000", false), Transport::Https);
        assert_eq!(transport("10.0.0.1:5000", true), Transport::Insecure);
    }
}
