//! Each case runs in a child process (this test binary again, running only [`child`]): a thread
//! there installs one kind's filter and makes one call; the parent checks how the child ended.

use std::process::{Command, Output};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::devices::bus::BusDevice;
use crate::virtio::fs::{FsDevice, Sharing};
use crate::virtio::mmio::MmioTransport;
use crate::virtio::net::NetDevice;
use crate::virtio::rng::RngDevice;
use crate::virtio::vsock::VsockDevice;
use crate::virtio::VirtioDevice;

/// Names the case the child runs; unset in the ordinary test run.
const CASE_VAR: &str = "SKIFF_SECCOMP_TEST_CASE";
/// The thread the case runs on (what the report must name).
const CASE_THREAD: &str = "seccomp-case";

/// A thread kind and one call its thread makes after installing that kind's filter.
struct Case {
    name: &'static str,
    kind: ThreadKind,
    call: fn() -> i64,
}

// The calls get no pointers or only pointers to literals, and invalid descriptors (-1): none
// changes anything in the process.
const CASES: &[Case] = &[
    Case {
        name: "vcpu-kvm-run",
        kind: ThreadKind::Vcpu,
        // SAFETY: see CASES.
        call: || unsafe { libc::ioctl(-1, 0xae80) as i64 },
    },
    Case {
        name: "vcpu-other-ioctl",
        kind: ThreadKind::Vcpu,
        // TIOCSTI: pushing input into a terminal, the classic sandbox escape.
        // SAFETY: see CASES.
        call: || unsafe { libc::ioctl(-1, libc::TIOCSTI) as i64 },
    },
    Case {
        name: "vsock-unix-socket",
        kind: ThreadKind::VsockWorker,
        // SAFETY: see CASES.
        call: || unsafe { libc::close(libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)) as i64 },
    },
    Case {
        name: "vsock-inet-socket",
        kind: ThreadKind::VsockWorker,
        // SAFETY: see CASES.
        call: || unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) as i64 },
    },
    Case {
        name: "session-open-to-write",
        kind: ThreadKind::Session,
        // SAFETY: see CASES.
        call: || unsafe {
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC;
            libc::openat(-1, c"x".as_ptr(), flags, 0o600) as i64
        },
    },
    Case {
        name: "session-open-to-read",
        kind: ThreadKind::Session,
        // SAFETY: see CASES.
        call: || unsafe { libc::openat(-1, c"x".as_ptr(), libc::O_RDONLY) as i64 },
    },
    Case {
        name: "session-thread",
        kind: ThreadKind::Session,
        call: || {
            let started = std::thread::spawn(|| 7).join();
            i64::from(started.is_ok_and(|n| n == 7))
        },
    },
    Case {
        name: "session-fork",
        kind: ThreadKind::Session,
        // SAFETY: see CASES.
        call: || unsafe { libc::fork() as i64 },
    },
    Case {
        name: "fs-creds",
        kind: ThreadKind::FsWorker,
        // The effective uid only (here to itself: -1 changes nothing, root or not).
        // SAFETY: see CASES.
        call: || unsafe { libc::syscall(libc::SYS_setresuid, -1, -1, -1) as i64 },
    },
    Case {
        name: "fs-real-uid",
        kind: ThreadKind::FsWorker,
        // SAFETY: see CASES.
        call: || unsafe { libc::syscall(libc::SYS_setresuid, 0, -1, -1) as i64 },
    },
    Case {
        name: "main-kick",
        kind: ThreadKind::Main,
        // SAFETY: see CASES.
        call: || unsafe {
            // Left pending: the thread ends with it (a delivered kick would end the process).
            block_kick();
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::gettid(),
                libc::SIGRTMIN(),
            )
        },
    },
    Case {
        name: "main-other-signal",
        kind: ThreadKind::Main,
        // SAFETY: see CASES.
        call: || unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), -1, libc::SIGKILL) },
    },
    Case {
        name: "signals-exec",
        kind: ThreadKind::Signals,
        // SAFETY: see CASES.
        call: || unsafe { libc::execv(c"/bin/true".as_ptr(), std::ptr::null()) as i64 },
    },
];

