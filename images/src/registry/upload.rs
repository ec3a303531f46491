//! The upload half of the distribution API: blob existence, cross-repository mounts, upload
//! sessions (one PUT for small blobs, PATCH chunks for large ones, status to resume) and
//! manifests.

use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Method, Response, StatusCode};

use super::{resolve_location, RegistryClient, RegistryRequest};
use crate::digest::Digest;
use crate::error::{Error, Result};

/// What a mount request got.
#[derive(Debug)]
pub enum Mount {
    /// 201: the blob is now in this repository too.
    Mounted,
    /// 202: the registry could not mount it and opened an upload session here instead.
    Upload(String),
}

impl RegistryClient {
    /// HEAD /v2/<name>/blobs/<digest>: whether the repository has the blob.
    pub async fn blob_exists(&self, d: &Digest) -> Result<bool> {
        let path = format!("/v2/{}/blobs/{d}", self.repository);
        let stage = format!("checking for blob {d}");
        let resp = self
            .execute(&RegistryRequest::new(Method::HEAD, &path, &stage))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.unexpected(resp).await),
        }
    }

    /// POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repository>.
    pub async fn mount_blob(&self, d: &Digest, from: &str) -> Result<Mount> {
        let query: String = form_query(&[("mount", &d.to_string()), ("from", from)]);
        let path = format!("/v2/{}/blobs/uploads/?{query}", self.repository);
        let stage = format!("mounting blob {d} from {from}");
        let resp = self
            .execute(&with_empty_body(RegistryRequest::new(
                Method::POST,
                &path,
                &stage,
            )))
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => Ok(Mount::Upload(self.location(&resp)?)),
            _ => Err(self.unexpected(resp).await),
        }
    }

    /// POST /v2/<name>/blobs/uploads/: a new upload session's URL.
    pub async fn start_upload(&self) -> Result<String> {
        let path = format!("/v2/{}/blobs/uploads/", self.repository);
        let stage = "starting an upload";
        let resp = self
            .execute(&with_empty_body(RegistryRequest::new(
                Method::POST,
                &path,
                stage,
            )))
            .await?;
        match resp.status() {
            StatusCode::ACCEPTED => self.location(&resp),
            _ => Err(self.unexpected(resp).await),
        }
    }

    /// PATCH one chunk at `offset` of the session at `location`; returns the session's next
    /// URL (registries change it with every chunk).
    pub async fn upload_chunk(&self, location: &str, offset: u64, chunk: Bytes) -> Result<String> {
        let end = offset + chunk.len() as u64 - 1;
        let stage = format!("uploading bytes {offset}-{end}");
        let mut req = RegistryRequest::new(Method::PATCH, location, &stage);
        req.headers = vec![
            (CONTENT_TYPE, "application/octet-stream".into()),
            (CONTENT_RANGE, format!("{offset}-{end}")),
            (CONTENT_LENGTH, chunk.len().to_string()),
        ];
        req.body = Some(chunk);
        let resp = self.execute(&req).await?;
        match resp.status() {
            StatusCode::ACCEPTED | StatusCode::NO_CONTENT => self.location(&resp),
            _ => Err(self.unexpected(resp).await),
        }
    }

    /// GET the session at `location`: its URL to go on with and how many bytes it holds.
    pub async fn upload_status(&self, location: &str) -> Result<(String, u64)> {
        let stage = "reading an upload's status";
        let resp = self
            .execute(&RegistryRequest::new(Method::GET, location, stage))
            .await?;
        if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
            return Err(self.unexpected(resp).await);
        }
        let next = self.location(&resp)?;
        let range = resp.headers().get(RANGE).and_then(|v| v.to_str().ok());
        let held = match range {
            Some(r) => parse_range(r).ok_or_else(|| Error::Malformed {
                what: format!("Range header {r:?} of an upload status"),
                reason: "not START-END".into(),
            })?,
            // Nothing received yet (some registries leave the header out then).
            None => 0,
        };
        Ok((next, held))
    }

    /// PUT <location>?digest=: closes the session, with the whole blob as body (`Some`, one
    /// request for a small blob) or after its chunks (`None`).
    pub async fn finish_upload(
        &self,
        location: &str,
        d: &Digest,
        body: Option<Bytes>,
    ) -> Result<()> {
        let url = with_query(&self.target_url(location)?, "digest", &d.to_string())?;
        let stage = format!("finishing the upload of {d}");
        let mut req = RegistryRequest::new(Method::PUT, &url, &stage);
        req.headers = vec![(CONTENT_TYPE, "application/octet-stream".into())];
        req.body = Some(body.unwrap_or_default());
        let resp = self.execute(&req).await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(self.unexpected(resp).await),
        }
    }

    /// PUT /v2/<name>/manifests/<reference> with the manifest's exact bytes; returns the
    /// digest the registry names (Docker-Content-Digest), if it does.
    pub async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Option<String>> {
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let stage = format!("uploading manifest {reference}");
        let mut req = RegistryRequest::new(Method::PUT, &path, &stage);
        req.headers = vec![(CONTENT_TYPE, media_type.to_string())];
        req.body = Some(bytes);
        let resp = self.execute(&req).await?;
        if !resp.status().is_success() {
            return Err(self.unexpected(resp).await);
        }
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    /// An upload session's URL from an answer's `Location`, made absolute.
    fn location(&self, resp: &Response) -> Result<String> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Malformed {
                what: format!("answer {} from {}", resp.status(), resp.url()),
                reason: "no Location header for the upload".into(),
            })?;
        resolve_location(resp.url().as_str(), loc)
    }

    async fn unexpected(&self, resp: Response) -> Error {
        let url = resp.url().to_string();
        self.registry_error(&url, resp).await
    }
}

