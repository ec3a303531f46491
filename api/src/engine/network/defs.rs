//! What networks are: the default one from the daemon's configuration, user-defined ones as
//! stored, their subnets and addresses, and the name servers containers get.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The default network's name, as Docker's.
pub const DEFAULT_NETWORK: &str = "bridge";

/// The default network's settings (from the daemon's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The host bridge's name; None: no default network (skiffd's `--bridge none`), containers
    /// get loopback only.
    pub bridge: Option<String>,
    /// The subnet's first address; the bridge (gateway) takes the next one.
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    pub mtu: u32,
    /// The name servers containers are given (from the host's resolv.conf, see `resolvers`).
    pub dns: Vec<String>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: Some("skiff0".into()),
            subnet: Ipv4Addr::new(10, 88, 0, 0),
            prefix: 16,
            mtu: 1500,
            dns: FALLBACK_DNS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl NetworkConfig {
    /// `A.B.C.D/N` for the subnet (skiffd's `--bridge-subnet`).
    pub fn with_subnet(mut self, cidr: &str) -> Result<NetworkConfig, String> {
        (self.subnet, self.prefix) = parse_subnet(cidr)?;
        Ok(self)
    }

    /// The default network as a record, when there is one.
    pub fn default_network(&self) -> Option<NetworkRecord> {
        let bridge = self.bridge.clone()?;
        Some(NetworkRecord {
            id: derived_id(&bridge),
            name: DEFAULT_NETWORK.into(),
            bridge,
            subnet: self.subnet,
            prefix: self.prefix,
            internal: false,
            attachable: false,
            labels: BTreeMap::new(),
            created: String::new(),
        })
    }
}

/// `A.B.C.D/N` with N from 8 to 30, as (network address, N).
pub fn parse_subnet(cidr: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("not an IPv4 subnet A.B.C.D/N (N 8 to 30): {cidr:?}");
    let (ip, prefix) = cidr.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&prefix) {
        return Err(bad());
    }
    Ok((Ipv4Addr::from(u32::from(ip) & mask(prefix)), prefix))
}

/// A stable 64-hex ID for the default network (Docker's has one too).
fn derived_id(bridge: &str) -> String {
    skiff_images::Digest::of(format!("skiff-default-network:{bridge}").as_bytes())
        .hex()
        .to_string()
}

fn mask(prefix: u8) -> u32 {
    u32::MAX << (32 - u32::from(prefix))
}

/// A network containers can join: the default one or a user-defined one (stored by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    /// The host bridge: `skb` and the ID's first 12 characters for user-defined networks.
    pub bridge: String,
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    /// No traffic leaves it (no NAT, nothing forwarded out).
    pub internal: bool,
    /// Recorded only: any container may join a local network (Compose asks for it).
    #[serde(default)]
    pub attachable: bool,
    pub labels: BTreeMap<String, String>,
    /// RFC 3339; empty for the default network.
    pub created: String,
}

impl NetworkRecord {
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }

    /// User-defined networks resolve their containers' names; the default one does not (as in
    /// Docker).
    pub fn user_defined(&self) -> bool {
        self.name != DEFAULT_NETWORK
    }

    /// The addresses containers may get: after the gateway, before the broadcast address.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.subnet) + 2;
        let broadcast = u32::from(self.subnet) | !mask(self.prefix);
        (first..broadcast).map(Ipv4Addr::from)
    }

    /// Whether the two subnets share an address.
    pub fn overlaps(&self, subnet: Ipv4Addr, prefix: u8) -> bool {
        let common = mask(self.prefix.min(prefix));
        u32::from(self.subnet) & common == u32::from(subnet) & common
    }
}

/// Docker's name servers for containers when the host has only local ones.
const FALLBACK_DNS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// The name servers of a host's `resolv.conf` that a container can reach: loopback ones (a
/// local caching resolver) are left out, as Docker does; none left gives Docker's fallback.
pub fn resolvers(resolv_conf: &str) -> Vec<String> {
    let found: Vec<String> = resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().parse::<std::net::IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .map(|ip| ip.to_string())
        .collect();
    if found.is_empty() {
        FALLBACK_DNS.iter().map(|s| s.to_string()).collect()
    } else {
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_and_their_addresses() {
        let c = NetworkConfig::default()
            .with_subnet("172.20.5.9/24")
            .unwrap();
        let n = c.default_network().unwrap();
        assert_eq!((n.subnet, n.prefix), (Ipv4Addr::new(172, 20, 5, 0), 24));
        assert_eq!(n.gateway(), Ipv4Addr::new(172, 20, 5, 1));
        let hosts: Vec<_> = n.hosts().collect();
        assert_eq!(hosts.len(), 253);
        assert_eq!(hosts[0], Ipv4Addr::new(172, 20, 5, 2));
        assert_eq!(hosts[252], Ipv4Addr::new(172, 20, 5, 254));
        assert_eq!(n.id.len(), 64);
        assert!(!n.user_defined());
        for bad in ["10.0.0.0", "10.0.0.0/31", "10.0.0/8", "x/8", "10.0.0.0/7"] {
            assert!(parse_subnet(bad).is_err(), "{bad}");
        }
        assert!(n.overlaps(Ipv4Addr::new(172, 20, 0, 0), 16));
        assert!(!n.overlaps(Ipv4Addr::new(172, 20, 6, 0), 24));
        let none = NetworkConfig {
            bridge: None,
            ..NetworkConfig::default()
        };
        assert!(none.default_network().is_none());
    }

    #[test]
    fn resolvers_leave_out_loopback_and_fall_back_to_dockers() {
        let conf =
            "# x\nnameserver 127.0.0.53\nnameserver 192.168.1.1\nnameserver ::1\nsearch lan\n";
        assert_eq!(resolvers(conf), ["192.168.1.1"]);
        assert_eq!(resolvers("nameserver 127.0.0.1\n"), FALLBACK_DNS);
        assert_eq!(resolvers(""), FALLBACK_DNS);
    }
}