/// Keeps the kick pending instead of delivered (no handler is installed in the child).
fn block_kick() {
    // SAFETY: signal-set manipulation on a local, initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGRTMIN());
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Not a test of its own: the body of the child processes (it does nothing in the usual run).
#[test]
fn child() {
    let Ok(name) = std::env::var(CASE_VAR) else {
        return;
    };
    let case = CASES.iter().find(|c| c.name == name).expect("known case");
    let (kind, call) = (case.kind, case.call);
    let returned = std::thread::Builder::new()
        .name(CASE_THREAD.into())
        .spawn(move || {
            apply(kind).expect("filter installed");
            call()
        })
        .expect("case thread")
        .join()
        .expect("case thread ran");
    println!("returned {returned}");
}

fn run_case(name: &str) -> Output {
    let exe = std::env::current_exe().expect("test binary");
    Command::new(exe)
        .args(["--exact", "seccomp::tests::child", "--nocapture"])
        .env(CASE_VAR, name)
        .output()
        .expect("child runs")
}

/// The case's thread returned (its call and its exit were allowed) with `value`.
fn assert_allowed(name: &str, value: i64) {
    let out = run_case(name);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {:?}\n{stderr}", out.status);
    assert!(
        stdout.contains(&format!("returned {value}\n")),
        "{name}: {stdout}"
    );
}

/// The case's call was trapped: the child exited with the report, naming the call and thread.
fn assert_killed(name: &str, syscall: libc::c_long, kind: ThreadKind) {
    let out = run_case(name);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(i32::from(EXIT_CODE)),
        "{name}: {stderr}"
    );
    let report = format!(
        "skiff-vmm: killed by its seccomp filter: syscall {syscall} in thread {CASE_THREAD} ({} \
         filter)\n",
        kind.name()
    );
    assert!(stderr.contains(&report), "{name}: {stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("returned"));
}

#[test]
fn every_kind_has_a_filter_that_compiles() {
    for (i, kind) in ThreadKind::ALL.into_iter().enumerate() {
        assert_eq!(kind.index(), i, "ALL is in declaration order");
        let programs = lists::compile(kind).unwrap_or_else(|e| panic!("{e}"));
        assert!(programs.iter().all(|p| !p.is_empty()), "{}", kind.name());
    }
}

#[test]
fn ioctls_are_filtered_by_request() {
    assert_allowed("vcpu-kvm-run", -1);
    assert_killed("vcpu-other-ioctl", libc::SYS_ioctl, ThreadKind::Vcpu);
}

#[test]
fn sockets_are_filtered_by_family() {
    assert_allowed("vsock-unix-socket", 0);
    assert_killed(
        "vsock-inet-socket",
        libc::SYS_socket,
        ThreadKind::VsockWorker,
    );
}

#[test]
fn the_session_opens_files_only_to_write_them() {
    assert_allowed("session-open-to-write", -1);
    assert_killed(
        "session-open-to-read",
        libc::SYS_openat,
        ThreadKind::Session,
    );
}

#[test]
fn the_session_starts_threads_but_no_processes() {
    assert_allowed("session-thread", 1);
    assert_killed("session-fork", libc::SYS_clone, ThreadKind::Session);
}

#[test]
fn the_file_server_switches_only_its_effective_ids() {
    assert_allowed("fs-creds", 0);
    assert_killed("fs-real-uid", libc::SYS_setresuid, ThreadKind::FsWorker);
}

#[test]
fn the_main_thread_sends_only_the_kick() {
    assert_allowed("main-kick", 0);
    assert_killed("main-other-signal", libc::SYS_tgkill, ThreadKind::Main);
}

#[test]
fn no_thread_may_exec() {
    assert_killed("signals-exec", libc::SYS_execve, ThreadKind::Signals);
}

#[test]
fn the_report_is_built_without_allocating() {
    let mut line = Line::default();
    line.push(b"syscall ");
    line.push_number(-12);
    line.push(b" ");
    line.push_number(0);
    line.push(b" ");
    line.push_number(i32::MAX);
    assert_eq!(&line.buf[..line.len], b"syscall -12 0 2147483647");
    line.push(&[b'x'; 400]);
    assert_eq!(
        line.len,
        line.buf.len(),
        "a long name is cut, not overflowed"
    );
}

/// The driver's side of bringing a device up through its MMIO registers (as a vCPU thread runs
/// it): VERSION_1, every queue set up in `mem`, DRIVER_OK; the status it ends with.
fn bring_up(t: &mut MmioTransport, queues: usize) -> u32 {
    use virtio_bindings::virtio_config::*;
    let wr = |t: &mut MmioTransport, off: u64, v: u32| t.write(off, &v.to_le_bytes());
    let mut status = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;
    wr(t, 0x70, status);
    wr(t, 0x24, 1);
    wr(t, 0x20, 1 << (VIRTIO_F_VERSION_1 - 32));
    status |= VIRTIO_CONFIG_S_FEATURES_OK;
    wr(t, 0x70, status);
    for q in 0..queues {
        let base = 0x1000 * (q as u64 + 1);
        wr(t, 0x30, q as u32);
        wr(t, 0x38, 16);
        for (reg, addr) in [(0x80, base), (0x90, base + 0x100), (0xa0, base + 0x200)] {
            wr(t, reg, addr as u32);
        }
        wr(t, 0x44, 1);
    }
    wr(t, 0x70, status | VIRTIO_CONFIG_S_DRIVER_OK);
    let mut read = [0u8; 4];
    t.read(0x70, &mut read);
    u32::from_le_bytes(read)
}

#[test]
fn a_vcpu_thread_activates_and_resets_every_device_under_its_filter() {
    let tmp = tempfile::tempdir().unwrap();
    let passt = std::os::unix::net::UnixListener::bind(tmp.path().join("passt.sock")).unwrap();
    let stream = NetDevice::open_backend(None, None, Some(&tmp.path().join("passt.sock")));
    let devices: Vec<Box<dyn VirtioDevice>> = vec![
        Box::new(RngDevice::new().unwrap()),
        Box::new(VsockDevice::new(3, &tmp.path().join("v.sock")).unwrap()),
        Box::new(FsDevice::new("share", tmp.path(), Sharing::Shared).unwrap()),
        Box::new(NetDevice::new(stream.unwrap(), None, None).unwrap()),
    ];
    // Made where the VMM makes them: on the thread that starts the vCPUs, before.
    let mem = crate::virtio::test_driver::guest_memory();
    let mut transports: Vec<(MmioTransport, usize)> = devices
        .into_iter()
        .map(|d| {
            let queues = d.queue_max_sizes().len();
            let irq = EventFd::new(EFD_NONBLOCK).unwrap();
            (MmioTransport::new(d, mem.clone(), irq).unwrap(), queues)
        })
        .collect();
    let (back, returned) = std::sync::mpsc::channel();
    let builder = std::thread::Builder::new().name("vcpu0".into());
    spawn(builder, ThreadKind::Vcpu, move || {
        let mut statuses = Vec::new();
        for (t, queues) in &mut transports {
            // Up, reset, up again: activation, stopping the job, the next job.
            statuses.push(bring_up(t, *queues));
            t.write(0x70, &0u32.to_le_bytes());
            statuses.push(bring_up(t, *queues));
        }
        let _ = back.send((statuses, transports));
    })
    .unwrap();
    // Had the filter trapped a call, this process would have exited (159) by now.
    let (statuses, transports) = returned.recv().unwrap();
    assert!(statuses.iter().all(|&s| s == 0xf), "{statuses:x?}");
    drop((transports, passt));
}
