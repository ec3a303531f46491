//! Container networking on the host: the default bridge network (Docker's `bridge`) and
//! user-defined networks, each container's address on one of them, its tap, its published
//! ports, and the name server of each user-defined network.
//!
//! - `defs`: what a network is; `link`: bridges and taps (netlink, TUNSETIFF); `rules`: NAT,
//!   forwarding and isolation (nftables' `inet skiff` table); `ports`: the published ports'
//!   relays (`udp_relay` for udp); `dns`: the name server on a user-defined network's gateway; `views`: Docker's views.
//!
//! Addresses are handed out when a container starts and given back when its VM ends; the
//! engine records each running container's endpoint, and `adopt` takes them up again after a
//! daemon restart.

pub mod defs;
pub mod dns;
pub mod guest_net;
pub mod link;
pub mod ports;
pub mod rules;
pub mod udp_relay;
pub mod views;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::daemon::create::ports::PortRequest;
pub use defs::{resolvers, NetworkConfig, NetworkRecord, DEFAULT_NETWORK};
use ports::{BoundPort, Relays};

/// A running container's place on its network, kept in its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The network's name and ID.
    #[serde(default = "default_network_name")]
    pub network: String,
    #[serde(default)]
    pub network_id: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub mtu: u32,
    #[serde(default)]
    pub ports: Vec<BoundPort>,
    /// The names other containers of a user-defined network resolve it by.
    #[serde(default)]
    pub names: Vec<String>,
}

impl Endpoint {
    /// Docker's `EndpointID` for it: the MAC's hex digits (unique while it runs).
    pub fn endpoint_id(&self) -> String {
        self.mac.replace(':', "")
    }
}

