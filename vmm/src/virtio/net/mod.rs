//! virtio-net (device ID 1) with a host tap device or a passt/QEMU stream socket behind it.
//!
//! - `backend`: what the worker drives on the host side, and the datagram form a tap has.
//! - `tap`: opening the tap (by name, or an inherited descriptor) and its ioctls.
//! - `stream`: a stream socket in QEMU's length-prefixed framing (passt).
//! - `worker`: the device thread moving frames between the two virtqueues and the host side.
//!
//! One rx and one tx queue, no control queue. On a tap, the guest's `virtio_net_hdr_v1` (12
//! bytes) is the tap's vnet header too, so offload metadata (checksum and segmentation requests)
//! passes through unchanged in both directions and the host kernel checks what the guest sends.
//! What the tap may hand us (its offloads) follows the GUEST_* features the driver accepted. A
//! stream carries bare frames: no offloads are offered on it.

mod backend;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod stream;
mod tap;
#[cfg(test)]
mod tests;
mod worker;

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use libc::c_uint;
use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::*;

use super::config_space::read_config_bytes;
use super::device_thread::DeviceThread;
use super::queue_service::{accept_queues, RING_FEATURES};
use super::{ActivateError, ActiveQueue, GuestMem, Interrupt, VirtioDevice};
use crate::seccomp::ThreadKind;
pub(crate) use backend::Backend;
use stream::Stream;
pub use tap::{check_name, Tap, TapError, MAX_TAP_NAME_LEN};
use worker::NetWorker;

/// `virtio_net_hdr_v1` with `num_buffers`: what every frame starts with, on the rings and the tap.
pub const VNET_HDR_LEN: usize = 12;
/// An Ethernet header: the least a frame after the vnet header can hold.
const ETH_HLEN: usize = 14;
/// The largest frame (vnet header included) either way: a 64 KiB segmentation offload packet
/// with its headers.
const MAX_FRAME_LEN: usize = 65562;
/// Size of each virtqueue offered to the driver.
const QUEUE_SIZE: u16 = 256;
/// rx (device → guest), tx (guest → device).
const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE; 2];
/// The smallest MTU Linux accepts for an Ethernet device (IPv4's minimum).
pub const MIN_MTU: u16 = 68;

const fn bit(feature: u32) -> u64 {
    1 << feature
}

/// Offered on every backend (the MTU only when one is set).
const NET_FEATURES: u64 =
    bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_NET_F_STATUS);
