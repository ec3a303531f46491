//! Attach clients of a container session: each gets the process's output frames as they come
//! and the exit report; what they send (stdin, signals, resizes) goes to the guest.
//!
//! A client that cannot keep up is dropped rather than buffered for: its queue holds
//! [`CLIENT_QUEUE`] frames (at most 32 KiB each), so a stalled client costs the VMM a bounded
//! amount of memory and never slows the container (the log has everything).

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use skiff_protocol::{read_message, write_message, Message};

use crate::seccomp::{self, ThreadKind};

/// Frames queued for one client before it counts as stalled.
const CLIENT_QUEUE: usize = 16;

type Frame = Arc<Vec<u8>>;

/// The attach side of one session; cheap to clone.
#[derive(Clone)]
pub(super) struct Attached {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    /// `stdin_once` without a terminal: the process's stdin closes when a client leaves.
    close_stdin_on_leave: bool,
}

#[derive(Default)]
struct State {
    clients: Vec<Client>,
    next_id: u64,
    ever_attached: bool,
    /// The guest's control stream, once the spec is sent.
    guest: Option<Arc<Mutex<UnixStream>>>,
    stdin_closed: bool,
    /// The session is over; late clients get `last` (the exit report, if any) and are closed.
    closed: bool,
    last: Option<Frame>,
}

struct Client {
    id: u64,
    queue: SyncSender<Frame>,
    /// To cut the connection when the client is dropped.
    stream: UnixStream,
}

impl Attached {
    pub(super) fn new(close_stdin_on_leave: bool) -> Attached {
        Attached {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                close_stdin_on_leave,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts clients on `listener` for as long as the VMM lives.
    pub(super) fn serve(self, listener: UnixListener) -> std::io::Result<()> {
        let builder = std::thread::Builder::new().name("attach".into());
        seccomp::spawn(builder, ThreadKind::Session, move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = self.add(stream) {
                    tracing::warn!("attach client: {e}");
                }
            }
        })?;
        Ok(())
    }

    fn add(&self, stream: UnixStream) -> std::io::Result<()> {
        let mut state = self.state();
        if state.closed {
            let mut stream = stream;
            if let Some(last) = &state.last {
                stream.write_all(last)?;
            }
            return Ok(());
        }
        let (queue, frames) = sync_channel::<Frame>(CLIENT_QUEUE);
        let id = state.next_id;
        state.next_id += 1;
        let mut writer = stream.try_clone()?;
        let reader = stream.try_clone()?;
        let builder = std::thread::Builder::new()
            .name("attach-out".into())
            .stack_size(64 * 1024);
        seccomp::spawn(builder, ThreadKind::Session, move || {
            for frame in frames {
                if writer.write_all(&frame).is_err() {
                    break;
                }
            }
            let _ = writer.shutdown(std::net::Shutdown::Both);
        })?;
        let this = self.clone();
        let builder = std::thread::Builder::new()
            .name("attach-in".into())
            .stack_size(128 * 1024);
        seccomp::spawn(builder, ThreadKind::Session, move || {
            this.read_client(id, reader)
        })?;
        state.clients.push(Client { id, queue, stream });
        state.ever_attached = true;
        self.inner.changed.notify_all();
        Ok(())
    }

    /// Carries one client's stdin, signals and resizes to the guest until it leaves.
    fn read_client(&self, id: u64, mut stream: UnixStream) {
        loop {
            let message = match read_message(&mut stream) {
                Ok(Some(m @ (Message::Stdin(_) | Message::Signal(_) | Message::Resize(_)))) => m,
                Ok(Some(Message::StdinEof)) => {
                    // Docker's rule: a client's end of input closes the process's stdin only for
                    // a container created with StdinOnce; otherwise the next client may write.
                    if self.inner.close_stdin_on_leave {
                        self.close_stdin();
                    }
                    continue;
                }
                Ok(Some(other)) => {
                    tracing::warn!("attach client sent {}; dropping it", other.kind());
                    break;
                }
                Ok(None) | Err(_) => break,
            };
            let Some(guest) = self.guest() else { break };
            if matches!(message, Message::Stdin(_)) && self.state().stdin_closed {
                continue;
            }
            let mut guest = guest.lock().unwrap_or_else(|p| p.into_inner());
            if write_message(&mut *guest, &message).is_err() {
                break;
            }
        }
        self.drop_client(id);
        if self.inner.close_stdin_on_leave {
            self.close_stdin();
        }
    }

    /// The guest's stream, waiting until the spec is sent; None once the session is over.
    fn guest(&self) -> Option<Arc<Mutex<UnixStream>>> {
        let mut state = self.state();
        loop {
            if state.closed {
                return None;
            }
            if let Some(guest) = &state.guest {
                return Some(guest.clone());
            }
            state = self
                .inner
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn close_stdin(&self) {
        let Some(guest) = self.guest() else { return };
        {
            let mut state = self.state();
            if state.stdin_closed {
                return;
            }
            state.stdin_closed = true;
        }
        let mut guest = guest.lock().unwrap_or_else(|p| p.into_inner());
        let _ = write_message(&mut *guest, &Message::StdinEof);
    }

    fn drop_client(&self, id: u64) {
        let mut state = self.state();
        if let Some(at) = state.clients.iter().position(|c| c.id == id) {
            let client = state.clients.swap_remove(at);
            let _ = client.stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Waits until a first client is attached, at most `patience`.
    pub(super) fn wait_for_first(&self, patience: Duration) {
        let state = self.state();
        let _ = self
            .inner
            .changed
            .wait_timeout_while(state, patience, |s| !s.ever_attached);
    }

    /// The spec is sent: clients' frames may go to the guest now.
    pub(super) fn connect_guest(&self, guest: Arc<Mutex<UnixStream>>) {
        self.state().guest = Some(guest);
        self.inner.changed.notify_all();
    }

    /// Sends a frame to every client; one whose queue is full is dropped.
    pub(super) fn relay(&self, message: &Message) {
        let Ok(bytes) = message.encode() else { return };
        let frame: Frame = Arc::new(bytes);
        let mut state = self.state();
        if matches!(message, Message::Exit(_) | Message::Error(_)) {
            state.last = Some(frame.clone());
        }
        state
            .clients
            .retain(|client| match client.queue.try_send(frame.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!("attach client {} stalled; dropping it", client.id);
                    let _ = client.stream.shutdown(std::net::Shutdown::Both);
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }

    /// The session is over: queued frames still reach their clients, then they are closed.
    pub(super) fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.clients.clear();
        self.inner.changed.notify_all();
    }
}
