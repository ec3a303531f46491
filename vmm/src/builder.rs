//! One builder attaches every device a [`VmSpec`] lists, in a fixed order (root share, volume
//! shares, network interfaces, vsock, entropy), so the same spec always gives the guest the same
//! device layout. Each takes one virtio-mmio slot and interrupt line: at most
//! [`MAX_VIRTIO_DEVICES`](crate::layout::MAX_VIRTIO_DEVICES) in all, which the spec's validation
//! checks.
//!
//! The taps are opened first, inherited descriptors before named taps: a descriptor the host was
//! to pass but did not must not turn out to be one this process opened itself.
//!
//! Mounts for the shares (the root overlay, read-only binds) are made in the VMM's private mount
//! namespace, which belongs to the calling thread: call this on the thread that then runs the
//! VM, before it starts any worker.

use std::path::PathBuf;
use std::sync::Arc;

use crate::container::{ContainerError, ContainerSession, PendingSession};
use crate::jail::idmap::UserNamespace;
use crate::rootfs::{bind_read_only, Rootfs, RootfsError};
use crate::spec::{NetSpec, SpecError, VmSpec, ROOTFS_TAG};
use crate::virtio::fs::{FsDevice, FsError, Sharing};
use crate::virtio::net::{Backend, MacAddr, NetDevice, NetError};
use crate::virtio::rng::RngDevice;
use crate::virtio::vsock::{VsockDevice, VsockError};
use crate::vm::{Vm, VmError};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("share {tag:?}: {source}")]
    Share {
        tag: String,
        #[source]
        source: FsError,
    },
    #[error("net[{index}]: {source}")]
    Net {
        index: usize,
        #[source]
        source: NetError,
    },
    #[error(transparent)]
    Vsock(#[from] VsockError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("cannot start the virtio-rng worker thread: {0}")]
    Rng(#[source] std::io::Error),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("cannot idmap {path} for the jail's user namespace: {source}")]
    Idmap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What must live as long as the VM runs: the merged root's mount; and the container session,
/// to be started (its threads) once the jail is complete.
pub struct Devices {
    pub rootfs: Option<Rootfs>,
    pub session: Option<PendingSession>,
}

/// The host directories the VM's file servers serve (an upper may be still to be made): what
/// must take an idmapped mount.
pub fn served_dirs(spec: &VmSpec) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(root) = &spec.rootfs {
        dirs.extend(root.layers.iter().cloned());
        // An upper disk is ext4, which takes idmapped mounts.
        if let (Some(upper), None) = (&root.upper, &root.upper_disk) {
            dirs.push(upper.clone());
        }
    }
    dirs.extend(spec.shares.iter().map(|s| s.source.clone()));
    dirs
}

/// Attaches the devices of `spec` to `vm`; with `idmap`, every served directory is an idmapped
/// mount of that user namespace (see [`crate::jail::idmap`]).
pub fn attach_devices(
    vm: &mut Vm,
    spec: &VmSpec,
    idmap: Option<&UserNamespace>,
) -> Result<Devices, BuildError> {
    // Checked again here: an inherited tap descriptor named twice must not be owned twice.
    spec.validate()?;
    let nets = net_devices(&spec.net)?;
    let share = |tag: &str, dir: &std::path::Path, sharing| {
        FsDevice::new(tag, dir, sharing).map_err(|source| BuildError::Share {
            tag: tag.to_string(),
            source,
        })
    };
    let rootfs = match &spec.rootfs {
        Some(root) => {
            let rootfs = Rootfs::prepare(
                &root.layers,
                root.upper.as_deref(),
                root.upper_disk.as_deref(),
                idmap,
            )?;
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
        if let Some(ns) = idmap {
            ns.idmap_in_place(&s.source)
                .map_err(|source| BuildError::Idmap {
                    path: s.source.clone(),
                    source,
                })?;
        }
        vm.add_virtio_device(Box::new(share(&s.tag, &s.source, Sharing::Shared)?))?;
    }
    for net in nets {
        vm.add_virtio_device(Box::new(net))?;
    }
    let mut session = None;
    if let Some(vsock) = &spec.vsock {
        // Before the device exists: guest-init may connect as soon as the guest runs.
        if let Some(container) = &spec.container {
            session = Some(ContainerSession::listen(container, &vsock.uds)?);
        }
        let device = VsockDevice::new(u64::from(vsock.guest_cid), &vsock.uds)?;
        vm.add_virtio_device(Box::new(device))?;
    }
    let rng = RngDevice::new().map_err(BuildError::Rng)?;
    vm.add_virtio_device(Box::new(rng))?;
    Ok(Devices { rootfs, session })
}

/// The network devices of `nets`, in list order; inherited descriptors are taken over first.
fn net_devices(nets: &[NetSpec]) -> Result<Vec<NetDevice>, BuildError> {
    let mut backends: Vec<Option<Arc<dyn Backend>>> = nets.iter().map(|_| None).collect();
    let by_fd_first = (0..nets.len()).filter(|&i| nets[i].fd.is_some());
    let by_name = (0..nets.len()).filter(|&i| nets[i].fd.is_none());
    for index in by_fd_first.chain(by_name) {
        let net = &nets[index];
        let backend = NetDevice::open_backend(net.tap.as_deref(), net.fd, net.stream.as_deref())
            .map_err(|source| BuildError::Net { index, source })?;
        backends[index] = Some(backend);
    }
    let mut devices = Vec::with_capacity(nets.len());
    for (index, (net, backend)) in nets.iter().zip(backends).enumerate() {
        let fail = |source| BuildError::Net { index, source };
        let backend = backend.ok_or(NetError::Backend).map_err(fail)?;
        let mac = net
            .mac
            .as_deref()
            .map(MacAddr::parse)
            .transpose()
            .map_err(fail)?;
        let name = backend.describe();
        let device = NetDevice::new(backend, mac, net.mtu).map_err(fail)?;
        tracing::debug!("net[{index}]: MAC {} on {name}", device.mac());
        devices.push(device);
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn net_entries_that_name_no_tap_are_refused_naming_the_entry() {
        let dev_null = std::fs::File::open("/dev/null").unwrap();
        let fd = dev_null.as_raw_fd();
        let cases = [
            (NetSpec::default(), "net[0]: give exactly one of tap"),
            (
                NetSpec {
                    fd: Some(1_000_000),
                    ..NetSpec::default()
                },
                "net[0]: fd 1000000: not an open file descriptor",
            ),
            (
                NetSpec {
                    fd: Some(fd),
                    ..NetSpec::default()
                },
                "net[0]: fd",
            ),
            (
                NetSpec {
                    tap: Some("skiff-none0".into()),
                    ..NetSpec::default()
                },
                "net[0]: tap \"skiff-none0\": no such network interface",
            ),
            (
                NetSpec {
                    stream: Some("/nonexistent/passt.sock".into()),
                    ..NetSpec::default()
                },
                "net[0]: stream /nonexistent/passt.sock: cannot connect",
            ),
        ];
        for (net, expected) in cases {
            let err = net_devices(&[net]).err().expect("refused").to_string();
            assert!(err.starts_with(expected), "{err:?}");
        }
        // A descriptor that is not a tap is left alone, not closed.
        // SAFETY: F_GETFD only queries the descriptor table.
        assert!(unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0);
    }
}
