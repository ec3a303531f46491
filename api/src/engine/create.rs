//! What a container and an exec session are made of: the image's layers and config merged with
//! the request (Docker's rules, shared with `skiff run`), names, IDs and signals.

use skiff_protocol::{ProcessSpec, TerminalSize};
use skiff_vmm::loop_disk::DiskError;

use super::lifecycle::holder;
use super::record::{ContainerRecord, RunState};
use super::{internal, now_unix, volumes, Inner, Result};
use crate::daemon::create::mounts::{check_target, MountKind, MountRequest};
use crate::daemon::create::CreateRequest;
use crate::daemon::options::ExecConfig;
use crate::daemon::timefmt::rfc3339;
use crate::daemon::BackendError;
use crate::run::{build_spec, image, Caller, ProcessOptions};
use skiff_images::manifest::RuntimeConfig;

/// A fresh random 64-hex ID.
pub fn new_id() -> Result<String> {
    crate::run::rundir::random_hex(32).map_err(internal)
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if name.len() < 2 || !first_ok || !rest_ok {
        return Err(BackendError::InvalidArgument(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    Ok(())
}

const ADJECTIVES: [&str; 16] = [
    "brave", "calm", "eager", "fond", "gentle", "happy", "keen", "lucid", "merry", "nimble",
    "quiet", "sharp", "swift", "tender", "vivid", "wise",
];
const SAILORS: [&str; 16] = [
    "amundsen",
    "bligh",
    "cook",
    "drake",
    "earhart",
    "franklin",
    "gama",
    "hudson",
    "magellan",
    "nansen",
    "polo",
    "raleigh",
    "shackleton",
    "tasman",
    "vespucci",
    "zheng",
];

/// A generated name (`keen_nansen`), from the ID's bytes; the ID's prefix when those are taken.
fn generated_name(id: &str, attempt: usize) -> String {
    let byte = |i: usize| usize::from_str_radix(&id[i..i + 2], 16).unwrap_or(0);
    match attempt {
        0 => format!("{}_{}", ADJECTIVES[byte(0) % 16], SAILORS[byte(2) % 16]),
        _ => format!(
            "{}_{}_{}",
            ADJECTIVES[byte(4) % 16],
            SAILORS[byte(6) % 16],
            &id[..6]
        ),
    }
}

/// `--entrypoint` as `merge_config` takes it (one word, the rest joining the command).
fn split_entrypoint(req: &CreateRequest) -> (Option<String>, Vec<String>) {
    let cmd = req.cmd.clone().unwrap_or_default();
    match req.entrypoint.as_deref() {
        None => (None, cmd),
        Some([]) => (Some(String::new()), cmd),
        Some([first, rest @ ..]) => {
            let mut command: Vec<String> = rest.to_vec();
            command.extend(cmd);
            (Some(first.clone()), command)
        }
    }
}

/// vCPUs for Docker's `NanoCpus` (rounded up), within what the VMM runs.
fn cpus_of(req: &CreateRequest) -> Result<u8> {
    let Some(nano) = req.nano_cpus else {
        return Ok(skiff_vmm::spec::DEFAULT_CPUS);
    };
    let cpus = nano.div_ceil(1_000_000_000).max(1);
    u8::try_from(cpus)
        .ok()
        .filter(|c| *c <= skiff_vmm::boot::mptable::MAX_CPUS)
        .ok_or_else(|| {
            BackendError::InvalidArgument(format!(
                "HostConfig.NanoCpus: {cpus} CPUs asked for; a skiff VM has 1 to {}",
                skiff_vmm::boot::mptable::MAX_CPUS
            ))
        })
}

/// Guest memory for Docker's `Memory` (bytes, rounded up to MiB).
fn memory_of(req: &CreateRequest) -> Result<u64> {
    let Some(bytes) = req.memory_bytes.filter(|b| *b > 0) else {
        return Ok(skiff_vmm::spec::DEFAULT_MEMORY_MIB);
    };
    let mib = bytes.div_ceil(1 << 20);
    skiff_vmm::memory::check_size(mib)
        .map_err(|e| BackendError::InvalidArgument(format!("HostConfig.Memory: {e}")))?;
    Ok(mib)
}

pub(super) fn terminal_size(size: Option<(u32, u32)>) -> Option<TerminalSize> {
    let (rows, cols) = size?;
    Some(TerminalSize {
        rows: u16::try_from(rows).ok()?,
        cols: u16::try_from(cols).ok()?,
    })
}

/// A caller with no environment of its own (the client resolved `-e KEY` already).
fn caller(size: Option<(u32, u32)>) -> Caller<'static> {
    Caller {
        env: &|_| None,
        terminal_size: terminal_size(size),
    }
}

/// `POST /containers/create`: the image must be in the store (Docker's 404 makes the CLI pull).
pub async fn create(inner: &Inner, mut req: CreateRequest) -> Result<ContainerRecord> {
    if let Some(name) = &req.name {
        check_name(name)?;
    }
    super::networks::check_networks(inner, &req.network, &mut req.more_networks)?;
    if inner.images.resolve(&req.image).is_err() {
        return Err(BackendError::NoSuchImage(req.image.clone()));
    }
    let id = new_id()?;
    let image = inner
        .images
        .ensure(&req.image, &skiff_images::PullOptions::default())
        .await
        .map_err(|e| internal(format!("image {}: {e:#}", req.image)))?;
    // The image's exposed ports are the container's too; `-P` publishes them all.
    let image_ports = image.config.exposed_ports.as_ref();
    for port in image_ports.into_iter().flat_map(|p| p.keys()) {
        if !req.exposed_ports.contains(port) {
            req.exposed_ports.push(port.clone());
        }
    }
    add_image_volumes(&mut req.mounts, &image.config)?;
    req.healthcheck =
        super::health::merge(req.healthcheck.take(), image.config.healthcheck.as_ref());
    if req.publish_all {
        crate::daemon::create::ports::publish_all(&mut req.ports, &req.exposed_ports)
            .map_err(|e| BackendError::InvalidArgument(e.to_string()))?;
    }
    let (entrypoint, command) = split_entrypoint(&req);
    let asked = ProcessOptions {
        command,
        env: req.env.clone(),
        workdir: req.working_dir.clone(),
        user: req.user.clone(),
        tty: req.stdio.tty,
        interactive: req.stdio.open_stdin,
    };
    let mut process =
        image::merge_config(&asked, &image.config, entrypoint.as_deref(), &image.layers)
            .map_err(|e| BackendError::InvalidArgument(format!("{e:#}")))?;
    if let Some(user) = &req.user {
        process.user = Some(
            image::numeric_user(user, &image.layers)
                .map_err(|e| BackendError::InvalidArgument(format!("{e:#}")))?,
        );
    }
    let hostname = req.hostname.clone().unwrap_or_else(|| id[..12].to_string());
    let mut spec: ProcessSpec = build_spec(&process, Some(&hostname), &caller(req.console_size))
        .map_err(|e| BackendError::InvalidArgument(format!("{e:#}")))?;
    spec.rlimits = req.ulimits.clone();
    spec.pids_limit = req.pids_limit;
    let nics = super::networks::joined_count(&req);
    let mounts = volumes::resolve(inner, &req.mounts, nics)?;
    spec.mounts = volumes::vm_mounts(&mounts).1;
    let now = std::time::SystemTime::now();
    let mut record = ContainerRecord {
        id: id.clone(),
        name: String::new(),
        created: rfc3339(now),
        created_unix: now_unix(),
        image_id: image.config_digest.to_string(),
        layers: image.layers.clone(),
        process: spec,
        cpus: cpus_of(&req)?,
        memory_mib: memory_of(&req)?,
        state: RunState::default(),
        request: req,
        mounts,
    };
    if let Some(bytes) = record.request.storage_size {
        upper_disk(inner, &id, bytes)
            .await
            .inspect_err(|_| volumes::remove_anonymous(inner, &record))?;
    }
    inner
        .images
        .pin(&holder(&id), &image)
        .map_err(|e| internal(format!("pinning the image: {e}")))?;
    let inserted = match record.request.name.clone() {
        Some(name) => {
            record.name = name;
            inner.store.insert(&record)
        }
        None => {
            let mut result = Ok(());
            for attempt in 0..2 {
                record.name = generated_name(&id, attempt);
                result = inner.store.insert(&record);
                if result.is_ok() {
                    break;
                }
            }
            result
        }
    };
    if let Err(e) = inserted {
        let _ = inner.images.unpin(&holder(&id));
        volumes::remove_anonymous(inner, &record);
        inner.paths(&id).remove();
        return Err(match e {
            super::store::StoreError::NameInUse(name) => BackendError::Conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use. You have to remove \
                 (or rename) that container to be able to reuse that name."
            )),
            e => internal(e),
        });
    }
    inner.event("create", &record, &[]);
    Ok(record)
}

