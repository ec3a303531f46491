//! A seccomp filter per thread: each kind of VMM thread gets an allow-list of the system calls
//! its job needs ([`lists`]), installed by the thread itself after its setup and before the guest
//! runs (the vCPUs wait for the main thread's go, which comes once every filter is in).
//!
//! A call outside the list traps (`SECCOMP_RET_TRAP`): the SIGSYS handler writes the syscall
//! number and the thread to stderr and exits with [`EXIT_CODE`], which the host reports as "killed
//! by its seccomp filter". Threads started by a filtered thread inherit its filter (the attach
//! clients' threads), so only thread kinds that may start threads allow `clone`, and none
//! `clone3`, whose flags a filter cannot read (it fails with ENOSYS; glibc then uses `clone`).
//! Calls that may fail harmlessly are refused with ENOSYS rather than trapped.
//!
//! Filters are off unless the binary turns them on ([`enable`]); unit tests run every thread
//! under its real filter, so a device test that needs a call not in the list fails.

mod lists;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::io;
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;

use seccompiler::BpfProgram;

/// skiff-vmm's exit code when a thread made a call outside its filter (128 + SIGSYS, what a
/// shell shows for a process killed by SIGSYS).
pub const EXIT_CODE: u8 = 128 + libc::SIGSYS as u8;

/// The kinds of VMM thread, each with its own allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// Waits for the VM to end, stops the vCPUs, tears down (after the guest started).
    Main,
    /// Runs KVM_RUN and the port/MMIO exits, which activate and reset devices.
    Vcpu,
    /// Waits for SIGINT/SIGTERM.
    Signals,
    /// The container session: control connection, log and exit files, attach clients.
    Session,
    FsWorker,
    NetWorker,
    VsockWorker,
    RngWorker,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 8] = [
        ThreadKind::Main,
        ThreadKind::Vcpu,
        ThreadKind::Signals,
        ThreadKind::Session,
        ThreadKind::FsWorker,
        ThreadKind::NetWorker,
        ThreadKind::VsockWorker,
        ThreadKind::RngWorker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Main => "main",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Signals => "signals",
            ThreadKind::Session => "session",
            ThreadKind::FsWorker => "virtio-fs",
            ThreadKind::NetWorker => "virtio-net",
            ThreadKind::VsockWorker => "virtio-vsock",
            ThreadKind::RngWorker => "virtio-rng",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot compile the seccomp filter of the {kind} threads: {source}")]
    Compile {
        kind: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error(
        "cannot install the seccomp filter of the {kind} thread: {source} (skiff-vmm --no-seccomp \
         runs without filters)"
    )]
    Install {
        kind: &'static str,
        #[source]
        source: seccompiler::Error,
    },
    #[error(transparent)]
    Jail(#[from] crate::jail::JailError),
    #[error("cannot install the SIGSYS handler: {0}")]
    Handler(#[source] io::Error),
}

/// Every kind's programs, compiled once, and whether the self-test is asked for.
struct Filters {
    programs: Vec<Vec<BpfProgram>>,
    self_test: bool,
}

static FILTERS: OnceLock<Filters> = OnceLock::new();

thread_local! {
    /// What the SIGSYS handler names: this thread's kind and name (read without allocating).
    static INSTALLED: Cell<Option<ThreadKind>> = const { Cell::new(None) };
    static THREAD_NAME: Cell<[u8; 32]> = const { Cell::new([0; 32]) };
}

/// Turns filtering on for threads that start from now on: compiles every filter (an error here
/// is a bug in the lists) and installs the SIGSYS handler. With `self_test`,
/// [`self_test_if_asked`] makes a forbidden call (for the tests that check the report).
pub fn enable(self_test: bool) -> Result<(), SeccompError> {
    let programs = ThreadKind::ALL
        .iter()
        .map(|&kind| lists::compile(kind))
        .collect::<Result<Vec<_>, _>>()?;
    install_sigsys_handler()?;
    let _ = FILTERS.set(Filters {
        programs,
        self_test,
    });
    Ok(())
}

fn filters() -> Option<&'static Filters> {
    #[cfg(test)]
    if FILTERS.get().is_none() {
        if let Err(e) = enable(false) {
            panic!("{e}");
        }
    }
    FILTERS.get()
}

/// Gives the calling thread its jailed credentials (when the VMM is jailed) and installs
/// `kind`'s filter (nothing when filtering is off).
pub fn apply(kind: ThreadKind) -> Result<(), SeccompError> {
    crate::jail::restrict_thread(kind)?;
    let Some(filters) = filters() else {
        return Ok(());
    };
    remember_thread(kind);
    for program in &filters.programs[kind.index()] {
        seccompiler::apply_filter(program).map_err(|source| SeccompError::Install {
            kind: kind.name(),
            source,
        })?;
    }
    Ok(())
}

/// Starts `body` on a thread from `builder` under `kind`'s filter; fails if the filter cannot be
/// installed there (the body then never runs). A thread started from one that has that filter
/// already inherits it, and only records its kind for the report.
pub fn spawn<F>(
    builder: std::thread::Builder,
    kind: ThreadKind,
    body: F,
) -> io::Result<JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let inherited = INSTALLED.get() == Some(kind);
    let (installed, result) = mpsc::sync_channel(1);
    let handle = builder.spawn(move || {
        let outcome = if inherited {
            remember_thread(kind);
            Ok(())
        } else {
            apply(kind)
        };
        let ok = outcome.is_ok();
        let _ = installed.send(outcome);
        if ok {
            body();
        }
    })?;
    match result.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(io::Error::other(e)),
        Err(_) => Err(io::Error::other(format!(
            "the {} thread ended before installing its seccomp filter",
            kind.name()
        ))),
    }
}

