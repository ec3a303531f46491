//! `/volumes/...`: list, create, inspect, remove, prune.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use super::exec::json_body;
use crate::daemon::body::{self, Resp};
use crate::daemon::error::ApiError;
use crate::daemon::model::VolumeCreateBody;
use crate::daemon::query::Query;
use crate::daemon::router::Daemon;

pub async fn list(d: &Daemon, q: &Query) -> Result<Resp, ApiError> {
    Ok(body::json(
        StatusCode::OK,
        &d.backend.volume_list(q.filters()?).await?,
    ))
}

pub async fn create(d: &Daemon, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let b: VolumeCreateBody = json_body(req.into_body()).await?;
    Ok(body::json(
        StatusCode::CREATED,
        &d.backend.volume_create(b).await?,
    ))
}

pub async fn inspect(d: &Daemon, name: &str) -> Result<Resp, ApiError> {
    Ok(body::json(
        StatusCode::OK,
        &d.backend.volume_inspect(name).await?,
    ))
}

pub async fn remove(d: &Daemon, name: &str, q: &Query) -> Result<Resp, ApiError> {
    d.backend.volume_remove(name, q.bool("force")?).await?;
    Ok(body::no_content())
}

pub async fn prune(d: &Daemon, q: &Query) -> Result<Resp, ApiError> {
    Ok(body::json(
        StatusCode::OK,
        &d.backend.volume_prune(q.filters()?).await?,
    ))
}
