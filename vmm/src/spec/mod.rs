//! The typed contract between a host and `skiff-vmm`: one [`VmSpec`] per microVM.
//!
//! A host writes it as JSON and starts `skiff-vmm --spec FILE`; `skiff-vmm`'s own command-line
//! flags (for use by hand) are turned into the same type, so everything after parsing takes one
//! path. Unknown fields are refused rather than ignored, so a host and a VMM that disagree on the
//! contract fail loudly instead of booting something else than was asked for.
//!
//! ```json
//! {
//!   "kernel": "/var/cache/skiff/kernel/vmlinux", "cpus": 1, "memory_mib": 128,
//!   "init": "/usr/lib/skiff/skiff-init", "cmdline_extra": "", "serial": "discard",
//!   "rootfs": { "layers": ["/layers/top", "/layers/base"], "upper": "/run/skiff/ab12/rootfs",
//!               "upper_disk": "/run/skiff/ab12/rootfs.img" },
//!   "vsock": { "guest_cid": 3, "uds": "/run/skiff/ab12/vsock.sock" },
//!   "shares": [], "disks": [],
//!   "net": [{ "fd": 5, "mac": "02:5f:00:00:00:02", "mtu": 1500 }, { "tap": "tap-dev0" },
//!           { "stream": "/run/skiff/ab12/passt.sock" }]
//! }
//! ```
//! `serial` is `"discard"`, `"stdout"` or `{"file": "/path"}`. Fields that are lists, options or
//! `cmdline_extra`/`serial` may be left out (empty, none, `""`, `"discard"`).
//!
//! A `net` entry names its host side by exactly one of `tap` (an existing tap device's name, which
//! the VMM attaches to), `fd` (a tap descriptor the host opened with
//! `IFF_TAP|IFF_NO_PI|IFF_VNET_HDR` and left open across the exec of `skiff-vmm`: not
//! close-on-exec, not 0 to 2) and `stream` (the absolute path of a Unix stream socket speaking
//! QEMU's length-prefixed frames, e.g. passt's `--socket`, which the VMM connects to; no offloads
//! on it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::boot::mptable::MAX_CPUS;
pub use crate::container::ContainerSpec;
use crate::devices::serial::SerialOutput;
use crate::layout;
use crate::memory::{self, MemoryError};
use crate::virtio::net::{check_name, MacAddr, NetError, TapError, MIN_MTU};

/// vCPUs of a VM when nobody says otherwise.
pub const DEFAULT_CPUS: u8 = 1;
/// Guest memory of a VM when nobody says otherwise.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// The virtio-fs tag the root file system is served under: what guest-init mounts (and what a
/// kernel booted with `rootfstype=virtiofs root=rootfs` mounts itself).
pub const ROOTFS_TAG: &str = "rootfs";
/// The guest's vsock address when the host has no reason to pick another (0 to 2 are reserved;
/// the host is 2). Every VM has its own vsock device, so they may all use it.
pub const DEFAULT_GUEST_CID: u32 = 3;

/// One microVM: what it boots, its size, and its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Guest kernel: `vmlinux` (ELF with a PVH note) or `bzImage`.
    pub kernel: PathBuf,
    /// Number of vCPUs (1 to [`MAX_CPUS`]).
    pub cpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Static init binary, packed as `/init` into an in-memory initramfs.
    pub init: Option<PathBuf>,
    /// Appended to the kernel command line (may hold `-- ARGS` for init).
    #[serde(default)]
    pub cmdline_extra: String,
    /// Where the serial console goes (its last 8 KiB are kept for the exit report anyway).
    #[serde(default)]
    pub serial: SerialOutput,
    /// The root file system, served over virtio-fs under [`ROOTFS_TAG`].
    pub rootfs: Option<RootfsSpec>,
    /// The vsock device.
    pub vsock: Option<VsockSpec>,
    /// More virtio-fs shares (volumes), each its own device; read-only ones are made so in the
    /// VMM's mount namespace, so the host kernel refuses every write whatever the guest sends.
    #[serde(default)]
    pub shares: Vec<ShareSpec>,
    /// Network interfaces, each a virtio-net device on a host tap, in this order.
    #[serde(default)]
    pub net: Vec<NetSpec>,
    /// Block devices. Not supported yet: must be empty.
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    /// The container this VM runs, its session held by the VMM (needs `vsock`). Without it, a
    /// host serves guest-init's control connection itself.
    #[serde(default)]
    pub container: Option<ContainerSpec>,
}

