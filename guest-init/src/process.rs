//! Starting a [`ProcessSpec`]: everything is prepared before `fork` (guest-init is multi-threaded,
//! so the child may only make async-signal-safe calls), then the child applies rlimits, groups,
//! gid, uid and cwd and `execve`s. A failure in the child travels back over a close-on-exec pipe
//! as (stage, errno), so the host gets `exec: "foo": no such file or directory`, not silence.

use crate::protocol::{ProcessSpec, TerminalSize, DEFAULT_PATH};
use crate::reaper::{pipe, ExitWatch, Reaper};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Why a process could not be started; `exit_code` follows the shell (127 not found, 126 other).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SpawnError {
    pub message: String,
    pub exit_code: i32,
}

impl SpawnError {
    fn invalid(message: String) -> SpawnError {
        SpawnError {
            message,
            exit_code: 126,
        }
    }

    fn os(context: &str, err: io::Error) -> SpawnError {
        SpawnError::invalid(format!("{context}: {}", describe_os_error(&err)))
    }
}

/// `No such file or directory`, without std's ` (os error 2)` suffix.
pub fn describe_os_error(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The host-facing ends of a started process's stdio.
pub enum Stdio {
    /// Three pipes: we write the child's stdin, read its stdout and stderr.
    Pipes {
        stdin: File,
        stdout: File,
        stderr: File,
    },
    /// A pseudo terminal master: stdin goes in, merged output comes out.
    Pty { master: File },
}

/// A started process.
pub struct Child {
    pub pid: libc::pid_t,
    pub stdio: Stdio,
    pub exit: ExitWatch,
}

fn cstring(what: &str, s: impl Into<Vec<u8>>) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError::invalid(format!("{what} contains a NUL byte")))
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// The environment the process gets: the spec's, plus `PATH` and `HOME` if it has none.
pub fn effective_env(spec: &ProcessSpec) -> Vec<String> {
    let has = |key: &str| {
        spec.env
            .iter()
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
    };
    let mut env = spec.env.clone();
    if !has("PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOME") {
        env.push(format!(
            "HOME={}",
            if spec.uid == 0 { "/root" } else { "/" }
        ));
    }
    env
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `program` like execvp does: as given if it contains a `/`, else in `path`'s directories.
pub fn resolve_program(program: &str, path: &str) -> Result<CString, SpawnError> {
    if program.is_empty() {
        return Err(SpawnError {
            message: "exec: empty program name".into(),
            exit_code: 127,
        });
    }
    if program.contains('/') {
        return cstring("program", program);
    }
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(program);
        if is_executable_file(&candidate) {
            return cstring("program", candidate.into_os_string().as_bytes());
        }
    }
    Err(SpawnError {
        message: format!("exec: \"{program}\": executable file not found in $PATH"),
        exit_code: 127,
    })
}

/// A spec turned into what the child needs, allocated before `fork`.
struct Prepared {
    program: CString,
    /// Own the strings `argv_ptrs` and `envp_ptrs` point into.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    cwd: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

impl Prepared {
    fn new(spec: &ProcessSpec) -> Result<Prepared, SpawnError> {
        let Some(program) = spec.args.first() else {
            return Err(SpawnError::invalid("the process spec has no args".into()));
        };
        let env = effective_env(spec);
        let path = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        let mut rlimits = Vec::new();
        for r in &spec.rlimits {
            let resource = rlimit_resource(&r.kind)
                .ok_or_else(|| SpawnError::invalid(format!("unknown rlimit {:?}", r.kind)))?;
            let limit = libc::rlimit {
                rlim_cur: r.soft,
                rlim_max: r.hard,
            };
            rlimits.push((resource, limit));
        }
        for e in &env {
            if !e.contains('=') || e.starts_with('=') {
                return Err(SpawnError::invalid(format!(
                    "environment entry {e:?} is not KEY=VALUE"
                )));
            }
        }
        let argv: Vec<CString> = spec
            .args
            .iter()
            .map(|a| cstring("argument", a.as_str()))
            .collect::<Result<_, _>>()?;
        let envp: Vec<CString> = env
            .iter()
            .map(|e| cstring("environment entry", e.as_str()))
            .collect::<Result<_, _>>()?;
        Ok(Prepared {
            program: resolve_program(program, path)?,
            argv_ptrs: null_terminated(&argv),
            envp_ptrs: null_terminated(&envp),
            _argv: argv,
            _envp: envp,
            cwd: cstring("cwd", spec.cwd.as_str())?,
            uid: spec.uid,
            gid: spec.gid,
            groups: spec.additional_gids.clone(),
            rlimits,
        })
    }
}

/// What failed in the child, sent back as one byte before the errno.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Stage {
    Stdio = 1,
    Cgroup,
    Rlimit,
    Groups,
    Gid,
    Uid,
    Chdir,
    Exec,
}

