//! A container's life: create (image pinned, process spec built), start (a detached VMM with the
//! container session), the watcher that records how its VM ended and applies the restart policy,
//! stop/kill (through the VMM's attach socket, then the VMM itself), remove, and recovery when
//! the daemon starts.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use skiff_protocol::{Message, SignalMsg};
use skiff_vmm::container::ContainerSpec;
use skiff_vmm::spec::{RootfsSpec, VsockSpec, DEFAULT_GUEST_CID};
use skiff_vmm::VmSpec;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::health;
use super::network::{guest_net, Endpoint};
use super::record::{ContainerRecord, RunState, Status};
use super::vmm_process::{self, ContainerPaths};
use super::{internal, now_unix, Inner, Result};
use crate::cgroup::{self, VmCgroup, VmLimits};
use crate::daemon::create::RestartPolicy;
use crate::daemon::timefmt::rfc3339;
use crate::daemon::BackendError;

/// Exit code recorded when skiff had to end the VM itself (as if SIGKILLed).
pub const KILLED_CODE: i64 = 137;
/// Exit code recorded when a VM ended without an exit report (crash, killed from outside).
const LOST_CODE: i64 = 255;
/// How long a VMM gets to create its attach socket after its start.
const ATTACH_SOCKET_WAIT: Duration = Duration::from_secs(10);
/// After a SIGKILL sent to the process, how long before the VM itself is ended.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Builds the VM of a container's run and starts its VMM; records it running.
pub(super) async fn start(inner: &Arc<Inner>, id: &str) -> Result<()> {
    let lock = inner.op_lock(id);
    let _guard = lock.lock().await;
    let mut record = inner.record(id)?;
    if record.running() && record.state.status != Status::Restarting {
        return Err(BackendError::NotModified);
    }
    inner.config.check_run_files().map_err(internal)?;
    let paths = inner.paths(id);
    // Held until the VMM has started with its own copy of the lock (or failed to).
    let lease = inner
        .config
        .jail_lease()
        .map_err(|e| internal(format!("{e:#}")))?;
    paths.create(lease.as_ref()).map_err(internal)?;
    let _ = std::fs::remove_file(paths.exit_file());
    let waiting = inner
        .waiting_attach
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .copied()
        .unwrap_or(0);
    let attachments = super::networks::attach(inner, &record).await?;
    let endpoints: Vec<Endpoint> = attachments.iter().map(|a| a.endpoint.clone()).collect();
    let taps: Vec<&OwnedFd> = attachments.iter().map(|a| &a.tap).collect();
    let spec = vm_spec(inner, &record, &paths, waiting > 0, &endpoints);
    let cgroup = vm_cgroup(inner, &record);
    let spawned = cgroup.and_then(|cgroup| {
        let spawned = spec
            .to_json()
            .map_err(internal)
            .and_then(|json| std::fs::write(paths.vm_spec(), json).map_err(internal))
            .and_then(|()| {
                let jail = lease.as_ref();
                vmm_process::spawn(&inner.config.vmm, &paths, &taps, cgroup.as_ref(), jail)
                    .map_err(|e| internal(format!("starting {}: {e}", inner.config.vmm.display())))
            });
        if let (Err(_), Some(cgroup)) = (&spawned, &cgroup) {
            cgroup.remove();
        }
        spawned
    });
    // The VMM holds the taps and its uid's lease now (or nobody does, and they are gone).
    drop(taps);
    drop(attachments);
    drop(lease);
    let process = spawned.inspect_err(|_| inner.networks.detach(id))?;
    let now = std::time::SystemTime::now();
    record.state = RunState {
        status: Status::Running,
        vmm: Some(process),
        started_at: rfc3339(now),
        finished_at: record.state.finished_at.clone(),
        exit_code: 0,
        error: String::new(),
        restart_count: record.state.restart_count,
        stopped_by_user: false,
        started_unix: now_unix(),
        finished_unix: record.state.finished_unix,
        endpoints,
        oom_killed: false,
        health: record
            .request
            .healthcheck
            .as_ref()
            .and_then(health::Plan::of)
            .map(|_| health::Health::default()),
    };
    inner.save(&record)?;
    inner.phase(id).send_modify(|p| {
        p.starts += 1;
        p.running = true;
    });
    inner.event("start", &record, &[]);
    watch(inner.clone(), record);
    Ok(())
}

