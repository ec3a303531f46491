//! The worker thread behind a device: one per device, started with the device (before the guest
//! runs, so its seccomp filter is in place by then and no vCPU thread ever starts a thread; in a
//! VMM being jailed, once the jail is complete), idle until the driver activates the device,
//! then running the device's job until it is reset.

use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::seccomp::{self, ThreadKind};

/// A device's work: it gets an eventfd that becomes readable when the device is being stopped,
/// must watch it (in its epoll set) and return then.
type Job = Box<dyn FnOnce(&EventFd) + Send>;

/// A device's worker. Dropping it stops the job and ends the thread.
pub(crate) struct DeviceThread {
    jobs: Option<Sender<Job>>,
    /// One message per job that returned.
    done: Receiver<()>,
    stop: EventFd,
    running: bool,
    /// Set once the thread has started.
    handle: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl DeviceThread {
    /// Starts the thread `name` under the seccomp filter of `kind`.
    pub(crate) fn start(name: &str, kind: ThreadKind) -> io::Result<DeviceThread> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let worker_stop = stop.try_clone()?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let (finished, done) = mpsc::channel();
        let builder = std::thread::Builder::new().name(name.to_owned());
        let handle = Arc::new(Mutex::new(None));
        let slot = handle.clone();
        crate::jail::start_thread_when_confined(move || {
            let thread = seccomp::spawn(builder, kind, move || {
                for job in queue {
                    job(&worker_stop);
                    if finished.send(()).is_err() {
                        return;
                    }
                }
            })?;
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
            Ok(())
        })?;
        Ok(DeviceThread {
            jobs: Some(jobs),
            done,
            stop,
            running: false,
            handle,
        })
    }

    /// Runs `job` on the worker once the job before it (if any) has stopped.
    pub(crate) fn run<F>(&mut self, job: F) -> io::Result<()>
    where
        F: FnOnce(&EventFd) + Send + 'static,
    {
        self.stop();
        let gone = || io::Error::other("the device worker thread has ended");
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(Box::new(job))
            .map_err(|_| gone())?;
        self.running = true;
        Ok(())
    }

    /// Asks the running job to return and waits until it has.
    pub(crate) fn stop(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        if let Err(e) = self.stop.write(1) {
            tracing::error!("cannot signal the device worker to stop: {e}");
            return;
        }
        // An error means the job panicked and took the thread with it (reported at the join).
        let _ = self.done.recv();
        // Drained, so that the next job does not see this stop.
        let _ = self.stop.read();
    }
}

impl Drop for DeviceThread {
    fn drop(&mut self) {
        self.stop();
        // Closing the queue ends the thread.
        self.jobs = None;
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("a device worker panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A job that counts its start and waits for its stop.
    fn waiting_job(started: &Arc<AtomicUsize>) -> impl FnOnce(&EventFd) + Send + 'static {
        let started = started.clone();
        move |stop: &EventFd| {
            started.fetch_add(1, Ordering::SeqCst);
            let events = crate::virtio::event_loop::EventLoop::new(stop).expect("event loop");
            events.run(|_| {}).expect("wait for stop");
        }
    }

    #[test]
    fn one_thread_runs_job_after_job_each_stopped_before_the_next() {
        let started = Arc::new(AtomicUsize::new(0));
        let mut worker = DeviceThread::start("test-worker", ThreadKind::RngWorker).unwrap();
        for round in 1..=3 {
            worker.run(waiting_job(&started)).unwrap();
            // The job of the round before has returned, else this one could not start.
            while started.load(Ordering::SeqCst) < round {
                std::thread::yield_now();
            }
        }
        worker.stop();
        // A job that ends by itself leaves the worker ready for the next one.
        worker.run(|_| {}).unwrap();
        worker.run(waiting_job(&started)).unwrap();
        drop(worker);
        assert_eq!(started.load(Ordering::SeqCst), 4);
    }
}
