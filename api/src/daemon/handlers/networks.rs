//! `/networks/...`: list, create, inspect, remove, prune; connect and disconnect are refused
//! (a skiff container joins one network, chosen when it is created).

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::daemon::body::{self, Resp};
use crate::daemon::error::ApiError;
use crate::daemon::model::NetworkCreateBody;
use crate::daemon::query::Query;
use crate::daemon::router::Daemon;
use crate::daemon::BackendError;

pub async fn list(d: &Daemon, q: &Query) -> Result<Resp, ApiError> {
    Ok(body::json(
        StatusCode::OK,
        &d.backend.network_list(q.filters()?).await?,
    ))
}

pub async fn create(d: &Daemon, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let raw: serde_json::Value = super::exec::json_body(req.into_body()).await?;
    let b: NetworkCreateBody = serde_path_to_error::deserialize(&raw).map_err(|e| {
        BackendError::InvalidArgument(format!("invalid value for {}: {}", e.path(), e.inner()))
    })?;
    Ok(body::json(
        StatusCode::CREATED,
        &d.backend.network_create(b).await?,
    ))
}

pub async fn inspect(d: &Daemon, name: &str) -> Result<Resp, ApiError> {
    Ok(body::json(
        StatusCode::OK,
        &d.backend.network_inspect(name).await?,
    ))
}

pub async fn remove(d: &Daemon, name: &str) -> Result<Resp, ApiError> {
    d.backend.network_remove(name).await?;
    Ok(body::no_content())
}

pub async fn prune(d: &Daemon, q: &Query) -> Result<Resp, ApiError> {
    Ok(body::json(
        StatusCode::OK,
        &d.backend.network_prune(q.filters()?).await?,
    ))
}

/// `connect` / `disconnect`: refused, naming why.
pub fn refused(action: &str) -> Result<Resp, ApiError> {
    Err(BackendError::InvalidArgument(format!(
        "network {action} is not supported by skiff yet: a container joins one network, chosen \
         when it is created (--network)"
    ))
    .into())
}