fn vm_spec(
    inner: &Inner,
    record: &ContainerRecord,
    paths: &ContainerPaths,
    wait: bool,
    endpoints: &[Endpoint],
) -> VmSpec {
    let req = &record.request;
    let default = skiff_logfile::writer::LogLimits::default();
    let log_limits = skiff_logfile::writer::LogLimits {
        max_bytes: req.log.max_size.unwrap_or(default.max_bytes),
        max_files: req.log.max_file.unwrap_or(default.max_files),
    };
    VmSpec {
        cpus: record.cpus,
        memory_mib: record.memory_mib,
        init: Some(inner.config.init.clone()),
        rootfs: Some(RootfsSpec {
            layers: record.layers.clone(),
            upper: Some(paths.upper()),
            upper_disk: req.storage_size.map(|_| paths.upper_disk()),
        }),
        vsock: Some(VsockSpec {
            guest_cid: DEFAULT_GUEST_CID,
            uds: paths.vsock(),
        }),
        shares: super::volumes::vm_mounts(&record.mounts).0,
        net: guest_net::nics(endpoints),
        container: Some(ContainerSpec {
            process: guest_net::with_network(
                &record.process,
                endpoints,
                &endpoints
                    .first()
                    .map(|e| inner.networks.dns_for(e))
                    .unwrap_or_default(),
            ),
            log: paths.log(),
            log_limits,
            exit_file: paths.exit_file(),
            attach: paths.attach(),
            open_stdin: req.stdio.open_stdin,
            stdin_once: req.stdio.stdin_once,
            wait_for_attach: wait,
        }),
        ..VmSpec::new(inner.config.kernel.clone())
    }
}

/// The cgroup the container's VMM will run in, when skiff makes them.
fn vm_cgroup(inner: &Inner, record: &ContainerRecord) -> Result<Option<VmCgroup>> {
    let Some(root) = &inner.config.cgroup_root else {
        return Ok(None);
    };
    let limits = VmLimits {
        vcpus: record.cpus,
        nano_cpus: record.request.nano_cpus,
        memory_mib: record.memory_mib,
    };
    VmCgroup::create(root, &record.id, &limits)
        .map(Some)
        .map_err(internal)
}

/// Waits for the container's VMM to end on a task of its own, then records how it ended.
pub(super) fn watch(inner: Arc<Inner>, record: ContainerRecord) {
    let Some(process) = record.state.vmm.clone() else {
        return;
    };
    health::monitor(inner.clone(), record.id.clone());
    tokio::spawn(async move {
        if let Err(e) = vmm_process::wait_for_end(&process).await {
            tracing::warn!(id = record.id, "waiting for the VMM: {e}");
        }
        let oom_killed = release_cgroup(&inner, &record.id);
        if let Err(e) = ended(&inner, &record.id, oom_killed).await {
            tracing::warn!(id = record.id, "recording the end: {e}");
        }
    });
}

/// Removes the cgroup of a VMM that ended; whether the kernel killed it for its memory limit.
fn release_cgroup(inner: &Inner, id: &str) -> bool {
    inner.config.cgroup_root.as_ref().is_some_and(|root| {
        let dir = root.join(id);
        let killed = cgroup::oom_killed(&dir);
        cgroup::remove(&dir);
        killed
    })
}

