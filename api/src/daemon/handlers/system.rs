//! `/_ping`, `/version`, `/info`, `/events`, `/system/df`.

use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use hyper::{Method, Response, StatusCode};
use serde_json::json;
use std::time::SystemTime;

use crate::daemon::body::{self, Resp};
use crate::daemon::create::RUNTIME_NAME;
use crate::daemon::error::ApiError;
use crate::daemon::options::EventsOptions;
use crate::daemon::query::Query;
use crate::daemon::router::{Daemon, API_VERSION, MIN_API_VERSION, SKIFF_VERSION};
use crate::daemon::streams::json_lines;
use crate::daemon::timefmt::rfc3339;

/// The storage driver name `/info` reports.
pub const DRIVER: &str = "skiff-overlay";

/// `GET|HEAD /_ping`: the docker CLI's first call; it reads these headers to negotiate.
pub fn ping(method: &Method) -> Resp {
    let body = if method == Method::HEAD {
        body::empty()
    } else {
        body::full("OK")
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("docker-experimental"),
        HeaderValue::from_static("false"),
    );
    h.insert(
        HeaderName::from_static("builder-version"),
        HeaderValue::from_static("1"),
    );
    resp
}

pub fn version(d: &Daemon) -> Resp {
    let details = json!({
        "ApiVersion": API_VERSION,
        "Arch": d.host.go_arch(),
        "BuildTime": "",
        "Experimental": "false",
        "GitCommit": "",
        "GoVersion": "",
        "KernelVersion": d.host.kernel_version,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
    });
    body::json(
        StatusCode::OK,
        &json!({
            "Platform": { "Name": "skiff" },
            "Components": [{ "Name": "Engine", "Version": SKIFF_VERSION, "Details": details }],
            "Version": SKIFF_VERSION,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": d.host.go_arch(),
            "KernelVersion": d.host.kernel_version,
            "BuildTime": "",
        }),
    )
}

pub async fn info(d: &Daemon) -> Result<Resp, ApiError> {
    let c = d.backend.counts().await;
    let no_commit = json!({ "ID": "" });
    let plugins = json!({
        "Volume": [],
        "Network": ["bridge", "none"],
        "Authorization": null,
        "Log": ["json-file"],
    });
    let registry = json!({
        "IndexConfigs": {},
        "InsecureRegistryCIDRs": ["127.0.0.0/8"],
        "Mirrors": [],
    });
    let swarm = json!({
        "NodeID": "",
        "NodeAddr": "",
        "LocalNodeState": "inactive",
        "ControlAvailable": false,
        "Error": "",
        "RemoteManagers": null,
    });
    // Two halves: one json! of all of it exceeds the macro recursion limit.
    let mut info = json!({
            "ID": d.engine_id,
            "Containers": c.containers,
            "ContainersRunning": c.running,
            "ContainersPaused": c.paused,
            "ContainersStopped": c.stopped,
            "Images": c.images,
            "Driver": DRIVER,
            "DriverStatus": [],
            "Plugins": plugins,
            "MemoryLimit": true,
            "SwapLimit": false,
            "CpuCfsPeriod": false,
            "CpuCfsQuota": false,
            "CPUShares": false,
            "CPUSet": false,
            "PidsLimit": true,
            "OomKillDisable": false,
            "IPv4Forwarding": true,
            "Debug": false,
            "NFd": 0,
            "NGoroutines": 0,
            "SystemTime": rfc3339(SystemTime::now()),
            "LoggingDriver": "json-file",
            "CgroupDriver": "none",
            "CgroupVersion": "",
            "NEventsListener": 0,
    });
    let rest = json!({
            "KernelVersion": d.host.kernel_version,
            "OperatingSystem": "skiff (microVM)",
            "OSVersion": SKIFF_VERSION,
            "OSType": "linux",
            "Architecture": d.host.machine,
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": registry,
            "NCPU": d.host.ncpu,
            "MemTotal": d.host.mem_total,
            "GenericResources": null,
            "DockerRootDir": d.root_dir,
            "HttpProxy": "",
            "HttpsProxy": "",
            "NoProxy": "",
            "Name": d.host.hostname,
            "Labels": [],
            "ExperimentalBuild": false,
            "ServerVersion": SKIFF_VERSION,
            "Runtimes": { RUNTIME_NAME: { "path": "skiff-vmm" } },
            "DefaultRuntime": RUNTIME_NAME,
            "Swarm": swarm,
            "LiveRestoreEnabled": false,
            "Isolation": "",
            "InitBinary": "",
            "ContainerdCommit": no_commit,
            "RuncCommit": no_commit,
            "InitCommit": no_commit,
            "SecurityOptions": [],
            "Warnings": [],
    });
    if let (Some(info), serde_json::Value::Object(rest)) = (info.as_object_mut(), rest) {
        info.extend(rest);
    }
    Ok(body::json(StatusCode::OK, &info))
}

pub async fn events(d: &Daemon, q: &Query) -> Result<Resp, ApiError> {
    let opts = EventsOptions {
        since: q.number("since")?,
        until: q.number("until")?,
        filters: q.filters()?,
    };
    Ok(json_lines(d.backend.events(opts).await?))
}

pub async fn df(d: &Daemon) -> Result<Resp, ApiError> {
    Ok(body::json(StatusCode::OK, &d.backend.system_df().await?))
}
