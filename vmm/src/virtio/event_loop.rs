//! The wait loop every device worker runs: its stop eventfd plus the descriptors it serves
//! (queue kicks, sockets), each with a token, dispatched to the worker until stop fires.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// The token the stop eventfd is registered under; workers use any other.
const STOP: u64 = u64::MAX;
/// Events taken per wait.
const BATCH: usize = 16;

/// What a descriptor is watched for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Watch {
    pub(crate) read: bool,
    pub(crate) write: bool,
}

impl Watch {
    fn any(self) -> bool {
        self.read || self.write
    }
}

pub(crate) struct EventLoop {
    epoll: Epoll,
}

impl EventLoop {
    /// A loop that returns once `stop` becomes readable.
    pub(crate) fn new(stop: &EventFd) -> io::Result<EventLoop> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP),
        )?;
        Ok(EventLoop { epoll })
    }

    /// Watches `fd` for input; `handle` gets `token` when it is readable.
    pub(crate) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        debug_assert_ne!(token, STOP, "the stop token is the loop's own");
        self.epoll.ctl(
            ControlOperation::Add,
            fd,
            EpollEvent::new(EventSet::IN, token),
        )
    }

    /// Stops watching `fd`.
    pub(crate) fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }

    /// Changes what `fd` is watched for from `was` to `now`, adding or removing it as needed;
    /// `handle` gets `token` when it is ready in any way asked for (or has an error or hang-up).
    pub(crate) fn rewatch(&self, fd: RawFd, token: u64, was: Watch, now: Watch) -> io::Result<()> {
        debug_assert_ne!(token, STOP, "the stop token is the loop's own");
        let op = match (was.any(), now.any()) {
            (false, false) => return Ok(()),
            (true, false) => return self.remove(fd),
            (false, true) => ControlOperation::Add,
            (true, true) => ControlOperation::Modify,
        };
        let mut set = EventSet::empty();
        if now.read {
            set |= EventSet::IN;
        }
        if now.write {
            set |= EventSet::OUT;
        }
        self.epoll.ctl(op, fd, EpollEvent::new(set, token))
    }

    /// Waits and dispatches until stop fires (Ok) or waiting fails (Err).
    pub(crate) fn run(&self, mut handle: impl FnMut(u64)) -> io::Result<()> {
        let mut events = [EpollEvent::default(); BATCH];
        loop {
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if events[..n].iter().any(|e| e.data() == STOP) {
                return Ok(());
            }
            for event in &events[..n] {
                handle(event.data());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn sources_are_dispatched_by_token_until_stop() {
        let stop = EventFd::new(EFD_NONBLOCK).unwrap();
        let a = EventFd::new(EFD_NONBLOCK).unwrap();
        let b = EventFd::new(EFD_NONBLOCK).unwrap();
        let lp = EventLoop::new(&stop).unwrap();
        lp.add(a.as_raw_fd(), 1).unwrap();
        lp.add(b.as_raw_fd(), 2).unwrap();
        b.write(1).unwrap();
        let mut seen = Vec::new();
        let stopper = stop.try_clone().unwrap();
        lp.run(|token| {
            seen.push(token);
            // Level-triggered: the handler drains its source, as workers do.
            let _ = b.read();
            if seen.len() == 1 {
                a.write(1).unwrap();
            } else {
                let _ = a.read();
                stopper.write(1).unwrap();
            }
        })
        .unwrap();
        assert_eq!(seen, [2, 1]);
    }

    #[test]
    fn a_descriptor_is_watched_for_what_is_asked() {
        let stop = EventFd::new(EFD_NONBLOCK).unwrap();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = ours.as_raw_fd();
        let lp = EventLoop::new(&stop).unwrap();
        let none = Watch::default();
        let read = Watch {
            read: true,
            write: false,
        };
        let both = Watch {
            read: true,
            write: true,
        };
        // Writable at once: fires only once asked for.
        lp.rewatch(fd, 7, none, read).unwrap();
        lp.rewatch(fd, 7, read, both).unwrap();
        let stopper = stop.try_clone().unwrap();
        let mut seen = Vec::new();
        lp.run(|token| {
            seen.push(token);
            stopper.write(1).unwrap();
        })
        .unwrap();
        assert_eq!(seen, [7]);
        let _ = stop.read();
        // Unwatched: nothing fires, even with input waiting.
        lp.rewatch(fd, 7, both, none).unwrap();
        std::io::Write::write_all(&mut &theirs, b"x").unwrap();
        lp.rewatch(fd, 7, none, none).unwrap();
        stop.write(1).unwrap();
        lp.run(|token| panic!("token {token} fired")).unwrap();
    }
}
