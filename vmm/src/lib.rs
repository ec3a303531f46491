//! skiff's virtual machine monitor.
//!
//! One process runs one KVM microVM: it loads the shared guest kernel, gives it memory, vCPUs, a
//! serial console and virtio-mmio devices (virtio-fs root and volumes, virtio-net on host taps,
//! vsock control channel, entropy), and reports how the guest ended. A crash or an exploit stays
//! confined to that one process.

// VMM core: the machine.
pub mod boot;
pub mod cpu;
pub mod devices;
pub mod layout;
pub mod memory;
pub mod vm;

pub mod builder;
pub mod container;
pub mod jail;
pub mod kvm_host;
pub mod loop_disk;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod userns;
pub mod virtio;

pub use spec::{SpecError, VmSpec};
pub use vm::{ExitNotifier, Vm, VmError, VmExit};
