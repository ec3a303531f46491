//! From the bytes of a create request to a `CreateRequest`, refusing honestly: malformed JSON
//! and wrong types name the field; any field skiff cannot honour yet, set to anything but its
//! default, is refused by name (unknown fields too: dropping a setting silently would be the
//! dishonesty these refusals exist to prevent); fields at their default values pass, since the
//! docker CLI sends dozens of them.

use super::body::{CreateBody, HostConfig, LogConfig};
use super::mounts::decode_mounts;
use super::request::{CreateRequest, JsonFileLog, NetworkJoin, NetworkMode, RestartPolicy, Stdio};
use serde_json::Value;

/// Why a create request was refused; every case is Docker's 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("invalid value for {path}: {message}")]
    Field { path: String, message: String },
    /// One entry per field, each a full sentence naming it.
    #[error("{}", .0.join("; "))]
    Refused(Vec<String>),
    #[error("{0}")]
    Invalid(String),
}

/// Config fields honoured (or checked by hand below); any other must hold its default value.
const HONOURED_CONFIG: &[&str] = &[
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "Image",
    "WorkingDir",
    "Entrypoint",
    "NetworkDisabled",
    "Labels",
    "Volumes",
    "StopSignal",
    "StopTimeout",
    "HostConfig",
    "NetworkingConfig",
];

/// HostConfig fields honoured or checked by hand. `ContainerIDFile` is the CLI's own business
/// (it writes the file); Docker's daemon ignores it too.
const HONOURED_HOST: &[&str] = &[
    "NanoCpus",
    "Memory",
    "RestartPolicy",
    "AutoRemove",
    "LogConfig",
    "Init",
    "NetworkMode",
    "ConsoleSize",
    "Runtime",
    "Isolation",
    "ContainerIDFile",
    "Binds",
    "Mounts",
    "Tmpfs",
    "PortBindings",
    "PublishAllPorts",
    "Ulimits",
    "PidsLimit",
    "StorageOpt",
];

/// HostConfig fields whose "unset" value is -1 rather than 0.
const MINUS_ONE_UNSET: &[&str] = &["MemorySwappiness", "MemorySwap"];

/// skiff's one runtime, as `/info` names it.
pub const RUNTIME_NAME: &str = "skiff-vm";

/// Docker's floor for a memory limit.
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// `PidsLimit`: 0 and -1 mean no limit, as in Docker.
fn decode_pids_limit(limit: Option<i64>) -> Result<Option<u64>, CreateError> {
    match limit {
        None | Some(0 | -1) => Ok(None),
        Some(n) if n > 0 => Ok(Some(n as u64)),
        Some(n) => Err(invalid("HostConfig.PidsLimit", &format!("{n} is below -1"))),
    }
}

