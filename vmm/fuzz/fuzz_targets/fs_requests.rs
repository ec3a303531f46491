//! Any byte string as the chains a guest makes available to virtio-fs (see `common` for the
//! encoding), each carrying a FUSE request for the server over a small directory tree; the
//! session starts with a well-formed INIT so the fuzzer reaches every operation. Serving must
//! never panic (in our code or the FUSE server's) and never touch anything outside the share.

#![no_main]

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::{guest_memory, offer_chain, scratch_dir, Arena, Input};
use libfuzzer_sys::fuzz_target;
use skiff_vmm::virtio::fuzzing::FsHarness;
use skiff_vmm::virtio::test_driver::{Buf, DriverQueue};
use vm_memory::{Bytes, GuestAddress};

/// FUSE_INIT (opcode 26) of protocol 7.31: InHeader then InitIn.
fn init_request() -> Vec<u8> {
    let mut req = Vec::new();
    for v in [56u32, 26] {
        req.extend_from_slice(&v.to_le_bytes());
    }
    req.extend_from_slice(&1u64.to_le_bytes()); // unique
    req.extend_from_slice(&0u64.to_le_bytes()); // nodeid
    req.extend_from_slice(&[0u8; 16]); // uid, gid, pid, extension length and padding
    for v in [7u32, 31, 128 << 10, 0] {
        req.extend_from_slice(&v.to_le_bytes()); // major, minor, max_readahead, flags
    }
    req
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch_dir();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir_all(root.join("dir")).expect("root");
    fs::create_dir(&outside).expect("outside");
    fs::write(root.join("file"), b"hello").expect("file");
    fs::write(outside.join("secret"), b"untouched").expect("secret");
    symlink("../outside/secret", root.join("link")).expect("link");

    let mem = guest_memory();
    let mut q = DriverQueue::new(&mem, 0, 64);
    let mut active = q.active();
    let server = FsHarness::new(&root).expect("fs server");
    let mut arena = Arena::default();
    let init = init_request();
    let at = arena.alloc(init.len() as u32);
    mem.write_slice(&init, GuestAddress(at)).expect("init");
    q.offer(&[
        Buf::readable(at, init.len() as u32),
        Buf::writable(arena.alloc(4096), 4096),
    ]);
    server.serve(&mut active.queue, &mem);

    let mut input = Input(data);
    while !input.is_empty() {
        offer_chain(&mut q, &mem, &mut input, &mut arena);
        server.serve(&mut active.queue, &mem);
    }
    drop(server);
    assert_eq!(
        fs::read(outside.join("secret")).expect("secret"),
        b"untouched"
    );
    assert_eq!(fs::read_dir(&outside).expect("outside").count(), 1);
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 2);
});
