//! `/networks/...`: list, create, inspect, remove, prune, connect and disconnect (of containers
//! that are not running: a VM's network interfaces are fixed when it starts).

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::daemon::body::{self, Resp};
use crate::daemon::create::decode::{unhonoured_endpoint_fields, valid_network_name};
use crate::daemon::error::ApiError;
use crate::daemon::model::{NetworkConnectBody, NetworkCreateBody};
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

/// `POST /networks/{id}/connect`: `EndpointConfig.Aliases` honoured, any other setting refused
/// by name.
pub async fn connect(d: &Daemon, network: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let b = connect_body(req).await?;
    let refused = unhonoured_endpoint_fields("EndpointConfig", &b.endpoint_config);
    if !refused.is_empty() {
        return Err(BackendError::InvalidArgument(refused.join("; ")).into());
    }
    let aliases = match b.endpoint_config.get("Aliases") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(list) => serde_json::from_value::<Vec<String>>(list.clone()).map_err(|e| {
            BackendError::InvalidArgument(format!("invalid value for EndpointConfig.Aliases: {e}"))
        })?,
    };
    for alias in &aliases {
        if !valid_network_name(alias) {
            return Err(
                BackendError::InvalidArgument(format!("invalid network alias {alias:?}")).into(),
            );
        }
    }
    d.backend
        .network_connect(network, &b.container, aliases)
        .await?;
    Ok(body::with_type(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        body::empty(),
    ))
}

/// `POST /networks/{id}/disconnect` (`Force` changes nothing: nothing runs to be forced).
pub async fn disconnect(
    d: &Daemon,
    network: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let b = connect_body(req).await?;
    d.backend.network_disconnect(network, &b.container).await?;
    Ok(body::with_type(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        body::empty(),
    ))
}

async fn connect_body(req: Request<Incoming>) -> Result<NetworkConnectBody, ApiError> {
    let raw: serde_json::Value = super::exec::json_body(req.into_body()).await?;
    let b: NetworkConnectBody = serde_path_to_error::deserialize(&raw).map_err(|e| {
        BackendError::InvalidArgument(format!("invalid value for {}: {}", e.path(), e.inner()))
    })?;
    if b.container.is_empty() {
        return Err(BackendError::InvalidArgument("no container given".into()).into());
    }
    Ok(b)
}
