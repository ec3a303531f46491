//! The virtio-fs device against a fake guest driver, over real directories.
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{
    CreateIn, Dirent, EntryOut, FlushIn, FsOptions, InHeader, InitIn, InitIn2, InitOut, Opcode,
    OpenIn, OpenOut, OutHeader, ReadIn, WriteIn,
};
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::QueueT;
use vm_memory::ByteValued;

use super::*;
use crate::virtio::test_driver::{counting_interrupt, guest_memory, Buf, DriverQueue};

const REQ_ADDR: u64 = 0x10_0000;
const REPLY_ADDR: u64 = 0x20_0000;
const WAIT: Duration = Duration::from_secs(5);

/// A device serving `dir` as a container's root, activated on a fake driver's queues.
pub(crate) fn started<'m>(dir: &Path, mem: &'m GuestMem) -> (FsDevice, [DriverQueue<'m>; 2]) {
    started_with(dir, mem, Sharing::Exclusive)
}

/// A device serving `dir` shared as `sharing`, activated on a fake driver's queues.
pub(crate) fn started_with<'m>(
    dir: &Path,
    mem: &'m GuestMem,
    sharing: Sharing,
) -> (FsDevice, [DriverQueue<'m>; 2]) {
    let mut dev = FsDevice::new("rootfs", dir, sharing).expect("device");
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
    let head = q.offer(&[
        Buf::readable(REQ_ADDR, req.len() as u32),
        Buf::writable(REPLY_ADDR, 4096),
        Buf::writable(REPLY_ADDR + 4096, 4096),
    ]);
    q.kick();
    let (id, len) = q.wait_used(WAIT).expect("reply");
    if len < 16 {
        eprintln!("head {head} id {id} len {len} avail {}", q.avail_idx());
    }
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
    let entry = (out.error == 0)
        .then(|| *EntryOut::from_slice(&body[..std::mem::size_of::<EntryOut>()]).expect("entry"));
    (out.error, entry)
}

/// A FUSE CREATE of `name` (write-only) in directory `parent`: the reply as it came.
pub(crate) fn create(q: &mut DriverQueue, parent: u64, name: &str) -> (OutHeader, Vec<u8>) {
    create_with_mode(q, parent, name, 0o644)
}

/// `create` with permission bits `mode` (and no umask).
pub(crate) fn create_with_mode(
    q: &mut DriverQueue,
    parent: u64,
    name: &str,
    mode: u32,
) -> (OutHeader, Vec<u8>) {
    let create = CreateIn {
        flags: (libc::O_WRONLY | libc::O_CREAT) as u32,
        mode: libc::S_IFREG | mode,
        umask: 0,
        fuse_flags: 0,
    };
    let mut body = create.as_slice().to_vec();
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    call(q, Opcode::Create, parent, &body)
}

/// Creates `name` in directory `parent` through FUSE and writes `data` into it.
pub(crate) fn create_and_write(q: &mut DriverQueue, parent: u64, name: &str, data: &[u8]) {
    let (out, reply) = create(q, parent, name);
    assert_eq!(out.error, 0, "CREATE {name} failed");
    let entry_len = std::mem::size_of::<EntryOut>();
    let entry = *EntryOut::from_slice(&reply[..entry_len]).expect("entry");
    let open = *OpenOut::from_slice(&reply[entry_len..entry_len + std::mem::size_of::<OpenOut>()])
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
    let dev = FsDevice::new("rootfs", dir.path(), Sharing::Exclusive).expect("device");
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
        FsDevice::new("", dir.path(), Sharing::Exclusive),
        Err(FsError::Tag { .. })
    ));
    let long = "x".repeat(37);
    assert!(matches!(
        FsDevice::new(&long, dir.path(), Sharing::Exclusive),
        Err(FsError::Tag { .. })
    ));
    let missing = dir.path().join("missing");
    let err = FsDevice::new("t", &missing, Sharing::Exclusive)
        .err()
        .expect("missing dir refused");
    assert!(err.to_string().contains("missing"), "{err}");
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    assert!(matches!(
        FsDevice::new("t", &file, Sharing::Exclusive),
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
    // A miss is a negative entry the guest may cache.
    let (err, miss) = lookup(&mut req, 1, "absent");
    assert_eq!(err, 0);
    let miss = miss.expect("negative entry");
    assert_eq!(miss.nodeid, 0);
    assert!(
        miss.entry_valid >= 3600,
        "negative entry cached for {}s",
        miss.entry_valid
    );

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
    let reply = req.read(REPLY_ADDR, len as usize);
    let out = *OutHeader::from_slice(&reply[..16]).expect("out header");
    assert_eq!((out.error, out.unique), (0, 9));
    let entry =
        EntryOut::from_slice(&reply[16..16 + std::mem::size_of::<EntryOut>()]).expect("entry");
    assert_eq!(entry.nodeid, 0, "a negative entry");
}

#[test]
fn a_one_mib_write_in_page_descriptors_is_served_with_writeback_negotiated() {
    // As Linux 6.1 negotiates and sends it: INIT with the extended flags, then a WRITE of
    // max_write bytes whose payload is one descriptor per page in an indirect table.
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = guest_memory();
    let (_dev, [_, mut req]) = started(dir.path(), &mem);
    let flags = FsOptions::ASYNC_READ
        | FsOptions::BIG_WRITES
        | FsOptions::WRITEBACK_CACHE
        | FsOptions::DO_READDIRPLUS
        | FsOptions::MAX_PAGES
        | FsOptions::HANDLE_KILLPRIV_V2
        | FsOptions::INIT_EXT;
    let mut init = InitIn {
        major: 7,
        minor: 36,
        max_readahead: 128 << 10,
        flags: flags.bits() as u32,
    }
    .as_slice()
    .to_vec();
    init.extend_from_slice(InitIn2::default().as_slice());
    let (out, body) = call(&mut req, Opcode::Init, 0, &init);
    assert_eq!(out.error, 0);
    let init_out = *InitOut::from_slice(&body[..std::mem::size_of::<InitOut>()]).expect("init");
    assert_ne!(init_out.flags & FsOptions::WRITEBACK_CACHE.bits() as u32, 0);
    let max_write = init_out.max_write as usize;
    assert!(max_write >= 128 << 10, "max_write {max_write}");

    create_and_write(&mut req, 1, "big", b"");
    let (_, entry) = lookup(&mut req, 1, "big");
    let nodeid = entry.expect("entry").nodeid;
    let open = OpenIn {
        flags: libc::O_RDWR as u32,
        fuse_flags: 0,
    };
    let (out, body) = call(&mut req, Opcode::Open, nodeid, open.as_slice());
    assert_eq!(out.error, 0);
    let fh = OpenOut::from_slice(&body[..std::mem::size_of::<OpenOut>()])
        .expect("open out")
        .fh;

    let payload: Vec<u8> = (0..max_write).map(|i| (i % 253) as u8).collect();
    let header = InHeader {
        len: (std::mem::size_of::<InHeader>() + std::mem::size_of::<WriteIn>() + max_write) as u32,
        opcode: Opcode::Write as u32,
        unique: 11,
        nodeid,
        ..Default::default()
    };
    let write = WriteIn {
        fh,
        offset: 0,
        size: max_write as u32,
        ..Default::default()
    };
    let pages = 0x40_0000;
    req.write(REQ_ADDR, header.as_slice());
    req.write(REQ_ADDR + 0x100, write.as_slice());
    req.write(pages, &payload);
    let mut bufs = vec![
        Buf::readable(REQ_ADDR, std::mem::size_of::<InHeader>() as u32),
        Buf::readable(REQ_ADDR + 0x100, std::mem::size_of::<WriteIn>() as u32),
    ];
    bufs.extend((0..max_write / 4096).map(|p| Buf::readable(pages + 4096 * p as u64, 4096)));
    bufs.push(Buf::writable(
        REPLY_ADDR,
        std::mem::size_of::<OutHeader>() as u32,
    ));
    bufs.push(Buf::writable(REPLY_ADDR + 0x100, 8));
    req.offer_indirect(0x30_0000, &bufs);
    req.kick();
    let (_, len) = req.wait_used(WAIT).expect("write reply");
    assert_eq!(len, 24);
    let out = *OutHeader::from_slice(&req.read(REPLY_ADDR, 16)).expect("out");
    assert_eq!(out.error, 0);
    let written = u32::from_le_bytes(req.read(REPLY_ADDR + 0x100, 4).try_into().expect("4"));
    assert_eq!(written as usize, max_write);
    assert!(std::fs::read(dir.path().join("big")).expect("read back") == payload);
}

#[test]
fn flush_is_declined_so_the_guest_stops_sending_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("f"), b"x").expect("write");
    let mem = guest_memory();
    let (_dev, [_, mut req]) = started(dir.path(), &mem);
    fuse_init(&mut req);
    let (_, entry) = lookup(&mut req, 1, "f");
    let flush = FlushIn::default();
    let (out, _) = call(
        &mut req,
        Opcode::Flush,
        entry.expect("entry").nodeid,
        flush.as_slice(),
    );
    assert_eq!(out.error, -libc::ENOSYS);
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
    std::fs::write(dir.path().join("f"), b"x").expect("f");
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
    assert!(lookup(&mut req, 1, "f").1.is_some());
}

