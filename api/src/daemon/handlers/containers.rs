//! `/containers/...`: query parameters and bodies parsed strictly, then handed to the engine.

use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;

use crate::daemon::body::{self, read_limited, streamed, with_type, Resp};
use crate::daemon::create::decode_create;
use crate::daemon::error::ApiError;
use crate::daemon::options::{
    AttachOptions, ListOptions, LogsOptions, RemoveOptions, StatsOptions, WaitCondition,
};
use crate::daemon::query::Query;
use crate::daemon::router::Daemon;
use crate::daemon::streams::{encode_output, hijack, json_later, json_lines, stream_content_type};

/// JSON request bodies larger than this are refused (a create body is a few KiB).
pub const JSON_BODY_LIMIT: usize = 4 << 20;

pub async fn list(d: &Daemon, q: &Query) -> Result<Resp, ApiError> {
    let opts = ListOptions {
        all: q.bool("all")?,
        limit: q
            .number::<i64>("limit")?
            .and_then(|l| usize::try_from(l).ok())
            .filter(|l| *l > 0),
        size: q.bool("size")?,
        filters: q.filters()?,
    };
    Ok(body::json(StatusCode::OK, &d.backend.list(opts).await?))
}

pub async fn create(d: &Daemon, q: &Query, req: Request<Incoming>) -> Result<Resp, ApiError> {
    if let Some(platform) = q.string("platform") {
        let ours = format!("linux/{}", d.host.go_arch());
        if platform != "linux" && platform != ours {
            return Err(ApiError::bad_request(format!(
                "platform \"{platform}\" is not supported by skiff yet (only {ours})"
            )));
        }
    }
    let bytes = read_limited(req.into_body(), JSON_BODY_LIMIT).await?;
    let name = q.string("name");
    let request =
        decode_create(name.as_deref(), &bytes).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let created = d.backend.create(request).await?;
    Ok(body::json(
        StatusCode::CREATED,
        &json!({ "Id": created.id, "Warnings": created.warnings }),
    ))
}

pub async fn inspect(d: &Daemon, id: &str) -> Result<Resp, ApiError> {
    Ok(body::json(StatusCode::OK, &d.backend.inspect(id).await?))
}

pub async fn start(d: &Daemon, id: &str) -> Result<Resp, ApiError> {
    d.backend.start(id).await?;
    Ok(body::no_content())
}

/// `t` (seconds) and `signal`, shared by stop and restart.
fn stop_params(q: &Query) -> Result<(Option<String>, Option<i64>), ApiError> {
    Ok((q.string("signal"), q.number("t")?))
}

pub async fn stop(d: &Daemon, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let (signal, timeout) = stop_params(q)?;
    d.backend.stop(id, signal, timeout).await?;
    Ok(body::no_content())
}

pub async fn restart(d: &Daemon, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let (signal, timeout) = stop_params(q)?;
    d.backend.restart(id, signal, timeout).await?;
    Ok(body::no_content())
}

pub async fn kill(d: &Daemon, id: &str, q: &Query) -> Result<Resp, ApiError> {
    d.backend.kill(id, q.string("signal")).await?;
    Ok(body::no_content())
}

pub async fn wait(d: &Daemon, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let condition = match q.get("condition").unwrap_or("") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid value for query parameter \"condition\": \"{other}\" (expected \
                 not-running, next-exit or removed)"
            )))
        }
    };
    let exit = d.backend.wait(id, condition).await?;
    Ok(json_later(exit))
}

pub async fn attach(
    d: &Daemon,
    id: &str,
    q: &Query,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let opts = AttachOptions {
        stdin: q.bool("stdin")?,
        stdout: q.bool("stdout")?,
        stderr: q.bool("stderr")?,
        stream: q.bool("stream")?,
        logs: q.bool("logs")?,
        detach_keys: q.string("detachKeys"),
    };
    let streams = d.backend.attach(id, opts).await?;
    Ok(hijack(req, streams))
}

/// `h` and `w`, both required.
pub fn size_params(q: &Query) -> Result<(u32, u32), ApiError> {
    let get = |name: &str| {
        q.number::<u32>(name)?
            .ok_or_else(|| ApiError::bad_request(format!("missing query parameter \"{name}\"")))
    };
    Ok((get("h")?, get("w")?))
}

pub async fn resize(d: &Daemon, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let (h, w) = size_params(q)?;
    d.backend.resize(id, h, w).await?;
    Ok(with_type(StatusCode::OK, "text/plain", body::empty()))
}

pub async fn rename(d: &Daemon, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let name = q
        .string("name")
        .ok_or_else(|| ApiError::bad_request("missing query parameter \"name\""))?;
    d.backend.rename(id, &name).await?;
    Ok(body::no_content())
}

pub async fn logs(d: &Daemon, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let tail = match q.get("tail") {
        None | Some("") | Some("all") => None,
        Some(_) => q
            .number::<i64>("tail")?
            .and_then(|n| usize::try_from(n).ok()),
    };
    let opts = LogsOptions {
        follow: q.bool("follow")?,
        stdout: q.bool("stdout")?,
        stderr: q.bool("stderr")?,
        since: q.number("since")?.unwrap_or(0.0),
        until: q.number("until")?.unwrap_or(0.0),
        timestamps: q.bool("timestamps")?,
        tail,
    };
    if !opts.stdout && !opts.stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let (tty, output) = d.backend.logs(id, opts).await?;
    let body = encode_output(output, tty).map(Ok);
    Ok(with_type(
        StatusCode::OK,
        stream_content_type(tty),
        streamed(body),
    ))
}

pub async fn top(d: &Daemon, id: &str, q: &Query) -> Result<Resp, ApiError> {
    Ok(body::json(
        StatusCode::OK,
        &d.backend.top(id, q.string("ps_args")).await?,
    ))
}

pub async fn stats(d: &Daemon, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let opts = StatsOptions {
        stream: q.bool_or("stream", true)?,
        one_shot: q.bool("one-shot")?,
    };
    let mut samples = d.backend.stats(id, opts).await?;
    if opts.stream {
        return Ok(json_lines(samples));
    }
    match samples.next().await {
        Some(sample) => Ok(body::json(StatusCode::OK, &sample)),
        None => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no stats for container {id}"),
        )),
    }
}

pub async fn remove(d: &Daemon, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let opts = RemoveOptions {
        force: q.bool("force")?,
        volumes: q.bool("v")?,
        link: q.bool("link")?,
    };
    d.backend.remove(id, opts).await?;
    Ok(body::no_content())
}