fn make_pty(size: Option<TerminalSize>) -> io::Result<(File, File)> {
    // SAFETY: plain syscalls on descriptors we own; results are checked.
    unsafe {
        let master = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if master < 0 {
            return Err(io::Error::last_os_error());
        }
        let master = File::from(OwnedFd::from_raw_fd(master));
        let unlock: libc::c_int = 0;
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(io::Error::last_os_error());
        }
        let peer = libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if peer < 0 {
            return Err(io::Error::last_os_error());
        }
        let peer = File::from(OwnedFd::from_raw_fd(peer));
        if let Some(size) = size {
            set_window_size(&master, size)?;
        }
        Ok((master, peer))
    }
}

/// Sets a pty's size; the kernel sends SIGWINCH to its foreground process group.
pub fn set_window_size(pty: &File, size: TerminalSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Child side after `fork`: async-signal-safe calls only, never returns.
///
/// # Safety
/// Must only be called in a freshly forked child.
unsafe fn child_exec(p: &Prepared, stdio: [libc::c_int; 3], tty: bool, report: libc::c_int) -> ! {
    let fail = |stage: Stage| -> ! {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; 5];
        msg[0] = stage as u8;
        msg[1..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(report, msg.as_ptr().cast(), msg.len());
        libc::_exit(if matches!(stage, Stage::Exec) && errno == libc::ENOENT {
            127
        } else {
            126
        });
    };
    // Own session and process group: signals from the host can target the whole job, and a pty
    // can become the controlling terminal.
    libc::setsid();
    if tty && libc::ioctl(stdio[0], libc::TIOCSCTTY, 0) != 0 {
        fail(Stage::Stdio);
    }
    for (target, fd) in stdio.iter().enumerate() {
        if libc::dup2(*fd, target as libc::c_int) < 0 {
            fail(Stage::Stdio);
        }
    }
    // guest-init (like every Rust program) ignores SIGPIPE, and ignored signals survive exec.
    for sig in 1..libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    if !crate::cgroup::join_from_child() {
        fail(Stage::Cgroup);
    }
    for (resource, limit) in &p.rlimits {
        if libc::setrlimit(*resource, limit) != 0 {
            fail(Stage::Rlimit);
        }
    }
    if libc::setgroups(p.groups.len(), p.groups.as_ptr()) != 0 {
        fail(Stage::Groups);
    }
    if libc::setgid(p.gid) != 0 {
        fail(Stage::Gid);
    }
    if libc::setuid(p.uid) != 0 {
        fail(Stage::Uid);
    }
    if libc::chdir(p.cwd.as_ptr()) != 0 {
        fail(Stage::Chdir);
    }
    libc::execve(
        p.program.as_ptr(),
        p.argv_ptrs.as_ptr(),
        p.envp_ptrs.as_ptr(),
    );
    fail(Stage::Exec)
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Starts `spec` with its stdio on pipes or a pty; the returned host-side ends are non-blocking.
pub fn spawn(spec: &ProcessSpec, reaper: &Reaper) -> Result<Child, SpawnError> {
    let prepared = Prepared::new(spec)?;
    // child_ends stay open in the parent until the fork is done; stdio_fds are their numbers.
    let (host_ends, child_ends, stdio_fds) = if spec.tty {
        let (master, peer) =
            make_pty(spec.terminal_size).map_err(|e| SpawnError::os("open a pty", e))?;
        set_nonblocking(&master).map_err(|e| SpawnError::os("pty", e))?;
        let fd = peer.as_raw_fd();
        (Stdio::Pty { master }, vec![peer], [fd; 3])
    } else {
        let pipes = || pipe().map_err(|e| SpawnError::os("create pipes", e));
        let (stdin_r, stdin_w) = pipes()?;
        let (stdout_r, stdout_w) = pipes()?;
        let (stderr_r, stderr_w) = pipes()?;
        for f in [&stdin_w, &stdout_r, &stderr_r] {
            set_nonblocking(f).map_err(|e| SpawnError::os("pipes", e))?;
        }
        let fds = [
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
        ];
        let host = Stdio::Pipes {
            stdin: stdin_w,
            stdout: stdout_r,
            stderr: stderr_r,
        };
        (host, vec![stdin_r, stdout_w, stderr_w], fds)
    };
    let (mut report_r, report_w) = pipe().map_err(|e| SpawnError::os("create a pipe", e))?;
    let tty = spec.tty;
    let (pid, exit) = reaper
        .spawn_registered(|| {
            // SAFETY: the child only runs child_exec (async-signal-safe) on prepared data.
            match unsafe { libc::fork() } {
                -1 => Err(io::Error::last_os_error()),
                0 => unsafe { child_exec(&prepared, stdio_fds, tty, report_w.as_raw_fd()) },
                pid => Ok(pid),
            }
        })
        .map_err(|e| SpawnError::os("fork", e))?;
    drop(report_w);
    drop(child_ends);
    // EOF without a report means execve succeeded (the close-on-exec pipe closed).
    let mut msg = Vec::new();
    if let Err(e) = report_r.read_to_end(&mut msg) {
        return Err(SpawnError::os("read the exec report", e));
    }
    if msg.len() == 5 {
        let errno = i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]);
        return Err(child_failure(msg[0], errno, spec, &prepared, exit));
    }
    Ok(Child {
        pid,
        stdio: host_ends,
        exit,
    })
}