#[test]
fn activation_refuses_a_wrong_queue_count_and_queues_outside_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mem = guest_memory();
    let mut dev = FsDevice::new("rootfs", dir.path(), Sharing::Exclusive).expect("device");
    let one = DriverQueue::new(&mem, 0, 64);
    let err = dev
        .activate(mem.clone(), counting_interrupt(), vec![one.active()], 0)
        .expect_err("one queue is not enough");
    assert!(
        matches!(err, ActivateError::QueueCount { want: 2, got: 1 }),
        "{err}"
    );

    let hiprio = DriverQueue::new(&mem, 0, 64);
    let request = DriverQueue::new(&mem, 0x1_0000, 64);
    let mut outside = request.active();
    outside.queue.set_desc_table_address(Some(0), Some(0x100));
    let err = dev
        .activate(
            mem.clone(),
            counting_interrupt(),
            vec![hiprio.active(), outside],
            0,
        )
        .expect_err("a queue outside guest memory");
    assert!(err.to_string().contains("outside guest memory"), "{err}");
}

/// A ramfs mounted on a temp dir, detached when dropped. Its directory offsets are positions,
/// as tmpfs' were before Linux 6.6 (Debian bookworm's); this host's tmpfs has stable ones.
struct Ramfs(tempfile::TempDir);