/// Offered only on a backend that carries the vnet header (a tap).
const OFFLOAD_FEATURES: u64 = bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_HOST_ECN);

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("mac: {0:?} is not a unicast MAC address like 02:00:00:00:00:01")]
    Mac(String),
    #[error("mtu: {0} is below the minimum of {MIN_MTU}")]
    Mtu(u16),
    #[error(
        "give exactly one of tap (a tap's name), fd (an inherited tap descriptor) and stream (a \
         passt/QEMU stream socket to connect to)"
    )]
    Backend,
    #[error("stream {path}: cannot connect: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot pick a random MAC address: {0}")]
    Random(#[source] io::Error),
    #[error("cannot start the virtio-net worker thread: {0}")]
    Worker(#[source] io::Error),
    #[error(transparent)]
    Tap(#[from] TapError),
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses `aa:bb:cc:dd:ee:ff` (hex, either case); refuses multicast and all-zero addresses,
    /// which no interface may have.
    pub fn parse(text: &str) -> Result<MacAddr, NetError> {
        let bad = || NetError::Mac(text.to_string());
        let mut mac = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() || mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(bad());
        }
        Ok(MacAddr(mac))
    }

    /// A random locally administered unicast address.
    pub fn random() -> io::Result<MacAddr> {
        let mut mac = [0u8; 6];
        super::rng::getrandom(&mut mac)?;
        mac[0] = (mac[0] & !1) | 2;
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// The tap offloads (TUN_F_*) for the features a driver accepted: what the guest can receive.
/// Segmentation offloads need checksum offload, as the kernel's own rules have it.
pub fn tap_offloads(acked_features: u64) -> c_uint {
    let has = |feature| acked_features & bit(feature) != 0;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if has(VIRTIO_NET_F_GUEST_TSO4) {
        flags |= libc::TUN_F_TSO4;
    }
    if has(VIRTIO_NET_F_GUEST_TSO6) {
        flags |= libc::TUN_F_TSO6;
    }
    if has(VIRTIO_NET_F_GUEST_ECN) && flags & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6) != 0 {
        flags |= libc::TUN_F_TSO_ECN;
    }
    flags
}

/// Counters of a device's worker (tests read them; drops are also logged at debug level).
#[derive(Debug, Default)]
pub(crate) struct NetStats {
    /// Times the worker's loop woke up.
    pub(crate) wakeups: AtomicU64,
    pub(crate) rx_frames: AtomicU64,
    pub(crate) rx_dropped: AtomicU64,
    pub(crate) tx_frames: AtomicU64,
    pub(crate) tx_dropped: AtomicU64,
}

/// A virtio-net device on a tap or a stream socket.
pub struct NetDevice {
    backend: Arc<dyn Backend>,
    features: u64,
    /// mac (6), status (2), max_virtqueue_pairs (2), mtu (2), little endian.
    config: [u8; 12],
    stats: Arc<NetStats>,
    worker: DeviceThread,
}

impl NetDevice {
    /// Opens the host side `tap` (a tap's name), `fd` (an inherited tap descriptor) or `stream`
    /// (a passt/QEMU stream socket's path) describes: exactly one of the three.
    pub(crate) fn open_backend(
        tap: Option<&str>,
        fd: Option<RawFd>,
        stream: Option<&Path>,
    ) -> Result<Arc<dyn Backend>, NetError> {
        Ok(match (tap, fd, stream) {
            (Some(name), None, None) => Arc::new(Tap::open(name)?),
            (None, Some(fd), None) => Arc::new(Tap::from_inherited_fd(fd)?),
            (None, None, Some(path)) => Arc::new(Stream::connect(path)?),
            _ => return Err(NetError::Backend),
        })
    }

    /// A device on `backend` with the guest address `mac` (random when `None`) and, when given,
    /// an MTU offered to the driver.
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        mac: Option<MacAddr>,
        mtu: Option<u16>,
    ) -> Result<NetDevice, NetError> {
        if let Some(mtu) = mtu.filter(|&m| m < MIN_MTU) {
            return Err(NetError::Mtu(mtu));
        }
        let mac = match mac {
            Some(mac) => mac,
            None => MacAddr::random().map_err(NetError::Random)?,
        };
        let mut features = RING_FEATURES | NET_FEATURES;
        if backend.offloads() {
            features |= OFFLOAD_FEATURES;
        }
        if mtu.is_some() {
            features |= bit(VIRTIO_NET_F_MTU);
        }
        let mut config = [0u8; 12];
        config[..6].copy_from_slice(&mac.0);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config[8..10].copy_from_slice(&1u16.to_le_bytes());
        config[10..12].copy_from_slice(&mtu.unwrap_or(0).to_le_bytes());
        Ok(NetDevice {
            backend,
            features,
            config,
            stats: Arc::default(),
            worker: DeviceThread::start("virtio-net", ThreadKind::NetWorker)
                .map_err(NetError::Worker)?,
        })
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> MacAddr {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&self.config[..6]);
        MacAddr(mac)
    }

    #[cfg(test)]
    pub(crate) fn stats(&self) -> Arc<NetStats> {
        self.stats.clone()
    }
}

impl VirtioDevice for NetDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn device_features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMem,
        interrupt: Arc<dyn Interrupt>,
        queues: Vec<ActiveQueue>,
        acked_features: u64,
    ) -> Result<(), ActivateError> {
        let queues = accept_queues::<2>(queues, &mem, acked_features)?;
        self.worker.stop();
        self.backend
            .set_offload(tap_offloads(acked_features))
            .map_err(|e| {
                ActivateError::Device(format!(
                    "cannot set the offloads of {}: {e}",
                    self.backend.describe()
                ))
            })?;
        let worker = NetWorker::new(
            mem,
            interrupt,
            queues,
            self.backend.clone(),
            acked_features,
            self.stats.clone(),
        );
        self.worker
            .run(move |stop| {
                if let Err(e) = worker.run(stop) {
                    tracing::error!("virtio-net stopped: {e}");
                }
            })
            .map_err(ActivateError::Worker)
    }

    fn reset(&mut self) -> bool {
        self.worker.stop();
        // Frames queued from now on must not carry offloads the next driver may not accept.
        if let Err(e) = self.backend.set_offload(0) {
            tracing::warn!(
                "virtio-net: cannot clear the offloads of {}: {e}",
                self.backend.describe()
            );
        }
        true
    }
}
