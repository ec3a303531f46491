//! Any byte string as what a guest and host clients do to virtio-vsock: the guest's transmit
//! chains (packets: see `common` for the chain encoding), its receive buffers, and host clients
//! on the Unix-socket side. After each step the worker takes one turn, as on a wakeup. It must
//! never panic, whatever the headers say.
//!
//! A record is a kind byte: % 8 = 0..3 a transmit chain record (the kind byte is its own);
//! 4 a receive chain record; 5 LEN8 DATA: every accepted host stream (the guest's connections to
//! host port 1024) gets DATA; 6 LEN8 DATA: a host client connects and sends DATA (e.g.
//! `CONNECT 1025\n`); 7: every host stream is closed.

#![no_main]

mod common;

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};

use common::{guest_memory, offer_chain, scratch_dir, Arena, Input};
use libfuzzer_sys::fuzz_target;
use skiff_vmm::virtio::fuzzing::VsockHarness;
use skiff_vmm::virtio::test_driver::{counting_interrupt, Buf, DriverQueue};

const GUEST_CID: u64 = 3;

fuzz_target!(|data: &[u8]| {
    let dir = scratch_dir();
    let uds = dir.path().join("vsock.sock");
    let host_port = UnixListener::bind(dir.path().join("vsock.sock_1024")).expect("host port");
    host_port.set_nonblocking(true).expect("nonblocking");

    let mem = guest_memory();
    let mut rx = DriverQueue::new(&mem, 0, 64);
    let mut tx = DriverQueue::new(&mem, 0x1000, 64);
    let event = DriverQueue::new(&mem, 0x2000, 64);
    let queues = [rx.active(), tx.active(), event.active()];
    let mut device = VsockHarness::new(GUEST_CID, &uds, mem.clone(), counting_interrupt(), queues)
        .expect("vsock device");
    let mut arena = Arena::default();
    // A few receive buffers, as the guest driver keeps them posted.
    for _ in 0..4 {
        rx.offer(&[Buf::writable(arena.alloc(4096), 4096)]);
    }
    let mut streams: Vec<UnixStream> = Vec::new();
    let mut input = Input(data);
    while !input.is_empty() {
        let kind = input.0[0];
        match kind % 8 {
            0..=3 => offer_chain(&mut tx, &mem, &mut input, &mut arena),
            4 => offer_chain(&mut rx, &mem, &mut input, &mut arena),
            5 => {
                input.u8();
                let len = usize::from(input.u8());
                let bytes = input.take(len);
                while let Ok((s, _)) = host_port.accept() {
                    s.set_nonblocking(true).expect("nonblocking");
                    streams.push(s);
                }
                for s in &mut streams {
                    let _ = s.write(bytes);
                }
            }
            6 => {
                input.u8();
                let len = usize::from(input.u8());
                let bytes = input.take(len);
                if let Ok(mut s) = UnixStream::connect(&uds) {
                    s.set_nonblocking(true).expect("nonblocking");
                    let _ = s.write(bytes);
                    streams.push(s);
                }
            }
            _ => {
                input.u8();
                streams.clear();
            }
        }
        device.turn();
    }
});