/// The VM of a running container is gone: record its exit (from the report, or as lost), then
/// restart or remove it as its policy says.
async fn ended(inner: &Arc<Inner>, id: &str, oom_killed: bool) -> Result<()> {
    let restart = {
        let lock = inner.op_lock(id);
        let _guard = lock.lock().await;
        let mut record = inner.record(id)?;
        if !record.running() {
            return Ok(());
        }
        let paths = inner.paths(id);
        let (code, error) = match paths.exit() {
            Some(exit) => (i64::from(exit.code()), failed_message(&exit)),
            None if oom_killed => (
                KILLED_CODE,
                "the VM was killed: its VMM reached its cgroup's memory limit".to_string(),
            ),
            None if record.state.stopped_by_user => (KILLED_CODE, String::new()),
            None => (
                LOST_CODE,
                format!("the VM ended without an exit report: {}", paths.vmm_tail()),
            ),
        };
        let now = std::time::SystemTime::now();
        record.state.status = Status::Exited;
        record.state.vmm = None;
        record.state.endpoints.clear();
        inner.networks.detach(id);
        record.state.exit_code = code;
        record.state.error = error;
        record.state.oom_killed = oom_killed;
        record.state.finished_at = rfc3339(now);
        record.state.finished_unix = now_unix();
        let restart = should_restart(&record);
        if restart {
            record.state.status = Status::Restarting;
            record.state.restart_count += 1;
        }
        inner.save(&record)?;
        inner.phase(id).send_modify(|p| {
            p.exits += 1;
            p.exit_code = code;
            p.running = restart;
        });
        inner.event("die", &record, &[("exitCode", code.to_string())]);
        if !restart && record.request.auto_remove {
            drop(_guard);
            // `--rm` takes the anonymous volumes along, as Docker's does.
            return remove(inner, id, true, true).await;
        }
        restart.then_some(record.state.restart_count)
    };
    if let Some(count) = restart {
        // Docker's back-off: 100 ms doubling per consecutive restart, at most a minute.
        let delay = Duration::from_millis(100u64 << count.clamp(0, 9) as u32);
        tokio::time::sleep(delay.min(Duration::from_secs(60))).await;
        // A stop or removal during the back-off cancels the restart.
        let due = inner
            .record(id)
            .is_ok_and(|r| r.state.status == Status::Restarting && !r.state.stopped_by_user);
        if !due {
            return Ok(());
        }
        Box::pin(start(inner, id)).await.or_else(|e| match e {
            BackendError::NotModified => Ok(()),
            e => Err(e),
        })?;
    }
    Ok(())
}

fn failed_message(exit: &skiff_vmm::container::ContainerExit) -> String {
    match &exit.outcome {
        skiff_vmm::container::ExitOutcome::Failed(report) => report.message.clone(),
        skiff_vmm::container::ExitOutcome::Exited(_) => String::new(),
    }
}

fn should_restart(record: &ContainerRecord) -> bool {
    if record.state.stopped_by_user {
        return false;
    }
    match record.request.restart_policy {
        RestartPolicy::No => false,
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        RestartPolicy::OnFailure { max_retries } => {
            record.state.exit_code != 0
                && max_retries.is_none_or(|max| record.state.restart_count < i64::from(max))
        }
    }
}

