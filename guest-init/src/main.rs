//! `skiff-init`: PID 1 of a skiff microVM.
//!
//! Boot: mount the staging tmpfs for the container's `/etc` files in the initramfs, switch into
//! the virtio-fs container root, mount the pseudo file systems, bring up loopback, connect to the
//! host on vsock port 1024, receive the spec, configure the network, mount the volumes, provide
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (when the spec has a network), start the
//! container process and serve it; serve `exec` sessions (and `top`'s process lists) on vsock
//! port 1025 meanwhile. When the main process exits: kill what is left (exec'd processes too, as
//! Docker stops a container), let every open exec session report its status, report the main
//! status, sync and power the VM off. Any failure (a panic too) also ends in a power-off, after
//! telling the host over vsock when the connection is up.

use skiff_guest_init::etc_files::Staging;
use skiff_guest_init::exec_sessions::ExecSessions;
use skiff_guest_init::network::NetworkPlan;
use skiff_guest_init::protocol::{self, Message, CONTROL_PORT, EXEC_PORT};
use skiff_guest_init::reaper::Reaper;
use skiff_guest_init::session::Request;
use skiff_guest_init::{cgroup, processes, session, system, volumes, vsock};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The host's vsock CID.
const HOST_CID: u32 = 2;
/// How long to retry connecting to the host (it listens before starting the VM).
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);
/// How long to wait for the host to close the control stream after the exit report.
const GOODBYE_TIMEOUT_MS: libc::c_int = 2000;
/// Exit code for guest-init's own failures (docker uses 125 for the runtime's errors).
const INIT_FAILURE: i32 = 125;
/// How long killed exec sessions get to report their status before the power-off (each waits up
/// to GOODBYE_TIMEOUT_MS for its host to close).
const EXEC_REPORT_PATIENCE: Duration = Duration::from_secs(3);

/// Where the staging tmpfs for the container's `/etc` files is mounted in the initramfs, hidden
/// under the container root once that is `/`.
const ETC_STAGING: &std::ffi::CStr = c"/skiff-etc";

/// The open exec sessions.
static EXEC_SESSIONS: ExecSessions = ExecSessions::new();

/// Control connection descriptor, for the panic hook's last word (-1 while not connected).
static CONTROL_FD: AtomicI32 = AtomicI32::new(-1);

fn log(message: &str) {
    // fd 2 is the console the kernel opened for init; the VMM keeps its tail for crash reports.
    let _ = writeln!(std::io::stderr(), "skiff-init: {message}");
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!("guest-init panicked: {info}");
        log(&message);
        let fd = CONTROL_FD.load(Ordering::SeqCst);
        if fd >= 0 {
            let report = protocol::Message::Error(protocol::ErrorReport {
                message,
                exit_code: INIT_FAILURE,
            });
            if let Ok(frame) = report.encode() {
                // SAFETY: writes a valid buffer to the control socket, which is never closed.
                unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
            }
        }
        system::power_off(INIT_FAILURE as u8);
    }));
}

fn main() {
    install_panic_hook();
    system::ensure_standard_fds();
    if std::process::id() != 1 {
        log("must run as PID 1 inside a skiff microVM");
        std::process::exit(INIT_FAILURE);
    }
    let code = boot_and_serve();
    system::power_off(code as u8);
}

