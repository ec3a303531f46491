//! `/images/...`: list, inspect, remove, tag, pull (`POST /images/create`), load and save.

use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};

use crate::daemon::body::{self, request_stream, streamed, with_type, Resp};
use crate::daemon::error::ApiError;
use crate::daemon::options::{ImageListOptions, PullOptions};
use crate::daemon::query::Query;
use crate::daemon::router::Daemon;
use crate::daemon::streams::json_lines;

pub async fn list(d: &Daemon, q: &Query) -> Result<Resp, ApiError> {
    let opts = ImageListOptions {
        all: q.bool("all")?,
        digests: q.bool("digests")?,
        filters: q.filters()?,
    };
    Ok(body::json(
        StatusCode::OK,
        &d.backend.image_list(opts).await?,
    ))
}

pub async fn inspect(d: &Daemon, name: &str) -> Result<Resp, ApiError> {
    Ok(body::json(
        StatusCode::OK,
        &d.backend.image_inspect(name).await?,
    ))
}

pub async fn remove(d: &Daemon, name: &str, q: &Query) -> Result<Resp, ApiError> {
    let items = d
        .backend
        .image_remove(name, q.bool("force")?, q.bool("noprune")?)
        .await?;
    Ok(body::json(StatusCode::OK, &items))
}

pub async fn tag(d: &Daemon, name: &str, q: &Query) -> Result<Resp, ApiError> {
    let repo = q
        .string("repo")
        .ok_or_else(|| ApiError::bad_request("missing query parameter \"repo\""))?;
    d.backend
        .image_tag(name, &repo, q.string("tag").as_deref())
        .await?;
    Ok(with_type(StatusCode::CREATED, "text/plain", body::empty()))
}

/// `POST /images/create?fromImage=…&tag=…`: a pull. Import (`fromSrc`) is refused.
pub async fn pull(d: &Daemon, q: &Query, headers: &HeaderMap) -> Result<Resp, ApiError> {
    if q.string("fromSrc").is_some() {
        return Err(ApiError::bad_request(
            "importing an image (fromSrc) is not supported by skiff yet",
        ));
    }
    let from_image = q
        .string("fromImage")
        .ok_or_else(|| ApiError::bad_request("missing query parameter \"fromImage\""))?;
    let opts = PullOptions {
        from_image,
        tag: q.string("tag"),
        platform: q.string("platform"),
        registry_auth: headers
            .get("x-registry-auth")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string),
    };
    Ok(json_lines(d.backend.image_pull(opts).await?))
}

/// `POST /images/load`: the tar is handed to the engine as it arrives (the CLI sends it chunked).
pub async fn load(d: &Daemon, q: &Query, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let quiet = q.bool("quiet")?;
    let archive = request_stream(req.into_body());
    Ok(json_lines(d.backend.image_load(archive, quiet).await?))
}

pub async fn save(d: &Daemon, names: Vec<String>) -> Result<Resp, ApiError> {
    if names.is_empty() {
        return Err(ApiError::bad_request("missing query parameter \"names\""));
    }
    let tar = d.backend.image_save(names).await?;
    Ok(with_type(
        StatusCode::OK,
        "application/x-tar",
        streamed(tar),
    ))
}
