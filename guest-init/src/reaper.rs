//! The one place that waits for child processes.
//!
//! As PID 1, guest-init inherits every orphan in the VM and must reap them all, so a single thread
//! runs `waitpid(-1)` for the whole process. Sessions that care about a child register it when
//! forking and get a pipe on which the reaper delivers that child's wait status; the statuses of
//! unregistered processes (orphans) are dropped.
//!
//! Because it reaps every child of the current process, nothing else in the process may wait for
//! children (`std::process::Command::wait` would fail with ECHILD). A process that is not an init
//! and has children of its own (a test harness running the session code) takes
//! [`Reaper::own_children`] instead: it waits for each child it forked by that child's pid.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

#[derive(Default)]
struct Registry {
    /// Registered children and the pipe their wait status goes to.
    waiters: HashMap<libc::pid_t, File>,
    /// Set when a child was forked; lets the reaper sleep while there are no children at all.
    forked: bool,
}

/// Process-wide reaper; see the module docs.
pub struct Reaper {
    registry: Mutex<Registry>,
    wake: Condvar,
    /// Whether a `waitpid(-1)` thread reaps every child (an init's duty), or each forked child
    /// is waited for alone, leaving the process's other children to their own waiters.
    every_child: bool,
}

/// Receives one child's wait status from the reaper.
pub struct ExitWatch {
    pipe: File,
}

impl ExitWatch {
    /// Readable (for poll) once the child has exited.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.pipe)
    }

    /// Blocks until the child's raw wait status arrives.
    pub fn wait(&mut self) -> io::Result<libc::c_int> {
        let mut raw = [0u8; 4];
        self.pipe.read_exact(&mut raw)?;
        Ok(libc::c_int::from_ne_bytes(raw))
    }
}

impl Reaper {
    /// The reaper of this process, started on first use.
    pub fn global() -> &'static Reaper {
        static REAPER: OnceLock<&'static Reaper> = OnceLock::new();
        REAPER.get_or_init(|| {
            let reaper: &'static Reaper = Box::leak(Box::new(Reaper::new(true)));
            std::thread::Builder::new()
                .name("reaper".into())
                .spawn(move || reaper.reap_forever())
                .map_err(|e| eprintln!("guest-init: cannot start the reaper thread: {e}"))
                .ok();
            reaper
        })
    }

    /// A reaper that waits only for the children forked through it, each on a thread of its own:
    /// for a process that is not an init and has other children (a test harness).
    pub fn own_children() -> &'static Reaper {
        static REAPER: OnceLock<Reaper> = OnceLock::new();
        REAPER.get_or_init(|| Reaper::new(false))
    }

    fn new(every_child: bool) -> Reaper {
        Reaper {
            registry: Mutex::new(Registry::default()),
            wake: Condvar::new(),
            every_child,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A poisoned lock only means another thread panicked while holding it; the map stays valid.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `fork` (which must return the new child's PID) with the registry locked, so the child
    /// is registered before the reaper can look its status up, however fast it exits.
    pub fn spawn_registered<F>(&self, fork: F) -> io::Result<(libc::pid_t, ExitWatch)>
    where
        F: FnOnce() -> io::Result<libc::pid_t>,
    {
        let (read_end, mut write_end) = pipe()?;
        if !self.every_child {
            let pid = fork()?;
            std::thread::Builder::new()
                .name("child-waiter".into())
                .spawn(move || {
                    if let Some(status) = wait_for(pid) {
                        let _ = write_end.write_all(&status.to_ne_bytes());
                    }
                })?;
            return Ok((pid, ExitWatch { pipe: read_end }));
        }
        let mut registry = self.lock();
        let pid = fork()?;
        registry.waiters.insert(pid, write_end);
        registry.forked = true;
        drop(registry);
        self.wake.notify_all();
        Ok((pid, ExitWatch { pipe: read_end }))
    }

    fn reap_forever(&self) {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: plain syscall with a valid out pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid > 0 {
                if let Some(mut waiter) = self.lock().waiters.remove(&pid) {
                    // The session may be gone already (its read end closed): nothing to tell then.
                    let _ = waiter.write_all(&status.to_ne_bytes());
                }
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => {}
                _ => {
                    // ECHILD: no children right now. Sleep until someone forks.
                    let mut registry = self.lock();
                    while !registry.forked {
                        registry = self.wake.wait(registry).unwrap_or_else(|p| p.into_inner());
                    }
                    registry.forked = false;
                }
            }
        }
    }
}

/// Waits for the child `pid` (through EINTR); `None` if it cannot be waited for.
fn wait_for(pid: libc::pid_t) -> Option<libc::c_int> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: plain syscall with a valid out pointer.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Some(status);
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    unsafe {
        Ok((
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        ))
    }
}

/// Decodes a raw wait status into the protocol's exit status.
pub fn exit_status(raw: libc::c_int) -> crate::protocol::ExitStatus {
    use crate::protocol::ExitStatus;
    if libc::WIFSIGNALED(raw) {
        ExitStatus::Signal(libc::WTERMSIG(raw))
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks a child that sleeps `ms` milliseconds, then exits with `code`.
    fn fork_exiting_after(ms: i64, code: i32) -> io::Result<libc::pid_t> {
        // SAFETY: the child calls only nanosleep and _exit.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => unsafe {
                let pause = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: ms * 1_000_000,
                };
                libc::nanosleep(&pause, std::ptr::null_mut());
                libc::_exit(code)
            },
            pid => Ok(pid),
        }
    }

    #[test]
    fn a_reaper_of_its_own_children_leaves_the_process_s_other_children_to_their_waiters() {
        let reaper = Reaper::own_children();
        let (_, mut watch) = reaper
            .spawn_registered(|| fork_exiting_after(300, 7))
            .unwrap();
        // Ends while the reaper's child still runs: a waitpid(-1) reaper would take its status.
        let other = std::process::Command::new("true").status().unwrap();
        assert!(other.success());
        let status = watch.wait().unwrap();
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7,
            "{status}"
        );
    }
}
