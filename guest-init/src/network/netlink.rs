//! Just enough rtnetlink (NETLINK_ROUTE) to configure a link: list links, rename, set the MTU,
//! bring up or down, add an address, add a default route. Written by hand on libc: the messages
//! are a few fixed headers and attributes, and PID 1 stays free of a large dependency.
//!
//! Encoding and decoding are pure functions over byte buffers (tested without privileges); only
//! [`Socket`] talks to the kernel. Layouts are those of `linux/netlink.h`, `linux/rtnetlink.h`,
//! `linux/if_link.h` and `linux/if_addr.h`, in native byte order.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
/// On an error message: the request was not echoed back in full.
const NLM_F_CAPPED: u16 = 0x100;
/// On an error message: extended-ack attributes follow.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
/// How long a reply may take: the kernel answers at once, but PID 1 must never hang on it.
const REPLY_TIMEOUT: libc::timeval = libc::timeval {
    tv_sec: 5,
    tv_usec: 0,
};

// linux/rtnetlink.h
pub(crate) const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

// linux/if_link.h
pub(crate) const IFLA_ADDRESS: u16 = 1;
pub(crate) const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
/// Link kinds, for the tests' links.
#[cfg(test)]
pub(crate) const IFLA_LINKINFO: u16 = 18;
#[cfg(test)]
pub(crate) const IFLA_INFO_KIND: u16 = 1;

// linux/if_addr.h
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const IFA_F_NODAD: u8 = 0x2;

const IFF_UP: u32 = libc::IFF_UP as u32;

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// One request under construction: the netlink header, a fixed family header, attributes.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    buf: Vec<u8>,
}

impl Request {
    pub(crate) fn new(kind: u16, flags: u16) -> Request {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Request { buf }
    }

    /// Appends raw bytes (a family header), padded to 4 bytes.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> &mut Request {
        self.buf.extend_from_slice(bytes);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// `struct ifinfomsg`: family, pad, type, index, flags, change.
    pub(crate) fn ifinfomsg(&mut self, index: u32, flags: u32, change: u32) -> &mut Request {
        let mut h = [0u8; 16];
        h[0] = libc::AF_UNSPEC as u8;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        h[8..12].copy_from_slice(&flags.to_ne_bytes());
        h[12..16].copy_from_slice(&change.to_ne_bytes());
        self.push(&h)
    }

    /// One attribute (`struct rtattr` + payload, padded).
    pub(crate) fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Request {
        // Payloads here are names, addresses and nests of those: far below 64 KiB.
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.push(payload)
    }

    /// A NUL-terminated string attribute.
    pub(crate) fn attr_str(&mut self, kind: u16, text: &str) -> &mut Request {
        let mut payload = text.as_bytes().to_vec();
        payload.push(0);
        self.attr(kind, &payload)
    }

