//! The container's network inside the VM: each link of the spec is found by its MAC address,
//! renamed (`eth0`), given its MTU, brought up, given its addresses and its default route; then
//! (see [`crate::etc_files`]) `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` are provided
//! the way Docker provides them.
//!
//! The whole spec is checked before anything is changed ([`NetworkPlan::new`]): addresses must
//! parse, names must be plain words, so nothing a spec holds can reach the kernel or a file in a
//! form other than the one checked.

pub(crate) mod netlink;

use crate::etc_files::EtcFiles;
use crate::protocol::{GuestInterface, GuestNetwork};
use netlink::{Link, NetlinkError, Socket};
use std::collections::HashSet;
use std::fmt;
use std::io;
use std::net::IpAddr;

/// Linux's `IFNAMSIZ` less the terminating NUL.
const MAX_LINK_NAME: usize = 15;
/// The smallest MTU IPv4 works with.
const MIN_MTU: u32 = 68;
const MAX_MTU: u32 = 65535;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{what}: {why}")]
    Invalid { what: String, why: String },
    #[error("no network interface has MAC address {mac} (to become {name})")]
    NoSuchLink { mac: String, name: String },
    #[error("opening a netlink socket: {0}")]
    Socket(io::Error),
    #[error("listing the network interfaces: {0}")]
    List(NetlinkError),
    #[error("interface {name} ({mac}): {step}: {source}")]
    Step {
        name: String,
        mac: String,
        step: String,
        source: NetlinkError,
    },
}

pub(crate) fn invalid(what: impl Into<String>, why: impl Into<String>) -> NetworkError {
    NetworkError::Invalid {
        what: what.into(),
        why: why.into(),
    }
}

/// Parses an IP address (std's strict syntax: no zone, no brackets, no spaces).
pub(crate) fn parse_ip(what: &str, text: &str) -> Result<IpAddr, NetworkError> {
    text.parse()
        .map_err(|_| invalid(format!("{what} {text:?}"), "not an IP address"))
}

/// An address with its prefix length, `10.88.0.2/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(what: &str, text: &str) -> Result<Cidr, NetworkError> {
        let bad = |why: &str| invalid(format!("{what} {text:?}"), why);
        let (ip, prefix) = text
            .split_once('/')
            .ok_or_else(|| bad("not in CIDR form (address/prefix length)"))?;
        let ip: IpAddr = ip.parse().map_err(|_| bad("not an IP address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max && prefix.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad(&format!("prefix length is not a number from 0 to {max}")))?;
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(bad("not a unicast address"));
        }
        Ok(Cidr { ip, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A link name the kernel takes as it is: 1 to 15 printable ASCII characters, no `/` or `:`,
/// not `.` or `..` (the kernel's `dev_valid_name`, without its non-ASCII leeway).
fn check_link_name(what: &str, name: &str) -> Result<(), NetworkError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_LINK_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            format!("{what} {name:?}"),
            "not a valid interface name (1 to 15 printable characters, no '/' or ':')",
        ))
    }
}

/// One link to configure, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPlan {
    pub mac: [u8; 6],
    /// The MAC as the spec spelled it, for messages.
    pub mac_text: String,
    pub name: String,
    pub addresses: Vec<Cidr>,
    pub gateway: Option<IpAddr>,
    pub mtu: Option<u32>,
}

impl LinkPlan {
    fn new(n: usize, spec: &GuestInterface) -> Result<LinkPlan, NetworkError> {
        let what = |field: &str| format!("interface {n} {field}");
        let mac = parse_mac(&spec.mac)
            .filter(|m| *m != [0; 6])
            .ok_or_else(|| {
                invalid(
                    format!("{} {:?}", what("MAC address"), spec.mac),
                    "not a MAC address (aa:bb:cc:dd:ee:ff)",
                )
            })?;
        check_link_name(&what("name"), &spec.name)?;
        let addresses = spec
            .addresses
            .iter()
            .map(|a| Cidr::parse(&what("address"), a))
            .collect::<Result<Vec<_>, _>>()?;
        let gateway = match &spec.gateway {
            None => None,
            Some(text) => {
                let ip = parse_ip(&what("gateway"), text)?;
                if ip.is_unspecified() || ip.is_multicast() {
                    return Err(invalid(
                        format!("{} {text:?}", what("gateway")),
                        "not a unicast address",
                    ));
                }
                Some(ip)
            }
        };
        if let Some(mtu) = spec.mtu.filter(|m| !(MIN_MTU..=MAX_MTU).contains(m)) {
            return Err(invalid(
                format!("{} {mtu}", what("MTU")),
                format!("not from {MIN_MTU} to {MAX_MTU}"),
            ));
        }
        Ok(LinkPlan {
            mac,
            mac_text: spec.mac.to_ascii_lowercase(),
            name: spec.name.clone(),
            addresses,
            gateway,
            mtu: spec.mtu,
        })
    }