/// Decodes and checks a create request. `name` is the `?name=` query parameter.
pub fn decode_create(name: Option<&str>, bytes: &[u8]) -> Result<CreateRequest, CreateError> {
    let raw: Value = serde_json::from_slice(bytes).map_err(|e| CreateError::Json(e.to_string()))?;
    let body: CreateBody =
        serde_path_to_error::deserialize(&raw).map_err(|e| CreateError::Field {
            path: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    let mut refused = unhonoured_fields(&raw);
    let host = body.host_config.unwrap_or_default();
    check_host_specials(&host, &mut refused);
    if let Some(hc) = &body.healthcheck {
        super::healthcheck::validate(hc).map_err(CreateError::Invalid)?;
    }
    let log = match &host.log_config {
        Some(l) => decode_log(l, &mut refused)?,
        None => JsonFileLog::default(),
    };
    let declared: Vec<String> = body.volumes.unwrap_or_default().into_keys().collect();
    let mounts = decode_mounts(
        host.binds.as_deref().unwrap_or_default(),
        host.mounts.as_deref().unwrap_or_default(),
        &host.tmpfs.clone().unwrap_or_default(),
        &declared,
        &mut refused,
    )?;
    let storage_size = super::storage::decode_storage_opt(
        &host.storage_opt.clone().unwrap_or_default(),
        &mut refused,
    )?;
    if !refused.is_empty() {
        return Err(CreateError::Refused(refused));
    }

    let name = name.map(check_name).transpose()?;
    let image = body
        .image
        .filter(|i| !i.is_empty())
        .ok_or_else(|| CreateError::Invalid("Image is required".to_string()))?;
    for (path, list) in [
        ("Cmd", &body.cmd),
        ("Entrypoint", &body.entrypoint),
        ("Env", &body.env),
    ] {
        if list.iter().flatten().any(|s| s.contains('\0')) {
            return Err(invalid(path, "contains a NUL byte"));
        }
    }
    let working_dir = body.working_dir.filter(|w| !w.is_empty());
    if let Some(w) = &working_dir {
        if !w.starts_with('/') {
            return Err(CreateError::Invalid(format!(
                "the working directory '{w}' is invalid, it needs to be an absolute path"
            )));
        }
    }
    let restart_policy = decode_restart(&host)?;
    let auto_remove = host.auto_remove.unwrap_or(false);
    if auto_remove && restart_policy != RestartPolicy::No {
        return Err(CreateError::Invalid(
            "can't create 'AutoRemove' container with restart policy".to_string(),
        ));
    }
    let network_disabled = body.network_disabled.unwrap_or(false);
    let network = match host.network_mode.as_deref() {
        Some("none") => NetworkMode::None,
        _ if network_disabled => NetworkMode::None,
        None | Some("" | "default" | "bridge") => NetworkMode::Default,
        Some(name) => NetworkMode::Named(name.to_string()),
    };
    let (aliases, more_networks) = decode_endpoints(body.networking_config.as_ref(), &network)?;
    let exposed_ports: Vec<String> = body.exposed_ports.unwrap_or_default().into_keys().collect();
    let mut ports = super::ports::decode_ports(&host.port_bindings.unwrap_or_default())?;
    let ulimits = super::ulimits::decode_ulimits(host.ulimits.as_deref().unwrap_or_default())?;
    let pids_limit = decode_pids_limit(host.pids_limit)?;
    let publish_all = host.publish_all_ports.unwrap_or(false);
    if publish_all {
        super::ports::publish_all(&mut ports, &exposed_ports)?;
    }
    if network == NetworkMode::None && (!ports.is_empty() || publish_all) {
        return Err(CreateError::Invalid(
            "conflicting options: port publishing and the container type network mode".into(),
        ));
    }
    Ok(CreateRequest {
        name,
        image,
        cmd: body.cmd,
        entrypoint: body.entrypoint,
        env: body.env.unwrap_or_default(),
        working_dir,
        user: body.user.filter(|u| !u.is_empty()),
        hostname: body.hostname.filter(|h| !h.is_empty()),
        domainname: body.domainname.filter(|d| !d.is_empty()),
        labels: body.labels.unwrap_or_default(),
        stdio: Stdio {
            tty: body.tty.unwrap_or(false),
            open_stdin: body.open_stdin.unwrap_or(false),
            stdin_once: body.stdin_once.unwrap_or(false),
            attach_stdin: body.attach_stdin.unwrap_or(false),
            attach_stdout: body.attach_stdout.unwrap_or(false),
            attach_stderr: body.attach_stderr.unwrap_or(false),
        },
        stop_signal: body.stop_signal.filter(|s| !s.is_empty()),
        stop_timeout: body.stop_timeout,
        exposed_ports,
        ports,
        publish_all,
        ulimits,
        pids_limit,
        nano_cpus: positive("HostConfig.NanoCpus", host.nano_cpus)?,
        memory_bytes: decode_memory(host.memory)?,
        restart_policy,
        auto_remove,
        log,
        init: host.init.unwrap_or(false),
        network,
        aliases,
        more_networks,
        network_left: false,
        console_size: decode_console_size(host.console_size.as_deref())?,
        mounts,
        storage_size,
        healthcheck: body.healthcheck,
    })
}

fn invalid(path: &str, message: &str) -> CreateError {
    CreateError::Field {
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// null, false, 0, "", and arrays or objects made only of those.
pub(super) fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_default),
        Value::Object(o) => o.values().all(is_default),
    }
}

fn not_supported(path: &str) -> String {
    format!("{path} is not supported by skiff yet")
}

/// Every field outside the honoured lists that holds a non-default value, by its full name.
fn unhonoured_fields(raw: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Value::Object(top) = raw else {
        return out;
    };
    for (k, v) in top {
        if !HONOURED_CONFIG.contains(&k.as_str()) && !is_default(v) {
            out.push(not_supported(k));
        }
    }
    if let Some(Value::Object(host)) = top.get("HostConfig") {
        for (k, v) in host {
            let unset = is_default(v) || (MINUS_ONE_UNSET.contains(&k.as_str()) && v == -1);
            if !HONOURED_HOST.contains(&k.as_str()) && !unset {
                out.push(not_supported(&format!("HostConfig.{k}")));
            }
        }
    }
    let endpoints = top
        .get("NetworkingConfig")
        .and_then(|n| n.get("EndpointsConfig"))
        .and_then(Value::as_object);
    for (network, settings) in endpoints.into_iter().flatten() {
        let path = format!("NetworkingConfig.EndpointsConfig.{network}");
        out.extend(unhonoured_endpoint_fields(&path, settings));
    }
    out
}

/// The fields of an endpoint's settings (`EndpointsConfig.NET`, `network connect`'s
/// `EndpointConfig`) skiff cannot honour, set to something else than their default, by name.
/// Aliases are honoured (on user-defined networks; see `decode_endpoints`).
pub fn unhonoured_endpoint_fields(path: &str, settings: &Value) -> Vec<String> {
    let fields = settings.as_object().into_iter().flatten();
    fields
        .filter(|(k, v)| *k != "Aliases" && !is_default(v))
        .map(|(k, _)| not_supported(&format!("{path}.{k}")))
        .collect()
}

/// The honoured HostConfig fields that only some values of are honoured.
fn check_host_specials(host: &HostConfig, refused: &mut Vec<String>) {
    match host.network_mode.as_deref().unwrap_or("") {
        "" | "default" | "bridge" | "none" => {}
        "host" => refused.push(
            "HostConfig.NetworkMode \"host\" is not supported by skiff: each container is a \
             microVM with its own kernel and cannot share the host's network stack"
                .to_string(),
        ),
        m if m.starts_with("container:") => refused.push(format!(
            "HostConfig.NetworkMode \"{m}\" is not supported by skiff: each container is a \
             microVM and cannot share another container's network stack"
        )),
        m if valid_network_name(m) => {}
        m => refused.push(format!(
            "HostConfig.NetworkMode \"{m}\" is not a network name skiff takes"
        )),
    }
    match host.runtime.as_deref().unwrap_or("") {
        "" => {}
        r if r == RUNTIME_NAME => {}
        r => refused.push(format!(
            "HostConfig.Runtime \"{r}\" is not supported by skiff: its only runtime is \
             \"{RUNTIME_NAME}\""
        )),
    }
    match host.isolation.as_deref().unwrap_or("") {
        "" | "default" => {}
        i => refused.push(format!(
            "HostConfig.Isolation \"{i}\" is not supported by skiff (every container is a microVM)"
        )),
    }
}

/// Docker's rule for network names, also used for aliases: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at
/// most 253 bytes (a DNS name).
pub fn valid_network_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 253
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// The aliases of the one network a container joins. Endpoints of other networks are refused
/// (a skiff container has one network interface); aliases are for user-defined networks only,
/// as in Docker.
fn decode_endpoints(
    config: Option<&super::body::NetworkingConfig>,
    network: &NetworkMode,
) -> Result<(Vec<String>, Vec<NetworkJoin>), CreateError> {
    let mut aliases = Vec::new();
    let mut more = Vec::new();
    let endpoints = config.and_then(|c| c.endpoints_config.as_ref());
    for (name, endpoint) in endpoints.into_iter().flatten() {
        let primary = match network {
            NetworkMode::Named(n) => n == name,
            NetworkMode::Default => name == "bridge" || name == "default",
            NetworkMode::None => name == "none",
        };
        if !primary && (*network == NetworkMode::None || name == "none") {
            return Err(CreateError::Invalid(format!(
                "container cannot be connected to network {name}: the network mode none                  (loopback only) joins no other network"
            )));
        }
        let asked = endpoint
            .as_ref()
            .and_then(|e| e.aliases.clone())
            .unwrap_or_default();
        let user_defined = !matches!(name.as_str(), "bridge" | "default" | "none");
        if !asked.is_empty() && !user_defined {
            return Err(CreateError::Invalid(
                "network-scoped alias is supported only for containers in user defined networks"
                    .into(),
            ));
        }
        for alias in &asked {
            if !valid_network_name(alias) {
                return Err(CreateError::Invalid(format!(
                    "invalid network alias {alias:?}"
                )));
            }
        }
        if primary {
            aliases.extend(asked);
        } else {
            if !valid_network_name(name) {
                return Err(CreateError::Invalid(format!(
                    "invalid network name {name:?}"
                )));
            }
            more.push(NetworkJoin {
                network: name.clone(),
                aliases: asked,
            });
        }
    }
    Ok((aliases, more))
}

/// `LogConfig`: json-file (or the default, "") with `max-size` and `max-file`.
fn decode_log(log: &LogConfig, refused: &mut Vec<String>) -> Result<JsonFileLog, CreateError> {
    match log.kind.as_deref().unwrap_or("") {
        "" | "json-file" => {}
        other => refused.push(format!(
            "HostConfig.LogConfig.Type \"{other}\" is not supported by skiff yet (only json-file)"
        )),
    }
    let mut out = JsonFileLog::default();
    for (key, value) in log.config.iter().flatten() {
        let path = format!("HostConfig.LogConfig.Config.{key}");
        match key.as_str() {
            "max-size" => {
                let bytes = parse_size(value).filter(|b| *b > 0);
                out.max_size = Some(bytes.ok_or_else(|| {
                    invalid(&path, "expected a positive size such as 10m, 512k or 1g")
                })?);
            }
            "max-file" => {
                let n = value.parse::<u32>().ok().filter(|n| *n >= 1);
                out.max_file =
                    Some(n.ok_or_else(|| invalid(&path, "expected an integer of at least 1"))?);
            }
            _ => refused.push(not_supported(&path)),
        }
    }
    Ok(out)
}

/// Docker's `RAMInBytes`: a number with an optional k, m, g, t or p suffix (binary multiples),
/// optionally followed by `b` or `ib`, case-insensitive.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (digits, shift) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 10),
        'm' => (&t[..t.len() - 1], 20),
        'g' => (&t[..t.len() - 1], 30),
        't' => (&t[..t.len() - 1], 40),
        'p' => (&t[..t.len() - 1], 50),
        _ => (t, 0),
    };
    let n: f64 = digits.trim().parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let bytes = n * (1u64 << shift) as f64;
    (bytes <= u64::MAX as f64).then_some(bytes as u64)
}