/// The debug trigger of the tests: when `enable(true)` asked for it, the calling thread makes a
/// call no list allows (`getppid`), so its filter must kill the VMM with the report.
pub fn self_test_if_asked() {
    if filters().is_some_and(|f| f.self_test) {
        tracing::warn!("seccomp self-test: making a forbidden system call");
        // SAFETY: getppid takes no arguments and changes nothing.
        unsafe { libc::getppid() };
    }
}

fn remember_thread(kind: ThreadKind) {
    let mut name = [0u8; 32];
    if let Some(given) = std::thread::current().name() {
        let len = given.len().min(name.len());
        name[..len].copy_from_slice(&given.as_bytes()[..len]);
    }
    INSTALLED.set(Some(kind));
    THREAD_NAME.set(name);
}

fn install_sigsys_handler() -> Result<(), SeccompError> {
    vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_sigsys)
        .map_err(|e| SeccompError::Handler(io::Error::from_raw_os_error(e.errno())))
}

/// Where the kernel puts the trapped call's number in the siginfo of a seccomp SIGSYS
/// (`si_syscall`, after `si_signo`, `si_errno`, `si_code`, padding and `si_call_addr`).
const SI_SYSCALL_OFFSET: usize = 24;

/// Async-signal-safe: it formats into a stack buffer, writes and exits.
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel hands a full siginfo_t; for SIGSYS the syscall number sits at the
    // offset above, inside the struct.
    let syscall = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read()
    };
    let kind = INSTALLED.get().map_or("unfiltered", ThreadKind::name);
    let name = THREAD_NAME.get();
    let mut line = Line::default();
    line.push(b"skiff-vmm: killed by its seccomp filter: syscall ");
    line.push_number(syscall);
    line.push(b" in thread ");
    line.push(name.split(|&b| b == 0).next().unwrap_or_default());
    line.push(b" (");
    line.push(kind.as_bytes());
    line.push(b" filter)\n");
    // SAFETY: write and _exit are async-signal-safe and allowed by every filter.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::_exit(i32::from(EXIT_CODE));
    }
}

/// A line built without allocating (the handler may run with the allocator's lock held).
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Default for Line {
    fn default() -> Line {
        Line {
            buf: [0; 160],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_number(&mut self, n: i32) {
        if n < 0 {
            self.push(b"-");
        }
        let mut digits = [0u8; 10];
        let mut at = digits.len();
        let mut rest = n.unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }
}
