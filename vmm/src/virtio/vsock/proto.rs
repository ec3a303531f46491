//! The virtio-vsock wire vocabulary (virtio spec 5.10): operations, shutdown flags, addresses,
//! and how we write the header of a packet we send to the guest.

use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::bitmap::BitmapSlice;

/// The host's CID: guest packets to it are ours to forward.
pub(crate) const HOST_CID: u64 = 2;
/// The only socket type we carry.
pub(crate) const TYPE_STREAM: u16 = 1;

pub(crate) const OP_REQUEST: u16 = 1;
pub(crate) const OP_RESPONSE: u16 = 2;
pub(crate) const OP_RST: u16 = 3;
pub(crate) const OP_SHUTDOWN: u16 = 4;
pub(crate) const OP_RW: u16 = 5;
pub(crate) const OP_CREDIT_UPDATE: u16 = 6;
pub(crate) const OP_CREDIT_REQUEST: u16 = 7;

/// Shutdown flag: the sender will receive no more data.
pub(crate) const SHUTDOWN_RCV: u32 = 1;
/// Shutdown flag: the sender will send no more data.
pub(crate) const SHUTDOWN_SEND: u32 = 2;

/// The largest payload of one packet in either direction (Linux' VIRTIO_VSOCK_MAX_PKT_BUF_SIZE).
pub(crate) const MAX_PKT_DATA: u32 = 64 * 1024;

/// A connection as the guest names it: our (host) port and the guest's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    pub(crate) local_port: u32,
    pub(crate) peer_port: u32,
}

/// The header fields that vary between the packets we send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply {
    pub(crate) key: ConnKey,
    pub(crate) op: u16,
    pub(crate) flags: u32,
    pub(crate) buf_alloc: u32,
    pub(crate) fwd_cnt: u32,
}

impl Reply {
    /// A reset for a packet that names no connection we can serve.
    pub(crate) fn rst(key: ConnKey) -> Reply {
        Reply {
            key,
            op: OP_RST,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        }
    }

    /// Writes this header, with `len` payload bytes, into `pkt`; returns the bytes used.
    pub(crate) fn write_to<B: BitmapSlice>(
        &self,
        pkt: &mut VsockPacket<'_, B>,
        guest_cid: u64,
        len: u32,
    ) -> u32 {
        pkt.set_src_cid(HOST_CID)
            .set_dst_cid(guest_cid)
            .set_src_port(self.key.local_port)
            .set_dst_port(self.key.peer_port)
            .set_len(len)
            .set_type(TYPE_STREAM)
            .set_op(self.op)
            .set_flags(self.flags)
            .set_buf_alloc(self.buf_alloc)
            .set_fwd_cnt(self.fwd_cnt);
        PKT_HEADER_SIZE as u32 + len
    }
}
