//! Emulated devices outside virtio: the bus that dispatches port and MMIO exits, the 8250
//! console, and the two ways the guest ends itself (i8042 reset line, shutdown port).

pub mod bus;
pub mod legacy;
pub mod serial;
