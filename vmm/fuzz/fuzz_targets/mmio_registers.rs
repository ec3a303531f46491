//! Any byte string as what a guest driver does to a virtio-mmio device (the entropy device, the
//! simplest): register reads and writes of any width and offset, and writes into guest memory
//! where the driver lays out its queues. The transport must never panic, and once the driver
//! starts the device its worker serves whatever the queues hold, under its seccomp filter.
//!
//! Each operation is one byte (`op % 6`) and its operands:
//! 0 REG V32: write V at register REG * 4; 1 REG V16: the same with a 16-bit value (addresses
//! and sizes in the small guest memory); 2 REG: read; 3 OFF16 WIDTH: a read and a write of
//! WIDTH % 9 bytes at any offset; 4 ADDR16 LEN DATA: guest memory written by the driver;
//! 5 Q: a queue notification.

#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use skiff_vmm::devices::bus::BusDevice;
use skiff_vmm::virtio::mmio::MmioTransport;
use skiff_vmm::virtio::rng::RngDevice;
use skiff_vmm::virtio::GuestMem;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const MEM_SIZE: usize = 64 << 10;

/// The bytes of the input, read front to back; missing bytes read as zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
}

static SECCOMP: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // The device worker runs under its real filter, so a call it makes only on odd input and
    // that its allow-list lacks ends the run (exit code 159) instead of going unnoticed.
    SECCOMP.call_once(|| skiff_vmm::seccomp::enable(false).expect("seccomp filters"));
    let mem = GuestMem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory");
    let device = RngDevice::new().expect("rng device");
    let irq = EventFd::new(EFD_NONBLOCK).expect("irqfd");
    let mut t = MmioTransport::new(Box::new(device), mem.clone(), irq).expect("transport");
    let mut input = Input(data);
    while !input.0.is_empty() {
        let op = input.u8();
        match op % 6 {
            0 => {
                let reg = u64::from(input.u8()) * 4;
                t.write(reg, &input.u32().to_le_bytes());
            }
            1 => {
                let reg = u64::from(input.u8()) * 4;
                t.write(reg, &u32::from(input.u16()).to_le_bytes());
            }
            2 => {
                let mut b = [0u8; 4];
                t.read(u64::from(input.u8()) * 4, &mut b);
            }
            3 => {
                let offset = u64::from(input.u16() % 0x1000);
                let width = usize::from(input.u8() % 9);
                let mut b = [0u8; 8];
                t.read(offset, &mut b[..width]);
                t.write(offset, &b[..width]);
            }
            4 => {
                let addr = u64::from(input.u16());
                let len = usize::from(input.u8() % 64).min(input.0.len());
                let (bytes, rest) = input.0.split_at(len);
                let _ = mem.write_slice(bytes, GuestAddress(addr));
                input.0 = rest;
            }
            _ => t.write(0x50, &u32::from(input.u8() % 2).to_le_bytes()),
        }
    }
    // A reset stops the worker, as a driver unloading does.
    t.write(0x70, &[0; 4]);
});
