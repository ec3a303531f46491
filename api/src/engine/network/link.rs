//! The host's side of a container's link: the bridge (created once, through netlink) and one tap
//! per container, opened by the engine and handed to the container's VMM.
//!
//! The tap is not persistent: it lives as long as an fd of it is open, i.e. as long as the VMM
//! runs (the engine closes its own copy once the VMM has started), so a VMM that dies, however
//! it dies, leaves no link behind.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use futures_util::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkUnspec};

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("creating tap {name}: {source}")]
    Tap {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("link {0} disappeared while it was set up")]
    Vanished(String),
}

fn handle() -> Result<Handle, LinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(LinkError::Socket)?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, LinkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes sure the bridge `name` exists, holds `gateway/prefix` and is up; returns its index.
pub async fn ensure_bridge(
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
    mtu: u32,
) -> Result<u32, LinkError> {
    let handle = handle()?;
    if index_of(&handle, name).await?.is_none() {
        let created = handle
            .link()
            .add(LinkBridge::new(name).mtu(mtu).build())
            .execute()
            .await;
        // Another daemon (or a racing start) may have made it meanwhile.
        match created {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
            other => other?,
        }
    }
    let index = index_of(&handle, name)
        .await?
        .ok_or_else(|| LinkError::Vanished(name.to_string()))?;
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut has_gateway = false;
    while let Some(message) = addresses.try_next().await? {
        has_gateway |= message.attributes.iter().any(|a| {
            matches!(a, rtnetlink::packet_route::address::AddressAttribute::Address(ip)
                if *ip == std::net::IpAddr::V4(gateway))
        });
    }
    if !has_gateway {
        handle
            .address()
            .add(index, gateway.into(), prefix)
            .execute()
            .await?;
    }
    handle
        .link()
        .change(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await?;
    Ok(index)
}

/// Deletes the link `name` (a user-defined network's bridge); one already gone is fine.
pub async fn delete_link(name: &str) -> Result<(), LinkError> {
    let handle = handle()?;
    let Some(index) = index_of(&handle, name).await? else {
        return Ok(());
    };
    match handle.link().del(index).execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
        other => Ok(other?),
    }
}

/// Opens a new tap `name` (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`: frames with virtio-net's
/// header, the form the VMM's device speaks), puts it in `bridge` and brings it up.
pub async fn create_tap(name: &str, bridge: u32, mtu: u32) -> Result<OwnedFd, LinkError> {
    let tap_error = |source| LinkError::Tap {
        name: name.to_string(),
        source,
    };
    let fd = open_tap(name).map_err(tap_error)?;
    let handle = handle()?;
    let index = index_of(&handle, name)
        .await?
        .ok_or_else(|| LinkError::Vanished(name.to_string()))?;
    handle
        .link()
        .change(
            LinkUnspec::new_with_index(index)
                .mtu(mtu)
                .controller(bridge)
                .up()
                .build(),
        )
        .execute()
        .await?;
    Ok(fd)
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn open_tap(name: &str) -> std::io::Result<OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0', ' ']) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is (name, flags, union padding).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}