fn decode_restart(host: &HostConfig) -> Result<RestartPolicy, CreateError> {
    let Some(p) = &host.restart_policy else {
        return Ok(RestartPolicy::No);
    };
    let count = p.maximum_retry_count.unwrap_or(0);
    let name = p.name.as_deref().unwrap_or("");
    if name != "on-failure" && count != 0 {
        return Err(CreateError::Invalid(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'"
                .to_string(),
        ));
    }
    Ok(match name {
        "" | "no" => RestartPolicy::No,
        "always" => RestartPolicy::Always,
        "unless-stopped" => RestartPolicy::UnlessStopped,
        "on-failure" => {
            let max = u32::try_from(count).map_err(|_| {
                CreateError::Invalid(
                    "invalid restart policy: maximum retry count must be between 0 and 4294967295"
                        .to_string(),
                )
            })?;
            RestartPolicy::OnFailure {
                max_retries: (max > 0).then_some(max),
            }
        }
        other => {
            return Err(CreateError::Invalid(format!(
                "invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', \
                 'on-failure', or 'unless-stopped'"
            )))
        }
    })
}

/// A non-negative number where 0 means "not set".
fn positive(path: &str, v: Option<i64>) -> Result<Option<u64>, CreateError> {
    match v {
        None | Some(0) => Ok(None),
        Some(n) => u64::try_from(n)
            .map(Some)
            .map_err(|_| invalid(path, "must not be negative")),
    }
}

fn decode_memory(v: Option<i64>) -> Result<Option<u64>, CreateError> {
    let bytes = positive("HostConfig.Memory", v)?;
    if bytes.is_some_and(|b| b < MIN_MEMORY as u64) {
        return Err(CreateError::Invalid(
            "Minimum memory limit allowed is 6MB".to_string(),
        ));
    }
    Ok(bytes)
}

fn decode_console_size(v: Option<&[u32]>) -> Result<Option<(u32, u32)>, CreateError> {
    match v {
        None | Some([]) | Some([0, 0]) => Ok(None),
        Some([h, w]) => Ok(Some((*h, *w))),
        Some(_) => Err(invalid(
            "HostConfig.ConsoleSize",
            "expected [height, width]",
        )),
    }
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, a leading `/` allowed and dropped.
fn check_name(name: &str) -> Result<String, CreateError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let mut chars = bare.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok =
        bare.len() >= 2 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(bare.to_string())
    } else {
        Err(CreateError::Invalid(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}
