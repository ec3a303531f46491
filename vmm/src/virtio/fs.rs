//! virtio-fs served in-process: the guest's FUSE requests arrive on the virtqueues and are
//! answered by fuse-backend-rs' `PassthroughFs` over a host directory, on one worker thread per
//! device. No helper daemon per VM (density) and no vhost-user hop per request (latency).

use std::os::fd::AsRawFd;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_FS;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::config_space::read_config_bytes;
use super::device_thread::DeviceThread;
use super::queue_service::{notify_guest, serve_available};
use super::{ActivateError, ActiveQueue, GuestMem, Interrupt, VirtioDevice};

/// Longest tag the config space holds (virtio spec 5.11.4).
pub const MAX_TAG_LEN: usize = 36;
/// Size of each virtqueue offered to the driver.
const QUEUE_SIZE: u16 = 1024;
/// Queue 0 carries FORGET/INTERRUPT (high priority), queue 1 everything else.
const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE, QUEUE_SIZE];
/// The guest has the share to itself, so what it caches stays true for as long as it likes.
const CACHE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

type PassthroughServer = Server<PassthroughFs<()>>;

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
}

/// A virtio-fs device (ID 26) sharing one host directory read-write under a mount tag.
pub struct FsDevice {
    /// The config space: the tag, NUL-padded, then `num_request_queues` (le32).
    config: [u8; MAX_TAG_LEN + 4],
    server: Arc<PassthroughServer>,
    worker: Option<DeviceThread>,
}

impl FsDevice {
    /// A device that serves `shared_dir` under `tag`. The guest is assumed to have the directory
    /// to itself (a container root): it may cache data, attributes and entries for long and
    /// write back lazily.
    pub fn new(tag: &str, shared_dir: &Path) -> Result<FsDevice, FsError> {
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
        let fs_config = Config {
            root_dir,
            cache_policy: CachePolicy::Always,
            entry_timeout: CACHE_TIMEOUT,
            attr_timeout: CACHE_TIMEOUT,
            // Coalesced writes in the guest page cache; we run as root so the reads it may issue
            // on O_WRONLY files succeed.
            writeback: true,
            // Images carry security.capability and other xattrs; the guest clears suid/caps on
            // write itself (killpriv v2) instead of asking with an xattr round trip per write.
            xattr: true,
            killpriv_v2: true,
            // O_PATH descriptors, not file handles: overlayfs (the usual root) only exports file
            // handles with nfs_export=on.
            inode_file_handles: false,
            // The root inode is made at FUSE INIT, so a re-initialising driver gets a fresh one.
            do_import: true,
            ..Config::default()
        };
        let fs = PassthroughFs::<()>::new(fs_config).map_err(|source| FsError::Passthrough {
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
            worker: None,
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

    fn device_features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
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
        let [hiprio, request]: [ActiveQueue; 2] =
            queues
                .try_into()
                .map_err(|queues: Vec<ActiveQueue>| ActivateError::QueueCount {
                    want: QUEUE_SIZES.len(),
                    got: queues.len(),
                })?;
        let event_idx = acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let mut worker = FsWorker {
            mem,
            interrupt,
            server: self.server.clone(),
            queues: [hiprio, request],
        };
        for q in &mut worker.queues {
            q.queue.set_event_idx(event_idx);
            if !q.queue.is_valid(&worker.mem) {
                return Err(ActivateError::Device(
                    "virtio-fs: the driver set up a queue outside guest memory".into(),
                ));
            }
        }
        self.stop_worker();
        let thread = DeviceThread::spawn("virtio-fs", move |stop| worker.run(&stop))
            .map_err(ActivateError::Worker)?;
        self.worker = Some(thread);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.stop_worker();
        true
    }
}

impl FsDevice {
    fn stop_worker(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            worker.stop();
        }
    }
}

/// Epoll tokens of the worker's event sources.
const TOKEN_STOP: u64 = u64::MAX;

struct FsWorker {
    mem: GuestMem,
    interrupt: Arc<dyn Interrupt>,
    server: Arc<PassthroughServer>,
    queues: [ActiveQueue; 2],
}

impl FsWorker {
    fn run(mut self, stop: &EventFd) {
        if let Err(e) = self.serve(stop) {
            tracing::error!("virtio-fs worker stopped: {e}");
        }
    }

