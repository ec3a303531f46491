//! One builder attaches every device a [`VmSpec`] lists, in a fixed order (root share, volume
//! shares, vsock, entropy), so the same spec always gives the guest the same device layout.
//!
//! Mounts for the shares (the root overlay, read-only binds) are made in the VMM's private mount
//! namespace, which belongs to the calling thread: call this on the thread that then runs the
//! VM, before it starts any worker.

use crate::container::{ContainerError, ContainerSession};
use crate::rootfs::{bind_read_only, Rootfs, RootfsError};
use crate::spec::{VmSpec, ROOTFS_TAG};
use crate::virtio::fs::{FsDevice, FsError, Sharing};
use crate::virtio::rng::RngDevice;
use crate::virtio::vsock::{VsockDevice, VsockError};
use crate::vm::{Vm, VmError};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("share {tag:?}: {source}")]
    Share {
        tag: String,
        #[source]
        source: FsError,
    },
    #[error(transparent)]
    Vsock(#[from] VsockError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Vm(#[from] VmError),
}

/// What must live as long as the VM runs: the merged root's mount and the container session.
pub struct Devices {
    pub rootfs: Option<Rootfs>,
    pub session: Option<ContainerSession>,
}

/// Attaches the devices of `spec` to `vm`.
pub fn attach_devices(vm: &mut Vm, spec: &VmSpec) -> Result<Devices, BuildError> {
    let share = |tag: &str, dir: &std::path::Path, sharing| {
        FsDevice::new(tag, dir, sharing).map_err(|source| BuildError::Share {
            tag: tag.to_string(),
            source,
        })
    };
    let rootfs = match &spec.rootfs {
        Some(root) => {
            let rootfs = Rootfs::prepare(&root.layers, root.upper.as_deref())?;
            let device = share(ROOTFS_TAG, rootfs.dir(), Sharing::Exclusive)?;
            vm.add_virtio_device(Box::new(device))?;
            Some(rootfs)
        }
        None => None,
    };
    for s in &spec.shares {
        if s.read_only {
            bind_read_only(&s.source)?;
        }
        vm.add_virtio_device(Box::new(share(&s.tag, &s.source, Sharing::Shared)?))?;
    }
    let mut session = None;
    if let Some(vsock) = &spec.vsock {
        // Before the device exists: guest-init may connect as soon as the guest runs.
        if let Some(container) = &spec.container {
            session = Some(ContainerSession::start(container, &vsock.uds)?);
        }
        let device = VsockDevice::new(u64::from(vsock.guest_cid), &vsock.uds)?;
        vm.add_virtio_device(Box::new(device))?;
    }
    vm.add_virtio_device(Box::new(RngDevice::new()))?;
    Ok(Devices { rootfs, session })
}
