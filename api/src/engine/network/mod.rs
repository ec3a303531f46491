//! Container networking on the host: the default bridge network (Docker's `bridge`), each
//! container's address on it, its tap, and its published ports.
//!
//! - `link`: the bridge and the taps (netlink, TUNSETIFF); `rules`: NAT and forwarding
//!   (nftables' `inet skiff` table); `ports`: the published ports' relays.
//!
//! Addresses are handed out when a container starts and given back when its VM ends; the
//! engine records each running container's endpoint, and `adopt` takes them up again after a
//! daemon restart.

pub mod dns;
pub mod guest_net;
pub mod link;
pub mod ports;
pub mod rules;
pub mod views;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::daemon::create::ports::PortRequest;
use ports::{BoundPort, Relays};

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

impl NetworkConfig {
    /// `A.B.C.D/N` for the subnet (`$SKIFF_BRIDGE_SUBNET`); N from 8 to 30.
    pub fn with_subnet(mut self, cidr: &str) -> Result<NetworkConfig, String> {
        let bad = || format!("not an IPv4 subnet A.B.C.D/N (N 8 to 30): {cidr:?}");
        let (ip, prefix) = cidr.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        self.subnet = Ipv4Addr::from(u32::from(ip) & mask(prefix));
        self.prefix = prefix;
        Ok(self)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }

    /// The addresses containers may get: after the gateway, before the broadcast address.
    fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.subnet) + 2;
        let broadcast = u32::from(self.subnet) | !mask(self.prefix);
        (first..broadcast).map(Ipv4Addr::from)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX << (32 - u32::from(prefix))
}

/// A running container's place on the network, kept in its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub mtu: u32,
    #[serde(default)]
    pub ports: Vec<BoundPort>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("skiffd runs without a default network (--bridge none)")]
    Disabled,
    #[error("the default network has no free address left (subnet {0}/{1})")]
    Full(Ipv4Addr, u8),
    #[error(transparent)]
    Link(#[from] link::LinkError),
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error(transparent)]
    Bind(#[from] ports::BindError),
}

/// What a start gets: the endpoint to record and to tell the guest, and the tap for the VMM.
pub struct Attachment {
    pub endpoint: Endpoint,
    pub tap: OwnedFd,
}

pub struct Networks {
    config: NetworkConfig,
    /// The bridge's index once it is set up (and the rules applied), for this daemon's life.
    bridge: tokio::sync::Mutex<Option<u32>>,
    /// Addresses in use, by container ID.
    addresses: Mutex<HashMap<String, Ipv4Addr>>,
    relays: Mutex<HashMap<String, Relays>>,
}

impl Networks {
    pub fn new(config: NetworkConfig) -> Networks {
        Networks {
            config,
            bridge: tokio::sync::Mutex::new(None),
            addresses: Mutex::default(),
            relays: Mutex::default(),
        }
    }

    /// Whether containers of the default network mode get a network at all.
    pub fn enabled(&self) -> bool {
        self.config.bridge.is_some()
    }

    /// The bridge, set up on first use: its link and address, then the rules.
    async fn bridge(&self) -> Result<u32, NetworkError> {
        let mut bridge = self.bridge.lock().await;
        if let Some(index) = *bridge {
            return Ok(index);
        }
        let c = &self.config;
        let name = c.bridge.as_deref().ok_or(NetworkError::Disabled)?;
        let index = link::ensure_bridge(name, c.gateway(), c.prefix, c.mtu).await?;
        rules::apply(&rules::ruleset(name, c.subnet, c.prefix))?;
        *bridge = Some(index);
        Ok(index)
    }

    /// Gives container `id` an address, a tap on the bridge and its published ports.
    pub async fn attach(
        &self,
        id: &str,
        ports: &[PortRequest],
    ) -> Result<Attachment, NetworkError> {
        let bridge = self.bridge().await?;
        let ip = self.take_address(id)?;
        let attached = async {
            let tap = link::create_tap(&tap_name(id), bridge, self.config.mtu).await?;
            let (bound, relays) = ports::publish(ports, ip).await?;
            Ok::<_, NetworkError>((tap, bound, relays))
        }
        .await;
        let (tap, bound, relays) = match attached {
            Ok(a) => a,
            Err(e) => {
                self.detach(id);
                return Err(e);
            }
        };
        self.lock_relays().insert(id.to_string(), relays);
        Ok(Attachment {
            endpoint: Endpoint {
                ip,
                prefix: self.config.prefix,
                gateway: self.config.gateway(),
                mac: mac_of(ip),
                mtu: self.config.mtu,
                ports: bound,
            },
            tap,
        })
    }