fn default_network_name() -> String {
    DEFAULT_NETWORK.into()
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0} has no free address left")]
    Full(String),
    #[error(transparent)]
    Link(#[from] link::LinkError),
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    #[error(transparent)]
    Bind(#[from] ports::BindError),
    #[error("serving DNS on {addr}: {source}")]
    Dns {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What a start gets: the endpoint to record and to tell the guest, and the tap for the VMM.
pub struct Attachment {
    pub endpoint: Endpoint,
    pub tap: OwnedFd,
}

/// A container on a network, as address allocation and name resolution see it.
struct Member {
    ip: Ipv4Addr,
    names: Vec<String>,
}

/// Keyed by container ID and network name: a container may be on several networks.
type Members = Arc<Mutex<HashMap<(String, String), Member>>>;

/// A bridge that is set up, with its name server (user-defined networks).
struct Up {
    dns: Option<tokio::task::JoinHandle<()>>,
    index: u32,
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(dns) = &self.dns {
            dns.abort();
        }
    }
}

pub struct Networks {
    config: NetworkConfig,
    /// The bridges set up in this daemon's life, by network name; the lock also orders rule
    /// updates.
    up: tokio::sync::Mutex<HashMap<String, Up>>,
    /// Containers with an address, by container ID.
    members: Members,
    relays: Mutex<HashMap<String, Relays>>,
}

impl Networks {
    pub fn new(config: NetworkConfig) -> Networks {
        Networks {
            config,
            up: tokio::sync::Mutex::default(),
            members: Members::default(),
            relays: Mutex::default(),
        }
    }

    /// The default network, unless skiffd runs without one.
    pub fn default_network(&self) -> Option<NetworkRecord> {
        self.config.default_network()
    }

    /// The name servers a container at `endpoint` is given: its network's own on a
    /// user-defined network, the host's on the default one.
    pub fn dns_for(&self, endpoint: &Endpoint) -> Vec<String> {
        if endpoint.network == DEFAULT_NETWORK {
            self.config.dns.clone()
        } else {
            vec![endpoint.gateway.to_string()]
        }
    }

    /// Sets up `network`'s bridge (and name server) if this daemon has not yet, with the rules
    /// for `all` networks. Returns the bridge's index.
    async fn ensure_up(
        &self,
        network: &NetworkRecord,
        all: &[NetworkRecord],
    ) -> Result<u32, NetworkError> {
        let mut up = self.up.lock().await;
        if let Some(u) = up.get(&network.name) {
            return Ok(u.index);
        }
        let index = link::ensure_bridge(
            &network.bridge,
            network.gateway(),
            network.prefix,
            self.config.mtu,
        )
        .await?;
        rules::apply(&rules::ruleset(all))?;
        let dns = if network.user_defined() {
            Some(self.serve_dns(network).await?)
        } else {
            None
        };
        up.insert(network.name.clone(), Up { dns, index });
        Ok(index)
    }

    async fn serve_dns(
        &self,
        network: &NetworkRecord,
    ) -> Result<tokio::task::JoinHandle<()>, NetworkError> {
        let addr = SocketAddr::new(network.gateway().into(), 53);
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|source| NetworkError::Dns { addr, source })?;
        let upstream = self
            .config
            .dns
            .iter()
            .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        let names = Arc::new(NetworkNames {
            network: network.name.clone(),
            members: self.members.clone(),
        });
        Ok(dns::serve(socket, names, upstream))
    }

    /// Rewrites the rules for `all` networks and takes down the bridges of networks not among
    /// them (after `network rm`).
    pub async fn reconcile(
        &self,
        all: &[NetworkRecord],
        removed: Option<&NetworkRecord>,
    ) -> Result<(), NetworkError> {
        let mut up = self.up.lock().await;
        if let Some(gone) = removed {
            up.remove(&gone.name);
            link::delete_link(&gone.bridge).await?;
        }
        if !up.is_empty() || removed.is_some() {
            rules::apply(&rules::ruleset(all))?;
        }
        Ok(())
    }

    /// Gives container `id` an address on `network`, a tap on its bridge (its `nic`-th
    /// interface) and `ports` published to that address; `names` are what other containers
    /// resolve it by. On failure everything of `id` is given back.
    pub async fn attach(
        &self,
        id: &str,
        nic: usize,
        network: &NetworkRecord,
        all: &[NetworkRecord],
        names: Vec<String>,
        ports: &[PortRequest],
    ) -> Result<Attachment, NetworkError> {
        let attached = async {
            let bridge = self.ensure_up(network, all).await?;
            let ip = self.take_address(id, network, names.clone())?;
            let tap = link::create_tap(&tap_name(id, nic), bridge, self.config.mtu).await?;
            let (bound, relays) = ports::publish(ports, ip).await?;
            Ok::<_, NetworkError>((ip, tap, bound, relays))
        }
        .await;
        let (ip, tap, bound, relays) = match attached {
            Ok(a) => a,
            Err(e) => {
                self.detach(id);
                return Err(e);
            }
        };
        if !bound.is_empty() {
            self.lock_relays().insert(id.to_string(), relays);
        }
        Ok(Attachment {
            endpoint: Endpoint {
                network: network.name.clone(),
                network_id: network.id.clone(),
                ip,
                prefix: network.prefix,
                gateway: network.gateway(),
                mac: mac_of(ip),
                mtu: self.config.mtu,
                ports: bound,
                names,
            },
            tap,
        })
    }

    /// Takes up the endpoint of a container whose VM outlived the last daemon: its address,
    /// names and published ports (a port taken meanwhile is reported and left unpublished).
    pub async fn adopt(&self, id: &str, endpoint: &Endpoint, all: &[NetworkRecord]) {
        match all.iter().find(|n| n.name == endpoint.network) {
            Some(network) => {
                if let Err(e) = self.ensure_up(network, all).await {
                    tracing::warn!(id, "setting up network {} again: {e}", network.name);
                }
            }
            None => tracing::warn!(id, "its network {} is gone", endpoint.network),
        }
        self.lock_members().insert(
            (id.to_string(), endpoint.network.clone()),
            Member {
                ip: endpoint.ip,
                names: endpoint.names.clone(),
            },
        );
        if endpoint.ports.is_empty() {
            return;
        }
        match ports::republish(&endpoint.ports, endpoint.ip).await {
            Ok(relays) => {
                self.lock_relays().insert(id.to_string(), relays);
            }
            Err(e) => tracing::warn!(id, "publishing the ports again: {e}"),
        }
    }

    /// Gives back the addresses and closes the published ports of `id` (its VM has ended; the
    /// taps went with it).
    pub fn detach(&self, id: &str) {
        self.lock_members().retain(|(member, _), _| member != id);
        self.lock_relays().remove(id);
    }

    fn take_address(
        &self,
        id: &str,
        network: &NetworkRecord,
        names: Vec<String>,
    ) -> Result<Ipv4Addr, NetworkError> {
        let mut members = self.lock_members();
        let used = |ip: &Ipv4Addr| {
            members
                .iter()
                .any(|((_, net), m)| *net == network.name && m.ip == *ip)
        };
        let ip = network
            .hosts()
            .find(|ip| !used(ip))
            .ok_or_else(|| NetworkError::Full(network.name.clone()))?;
        members.insert((id.to_string(), network.name.clone()), Member { ip, names });
        Ok(ip)
    }

    fn lock_members(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Member>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_relays(&self) -> std::sync::MutexGuard<'_, HashMap<String, Relays>> {
        self.relays.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One network's names, for its name server.
struct NetworkNames {
    network: String,
    members: Members,
}

impl dns::NameTable for NetworkNames {
    /// Docker's embedded DNS: names on this network, else on another network the asking
    /// container is on too (at its address there).
    fn lookup(&self, name: &str, client: IpAddr) -> Vec<Ipv4Addr> {
        let members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let named = |m: &Member| m.names.iter().any(|n| n.eq_ignore_ascii_case(name));
        let here: Vec<Ipv4Addr> = members
            .iter()
            .filter(|((_, net), m)| *net == self.network && named(m))
            .map(|(_, m)| m.ip)
            .collect();
        if !here.is_empty() {
            return here;
        }
        let asker = members
            .iter()
            .find(|((_, net), m)| *net == self.network && IpAddr::V4(m.ip) == client)
            .map(|((id, _), _)| id.clone());
        let Some(asker) = asker else {
            return Vec::new();
        };
        let shared: Vec<&String> = members
            .keys()
            .filter(|(id, _)| *id == asker)
            .map(|(_, net)| net)
            .collect();
        members
            .iter()
            .filter(|((_, net), m)| shared.contains(&net) && named(m))
            .map(|(_, m)| m.ip)
            .collect()
    }
}

/// A container's tap: `skt` (first interface) or `sk1`, `sk2`, … and the ID's first 12
/// characters (15, the longest name Linux takes).
fn tap_name(id: &str, nic: usize) -> String {
    let short = &id[..12.min(id.len())];
    match nic {
        0 => format!("skt{short}"),
        n => format!("sk{n}{short}"),
    }
}

/// Docker's scheme: `02:42` and the four bytes of the address (locally administered, unicast).
fn mac_of(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use dns::NameTable;

    fn network(name: &str, cidr: &str) -> NetworkRecord {
        let (subnet, prefix) = defs::parse_subnet(cidr).unwrap();
        NetworkRecord {
            id: name.repeat(8),
            name: name.into(),
            bridge: format!("br-{name}"),
            subnet,
            prefix,
            internal: false,
            attachable: false,
            labels: Default::default(),
            created: String::new(),
        }
    }

    #[test]
    fn addresses_are_per_network_lowest_first_and_given_back() {
        let nets = Networks::new(NetworkConfig::default());
        let (a, b) = (network("a", "10.9.0.0/30"), network("b", "10.9.1.0/30"));
        assert_eq!(
            nets.take_address("c1", &a, vec![]).unwrap(),
            Ipv4Addr::new(10, 9, 0, 2)
        );
        assert!(matches!(
            nets.take_address("c2", &a, vec![]),
            Err(NetworkError::Full(_))
        ));
        assert_eq!(
            nets.take_address("c2", &b, vec![]).unwrap(),
            Ipv4Addr::new(10, 9, 1, 2)
        );
        nets.detach("c1");
        assert_eq!(
            nets.take_address("c3", &a, vec![]).unwrap(),
            Ipv4Addr::new(10, 9, 0, 2)
        );
        assert_eq!(mac_of(Ipv4Addr::new(10, 88, 0, 2)), "02:42:0a:58:00:02");
        assert_eq!(tap_name(&"ab".repeat(32), 0), "sktabababababab");
        assert_eq!(tap_name(&"ab".repeat(32), 2), "sk2abababababab");
    }

    #[test]
    fn names_resolve_only_on_their_own_network() {
        let nets = Networks::new(NetworkConfig::default());
        let (a, b) = (network("a", "10.9.0.0/24"), network("b", "10.9.1.0/24"));
        nets.take_address("web", &a, vec!["web".into(), "www".into()])
            .unwrap();
        nets.take_address("other", &b, vec!["db".into()]).unwrap();
        let names = NetworkNames {
            network: "a".into(),
            members: nets.members.clone(),
        };
        let web = IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(names.lookup("WWW", web), [Ipv4Addr::new(10, 9, 0, 2)]);
        assert!(names.lookup("db", web).is_empty());
        // A container on a and b finds b's names through a's server, at their b address.
        nets.take_address("both", &a, vec!["both".into()]).unwrap();
        nets.take_address("both", &b, vec!["both".into()]).unwrap();
        let both = IpAddr::V4(Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(names.lookup("db", both), [Ipv4Addr::new(10, 9, 1, 2)]);
        assert!(names.lookup("db", web).is_empty());
        nets.detach("web");
        assert!(names.lookup("web", both).is_empty());
        nets.detach("both");
        assert!(names.lookup("db", both).is_empty());
    }
}