impl Ramfs {
    fn mount() -> Ramfs {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let target = std::ffi::CString::new(dir.path().as_os_str().as_bytes()).expect("path");
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"ramfs".as_ptr(),
                target.as_ptr(),
                c"ramfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        let err = std::io::Error::last_os_error();
        assert_eq!(rc, 0, "mounting a ramfs (the test needs root): {err}");
        Ramfs(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        if let Ok(target) = std::ffi::CString::new(self.path().as_os_str().as_bytes()) {
            // SAFETY: a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// The (name, offset) of each entry in a READDIR or READDIRPLUS reply.
fn dirents(mut body: &[u8], plus: bool) -> Vec<(String, u64)> {
    let mut entries = Vec::new();
    while !body.is_empty() {
        if plus {
            body = &body[std::mem::size_of::<EntryOut>()..];
        }
        let head = std::mem::size_of::<Dirent>();
        let dirent = *Dirent::from_slice(&body[..head]).expect("dirent");
        let name = &body[head..head + dirent.namelen as usize];
        entries.push((String::from_utf8_lossy(name).into_owned(), dirent.off));
        body = &body[(head + dirent.namelen as usize).next_multiple_of(8)..];
    }
    entries
}

#[test]
fn removing_what_was_read_skips_nothing_where_directory_offsets_are_positions() {
    const FILES: usize = 300;
    for plus in [false, true] {
        let ramfs = Ramfs::mount();
        for i in 0..FILES {
            // Short names: more of them fit in a host read than in a reply.
            std::fs::write(ramfs.path().join(i.to_string()), b"").expect("file");
        }
        let mem = guest_memory();
        let (_dev, [_, mut req]) = started(ramfs.path(), &mem);
        fuse_init(&mut req);
        let open = OpenIn {
            flags: (libc::O_RDONLY | libc::O_DIRECTORY) as u32,
            fuse_flags: 0,
        };
        let (out, body) = call(&mut req, Opcode::Opendir, 1, open.as_slice());
        assert_eq!(out.error, 0, "OPENDIR");
        let fh = OpenOut::from_slice(&body[..std::mem::size_of::<OpenOut>()])
            .expect("open out")
            .fh;
        // What `rm -rf` does: read a page of entries, remove them, read on from the last offset.
        let (mut offset, mut removed) = (0, 0);
        loop {
            let read = ReadIn {
                fh,
                offset,
                size: 4096,
                ..Default::default()
            };
            let opcode = if plus {
                Opcode::Readdirplus
            } else {
                Opcode::Readdir
            };
            eprintln!("read {offset}");
            let (out, body) = call(&mut req, opcode, 1, read.as_slice());
            assert_eq!(out.error, 0, "{opcode:?} at {offset}");
            let entries = dirents(&body, plus);
            if entries.is_empty() {
                break;
            }
            for (name, off) in entries {
                let mut body = name.into_bytes();
                body.push(0);
                eprintln!("unlink {:?} {off}", String::from_utf8_lossy(&body));
                let (out, _) = call(&mut req, Opcode::Unlink, 1, &body);
                assert_eq!(out.error, 0, "UNLINK");
                (offset, removed) = (off, removed + 1);
            }
        }
        let left = std::fs::read_dir(ramfs.path()).expect("list").count();
        assert_eq!((removed, left), (FILES, 0), "READDIRPLUS: {plus}");
    }
}