    /// Takes up the endpoint of a container whose VM outlived the last daemon: its address and
    /// its published ports (a port taken meanwhile is reported and left unpublished).
    pub async fn adopt(&self, id: &str, endpoint: &Endpoint) {
        if let Err(e) = self.bridge().await {
            tracing::warn!(id, "setting up the default network again: {e}");
        }
        self.addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), endpoint.ip);
        match ports::republish(&endpoint.ports, endpoint.ip).await {
            Ok(relays) => {
                self.lock_relays().insert(id.to_string(), relays);
            }
            Err(e) => tracing::warn!(id, "publishing the ports again: {e}"),
        }
    }

    /// Gives back the address and closes the published ports of `id` (its VM has ended; the tap
    /// went with it).
    pub fn detach(&self, id: &str) {
        self.addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.lock_relays().remove(id);
    }

    fn take_address(&self, id: &str) -> Result<Ipv4Addr, NetworkError> {
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        let ip = self
            .config
            .hosts()
            .find(|ip| !addresses.values().any(|used| used == ip))
            .ok_or(NetworkError::Full(self.config.subnet, self.config.prefix))?;
        addresses.insert(id.to_string(), ip);
        Ok(ip)
    }

    fn lock_relays(&self) -> std::sync::MutexGuard<'_, HashMap<String, Relays>> {
        self.relays.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A container's tap: `skt` and the ID's first 12 characters (15, the longest name Linux takes).
fn tap_name(id: &str) -> String {
    format!("skt{}", &id[..12.min(id.len())])
}

/// Docker's scheme: `02:42` and the four bytes of the address (locally administered, unicast).
fn mac_of(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_addresses_and_names() {
        let c = NetworkConfig::default()
            .with_subnet("172.20.5.9/24")
            .unwrap();
        assert_eq!((c.subnet, c.prefix), (Ipv4Addr::new(172, 20, 5, 0), 24));
        assert_eq!(c.gateway(), Ipv4Addr::new(172, 20, 5, 1));
        let hosts: Vec<_> = c.hosts().collect();
        assert_eq!(hosts.len(), 253);
        assert_eq!(hosts[0], Ipv4Addr::new(172, 20, 5, 2));
        assert_eq!(hosts[252], Ipv4Addr::new(172, 20, 5, 254));
        for bad in ["10.0.0.0", "10.0.0.0/31", "10.0.0/8", "x/8", "10.0.0.0/7"] {
            assert!(NetworkConfig::default().with_subnet(bad).is_err(), "{bad}");
        }
        assert_eq!(mac_of(Ipv4Addr::new(10, 88, 0, 2)), "02:42:0a:58:00:02");
        assert_eq!(tap_name(&"ab".repeat(32)), "sktabababababab");
    }

    #[test]
    fn resolvers_leave_out_loopback_and_fall_back_to_dockers() {
        let conf =
            "# x\nnameserver 127.0.0.53\nnameserver 192.168.1.1\nnameserver ::1\nsearch lan\n";
        assert_eq!(resolvers(conf), ["192.168.1.1"]);
        assert_eq!(resolvers("nameserver 127.0.0.1\n"), FALLBACK_DNS);
        assert_eq!(resolvers(""), FALLBACK_DNS);
    }

    #[test]
    fn addresses_are_handed_out_lowest_first_and_given_back() {
        let nets = Networks::new(NetworkConfig::default().with_subnet("10.9.0.0/30").unwrap());
        assert_eq!(nets.take_address("a").unwrap(), Ipv4Addr::new(10, 9, 0, 2));
        assert!(matches!(
            nets.take_address("b"),
            Err(NetworkError::Full(..))
        ));
        nets.detach("a");
        assert_eq!(nets.take_address("b").unwrap(), Ipv4Addr::new(10, 9, 0, 2));
    }
}