/// A root file system: read-only layers merged under a per-container copy-on-write directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootfsSpec {
    /// Read-only lower layer directories, top-most first (overlayfs `lowerdir` order).
    pub layers: Vec<PathBuf>,
    /// Copy-on-write upper directory (the VMM keeps `upper/`, `work/` and `merged/` inside it).
    /// Without it a single layer is served as it is, writable (tests and debugging).
    pub upper: Option<PathBuf>,
    /// An ext4 image (a file) the VMM mounts on `upper` through a loop device, in its own mount
    /// namespace, so that the three directories live in it: its size caps what the container
    /// writes (the guest gets ENOSPC). Needs `upper`.
    #[serde(default)]
    pub upper_disk: Option<PathBuf>,
}

/// The vsock device: the guest's address and the Unix socket its host side lives on (host→guest
/// connections go to `uds` with `CONNECT <port>`; guest→host ones arrive at `<uds>_<port>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockSpec {
    pub guest_cid: u32,
    pub uds: PathBuf,
}

/// A host directory shared with the guest over virtio-fs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareSpec {
    /// The tag the guest mounts it by.
    pub tag: String,
    /// The host directory.
    pub source: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// A virtio-net interface backed by a host tap device or a stream socket: exactly one of `tap`,
/// `fd` and `stream`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetSpec {
    /// The name of an existing tap device to attach to.
    #[serde(default)]
    pub tap: Option<String>,
    /// A tap descriptor inherited from the parent (opened with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR;
    /// the VMM takes it over and makes it close-on-exec and non-blocking).
    #[serde(default)]
    pub fd: Option<i32>,
    /// The absolute path of a Unix stream socket in QEMU's `-netdev stream` framing (passt's
    /// `--socket`) to connect to.
    #[serde(default)]
    pub stream: Option<PathBuf>,
    /// The guest's MAC address (`aa:bb:cc:dd:ee:ff`, unicast); a random locally administered one
    /// when absent.
    #[serde(default)]
    pub mac: Option<String>,
    /// The MTU offered to the guest (VIRTIO_NET_F_MTU); the guest's default (1500) when absent.
    #[serde(default)]
    pub mtu: Option<u16>,
}

