//! Which exec sessions are open, so that the container's end can wait for them.
//!
//! When the main process ends the container stops, as Docker's does: the processes started by
//! `exec` are killed and each open exec session still reports how its process ended before the VM
//! powers off (a client must never see "session ended without an exit status").

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    open: usize,
    closing: bool,
}

/// The open exec sessions; once closed, no new one is admitted.
#[derive(Debug, Default)]
pub struct ExecSessions {
    state: Mutex<State>,
    changed: Condvar,
}

/// Held by an open session; dropping it ends the session.
#[derive(Debug)]
pub struct Admitted<'a>(&'a ExecSessions);

impl ExecSessions {
    pub const fn new() -> Self {
        ExecSessions {
            state: Mutex::new(State {
                open: 0,
                closing: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking session thread powers the VM off (the panic hook), so poison is moot.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new session, or None once the container is stopping.
    pub fn admit(&self) -> Option<Admitted<'_>> {
        let mut state = self.lock();
        if state.closing {
            return None;
        }
        state.open += 1;
        Some(Admitted(self))
    }

    /// Admits no more sessions; returns how many are open.
    pub fn close(&self) -> usize {
        let mut state = self.lock();
        state.closing = true;
        state.open
    }

    /// Waits until every admitted session has ended, at most `patience`; false if some remain.
    pub fn wait_all_ended(&self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        let mut state = self.lock();
        while state.open > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match self.changed.wait_timeout(state, left) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.open -= 1;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_refuses_new_sessions_and_waits_for_the_open_ones() {
        static SESSIONS: ExecSessions = ExecSessions::new();
        let first = SESSIONS.admit().expect("open");
        let second = SESSIONS.admit().expect("open");
        assert_eq!(SESSIONS.close(), 2);
        assert!(SESSIONS.admit().is_none());
        drop(first);
        assert!(!SESSIONS.wait_all_ended(Duration::from_millis(50)));
        let ender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(second);
        });
        assert!(SESSIONS.wait_all_ended(Duration::from_secs(10)));
        ender.join().unwrap();
    }
}