/// POSTs carry an explicit empty body: some proxies refuse a POST without a length.
fn with_empty_body(mut req: RegistryRequest<'_>) -> RegistryRequest<'_> {
    req.headers.push((CONTENT_LENGTH, "0".into()));
    req.body = Some(Bytes::new());
    req
}

fn form_query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// `url` with `key=value` added to its query (an upload URL keeps its own `_state` and such).
pub fn with_query(url: &str, key: &str, value: &str) -> Result<String> {
    let mut u = reqwest::Url::parse(url).map_err(|e| Error::Malformed {
        what: format!("upload URL {url:?}"),
        reason: e.to_string(),
    })?;
    u.query_pairs_mut().append_pair(key, value);
    Ok(u.into())
}

/// How many bytes an upload holds, from its `Range: 0-END` (END inclusive). `0-0` is read as
/// nothing received: distribution answers it for an empty session (and for one byte, which a
/// chunked push never leaves behind: its chunks are larger).
pub fn parse_range(h: &str) -> Option<u64> {
    let h = h.trim();
    let h = h.strip_prefix("bytes=").unwrap_or(h);
    let (start, end) = h.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    if start != 0 || end < start {
        return None;
    }
    Some(if end == 0 { 0 } else { end + 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0-1023"), Some(1024));
        assert_eq!(parse_range("bytes=0-9"), Some(10));
        assert_eq!(parse_range("0-0"), Some(0));
        assert_eq!(parse_range(" 0-4 "), Some(5));
        assert_eq!(parse_range("5-9"), None);
        assert_eq!(parse_range("0-"), None);
        assert_eq!(parse_range("garbage"), None);
        assert_eq!(parse_range("0-x"), None);
    }

    #[test]
    fn locations_relative_and_absolute() {
        let base = "http://127.0.0.1:5000/v2/a/blobs/uploads/";
        assert_eq!(
            resolve_location(base, "/v2/a/blobs/uploads/u1?_state=s").unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=s"
        );
        assert_eq!(
            resolve_location(base, "https://cdn.example/up/u2").unwrap(),
            "https://cdn.example/up/u2"
        );
        // Relative to the answering URL's directory, as RFC 3986 says.
        assert_eq!(
            resolve_location(base, "u3").unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u3"
        );
        assert!(resolve_location(base, "file:///etc/passwd").is_err());
    }

    #[test]
    fn digest_joins_an_existing_query() {
        let d = Digest::of(b"x");
        assert_eq!(
            with_query(
                "http://r/v2/a/blobs/uploads/u?_state=abc",
                "digest",
                &d.to_string()
            )
            .unwrap(),
            format!(
                "http://r/v2/a/blobs/uploads/u?_state=abc&digest=sha256%3A{}",
                d.hex()
            )
        );
        assert_eq!(
            form_query(&[("mount", "sha256:ab"), ("from", "library/busybox")]),
            "mount=sha256%3Aab&from=library%2Fbusybox"
        );
    }
}
