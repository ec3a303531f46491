//! What a net device's frames travel through on the host: the contract the worker drives, and
//! its datagram form (one frame per read(2)/write(2), vnet header first), which a tap has.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use libc::c_uint;

/// What reading the host side gave.
pub(crate) enum Recv {
    /// A frame of this many bytes, vnet header first, is at the start of the buffer.
    Frame(usize),
    /// Nothing to read now; readiness of the descriptor tells when there is.
    Empty,
    /// One frame was lost; the next may come through.
    Lost(io::Error),
    /// The peer closed its end: nothing more will come.
    Closed,
    /// Receiving failed for good (an error, or a peer that broke the framing).
    Broken(io::Error),
}

/// What became of a frame handed over to the host side.
pub(crate) enum Sent {
    /// Taken (written, or queued whole to be written when the descriptor is writable).
    Taken,
    /// Lost, as a network may lose it.
    Lost(io::Error),
    /// Not taken: the host side holds an earlier frame it could not write yet. Try again once the
    /// descriptor is writable.
    Busy,
}

/// The host side of a net device. `recv` and `send` default to the datagram form; a backend with
/// other framing overrides both.
pub(crate) trait Backend: AsFd + Send + Sync + 'static {
    /// Whether frames carry the vnet header through to the host, so that checksum and
    /// segmentation offloads may be offered to the guest.
    fn offloads(&self) -> bool;

    /// Tells the backend which offloads (TUN_F_*) the receiver, our guest, can take.
    fn set_offload(&self, flags: c_uint) -> io::Result<()>;

    /// How the host side is named in log messages.
    fn describe(&self) -> String;

    /// Reads the next frame into `buf` (vnet header first; its length is the longest frame).
    fn recv(&self, buf: &mut [u8]) -> Recv {
        let fd = self.as_fd().as_raw_fd();
        loop {
            // SAFETY: `buf` is valid writable memory of the length passed.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EAGAIN) => Recv::Empty,
                    // One frame the tap could not hand over; the next may do.
                    Some(libc::EINVAL | libc::EFAULT | libc::EMSGSIZE | libc::ENOBUFS) => {
                        Recv::Lost(e)
                    }
                    _ => Recv::Broken(e),
                };
            };
            return if n == 0 { Recv::Closed } else { Recv::Frame(n) };
        }
    }

    /// Writes what an earlier `send` took but could not write yet, as far as the descriptor takes
    /// it now; true when nothing waits any more (nothing ever does in the datagram form).
    fn flush(&self) -> bool {
        true
    }

    /// Writes one frame (vnet header first); a full or failing host side loses it.
    fn send(&self, frame: &[u8]) -> Sent {
        let fd = self.as_fd().as_raw_fd();
        loop {
            // SAFETY: `frame` is valid readable memory of the length passed.
            let n = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
            if n >= 0 {
                return Sent::Taken;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Sent::Lost(e);
            }
        }
    }
}
