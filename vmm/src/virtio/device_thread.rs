//! The worker thread behind an activated device: one per device, stoppable so the device can be
//! reset and set up again.

use std::io;
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// A running device worker. Dropping it stops the worker and waits for it.
pub(crate) struct DeviceThread {
    stop: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl DeviceThread {
    /// Starts `body` on a thread called `name`. The body gets an eventfd that becomes readable
    /// when the device is being stopped; it must watch it (in its epoll set) and return then.
    pub(crate) fn spawn<F>(name: &str, body: F) -> io::Result<DeviceThread>
    where
        F: FnOnce(EventFd) + Send + 'static,
    {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let worker_stop = stop.try_clone()?;
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || body(worker_stop))?;
        Ok(DeviceThread {
            stop,
            handle: Some(handle),
        })
    }

    /// Asks the worker to return and waits until it has.
    pub(crate) fn stop(&mut self) {
        let Some(handle) = self.handle.take() else {
            return;
        };
        if let Err(e) = self.stop.write(1) {
            tracing::error!("cannot signal the device worker to stop: {e}");
            return;
        }
        if handle.join().is_err() {
            tracing::error!("a device worker panicked");
        }
    }
}

impl Drop for DeviceThread {
    fn drop(&mut self) {
        self.stop();
    }
}