/// Everything up to the end of the main process; returns the code for the power-off byte.
fn boot_and_serve() -> i32 {
    // Needed only when the spec has a network; a failure is reported then.
    let staging = Staging::prepare(ETC_STAGING);
    let prepared = system::switch_to_container_root().and_then(|()| {
        system::mount_container_filesystems()?;
        if let Err(e) = system::loopback_up() {
            // Not fatal: a kernel without networking still runs containers.
            log(&format!("loopback: {e}"));
        }
        Ok(())
    });
    let mut control = match vsock::connect(HOST_CID, CONTROL_PORT, CONNECT_PATIENCE) {
        Ok(stream) => stream,
        Err(e) => {
            log(&format!(
                "cannot connect to the host on vsock port {CONTROL_PORT}: {e}"
            ));
            if let Err(e) = prepared {
                log(&e.to_string());
            }
            return INIT_FAILURE;
        }
    };
    CONTROL_FD.store(control.as_raw_fd(), Ordering::SeqCst);
    if let Err(e) = prepared {
        let message = format!("guest-init setup failed: {e}");
        log(&message);
        session::report_error(&mut control, message, INIT_FAILURE);
        goodbye(&control);
        return INIT_FAILURE;
    }
    let spec = match session::accept_spec(&mut control) {
        Ok(spec) => spec,
        Err(e) => {
            let message = format!("control handshake failed: {e}");
            log(&message);
            session::report_error(&mut control, message, INIT_FAILURE);
            return INIT_FAILURE;
        }
    };
    let hostname = spec.hostname.as_deref().filter(|n| !n.is_empty());
    if let Some(name) = hostname {
        if let Err(e) = system::set_hostname(name) {
            log(&e.to_string());
        }
    }
    let network = match spec.network.as_ref() {
        None => None,
        Some(network) => match NetworkPlan::new(network, hostname) {
            Ok(plan) => Some(plan),
            Err(e) => return fail_start(&mut control, format!("the container's network: {e}")),
        },
    };
    if let Some(Err(e)) = network.as_ref().map(NetworkPlan::configure_links) {
        return fail_start(
            &mut control,
            format!("configuring the container's network: {e}"),
        );
    }
    // Before the volumes: a limit that cannot be set fails the start, never a silent no-limit.
    if let Err(e) = cgroup::create(spec.pids_limit) {
        if spec.pids_limit.is_some() {
            return fail_start(&mut control, format!("the container's pids limit: {e}"));
        }
        log(&format!("the container's cgroup: {e}"));
    }
    // A volume that cannot be mounted fails the start, as in Docker (never a silent empty dir).
    if let Err(e) = volumes::mount_all(&spec.mounts) {
        return fail_start(
            &mut control,
            format!("mounting the container's volumes: {e}"),
        );
    }
    // After the volumes, as Docker mounts by path order: a volume on /etc gets the files too.
    if let Some(plan) = &network {
        let provided = match &staging {
            Ok(staging) => staging
                .provide(&plan.etc, Path::new("/etc"))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = provided {
            let message = format!("providing /etc/hosts, /etc/hostname and /etc/resolv.conf: {e}");
            return fail_start(&mut control, message);
        }
    }
    drop(staging);
    start_exec_server();
    let code = match session::run(&mut control, &spec, Reaper::global()) {
        Ok(code) => code,
        Err(e) => {
            log(&format!("main session: {e}"));
            INIT_FAILURE
        }
    };
    end_exec_sessions();
    // SAFETY: sync(2) has no arguments.
    unsafe { libc::sync() };
    goodbye(&control);
    code
}

/// Reports a failure before the container's process started; the start fails with it.
fn fail_start(control: &mut File, message: String) -> i32 {
    log(&message);
    session::report_error(control, message, INIT_FAILURE);
    goodbye(control);
    INIT_FAILURE
}

/// The container stops with its main process: everything else dies, and each open exec session
/// reports how its process ended (killed: 137) before the VM goes.
fn end_exec_sessions() {
    let open = EXEC_SESSIONS.close();
    // SAFETY: kill(2) of every process but PID 1 (ourselves); kernel threads ignore it.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    if open > 0 && !EXEC_SESSIONS.wait_all_ended(EXEC_REPORT_PATIENCE) {
        log("exec sessions did not end in time; powering off without their reports");
    }
}

fn goodbye(stream: &File) {
    session::goodbye(stream, GOODBYE_TIMEOUT_MS);
}

fn start_exec_server() {
    let listener = match vsock::Listener::bind(EXEC_PORT) {
        Ok(l) => l,
        Err(e) => {
            log(&format!(
                "exec unavailable: cannot listen on vsock port {EXEC_PORT}: {e}"
            ));
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("exec-server".into())
        .spawn(move || loop {
            match listener.accept() {
                Ok(stream) => serve_exec(stream),
                Err(e) => {
                    log(&format!("exec accept: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
    if let Err(e) = spawned {
        log(&format!("exec unavailable: {e}"));
    }
}

fn serve_exec(mut stream: File) {
    let spawned = std::thread::Builder::new()
        .name("exec".into())
        .spawn(move || {
            let spec = match session::accept_request(&mut stream) {
                Ok(Request::Run(spec)) => spec,
                Ok(Request::ListProcesses) => {
                    let list = processes::list(Path::new("/proc"), Path::new("/etc/passwd"));
                    if let Err(e) = protocol::write_message(&mut stream, &Message::Processes(list))
                    {
                        log(&format!("process list: {e}"));
                    }
                    goodbye(&stream);
                    return;
                }
                Err(e) => {
                    log(&format!("exec handshake: {e}"));
                    return;
                }
            };
            let Some(_open) = EXEC_SESSIONS.admit() else {
                let message = "the container is stopping".to_string();
                session::report_error(&mut stream, message, INIT_FAILURE);
                return;
            };
            if let Err(e) = session::run(&mut stream, &spec, Reaper::global()) {
                log(&format!("exec session: {e}"));
            }
            // The exit report must reach the host before this session counts as ended.
            goodbye(&stream);
        });
    if let Err(e) = spawned {
        log(&format!("exec: cannot start a thread: {e}"));
    }
}
