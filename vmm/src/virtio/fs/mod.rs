//! virtio-fs served in-process: the guest's FUSE requests arrive on the virtqueues and are
//! answered by fuse-backend-rs' `PassthroughFs` over a host directory, on one worker thread per
//! device. No helper daemon per VM (density) and no vhost-user hop per request (latency).

use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use virtio_bindings::virtio_ids::VIRTIO_ID_FS;
use virtio_queue::{DescriptorChain, Queue};
use vmm_sys_util::eventfd::EventFd;

use super::config_space::read_config_bytes;
use super::device_thread::DeviceThread;
use super::event_loop::EventLoop;
use super::queue_service::{accept_queues, notify_guest, serve_available};
use super::{ActivateError, ActiveQueue, GuestMem, Interrupt, VirtioDevice};
use crate::seccomp::ThreadKind;
use shared_dir::SharedDirFs;
pub use shared_dir::Sharing;

#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod policy;
mod shared_dir;
#[cfg(test)]
pub(crate) mod tests;

/// Longest tag the config space holds (virtio spec 5.11.4).
pub const MAX_TAG_LEN: usize = 36;
/// Size of each virtqueue offered to the driver.
const QUEUE_SIZE: u16 = 1024;
/// Queue 0 carries FORGET/INTERRUPT (high priority), queue 1 everything else.
const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE, QUEUE_SIZE];

type FsServer = Server<SharedDirFs>;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("virtio-fs tag {tag:?} must be 1 to {MAX_TAG_LEN} bytes long")]
    Tag { tag: String },
    #[error("shared directory {path}: {source}")]
    SharedDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shared directory {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("shared directory {0} is not valid UTF-8, which the FUSE backend requires")]
    NonUtf8Path(PathBuf),
    #[error("cannot set up the passthrough file system for {path}: {source}")]
    Passthrough {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the virtio-fs worker thread: {0}")]
    Worker(#[source] std::io::Error),
}

/// A virtio-fs device (ID 26) sharing one host directory under a mount tag (read-only when the
/// directory is mounted so in the VMM's namespace: see `rootfs::bind_read_only`).
pub struct FsDevice {
    /// The config space: the tag, NUL-padded, then `num_request_queues` (le32).
    config: [u8; MAX_TAG_LEN + 4],
    server: Arc<FsServer>,
    worker: DeviceThread,
}

impl FsDevice {
    /// A device that serves `shared_dir` under `tag`. The guest is assumed to have the directory
    /// to itself (a container root): it may cache data, attributes and entries for long and
    /// write back lazily.
    pub fn new(tag: &str, shared_dir: &Path, sharing: Sharing) -> Result<FsDevice, FsError> {
        if tag.is_empty() || tag.len() > MAX_TAG_LEN {
            return Err(FsError::Tag {
                tag: tag.to_owned(),
            });
        }
        let meta = std::fs::metadata(shared_dir).map_err(|source| FsError::SharedDir {
            path: shared_dir.to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(FsError::NotADirectory(shared_dir.to_owned()));
        }
        let root_dir = shared_dir
            .to_str()
            .ok_or_else(|| FsError::NonUtf8Path(shared_dir.to_owned()))?
            .to_owned();
        let fs = SharedDirFs::new(root_dir, sharing).map_err(|source| FsError::Passthrough {
            path: shared_dir.to_owned(),
            source,
        })?;
        raise_fd_limit();
        let mut config = [0u8; MAX_TAG_LEN + 4];
        config[..tag.len()].copy_from_slice(tag.as_bytes());
        config[MAX_TAG_LEN..].copy_from_slice(&1u32.to_le_bytes());
        Ok(FsDevice {
            config,
            server: Arc::new(Server::new(fs)),
            worker: DeviceThread::start("virtio-fs", ThreadKind::FsWorker)
                .map_err(FsError::Worker)?,
        })
    }
}

/// Every inode the guest looks up holds an O_PATH descriptor: let the process use as many
/// descriptors as its hard limit allows.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                tracing::warn!(
                    "cannot raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

impl VirtioDevice for FsDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<ActiveQueue>,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        let queues = accept_queues(queues, &mem, acked_features)?;
        let worker = FsWorker {
            mem,
            interrupt,
            server: self.server.clone(),
            queues,
        };
        self.worker
            .run(move |stop| worker.run(stop))
            .map_err(ActivateError::Worker)
    }

    fn reset(&mut self) -> bool {
        self.worker.stop();
        true
    }
}

struct FsWorker {
    mem: GuestMem,
    interrupt: Arc<dyn Interrupt>,
    server: Arc<FsServer>,
    queues: [ActiveQueue; 2],
}

impl FsWorker {
    fn run(mut self, stop: &EventFd) {
        if let Err(e) = self.serve(stop) {
            tracing::error!("virtio-fs worker stopped: {e}");
        }
    }

    fn serve(&mut self, stop: &EventFd) -> std::io::Result<()> {
        let events = EventLoop::new(stop)?;
        for (index, q) in self.queues.iter().enumerate() {
            events.add(q.notify.as_raw_fd(), index as u64)?;
        }
        // Buffers may have been made available before the first kick reached us.
        for index in 0..self.queues.len() {
            self.serve_queue(index);
        }
        events.run(|token| {
            let index = token as usize;
            // A failed read only means the counter was already drained.
            let _ = self.queues[index].notify.read();
            self.serve_queue(index);
        })
    }

    fn serve_queue(&mut self, index: usize) {
        let Self {
            mem,
            interrupt,
            server,
            queues,
        } = self;
        let queue: &mut Queue = &mut queues[index].queue;
        let used = serve_available(queue, mem, |chain| handle_request(server, mem, chain));
        if used > 0 {
            notify_guest(queue, mem, interrupt.as_ref());
        }
    }
}

/// Answers one FUSE request; returns how many bytes of reply were written into the chain.
pub(super) fn handle_request(
    server: &FsServer,
    mem: &GuestMem,
    chain: DescriptorChain<&GuestMem>,
) -> u32 {
    let reader = match Reader::from_descriptor_chain(mem, chain.clone()) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("virtio-fs: unusable request buffers: {e}");
            return 0;
        }
    };
    let writer = match VirtioFsWriter::new(mem, chain) {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!("virtio-fs: unusable reply buffers: {e}");
            return 0;
        }
    };
    // The request is guest-controlled: a bug it trips in the FUSE server must cost this request,
    // not the device.
    let handled = panic::catch_unwind(AssertUnwindSafe(|| {
        server.handle_message(reader, writer.into(), None, None)
    }));
    match handled {
        Ok(Ok(written)) => u32::try_from(written).unwrap_or(0),
        Ok(Err(e)) => {
            tracing::debug!("virtio-fs: request failed: {e}");
            0
        }
        Err(_) => {
            tracing::error!("virtio-fs: the FUSE server panicked on a request; answered nothing");
            0
        }
    }
}
