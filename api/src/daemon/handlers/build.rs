//! `POST /build`: the classic builder's API (what `DOCKER_BUILDKIT=0 docker build` and
//! docker-py's `images.build` send). The body is the context tar; the answer is JSON lines.
//! Parameters skiff cannot honour are refused by name, not ignored.

use std::collections::BTreeMap;

use hyper::body::Incoming;
use hyper::Request;

use crate::daemon::body::{request_stream, Resp};
use crate::daemon::error::ApiError;
use crate::daemon::options::BuildOptions;
use crate::daemon::query::Query;
use crate::daemon::registry_auth::RegistryAuth;
use crate::daemon::router::Daemon;
use crate::daemon::streams::json_lines;

pub async fn build(d: &Daemon, q: &Query, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (parts, body) = req.into_parts();
    // Taken first: a refusal below then drains it, so the client sees the refusal.
    let context = request_stream(body);
    let mut opts = decode(q)?;
    if let Some(config) = parts.headers.get("x-registry-config") {
        let config = config
            .to_str()
            .map_err(|_| ApiError::bad_request("X-Registry-Config is not ASCII"))?;
        opts.registry_config = RegistryAuth::decode_config(config)?;
    }
    Ok(json_lines(d.backend.build(opts, context).await?))
}

/// A JSON object of strings (`buildargs`, `labels`); a `null` value (an ARG given without a
/// value and not in the client's environment) is left out.
fn string_map(q: &Query, name: &str) -> Result<Vec<(String, String)>, ApiError> {
    let Some(raw) = q.string(name).filter(|s| !s.is_empty()) else {
        return Ok(Vec::new());
    };
    let map: BTreeMap<String, Option<String>> = serde_json::from_str(&raw)
        .map_err(|e| ApiError::bad_request(format!("{name}: not a JSON object of strings: {e}")))?;
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
}

pub fn decode(q: &Query) -> Result<BuildOptions, ApiError> {
    let refuse = |what: &str| {
        Err(ApiError::bad_request(format!(
            "{what} is not supported by skiff's builder"
        )))
    };
    let set = |name: &str| {
        q.string(name).is_some_and(|v| {
            !v.is_empty() && v != "0" && v != "false" && v != "[]" && v != "{}" && v != "null"
        })
    };
    if q.string("version").is_some_and(|v| v == "2") {
        return refuse("BuildKit (version=2; use DOCKER_BUILDKIT=0)");
    }
    if q.string("remote").is_some_and(|r| !r.is_empty()) {
        return refuse("a remote context (remote=: git or URL; send the context as a tar)");
    }
    for (param, what) in [
        ("cachefrom", "cachefrom (--cache-from)"),
        ("squash", "squash (--squash)"),
        ("extrahosts", "extrahosts (--add-host)"),
        ("shmsize", "shmsize (--shm-size)"),
        ("cpusetcpus", "cpusetcpus (--cpuset-cpus)"),
        ("cpusetmems", "cpusetmems (--cpuset-mems)"),
        ("cpushares", "cpushares (--cpu-shares)"),
        ("cpuperiod", "cpuperiod (--cpu-period)"),
        ("cpuquota", "cpuquota (--cpu-quota)"),
        ("memory", "memory (--memory)"),
        ("memswap", "memswap (--memory-swap)"),
        ("ulimits", "ulimits (--ulimit)"),
        ("outputs", "outputs (--output)"),
        ("cgroupparent", "cgroupparent (--cgroup-parent)"),
        ("securityopt", "securityopt (--security-opt)"),
        ("session", "session (BuildKit sessions)"),
    ] {
        if set(param) {
            return refuse(what);
        }
    }
    if q.string("isolation")
        .is_some_and(|i| !i.is_empty() && i != "default")
    {
        return refuse("isolation (--isolation)");
    }
    let network = q
        .string("networkmode")
        .filter(|n| !n.is_empty() && n != "default" && n != "bridge");
    if network.as_deref() == Some("host") {
        return refuse("networkmode=host (--network host: every step is its own VM)");
    }
    let labels = string_map(q, "labels")?.into_iter().collect();
    Ok(BuildOptions {
        tags: q.all("t").into_iter().filter(|t| !t.is_empty()).collect(),
        dockerfile: q
            .string("dockerfile")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "Dockerfile".into()),
        build_args: string_map(q, "buildargs")?,
        target: q.string("target").filter(|t| !t.is_empty()),
        no_cache: q.bool("nocache")?,
        labels,
        quiet: q.bool("q")?,
        rm: q.bool_or("rm", true)?,
        force_rm: q.bool("forcerm")?,
        pull: q.bool("pull")?,
        network,
        platform: q.string("platform").filter(|p| !p.is_empty()),
        registry_config: BTreeMap::new(),
    })
}