/// A virtio-blk disk backed by a host file or block device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// Why a spec cannot be used; each message starts with the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid VM spec: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cpus: {0} vCPUs requested; this VMM runs 1 to {MAX_CPUS}")]
    Cpus(u8),
    #[error("memory_mib: {0}")]
    Memory(#[source] MemoryError),
    #[error("{field}: {path:?} is not an absolute path")]
    RelativePath { field: String, path: PathBuf },
    #[error("rootfs.layers: a root file system needs at least one layer")]
    NoLayers,
    #[error("rootfs.upper: {0} layers need a copy-on-write upper directory to be merged")]
    LayersNeedUpper(usize),
    #[error("rootfs.upper_disk: needs rootfs.upper, the directory it is mounted on")]
    DiskNeedsUpper,
    #[error("vsock.guest_cid: {0} is reserved (guests use 3 to {max})", max = u32::MAX - 1)]
    GuestCid(u32),
    #[error("container: a container session needs a vsock device")]
    ContainerWithoutVsock,
    #[error("not supported yet: {field} ({count} given; the list must be empty)")]
    Unsupported { field: &'static str, count: usize },
    #[error("net[{index}]: {source}")]
    Net {
        index: usize,
        #[source]
        source: NetError,
    },
    #[error("net[{index}].fd: {fd} is taken by net[{other}]")]
    DuplicateNetFd { index: usize, fd: i32, other: usize },
    #[error("too many devices: {count} virtio devices (root, shares, net, vsock, entropy), at most {max} fit the interrupt lines", max = layout::MAX_VIRTIO_DEVICES)]
    TooManyDevices { count: usize },
    #[error("shares[{index}].tag: {tag:?} must be 1 to {max} bytes long", max = crate::virtio::fs::MAX_TAG_LEN)]
    ShareTag { index: usize, tag: String },
    #[error("shares[{index}].tag: {tag:?} is taken (by the root or another share)")]
    DuplicateShareTag { index: usize, tag: String },
}

impl VmSpec {
    /// A VM booting `kernel` with the default size and nothing else: no init, no devices.
    pub fn new(kernel: impl Into<PathBuf>) -> VmSpec {
        VmSpec {
            kernel: kernel.into(),
            cpus: DEFAULT_CPUS,
            memory_mib: DEFAULT_MEMORY_MIB,
            init: None,
            cmdline_extra: String::new(),
            serial: SerialOutput::Discard,
            rootfs: None,
            vsock: None,
            shares: Vec::new(),
            net: Vec::new(),
            disks: Vec::new(),
            container: None,
        }
    }

    /// Parses a spec (without validating it: see [`VmSpec::validate`]).
    pub fn from_json(json: &[u8]) -> Result<VmSpec, SpecError> {
        Ok(serde_json::from_slice(json)?)
    }

    /// The spec as JSON (fails only for a path that is not UTF-8).
    pub fn to_json(&self) -> Result<Vec<u8>, SpecError> {
        Ok(serde_json::to_vec_pretty(self)?)
    }

    /// Checks everything that can be checked without touching the host: sizes within what this
    /// VMM runs, absolute paths (a spec must not depend on the VMM's working directory), and
    /// empty lists for the devices not supported yet.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(SpecError::Cpus(self.cpus));
        }
        memory::check_size(self.memory_mib).map_err(SpecError::Memory)?;
        absolute("kernel", &self.kernel)?;
        if let Some(init) = &self.init {
            absolute("init", init)?;
        }
        if let SerialOutput::File(path) = &self.serial {
            absolute("serial.file", path)?;
        }
        if let Some(rootfs) = &self.rootfs {
            rootfs.validate()?;
        }
        if let Some(vsock) = &self.vsock {
            if vsock.guest_cid < DEFAULT_GUEST_CID || vsock.guest_cid == u32::MAX {
                return Err(SpecError::GuestCid(vsock.guest_cid));
            }
            absolute("vsock.uds", &vsock.uds)?;
        }
        if let Some(container) = &self.container {
            if self.vsock.is_none() {
                return Err(SpecError::ContainerWithoutVsock);
            }
            absolute("container.log", &container.log)?;
            absolute("container.exit_file", &container.exit_file)?;
            absolute("container.attach", &container.attach)?;
        }
        let mut tags = vec![ROOTFS_TAG];
        for (index, share) in self.shares.iter().enumerate() {
            let tag = share.tag.as_str();
            if tag.is_empty() || tag.len() > crate::virtio::fs::MAX_TAG_LEN {
                return Err(SpecError::ShareTag {
                    index,
                    tag: tag.to_string(),
                });
            }
            if tags.contains(&tag) {
                return Err(SpecError::DuplicateShareTag {
                    index,
                    tag: tag.to_string(),
                });
            }
            tags.push(tag);
            absolute(&format!("shares[{index}].source"), &share.source)?;
        }
        for (index, net) in self.net.iter().enumerate() {
            net.validate()
                .map_err(|source| SpecError::Net { index, source })?;
            if let Some(path) = &net.stream {
                absolute(&format!("net[{index}].stream"), path)?;
            }
            if let Some(fd) = net.fd {
                if let Some(other) = self.net[..index].iter().position(|n| n.fd == Some(fd)) {
                    return Err(SpecError::DuplicateNetFd { index, fd, other });
                }
            }
        }
        if !self.disks.is_empty() {
            return Err(SpecError::Unsupported {
                field: "disks",
                count: self.disks.len(),
            });
        }
        let count = self.virtio_device_count();
        if count > layout::MAX_VIRTIO_DEVICES {
            return Err(SpecError::TooManyDevices { count });
        }
        Ok(())
    }

    /// The virtio devices the builder attaches for this spec (the entropy device always).
    pub fn virtio_device_count(&self) -> usize {
        usize::from(self.rootfs.is_some())
            + self.shares.len()
            + self.net.len()
            + usize::from(self.vsock.is_some())
            + 1
    }
}

impl NetSpec {
    /// Checks the fields on their own (the fd's number against the others is the spec's job).
    fn validate(&self) -> Result<(), NetError> {
        match (&self.tap, self.fd, &self.stream) {
            (Some(name), None, None) => check_name(name)?,
            (None, Some(fd), None) if fd < 3 => return Err(TapError::FdStdio(fd).into()),
            (None, Some(_), None) | (None, None, Some(_)) => {}
            _ => return Err(NetError::Backend),
        }
        if let Some(mac) = &self.mac {
            MacAddr::parse(mac)?;
        }
        if let Some(mtu) = self.mtu.filter(|&m| m < MIN_MTU) {
            return Err(NetError::Mtu(mtu));
        }
        Ok(())
    }
}

impl RootfsSpec {
    fn validate(&self) -> Result<(), SpecError> {
        if self.layers.is_empty() {
            return Err(SpecError::NoLayers);
        }
        for (index, layer) in self.layers.iter().enumerate() {
            absolute(&format!("rootfs.layers[{index}]"), layer)?;
        }
        if let Some(disk) = &self.upper_disk {
            absolute("rootfs.upper_disk", disk)?;
        }
        match &self.upper {
            Some(upper) => absolute("rootfs.upper", upper),
            None if self.layers.len() > 1 => Err(SpecError::LayersNeedUpper(self.layers.len())),
            None if self.upper_disk.is_some() => Err(SpecError::DiskNeedsUpper),
            None => Ok(()),
        }
    }
}

fn absolute(field: &str, path: &Path) -> Result<(), SpecError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(SpecError::RelativePath {
            field: field.to_string(),
            path: path.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests;
