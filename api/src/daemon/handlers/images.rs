//! `/images/...`: list, inspect, remove, tag, pull (`POST /images/create`), push, history,
//! load and save;
//! `POST /commit`.

use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};

use crate::daemon::body::{self, request_stream, streamed, with_type, Resp};
use crate::daemon::error::ApiError;
use crate::daemon::options::{CommitOptions, ImageListOptions, PullOptions, PushOptions};
use crate::daemon::query::Query;
use crate::daemon::registry_auth::RegistryAuth;
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
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::bad_request("X-Registry-Auth is not ASCII"))
            })
            .transpose()?
            .map(RegistryAuth::decode)
            .transpose()?
            .flatten(),
    };
    Ok(json_lines(d.backend.image_pull(opts).await?))
}

/// `POST /images/{name}/push?tag=…` with `X-Registry-Auth`: Docker's push progress.
pub async fn push(
    d: &Daemon,
    name: &str,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Resp, ApiError> {
    let auth = headers
        .get("x-registry-auth")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request("X-Registry-Auth is not ASCII"))
        })
        .transpose()?;
    let opts = PushOptions {
        name: name.to_string(),
        tag: q.string("tag").filter(|t| !t.is_empty()),
        auth: auth.map(RegistryAuth::decode).transpose()?.flatten(),
    };
    Ok(json_lines(d.backend.image_push(opts).await?))
}

pub async fn history(d: &Daemon, name: &str) -> Result<Resp, ApiError> {
    Ok(body::json(
        StatusCode::OK,
        &d.backend.image_history(name).await?,
    ))
}

/// `POST /images/load`: the tar is handed to the engine as it arrives (the CLI sends it chunked).
pub async fn load(d: &Daemon, q: &Query, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let archive = request_stream(req.into_body());
    let quiet = q.bool("quiet")?;
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

/// `POST /commit?container=…&repo=…&tag=…&comment=…&author=…&pause=…&changes=…`: 201 with
/// `{"Id": "sha256:…"}`. The body may carry a container config to apply; skiff takes changes
/// (`changes=`) only and refuses a body that sets anything, naming the fields.
pub async fn commit(d: &Daemon, q: &Query, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let container = q
        .string("container")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing query parameter \"container\""))?;
    let config = body::read_limited(req.into_body(), 1 << 20).await?;
    refuse_config_body(&config)?;
    let given = |k: &str| q.string(k).filter(|v| !v.is_empty());
    let opts = CommitOptions {
        container,
        repo: given("repo"),
        tag: given("tag"),
        comment: given("comment"),
        author: given("author"),
        pause: q.bool_or("pause", true)?,
        changes: q.all("changes"),
    };
    let id = d.backend.commit(opts).await?;
    Ok(body::json(
        StatusCode::CREATED,
        &serde_json::json!({ "Id": id }),
    ))
}

/// Empty, `null`, or an object whose fields are all unset (null, "", 0, false, [], {}).
fn refuse_config_body(raw: &[u8]) -> Result<(), ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let value: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| ApiError::bad_request(format!("the commit body is not JSON: {e}")))?;
    let unset = |v: &serde_json::Value| match v {
        serde_json::Value::Null => true,
        serde_json::Value::Bool(b) => !b,
        serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
        serde_json::Value::String(s) => s.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Object(o) => o.is_empty(),
    };
    let set: Vec<&str> = match &value {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Object(fields) => fields
            .iter()
            .filter(|(_, v)| !unset(v))
            .map(|(k, _)| k.as_str())
            .collect(),
        _ => {
            return Err(ApiError::bad_request(
                "the commit body must be a JSON object",
            ))
        }
    };
    if set.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "skiff does not apply a container config given with commit ({}): use changes \
         (`--change`) instead",
        set.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::refuse_config_body;

    #[test]
    fn commit_bodies_that_set_nothing_pass_and_others_are_refused_by_field() {
        for ok in [
            "",
            " ",
            "null",
            "{}",
            r#"{"Cmd":null,"Hostname":"","Tty":false}"#,
        ] {
            assert!(refuse_config_body(ok.as_bytes()).is_ok(), "{ok}");
        }
        let err = refuse_config_body(br#"{"Cmd":["x"],"Env":[],"User":"me"}"#).unwrap_err();
        assert!(err.message.contains("Cmd, User"), "{}", err.message);
        assert!(refuse_config_body(b"[1]").is_err());
    }
}