    fn find<'a>(&self, links: &'a [Link]) -> Result<&'a Link, NetworkError> {
        links
            .iter()
            .find(|l| l.mac == self.mac)
            .ok_or_else(|| NetworkError::NoSuchLink {
                mac: self.mac_text.clone(),
                name: self.name.clone(),
            })
    }

    /// Renames `link` to `to`; the kernel renames only links that are down (they are, after
    /// boot).
    fn rename(&self, socket: &mut Socket, link: &Link, to: &str) -> Result<(), NetworkError> {
        let fail = |step: String| {
            move |source| NetworkError::Step {
                name: self.name.clone(),
                mac: self.mac_text.clone(),
                step,
                source,
            }
        };
        let down = format!("bringing {} down to rename it", link.name);
        socket
            .execute(&netlink::set_up(link.index, false))
            .map_err(fail(down))?;
        let rename = format!("renaming {} to {to}", link.name);
        socket
            .execute(&netlink::rename(link.index, to))
            .map_err(fail(rename))
    }

    fn configure(&self, socket: &mut Socket, links: &[Link]) -> Result<(), NetworkError> {
        let link = self.find(links)?;
        if link.name != self.name {
            self.rename(socket, link, &self.name)?;
        }
        let index = link.index;
        let mut step = |step: String, request: netlink::Request| {
            socket
                .execute(&request)
                .map_err(|source| NetworkError::Step {
                    name: self.name.clone(),
                    mac: self.mac_text.clone(),
                    step,
                    source,
                })
        };
        if let Some(mtu) = self.mtu.filter(|m| link.mtu != Some(*m)) {
            step(format!("setting MTU {mtu}"), netlink::set_mtu(index, mtu))?;
        }
        step("bringing it up".into(), netlink::set_up(index, true))?;
        for address in &self.addresses {
            step(
                format!("adding address {address}"),
                netlink::add_address(index, address.ip, address.prefix),
            )?;
        }
        if let Some(gateway) = self.gateway {
            step(
                format!("adding the default route via {gateway}"),
                netlink::add_default_route(index, gateway),
            )?;
        }
        Ok(())
    }
}

/// The spec's network, checked in full: links to configure and `/etc` files to provide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    pub links: Vec<LinkPlan>,
    pub etc: EtcFiles,
}

impl NetworkPlan {
    /// Checks everything; `hostname` is the spec's (it names the container's own addresses in
    /// `/etc/hosts` and fills `/etc/hostname`).
    pub fn new(
        network: &GuestNetwork,
        hostname: Option<&str>,
    ) -> Result<NetworkPlan, NetworkError> {
        let links = network
            .interfaces
            .iter()
            .enumerate()
            .map(|(n, spec)| LinkPlan::new(n, spec))
            .collect::<Result<Vec<_>, _>>()?;
        let mut names = HashSet::new();
        let mut macs = HashSet::new();
        for link in &links {
            if !names.insert(&link.name) {
                return Err(invalid(
                    format!("interface name {:?}", link.name),
                    "given twice",
                ));
            }
            if !macs.insert(link.mac) {
                return Err(invalid(
                    format!("interface MAC address {:?}", link.mac_text),
                    "given twice",
                ));
            }
        }
        let own: Vec<IpAddr> = links
            .iter()
            .flat_map(|l| l.addresses.iter().map(|a| a.ip))
            .collect();
        let etc = EtcFiles::new(network, hostname, &own)?;
        Ok(NetworkPlan { links, etc })
    }

    /// Configures the links in order, in the network namespace of the calling thread.
    pub fn configure_links(&self) -> Result<(), NetworkError> {
        if self.links.is_empty() {
            return Ok(());
        }
        let mut socket = Socket::open().map_err(NetworkError::Socket)?;
        let mut links = socket.links().map_err(NetworkError::List)?;
        // The kernel may have named the links in another order than the spec's (eth1 where
        // eth0 is wanted): every link to rename first takes a name of its own.
        let mut moved = false;
        for (n, plan) in self.links.iter().enumerate() {
            let link = plan.find(&links)?;
            if link.name != plan.name {
                plan.rename(&mut socket, link, &format!("skiff-tmp{n}"))?;
                moved = true;
            }
        }
        if moved {
            links = socket.links().map_err(NetworkError::List)?;
        }
        for plan in &self.links {
            plan.configure(&mut socket, &links)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
