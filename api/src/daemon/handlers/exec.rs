//! `/containers/{id}/exec` and `/exec/{id}/...`.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::containers::{size_params, JSON_BODY_LIMIT};
use crate::daemon::body::{self, read_limited, with_type, Resp};
use crate::daemon::error::ApiError;
use crate::daemon::options::{ExecConfig, ExecStartOptions};
use crate::daemon::query::Query;
use crate::daemon::router::Daemon;
use crate::daemon::streams::hijack;

/// The body of `POST /containers/{id}/exec` (the `client` sends it too).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecCreateBody {
    pub attach_stdin: Option<bool>,
    pub attach_stdout: Option<bool>,
    pub attach_stderr: Option<bool>,
    pub console_size: Option<Vec<u32>>,
    pub detach_keys: Option<String>,
    pub tty: Option<bool>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub privileged: Option<bool>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
}

/// The body of `POST /exec/{id}/start` (the `client` sends it too).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecStartBody {
    pub detach: Option<bool>,
    pub tty: Option<bool>,
    pub console_size: Option<Vec<u32>>,
}

/// Reads a JSON body; an empty one is the type's default. Errors name the field.
pub(super) async fn json_body<T: DeserializeOwned + Default>(
    body: Incoming,
) -> Result<T, ApiError> {
    let bytes = read_limited(body, JSON_BODY_LIMIT).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError::bad_request(format!("invalid value for {}: {}", e.path(), e.inner()))
    })
}

fn console_size(v: Option<Vec<u32>>) -> Result<Option<(u32, u32)>, ApiError> {
    match v.as_deref() {
        None | Some([]) | Some([0, 0]) => Ok(None),
        Some([h, w]) => Ok(Some((*h, *w))),
        Some(_) => Err(ApiError::bad_request(
            "invalid value for ConsoleSize: expected [height, width]",
        )),
    }
}

pub async fn create(d: &Daemon, container: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let b: ExecCreateBody = json_body(req.into_body()).await?;
    if b.privileged.unwrap_or(false) {
        return Err(ApiError::bad_request(
            "Privileged is not supported by skiff yet",
        ));
    }
    let cmd = b.cmd.unwrap_or_default();
    if cmd.is_empty() {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    let nul = |list: &[String]| list.iter().any(|s| s.contains('\0'));
    let env = b.env.unwrap_or_default();
    if nul(&cmd) || nul(&env) {
        return Err(ApiError::bad_request(
            "Cmd and Env must not contain NUL bytes",
        ));
    }
    let config = ExecConfig {
        cmd,
        env,
        working_dir: b.working_dir.filter(|w| !w.is_empty()),
        user: b.user.filter(|u| !u.is_empty()),
        tty: b.tty.unwrap_or(false),
        attach_stdin: b.attach_stdin.unwrap_or(false),
        attach_stdout: b.attach_stdout.unwrap_or(false),
        attach_stderr: b.attach_stderr.unwrap_or(false),
        detach_keys: b.detach_keys.filter(|k| !k.is_empty()),
        console_size: console_size(b.console_size)?,
    };
    let id = d.backend.exec_create(container, config).await?;
    Ok(body::json(StatusCode::CREATED, &json!({ "Id": id })))
}

pub async fn start(d: &Daemon, exec: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    // The head (which carries the pending upgrade) is kept apart while the body is read.
    let (head, body) = req.into_parts();
    let b: ExecStartBody = json_body(body).await?;
    let opts = ExecStartOptions {
        detach: b.detach.unwrap_or(false),
        tty: b.tty.unwrap_or(false),
        console_size: console_size(b.console_size)?,
    };
    let streams = d.backend.exec_start(exec, opts).await?;
    if opts.detach {
        return Ok(with_type(StatusCode::OK, "application/json", body::empty()));
    }
    Ok(hijack(Request::from_parts(head, ()), streams))
}

pub async fn inspect(d: &Daemon, exec: &str) -> Result<Resp, ApiError> {
    Ok(body::json(
        StatusCode::OK,
        &d.backend.exec_inspect(exec).await?,
    ))
}

pub async fn resize(d: &Daemon, exec: &str, q: &Query) -> Result<Resp, ApiError> {
    let (h, w) = size_params(q)?;
    d.backend.exec_resize(exec, h, w).await?;
    Ok(with_type(StatusCode::OK, "text/plain", body::empty()))
}