    fn serve(&mut self, stop: &EventFd) -> std::io::Result<()> {
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_STOP),
        )?;
        for (index, q) in self.queues.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                q.notify.as_raw_fd(),
                EpollEvent::new(EventSet::IN, index as u64),
            )?;
        }
        // Buffers may have been made available before the first kick reached us.
        for index in 0..self.queues.len() {
            self.serve_queue(index);
        }
        let mut events = [EpollEvent::default(); 3];
        loop {
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for event in &events[..n] {
                match event.data() {
                    TOKEN_STOP => return Ok(()),
                    index => {
                        let index = index as usize;
                        // A failed read only means the counter was already drained.
                        let _ = self.queues[index].notify.read();
                        self.serve_queue(index);
                    }
                }
            }
        }
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
fn handle_request(
    server: &PassthroughServer,
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

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use fuse_backend_rs::abi::fuse_abi::{
        CreateIn, EntryOut, InHeader, InitIn, InitOut, Opcode, OpenIn, OpenOut, OutHeader, ReadIn,
        WriteIn,
    };
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use vm_memory::ByteValued;

    use super::*;
    use crate::virtio::test_driver::{counting_interrupt, guest_memory, Buf, DriverQueue};

    const REQ_ADDR: u64 = 0x10_0000;
    const REPLY_ADDR: u64 = 0x20_0000;
    const WAIT: Duration = Duration::from_secs(5);

    /// A device serving `dir`, activated on a fake driver's queues.
    pub(crate) fn started<'m>(dir: &Path, mem: &'m GuestMem) -> (FsDevice, [DriverQueue<'m>; 2]) {
        let mut dev = FsDevice::new("rootfs", dir).expect("device");
        let hiprio = DriverQueue::new(mem, 0, 64);
        let request = DriverQueue::new(mem, 0x1_0000, 64);
        let features = dev.device_features();
        dev.activate(
            mem.clone(),
            counting_interrupt(),
            vec![hiprio.active(), request.active()],
            features,
        )
        .expect("activate");
        (dev, [hiprio, request])
    }

    /// Sends one FUSE request (header + body) and returns the reply bytes.
    pub(crate) fn call(
        q: &mut DriverQueue,
        opcode: Opcode,
        nodeid: u64,
        body: &[u8],
    ) -> (OutHeader, Vec<u8>) {
        let header = InHeader {
            len: (std::mem::size_of::<InHeader>() + body.len()) as u32,
            opcode: opcode as u32,
            unique: 7,
            nodeid,
            ..Default::default()
        };
        let mut req = header.as_slice().to_vec();
        req.extend_from_slice(body);
        q.write(REQ_ADDR, &req);
        q.write(REPLY_ADDR, &[0u8; 8192]);
        q.offer(&[
            Buf::readable(REQ_ADDR, req.len() as u32),
            Buf::writable(REPLY_ADDR, 4096),
            Buf::writable(REPLY_ADDR + 4096, 4096),
        ]);
        q.kick();
        let (_, len) = q.wait_used(WAIT).expect("reply");
        let reply = q.read(REPLY_ADDR, len as usize);
        let out = OutHeader::from_slice(&reply[..std::mem::size_of::<OutHeader>()])
            .copied()
            .expect("out header");
        assert_eq!(out.len, len, "reply length in header and used ring differ");
        (out, reply[std::mem::size_of::<OutHeader>()..].to_vec())
    }

    pub(crate) fn fuse_init(q: &mut DriverQueue) -> InitOut {
        let init = InitIn {
            major: 7,
            minor: 31,
            max_readahead: 128 << 10,
            flags: 0,
        };
        let (out, body) = call(q, Opcode::Init, 0, init.as_slice());
        assert_eq!(out.error, 0, "INIT failed");
        *InitOut::from_slice(&body[..std::mem::size_of::<InitOut>()]).expect("init out")
    }

    pub(crate) fn lookup(q: &mut DriverQueue, parent: u64, name: &str) -> (i32, Option<EntryOut>) {
        let mut body = name.as_bytes().to_vec();
        body.push(0);
        let (out, body) = call(q, Opcode::Lookup, parent, &body);
        let entry = (out.error == 0).then(|| {
            *EntryOut::from_slice(&body[..std::mem::size_of::<EntryOut>()]).expect("entry")
        });
        (out.error, entry)
    }

    /// Creates `name` in directory `parent` through FUSE and writes `data` into it.
    pub(crate) fn create_and_write(q: &mut DriverQueue, parent: u64, name: &str, data: &[u8]) {
        let create = CreateIn {
            flags: (libc::O_WRONLY | libc::O_CREAT) as u32,
            mode: libc::S_IFREG | 0o644,
            umask: 0o022,
            fuse_flags: 0,
        };
        let mut body = create.as_slice().to_vec();
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        let (out, reply) = call(q, Opcode::Create, parent, &body);
        assert_eq!(out.error, 0, "CREATE {name} failed");
        let entry_len = std::mem::size_of::<EntryOut>();
        let entry = *EntryOut::from_slice(&reply[..entry_len]).expect("entry");
        let open =
            *OpenOut::from_slice(&reply[entry_len..entry_len + std::mem::size_of::<OpenOut>()])
                .expect("open out");
        let write = WriteIn {
            fh: open.fh,
            offset: 0,
            size: data.len() as u32,
            ..Default::default()
        };
        let mut body = write.as_slice().to_vec();
        body.extend_from_slice(data);
        let (out, _) = call(q, Opcode::Write, entry.nodeid, &body);
        assert_eq!(out.error, 0, "WRITE {name} failed");
    }

    #[test]
    fn config_space_holds_tag_and_one_request_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = FsDevice::new("rootfs", dir.path()).expect("device");
        assert_eq!(dev.device_type(), 26);
        let mut tag = [0xffu8; 36];
        dev.read_config(0, &mut tag);
        assert_eq!(&tag[..6], b"rootfs");
        assert!(tag[6..].iter().all(|&b| b == 0));
        let mut queues = [0u8; 4];
        dev.read_config(36, &mut queues);
        assert_eq!(u32::from_le_bytes(queues), 1);
        let mut past_end = [0xffu8; 4];
        dev.read_config(40, &mut past_end);
        assert_eq!(past_end, [0; 4]);
    }

    #[test]
    fn bad_tags_and_dirs_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            FsDevice::new("", dir.path()),
            Err(FsError::Tag { .. })
        ));
        let long = "x".repeat(37);
        assert!(matches!(
            FsDevice::new(&long, dir.path()),
            Err(FsError::Tag { .. })
        ));
        let missing = dir.path().join("missing");
        let err = FsDevice::new("t", &missing)
            .err()
            .expect("missing dir refused");
        assert!(err.to_string().contains("missing"), "{err}");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(matches!(
            FsDevice::new("t", &file),
            Err(FsError::NotADirectory(_))
        ));
    }

    #[test]
    fn init_lookup_open_read_of_a_real_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let content = b"hello from the host\n".repeat(100);
        std::fs::write(dir.path().join("hello.txt"), &content).expect("write");
        let mem = guest_memory();
        let (_dev, [_, mut req]) = started(dir.path(), &mem);

        let init = fuse_init(&mut req);
        assert_eq!(init.major, 7);

        let (err, entry) = lookup(&mut req, 1, "hello.txt");
        assert_eq!(err, 0);
        let entry = entry.expect("entry");
        assert_eq!(entry.attr.size, content.len() as u64);
        let (err, _) = lookup(&mut req, 1, "absent");
        assert_eq!(err, -libc::ENOENT);

        let open = OpenIn {
            flags: libc::O_RDONLY as u32,
            fuse_flags: 0,
        };
        let (out, body) = call(&mut req, Opcode::Open, entry.nodeid, open.as_slice());
        assert_eq!(out.error, 0);
        let fh = OpenOut::from_slice(&body[..std::mem::size_of::<OpenOut>()])
            .expect("open out")
            .fh;

        let read = ReadIn {
            fh,
            offset: 6,
            size: 8000,
            ..Default::default()
        };
        let (out, data) = call(&mut req, Opcode::Read, entry.nodeid, read.as_slice());
        assert_eq!(out.error, 0);
        assert_eq!(data, &content[6..]);
    }

    #[test]
    fn files_created_by_the_guest_land_in_the_shared_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mem = guest_memory();
        let (_dev, [_, mut req]) = started(dir.path(), &mem);
        fuse_init(&mut req);
        create_and_write(&mut req, 1, "new.txt", b"written by the guest");
        let on_host = std::fs::read(dir.path().join("new.txt")).expect("read back");
        assert_eq!(on_host, b"written by the guest");
    }

    #[test]
    fn requests_in_indirect_descriptor_tables_are_served() {
        // Linux' virtio-fs driver puts each request's buffers in an indirect table.
        let dir = tempfile::tempdir().expect("tempdir");
        let mem = guest_memory();
        let (_dev, [_, mut req]) = started(dir.path(), &mem);
        fuse_init(&mut req);
        let mut name = b"absent".to_vec();
        name.push(0);
        let header = InHeader {
            len: (std::mem::size_of::<InHeader>() + name.len()) as u32,
            opcode: Opcode::Lookup as u32,
            unique: 9,
            nodeid: 1,
            ..Default::default()
        };
        let body = REQ_ADDR + 0x100;
        req.write(REQ_ADDR, header.as_slice());
        req.write(body, &name);
        req.offer_indirect(
            0x30_0000,
            &[
                Buf::readable(REQ_ADDR, std::mem::size_of::<InHeader>() as u32),
                Buf::readable(body, name.len() as u32),
                Buf::writable(REPLY_ADDR, 16),
                Buf::writable(REPLY_ADDR + 16, 4096),
            ],
        );
        req.kick();
        let (_, len) = req.wait_used(WAIT).expect("reply");
        assert_eq!(len as usize, std::mem::size_of::<OutHeader>());
        let out = *OutHeader::from_slice(&req.read(REPLY_ADDR, len as usize)).expect("out header");
        assert_eq!((out.error, out.unique), (-libc::ENOENT, 9));
    }

    #[test]
    fn malformed_chains_are_returned_and_the_worker_keeps_serving() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"data").expect("write");
        let mem = guest_memory();
        let (_dev, [mut hiprio, mut req]) = started(dir.path(), &mem);

        // A buffer outside guest memory.
        req.offer(&[Buf::readable(1 << 40, 64), Buf::writable(REPLY_ADDR, 4096)]);
        // A header shorter than a FUSE in-header.
        req.write(REQ_ADDR, &[1, 2, 3, 4]);
        req.offer(&[Buf::readable(REQ_ADDR, 4), Buf::writable(REPLY_ADDR, 4096)]);
        // A descriptor that chains to itself.
        let at = req.next_index(1);
        req.offer_raw(&[SplitDescriptor::new(
            REQ_ADDR,
            64,
            virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16,
            at,
        )]);
        // A reply buffer too small for any reply, after a valid INIT header.
        let init = InHeader {
            len: (std::mem::size_of::<InHeader>() + std::mem::size_of::<InitIn>()) as u32,
            opcode: Opcode::Init as u32,
            ..Default::default()
        };
        req.write(REQ_ADDR + 0x1000, init.as_slice());
        req.offer(&[
            Buf::readable(REQ_ADDR + 0x1000, init.len),
            Buf::writable(REPLY_ADDR, 2),
        ]);
        req.kick();
        for _ in 0..4 {
            let (_, len) = req.wait_used(WAIT).expect("malformed chain returned");
            assert_eq!(len, 0);
        }
        // Garbage on the high-priority queue too.
        hiprio.offer(&[Buf::readable(1 << 40, 64)]);
        hiprio.kick();
        assert_eq!(hiprio.wait_used(WAIT).map(|(_, len)| len), Some(0));

        fuse_init(&mut req);
        let (err, entry) = lookup(&mut req, 1, "f");
        assert_eq!(err, 0);
        assert_eq!(entry.expect("entry").attr.size, 4);
    }

    #[test]
    fn reset_stops_the_worker_and_a_new_activation_serves_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mem = guest_memory();
        let (mut dev, [_, mut req]) = started(dir.path(), &mem);
        fuse_init(&mut req);
        assert!(dev.reset());

        let hiprio = DriverQueue::new(&mem, 0x2_0000, 64);
        let mut req = DriverQueue::new(&mem, 0x3_0000, 64);
        dev.activate(
            mem.clone(),
            counting_interrupt(),
            vec![hiprio.active(), req.active()],
            0,
        )
        .expect("reactivate");
        fuse_init(&mut req);
        assert_eq!(lookup(&mut req, 1, ".").0, 0);
    }
}