/// `--storage-opt size=`: the container's directory with the ext4 image its upper layer will
/// live in (formatting it takes a moment: off the async threads).
async fn upper_disk(inner: &Inner, id: &str, bytes: u64) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let paths = inner.paths(id);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&paths.dir)
        .map_err(internal)?;
    let image = paths.upper_disk();
    let made = tokio::task::spawn_blocking(move || skiff_vmm::loop_disk::create(&image, bytes))
        .await
        .map_err(internal)?;
    made.map_err(|e| {
        paths.remove();
        match e {
            DiskError::TooSmall { .. } => BackendError::InvalidArgument(e.to_string()),
            e => internal(format!("--storage-opt size: {e}")),
        }
    })
}

/// The spec of an exec session: the container's environment, directory and user unless the
/// request names its own.
pub fn exec_spec(record: &ContainerRecord, config: &ExecConfig) -> Result<ProcessSpec> {
    let base = &record.process;
    let mut env = base.env.clone();
    env.extend(config.env.iter().cloned());
    let user = match &config.user {
        Some(u) => Some(
            image::numeric_user(u, &record.layers)
                .map_err(|e| BackendError::InvalidArgument(format!("{e:#}")))?,
        ),
        None => Some(format!("{}:{}", base.uid, base.gid)),
    };
    let process = ProcessOptions {
        command: config.cmd.clone(),
        env,
        workdir: config
            .working_dir
            .clone()
            .or_else(|| Some(base.cwd.clone())),
        user,
        tty: config.tty,
        interactive: config.attach_stdin,
    };
    let mut spec = build_spec(&process, None, &caller(config.console_size))
        .map_err(|e| BackendError::InvalidArgument(format!("{e:#}")))?;
    if config.user.is_none() {
        spec.additional_gids = base.additional_gids.clone();
    }
    // The container's ulimits hold for exec'd processes too, as in Docker.
    spec.rlimits = base.rlimits.clone();
    Ok(spec)
}