/// Opens a connection to the container's VMM attach socket (it may still be creating it).
pub(super) async fn connect_attach(paths: &ContainerPaths) -> Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + ATTACH_SOCKET_WAIT;
    loop {
        match UnixStream::connect(paths.attach()).await {
            Ok(stream) => return Ok(stream),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(internal(format!("attaching to the container's VM: {e}")))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Delivers `signal` to the container's main process through guest-init.
pub(super) async fn send_signal(inner: &Inner, id: &str, signal: i32) -> Result<()> {
    send_control(inner, id, Message::Signal(SignalMsg { signal })).await
}

/// Sends a control frame (a signal, a resize) to the container's session, through its VMM.
pub(super) async fn send_control(inner: &Inner, id: &str, message: Message) -> Result<()> {
    let mut stream = connect_attach(&inner.paths(id)).await?;
    let frame = message.encode().map_err(internal)?;
    stream.write_all(&frame).await.map_err(internal)?;
    // Closing right away is fine: the VMM relays each frame as it reads it.
    Ok(())
}

/// Waits until the container is not running, at most `patience`; true when it ended.
pub(super) async fn wait_stopped(inner: &Inner, id: &str, patience: Duration) -> bool {
    let mut rx = inner.phase(id).subscribe();
    let ended = tokio::time::timeout(patience, rx.wait_for(|p| !p.running)).await;
    ended.is_ok()
}

/// Ends the VM itself (SIGKILL to its VMM) and waits for the watcher to record it.
pub(super) async fn kill_vm(inner: &Inner, id: &str) -> Result<()> {
    let record = inner.record(id)?;
    if let Some(process) = &record.state.vmm {
        vmm_process::signal(process, libc::SIGKILL);
    }
    wait_stopped(inner, id, Duration::from_secs(10)).await;
    Ok(())
}

/// Marks the container stopped by its user (restart policies then leave it alone). One waiting
/// to be restarted has no VM: it is stopped at once.
pub(super) async fn mark_stopped_by_user(inner: &Inner, id: &str) -> Result<()> {
    let lock = inner.op_lock(id);
    let _guard = lock.lock().await;
    let mut record = inner.record(id)?;
    record.state.stopped_by_user = true;
    let restarting = record.state.status == Status::Restarting;
    if restarting {
        record.state.status = Status::Exited;
    }
    inner.save(&record)?;
    if restarting {
        inner.phase(id).send_modify(|p| p.running = false);
    }
    Ok(())
}

/// `docker stop`: the stop signal, `timeout` seconds, then the VM is ended.
pub(super) async fn stop(inner: &Inner, id: &str, signal: i32, timeout: Duration) -> Result<()> {
    mark_stopped_by_user(inner, id).await?;
    if send_signal(inner, id, signal).await.is_err() || !wait_stopped(inner, id, timeout).await {
        kill_vm(inner, id).await?;
    }
    Ok(())
}

/// `docker kill`: the signal; for SIGKILL the VM is ended too if the process has not gone soon.
pub(super) async fn kill(inner: &Inner, id: &str, signal: i32) -> Result<()> {
    if signal == libc::SIGKILL {
        mark_stopped_by_user(inner, id).await?;
    }
    let sent = send_signal(inner, id, signal).await;
    if signal == libc::SIGKILL && (sent.is_err() || !wait_stopped(inner, id, KILL_GRACE).await) {
        kill_vm(inner, id).await?;
    }
    sent.or(Ok(()))
}

/// Removes a container (a running one only with `force`), and with `volumes` the anonymous
/// volumes it made.
pub(super) async fn remove(inner: &Arc<Inner>, id: &str, force: bool, volumes: bool) -> Result<()> {
    let record = inner.record(id)?;
    if record.running() {
        if !force {
            return Err(BackendError::Conflict(format!(
                "cannot remove container \"/{}\": container is running: stop the container before \
                 removing or force remove",
                record.name
            )));
        }
        mark_stopped_by_user(inner, id).await?;
        kill_vm(inner, id).await?;
    }
    let lock = inner.op_lock(id);
    let _guard = lock.lock().await;
    let Ok(record) = inner.record(id) else {
        return Ok(());
    };
    inner.paths(id).remove();
    if let Err(e) = inner.images.unpin(&holder(id)) {
        tracing::warn!("unpinning the image of {id}: {e}");
    }
    inner.store.delete(id).map_err(internal)?;
    if volumes {
        super::volumes::remove_anonymous(inner, &record);
    }
    inner.event("destroy", &record, &[]);
    inner.phase(id).send_modify(|p| p.removed = true);
    inner
        .phases
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id);
    Ok(())
}

/// The image store's pin holder for a container.
pub(super) fn holder(id: &str) -> String {
    format!("container:{id}")
}

/// At daemon start: watch the VMs still running, record the end of those that ended meanwhile,
/// start those whose policy says so (`always`; `unless-stopped` unless a user stopped it).
pub(super) async fn recover(inner: &Arc<Inner>) -> anyhow::Result<()> {
    for record in inner.store.all()? {
        let id = record.id.clone();
        match &record.state.vmm {
            Some(process) if record.running() && vmm_process::alive(process) => {
                tracing::info!(id, pid = process.pid, "re-attached to a running container");
                let all = super::networks::all(inner).unwrap_or_default();
                for endpoint in &record.state.endpoints {
                    inner.networks.adopt(&id, endpoint, &all).await;
                }
                inner.phase(&id).send_modify(|p| p.running = true);
                watch(inner.clone(), record);
            }
            _ if record.running() => {
                inner.phase(&id).send_modify(|p| p.running = true);
                let oom_killed = release_cgroup(inner, &id);
                ended(inner, &id, oom_killed).await?;
            }
            _ => {
                let policy = record.request.restart_policy;
                let again = matches!(policy, RestartPolicy::Always)
                    || (matches!(policy, RestartPolicy::UnlessStopped)
                        && !record.state.stopped_by_user);
                if again && record.state.status == Status::Exited {
                    if let Err(e) = start(inner, &id).await {
                        tracing::warn!(id, "restarting at daemon start: {e}");
                    }
                }
            }
        }
    }
    Ok(())
}