fn child_failure(
    stage: u8,
    errno: i32,
    spec: &ProcessSpec,
    prepared: &Prepared,
    mut exit: ExitWatch,
) -> SpawnError {
    // The child _exit()s right after reporting; collect it so the status does not linger.
    let _ = exit.wait();
    let err = describe_os_error(&io::Error::from_raw_os_error(errno));
    let program = OsStr::from_bytes(prepared.program.as_bytes()).to_string_lossy();
    let message = match stage {
        s if s == Stage::Stdio as u8 => format!("set up stdio: {err}"),
        s if s == Stage::Cgroup as u8 => format!("join the container's cgroup: {err}"),
        s if s == Stage::Rlimit as u8 => format!("setrlimit: {err}"),
        s if s == Stage::Groups as u8 => format!("setgroups {:?}: {err}", spec.additional_gids),
        s if s == Stage::Gid as u8 => format!("setgid {}: {err}", spec.gid),
        s if s == Stage::Uid as u8 => format!("setuid {}: {err}", spec.uid),
        s if s == Stage::Chdir as u8 => format!("chdir to cwd {:?}: {err}", spec.cwd),
        _ => format!("exec: \"{program}\": {}", err.to_lowercase()),
    };
    let exit_code = if stage == Stage::Exec as u8 && errno == libc::ENOENT {
        127
    } else {
        126
    };
    SpawnError { message, exit_code }
}