/// The image's `Volumes` become anonymous volumes, unless the request mounts something there.
fn add_image_volumes(mounts: &mut Vec<MountRequest>, config: &RuntimeConfig) -> Result<()> {
    for path in config.volumes.iter().flat_map(|v| v.keys()) {
        check_target(path).map_err(|e| {
            BackendError::InvalidArgument(format!("the image's volume {path:?}: {e}"))
        })?;
        let clean = |p: &str| p.trim_end_matches('/').to_string();
        if !mounts.iter().any(|m| clean(&m.target) == clean(path)) {
            mounts.push(MountRequest {
                kind: MountKind::Volume {
                    name: None,
                    no_copy: false,
                },
                target: clean(path),
                read_only: false,
            });
        }
    }
    Ok(())
}

/// A signal as the API sends it: `SIGKILL`, `KILL`, `kill` or `9`.
pub fn parse_signal(signal: &str) -> Result<i32> {
    const NAMES: [(&str, i32); 16] = [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("ILL", libc::SIGILL),
        ("TRAP", libc::SIGTRAP),
        ("ABRT", libc::SIGABRT),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("SEGV", libc::SIGSEGV),
        ("USR2", libc::SIGUSR2),
        ("PIPE", libc::SIGPIPE),
        ("ALRM", libc::SIGALRM),
        ("TERM", libc::SIGTERM),
        ("CHLD", libc::SIGCHLD),
        ("CONT", libc::SIGCONT),
        ("WINCH", libc::SIGWINCH),
    ];
    let upper = signal.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Ok(n) = name.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| BackendError::InvalidArgument(format!("Invalid signal: {signal}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_signals_and_sizes() {
        assert!(check_name("web-1.a_b").is_ok());
        for bad in ["", "a", "-x", "a b", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("term").unwrap(), 15);
        assert_eq!(parse_signal("10").unwrap(), 10);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("0").is_err());
        let id = "ab".repeat(32);
        assert_ne!(generated_name(&id, 0), generated_name(&id, 1));
        let mut req = CreateRequest {
            nano_cpus: Some(1_500_000_000),
            memory_bytes: Some(100 << 20),
            ..CreateRequest::default()
        };
        assert_eq!(cpus_of(&req).unwrap(), 2);
        assert_eq!(memory_of(&req).unwrap(), 100);
        req.nano_cpus = Some(1_000_000_000_000);
        assert!(cpus_of(&req).is_err());
        req.entrypoint = Some(vec!["a".into(), "b".into()]);
        req.cmd = Some(vec!["c".into()]);
        assert_eq!(
            split_entrypoint(&req),
            (Some("a".into()), vec!["b".into(), "c".into()])
        );
    }
}