/// The query that `decode` reads back as `opts` (what skiff's own client sends).
pub fn encode(opts: &BuildOptions) -> Vec<(&'static str, String)> {
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    let json_map = |pairs: &mut dyn Iterator<Item = (&String, &String)>| {
        serde_json::Value::Object(
            pairs
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
        .to_string()
    };
    let mut q: Vec<(&'static str, String)> = opts.tags.iter().map(|t| ("t", t.clone())).collect();
    q.push(("dockerfile", opts.dockerfile.clone()));
    q.push((
        "buildargs",
        json_map(&mut opts.build_args.iter().map(|(k, v)| (k, v))),
    ));
    q.push(("labels", json_map(&mut opts.labels.iter())));
    q.extend(opts.target.iter().map(|t| ("target", t.clone())));
    q.extend(opts.network.iter().map(|n| ("networkmode", n.clone())));
    q.extend(opts.platform.iter().map(|p| ("platform", p.clone())));
    for (name, value) in [
        ("nocache", opts.no_cache),
        ("q", opts.quiet),
        ("rm", opts.rm),
        ("forcerm", opts.force_rm),
        ("pull", opts.pull),
    ] {
        q.push((name, flag(value)));
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_client_encodes_decodes_to_the_same_options() {
        let opts = BuildOptions {
            tags: vec!["a:1".into(), "reg:5000/b".into()],
            dockerfile: "sub dir/Df".into(),
            build_args: vec![("X".into(), "1 2".into()), ("Y".into(), String::new())],
            target: Some("final".into()),
            no_cache: true,
            labels: [("k".to_string(), "v=w".to_string())].into(),
            quiet: false,
            rm: true,
            force_rm: true,
            pull: true,
            network: Some("mynet".into()),
            platform: Some("linux/amd64".into()),
            registry_config: BTreeMap::new(),
        };
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in encode(&opts) {
            s.append_pair(k, &v);
        }
        assert_eq!(decode(&Query::parse(Some(&s.finish()))).unwrap(), opts);
    }

    #[test]
    fn the_cli_defaults_pass_and_the_rest_is_refused_by_name() {
        let cli = "t=a%3A1&t=b&buildargs=%7B%22X%22%3A%221%22%2C%22N%22%3Anull%7D&cachefrom=%5B%5D\
                   &cgroupparent=&cpuperiod=0&cpuquota=0&cpusetcpus=&cpusetmems=&cpushares=0\
                   &dockerfile=sub%2FDf&labels=%7B%22l%22%3A%22v%22%7D&memory=0&memswap=0\
                   &networkmode=default&rm=1&shmsize=0&target=&ulimits=null&version=1";
        let o = decode(&Query::parse(Some(cli))).unwrap();
        assert_eq!(o.tags, ["a:1", "b"]);
        assert_eq!(o.build_args, [("X".to_string(), "1".to_string())]);
        assert_eq!(o.dockerfile, "sub/Df");
        assert_eq!(o.labels.get("l").map(String::as_str), Some("v"));
        assert!(o.rm && !o.force_rm && !o.quiet && o.network.is_none() && o.target.is_none());
        for (q, word) in [
            ("memory=1000", "memory"),
            ("squash=1", "squash"),
            ("cachefrom=%5B%22x%22%5D", "cachefrom"),
            ("remote=https://x/y.git", "remote"),
            ("version=2", "BuildKit"),
            ("networkmode=host", "host"),
            ("extrahosts=a%3A1.2.3.4", "extrahosts"),
        ] {
            let err = decode(&Query::parse(Some(q))).unwrap_err();
            assert!(err.message.contains(word), "{q}: {}", err.message);
        }
    }
}