    /// A nested attribute whose payload `fill` appends (the tests create links with it).
    #[cfg(test)]
    pub(crate) fn nested(&mut self, kind: u16, fill: impl FnOnce(&mut Request)) -> &mut Request {
        let start = self.buf.len();
        self.attr(kind, &[]);
        fill(self);
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The finished message with its length and sequence number.
    pub(crate) fn finish(&self, seq: u32) -> Vec<u8> {
        let mut out = self.buf.clone();
        let len = out.len() as u32;
        out[0..4].copy_from_slice(&len.to_ne_bytes());
        out[8..12].copy_from_slice(&seq.to_ne_bytes());
        out
    }
}

/// `RTM_GETLINK` dump of every link.
pub(crate) fn get_links() -> Request {
    let mut r = Request::new(RTM_GETLINK, NLM_F_DUMP);
    r.ifinfomsg(0, 0, 0);
    r
}

/// Sets the link administratively up or down.
pub(crate) fn set_up(index: u32, up: bool) -> Request {
    let mut r = Request::new(RTM_NEWLINK, NLM_F_ACK);
    r.ifinfomsg(index, if up { IFF_UP } else { 0 }, IFF_UP);
    r
}

/// Renames the link (the kernel refuses while it is up).
pub(crate) fn rename(index: u32, name: &str) -> Request {
    let mut r = Request::new(RTM_NEWLINK, NLM_F_ACK);
    r.ifinfomsg(index, 0, 0).attr_str(IFLA_IFNAME, name);
    r
}

pub(crate) fn set_mtu(index: u32, mtu: u32) -> Request {
    let mut r = Request::new(RTM_NEWLINK, NLM_F_ACK);
    r.ifinfomsg(index, 0, 0).attr(IFLA_MTU, &mtu.to_ne_bytes());
    r
}

fn family(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn octets(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Adds `ip/prefix` to the link (replacing it if present). IPv4 addresses get their subnet's
/// broadcast address, IPv6 ones skip duplicate address detection (usable at once, as Docker has
/// them).
pub(crate) fn add_address(index: u32, ip: IpAddr, prefix: u8) -> Request {
    let mut r = Request::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
    let flags = if ip.is_ipv6() { IFA_F_NODAD } else { 0 };
    let mut h = [0u8; 8];
    h[0] = family(&ip);
    h[1] = prefix;
    h[2] = flags;
    h[3] = RT_SCOPE_UNIVERSE;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    r.push(&h)
        .attr(IFA_LOCAL, &octets(&ip))
        .attr(IFA_ADDRESS, &octets(&ip));
    if let IpAddr::V4(v4) = ip {
        if prefix < 31 {
            let host_bits = u32::MAX >> prefix;
            let broadcast = u32::from(v4) | host_bits;
            r.attr(IFA_BROADCAST, &broadcast.to_be_bytes());
        }
    }
    r
}

/// Adds (or replaces) the default route of `gateway`'s family via `gateway` on the link.
pub(crate) fn add_default_route(index: u32, gateway: IpAddr) -> Request {
    let mut r = Request::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
    let mut h = [0u8; 12];
    h[0] = family(&gateway);
    // dst_len, src_len, tos: 0 (the default route).
    h[4] = RT_TABLE_MAIN;
    h[5] = RTPROT_BOOT;
    h[6] = RT_SCOPE_UNIVERSE;
    h[7] = RTN_UNICAST;
    r.push(&h)
        .attr(RTA_GATEWAY, &octets(&gateway))
        .attr(RTA_OIF, &index.to_ne_bytes());
    r
}

/// A link as a `RTM_GETLINK` dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) index: u32,
    pub(crate) name: String,
    /// Hardware address; empty for links without one.
    pub(crate) mac: Vec<u8>,
    pub(crate) mtu: Option<u32>,
    pub(crate) flags: u32,
}

/// A request the kernel refused: its errno and, when it said more, its extended-ack message.
#[derive(Debug, thiserror::Error)]
#[error("{}{}", .errno, .message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
pub struct NetlinkError {
    pub errno: io::Error,
    pub message: Option<String>,
}

impl From<io::Error> for NetlinkError {
    fn from(errno: io::Error) -> NetlinkError {
        NetlinkError {
            errno,
            message: None,
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn malformed(what: &str) -> NetlinkError {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed netlink {what}"),
    )
    .into()
}

/// Splits a buffer into `(type, payload)` attributes; stops at the first malformed one.
fn attributes(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let kind = u16_at(b, 2)?;
        let payload = b.get(4..len)?;
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some((kind & 0x3fff, payload))
    })
}

/// One message of a reply: type, flags, sequence number, payload.
struct Reply<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// Splits one received datagram into its messages.
fn replies(mut b: &[u8]) -> Result<Vec<Reply<'_>>, NetlinkError> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let len = u32_at(b, 0).ok_or_else(|| malformed("header"))? as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Err(malformed("message length"));
        }
        out.push(Reply {
            kind: u16_at(b, 4).ok_or_else(|| malformed("header"))?,
            flags: u16_at(b, 6).ok_or_else(|| malformed("header"))?,
            seq: u32_at(b, 8).ok_or_else(|| malformed("header"))?,
            payload: &b[NLMSG_HDRLEN..len],
        });
        b = b.get(align4(len)..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Reads an `NLMSG_ERROR` payload: `Ok` for an acknowledgement (error 0), the errno and the
/// kernel's extended-ack message otherwise.
fn parse_error(payload: &[u8], flags: u16) -> Result<(), NetlinkError> {
    let code = u32_at(payload, 0).ok_or_else(|| malformed("error message"))? as i32;
    if code == 0 {
        return Ok(());
    }
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // After the error code: the request's header, and its payload unless capped.
        let echoed = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            u32_at(payload, 4).map_or(NLMSG_HDRLEN, |l| align4(l as usize))
        };
        let tlvs = payload.get(4 + echoed..).unwrap_or(&[]);
        message = attributes(tlvs)
            .find(|(kind, _)| *kind == NLMSGERR_ATTR_MSG)
            .map(|(_, text)| {
                let text = text.split(|&c| c == 0).next().unwrap_or_default();
                String::from_utf8_lossy(text).into_owned()
            })
            .filter(|m| !m.is_empty());
    }
    Err(NetlinkError {
        errno: io::Error::from_raw_os_error(code.saturating_neg()),
        message,
    })
}

