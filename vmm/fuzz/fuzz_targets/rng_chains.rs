//! Any byte string as the chains a guest makes available to the entropy device (see
//! `common` for the encoding): each is served as the worker serves it, and must be answered with
//! at most the per-request cap, never a panic.

#![no_main]

mod common;

use std::time::Duration;

use common::{guest_memory, offer_chain, Arena, Input};
use libfuzzer_sys::fuzz_target;
use skiff_vmm::virtio::fuzzing::serve_rng;
use skiff_vmm::virtio::test_driver::DriverQueue;

fuzz_target!(|data: &[u8]| {
    let mem = guest_memory();
    let mut q = DriverQueue::new(&mem, 0, 64);
    let mut active = q.active();
    let mut arena = Arena::default();
    let mut input = Input(data);
    while !input.is_empty() {
        offer_chain(&mut q, &mem, &mut input, &mut arena);
        for _ in 0..serve_rng(&mut active.queue, &mem) {
            // None only for a head index the ring could not take back.
            if let Some((_, len)) = q.wait_used(Duration::ZERO) {
                assert!(len <= 64 << 10, "{len} random bytes for one request");
            }
        }
    }
});
