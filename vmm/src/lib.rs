//! skiff's virtual machine monitor.
//!
//! One process runs one KVM microVM: it loads the shared guest kernel, gives it memory, vCPUs, a
//! serial console and virtio-mmio devices (virtio-fs root, vsock control channel, entropy), and
//! reports how the guest ended. A crash or an exploit stays confined to that one process.

pub mod kvm_host;
pub mod rootfs;
pub mod virtio;