/// Reads one `RTM_NEWLINK` payload of a dump.
fn parse_link(payload: &[u8]) -> Option<Link> {
    let index = u32_at(payload, 4)?;
    let flags = u32_at(payload, 8)?;
    let mut link = Link {
        index,
        name: String::new(),
        mac: Vec::new(),
        mtu: None,
        flags,
    };
    for (kind, value) in attributes(payload.get(16..)?) {
        match kind {
            IFLA_IFNAME => {
                let name = value.split(|&c| c == 0).next().unwrap_or_default();
                link.name = String::from_utf8_lossy(name).into_owned();
            }
            IFLA_ADDRESS => link.mac = value.to_vec(),
            IFLA_MTU => link.mtu = u32_at(value, 0),
            _ => {}
        }
    }
    Some(link)
}

/// A NETLINK_ROUTE socket, bound to the network namespace of the thread that opened it.
pub(crate) struct Socket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    pub(crate) fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the result is checked and owned.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for option in [NETLINK_CAP_ACK, NETLINK_EXT_ACK] {
            let on: libc::c_int = 1;
            // SAFETY: valid descriptor and a c_int option value of the given size. Older kernels
            // refuse these options; errors then carry no message, which is fine.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_NETLINK,
                    option,
                    (&on as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
        }
        // SAFETY: valid descriptor and a timeval of the given size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&REPLY_TIMEOUT as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket {
            fd,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    fn send(&mut self, request: &Request) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = request.finish(self.seq);
        // SAFETY: sockaddr_nl is plain data; all-zero (pid 0) addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: valid buffer and address of the given sizes.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Receives one datagram into the buffer; returns its length.
    fn receive(&mut self) -> io::Result<usize> {
        loop {
            // SAFETY: the buffer is valid for its length; MSG_TRUNC only makes recv(2) return the
            // datagram's full length.
            let got = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if got >= 0 {
                let got = got as usize;
                if got > self.buf.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("netlink reply of {got} bytes exceeds the buffer"),
                    ));
                }
                return Ok(got);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the kernel did not answer a netlink request in 5 s",
                    ))
                }
                _ => return Err(err),
            }
        }
    }

    /// Sends a request that asks for an acknowledgement and waits for it.
    pub(crate) fn execute(&mut self, request: &Request) -> Result<(), NetlinkError> {
        let seq = self.send(request)?;
        loop {
            let len = self.receive()?;
            for reply in replies(&self.buf[..len])? {
                if reply.seq == seq && reply.kind == NLMSG_ERROR {
                    return parse_error(reply.payload, reply.flags);
                }
            }
        }
    }

    /// Every link of the namespace.
    pub(crate) fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let seq = self.send(&get_links())?;
        let mut links = Vec::new();
        loop {
            let len = self.receive()?;
            for reply in replies(&self.buf[..len])? {
                if reply.seq != seq {
                    continue;
                }
                match reply.kind {
                    NLMSG_DONE => {
                        // Its payload is the dump's own error code (0 when complete).
                        if reply.payload.len() >= 4 {
                            parse_error(reply.payload, 0)?;
                        }
                        return Ok(links);
                    }
                    NLMSG_ERROR => parse_error(reply.payload, reply.flags)?,
                    RTM_NEWLINK => {
                        links.push(parse_link(reply.payload).ok_or_else(|| malformed("link"))?)
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "netlink_tests.rs"]
mod tests;
