//! Networks as the engine serves them: the default `bridge` (from skiffd's configuration), the
//! built-in `none`, and user-defined bridge networks kept in the state database; which network
//! a container joins, and its attachment when it starts.

use std::net::Ipv4Addr;

use super::network::defs::parse_subnet;
use super::network::{Attachment, NetworkError, NetworkRecord, DEFAULT_NETWORK};
use super::record::ContainerRecord;
use super::volumes::labels_match;
use super::{create, internal, Inner, Result};
use crate::daemon::create::decode::valid_network_name;
use crate::daemon::create::ports::PortRequest;
use crate::daemon::create::{NetworkJoin, NetworkMode};
use crate::daemon::model::{
    Ipam, IpamConfig, Network, NetworkContainer, NetworkCreateBody, NetworkCreated,
    NetworkPruneReport,
};
use crate::daemon::options::Filters;
use crate::daemon::timefmt::{rfc3339, ZERO_TIME};
use crate::daemon::BackendError;

/// Where subnets for user-defined networks are taken from when the request names none:
/// `10.89.0.0/24`, `10.89.1.0/24`, … (as podman's default pool).
const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 0);
const POOL_SUBNETS: u32 = 256;

/// Every network containers can join now: the default one (unless disabled), then the stored.
pub(super) fn all(inner: &Inner) -> Result<Vec<NetworkRecord>> {
    let mut out: Vec<NetworkRecord> = inner.networks.default_network().into_iter().collect();
    out.extend(inner.store.networks().map_err(internal)?);
    Ok(out)
}

/// A network by name, full ID or unique ID prefix.
pub(super) fn find(inner: &Inner, key: &str) -> Result<NetworkRecord> {
    let all = all(inner)?;
    if let Some(n) = all.iter().find(|n| n.name == key || n.id == key) {
        return Ok(n.clone());
    }
    let by_prefix: Vec<&NetworkRecord> = all.iter().filter(|n| n.id.starts_with(key)).collect();
    match by_prefix.as_slice() {
        [one] if !key.is_empty() => Ok((*one).clone()),
        [] | [_] => Err(BackendError::NoSuchNetwork(key.to_string())),
        _ => Err(BackendError::InvalidArgument(format!(
            "network {key} is ambiguous ({} matches found based on ID prefix)",
            by_prefix.len()
        ))),
    }
}

/// The most networks a container joins: each is a NIC of its VM, on an interrupt line that
/// volumes' shares use too (see `devices_fit`).
pub const MAX_NETWORKS: usize = 4;

/// Checks at create that the container's networks exist (Docker answers 404 then) and names
/// its further networks by their names; at most [`MAX_NETWORKS`], each once.
pub(super) fn check_networks(
    inner: &Inner,
    mode: &NetworkMode,
    more: &mut [NetworkJoin],
) -> Result<()> {
    let primary = match mode {
        NetworkMode::Named(name) => Some(find(inner, name)?.name),
        mode => primary_name(mode),
    };
    let mut seen: Vec<String> = primary.into_iter().collect();
    for join in more.iter_mut() {
        join.network = find(inner, &join.network)?.name;
        if seen.contains(&join.network) {
            return Err(BackendError::InvalidArgument(format!(
                "the container joins network {} twice",
                join.network
            )));
        }
        seen.push(join.network.clone());
    }
    if seen.len() > MAX_NETWORKS {
        return Err(BackendError::InvalidArgument(format!(
            "a skiff container joins at most {MAX_NETWORKS} networks (one NIC of its VM each); \
             {} asked for",
            seen.len()
        )));
    }
    Ok(())
}

/// The names of the networks a request joins, its NetworkMode's first, each with its aliases.
pub(super) fn joins(req: &crate::daemon::create::CreateRequest) -> Vec<(String, Vec<String>)> {
    primary_name(&req.network)
        .map(|name| (name, req.aliases.clone()))
        .into_iter()
        .chain(
            req.more_networks
                .iter()
                .map(|j| (j.network.clone(), j.aliases.clone())),
        )
        .collect()
}

/// The networks a container joins when it starts, its NetworkMode's first, with its aliases
/// on each (none without a default network, for `none`).
fn joined(inner: &Inner, record: &ContainerRecord) -> Result<Vec<(NetworkRecord, Vec<String>)>> {
    let mut out = Vec::new();
    match &record.request.network {
        NetworkMode::None => return Ok(out),
        NetworkMode::Default => {
            if let Some(n) = inner.networks.default_network() {
                out.push((n, Vec::new()));
            }
        }
        NetworkMode::Named(name) => out.push((find(inner, name)?, record.request.aliases.clone())),
    }
    for join in &record.request.more_networks {
        out.push((find(inner, &join.network)?, join.aliases.clone()));
    }
    Ok(out)
}

/// Connects a starting container to its networks, one NIC each; the published ports go to its
/// first network's address.
pub(super) async fn attach(inner: &Inner, record: &ContainerRecord) -> Result<Vec<Attachment>> {
    let all = all(inner)?;
    let mut attachments = Vec::new();
    for (nic, (network, aliases)) in joined(inner, record)?.into_iter().enumerate() {
        let mut names = Vec::new();
        if network.user_defined() {
            // Docker's: the name, the short ID, the aliases.
            names.push(record.name.clone());
            names.push(record.short_id().to_string());
            names.extend(aliases);
        }
        let ports: &[PortRequest] = if nic == 0 { &record.request.ports } else { &[] };
        let attached = inner
            .networks
            .attach(&record.id, nic, &network, &all, names, ports)
            .await
            .map_err(|e| match e {
                NetworkError::Bind(e) => BackendError::InvalidArgument(e.to_string()),
                e => internal(format!("connecting to network {}: {e}", network.name)),
            })?;
        attachments.push(attached);
    }
    Ok(attachments)
}

/// `network connect`: the container joins `key` when it next starts. A running VM's NICs are
/// fixed (virtio-mmio has no hotplug), so a running container is refused, naming why.
pub(super) fn connect(
    inner: &Inner,
    record: &mut ContainerRecord,
    key: &str,
    aliases: Vec<String>,
) -> Result<()> {
    let network = find(inner, key)?;
    refuse_while_running(record, "connected to", &network.name)?;
    let before = record.request.clone();
    let req = &mut record.request;
    if req.network == NetworkMode::None && !req.network_left {
        return Err(BackendError::InvalidArgument(format!(
            "container {} has the network mode none (loopback only) and joins no network",
            record.name
        )));
    }
    if network_names(req).contains(&network.name) {
        return Err(BackendError::Forbidden(format!(
            "endpoint with name {} already exists in network {}",
            record.name, network.name
        )));
    }
    if !aliases.is_empty() && !network.user_defined() {
        return Err(BackendError::InvalidArgument(
            "network-scoped alias is supported only for containers in user defined networks".into(),
        ));
    }
    if req.network_left {
        req.network = mode_for(network.name);
        req.aliases = aliases;
        req.network_left = false;
    } else {
        req.more_networks.push(NetworkJoin {
            network: network.name,
            aliases,
        });
    }
    let shares = super::volumes::shares_of(record.mounts.iter().map(|m| &m.request));
    let req = &mut record.request;
    let checked = check_networks(inner, &req.network.clone(), &mut req.more_networks)
        .and_then(|()| super::volumes::check_device_lines(shares, joined_count(req)));
    if checked.is_err() {
        record.request = before;
    }
    checked
}

/// The NetworkMode that joins the network `name`.
fn mode_for(name: String) -> NetworkMode {
    if name == DEFAULT_NETWORK {
        NetworkMode::Default
    } else {
        NetworkMode::Named(name)
    }
}

/// `network disconnect`: the container leaves `key` (from its next start). Leaving its
/// NetworkMode's network makes the next one its first, or leaves it on loopback only.
pub(super) fn disconnect(inner: &Inner, record: &mut ContainerRecord, key: &str) -> Result<()> {
    let network = find(inner, key)?;
    refuse_while_running(record, "disconnected from", &network.name)?;
    let req = &mut record.request;
    if let Some(i) = req
        .more_networks
        .iter()
        .position(|j| j.network == network.name)
    {
        req.more_networks.remove(i);
        return Ok(());
    }
    if network_names(req).first() != Some(&network.name) {
        return Err(BackendError::Forbidden(format!(
            "container {} is not connected to network {}",
            record.name, network.name
        )));
    }
    if req.more_networks.is_empty() {
        req.network = NetworkMode::None;
        req.aliases.clear();
        req.network_left = true;
    } else {
        let next = req.more_networks.remove(0);
        req.network = mode_for(next.network);
        req.aliases = next.aliases;
    }
    Ok(())
}

fn refuse_while_running(record: &ContainerRecord, what: &str, network: &str) -> Result<()> {
    if record.running() {
        return Err(BackendError::Conflict(format!(
            "container {} is running and cannot be {what} network {network}: a skiff VM's \
             network interfaces are fixed when it starts; stop it first (the change takes \
             effect at its next start)",
            record.name
        )));
    }
    Ok(())
}

/// How many networks (NICs) a request joins.
pub(super) fn joined_count(req: &crate::daemon::create::CreateRequest) -> usize {
    network_names(req).len()
}

/// The network a NetworkMode names, as the request spelled it (none for `none`).
fn primary_name(mode: &NetworkMode) -> Option<String> {
    match mode {
        NetworkMode::None => None,
        NetworkMode::Default => Some(DEFAULT_NETWORK.to_string()),
        NetworkMode::Named(name) => Some(name.clone()),
    }
}

/// The names of the networks a request joins, its NetworkMode's first.
fn network_names(req: &crate::daemon::create::CreateRequest) -> Vec<String> {
    joins(req).into_iter().map(|(name, _)| name).collect()
}

/// `network create`: the `bridge` driver with one IPv4 subnet (given, or the next free one of
/// the pool); every option skiff cannot honour is refused by name.
pub(super) async fn create(inner: &Inner, body: NetworkCreateBody) -> Result<NetworkCreated> {
    let mut refused = Vec::new();
    if !matches!(body.driver.as_str(), "" | "bridge") {
        refused.push(format!("driver \"{}\" (only bridge)", body.driver));
    }
    if body.enable_ipv6 == Some(true) {
        refused.push("EnableIPv6".to_string());
    }
    if body.enable_ipv4 == Some(false) {
        refused.push("EnableIPv4 false".to_string());
    }
    for (field, set) in [
        ("Ingress", body.ingress),
        ("ConfigOnly", body.config_only),
        ("ConfigFrom", body.config_from.is_some()),
        ("Options", !body.options.is_empty()),
        ("Scope", !matches!(body.scope.as_str(), "" | "local")),
    ] {
        if set {
            refused.push(field.to_string());
        }
    }
    let ipam = body.ipam.clone().unwrap_or_default();
    if !matches!(ipam.driver.as_str(), "" | "default") || !ipam.options.is_empty() {
        refused.push("IPAM.Driver/Options (only the default)".to_string());
    }
    let configs = &ipam.config;
    if configs.len() > 1 {
        refused.push("IPAM.Config with more than one subnet".to_string());
    }
    if configs.iter().any(|c| !c.ip_range.is_empty()) {
        refused.push("IPAM.Config.IPRange".to_string());
    }
    if !refused.is_empty() {
        return Err(BackendError::InvalidArgument(format!(
            "network create: not supported by skiff yet: {}",
            refused.join(", ")
        )));
    }
    if !valid_network_name(&body.name) {
        return Err(BackendError::InvalidArgument(format!(
            "invalid network name {:?}: [a-zA-Z0-9][a-zA-Z0-9_.-]*",
            body.name
        )));
    }
    if matches!(body.name.as_str(), "host" | "none" | "default") || body.name == DEFAULT_NETWORK {
        return Err(BackendError::Forbidden(format!(
            "{} is a pre-defined network and cannot be created",
            body.name
        )));
    }
    let existing = all(inner)?;
    if existing.iter().any(|n| n.name == body.name) {
        return Err(BackendError::Conflict(format!(
            "network with name {} already exists",
            body.name
        )));
    }
    let (subnet, prefix) = match configs.first().filter(|c| !c.subnet.is_empty()) {
        Some(c) => {
            let (subnet, prefix) =
                parse_subnet(&c.subnet).map_err(BackendError::InvalidArgument)?;
            let gateway = Ipv4Addr::from(u32::from(subnet) + 1).to_string();
            if !c.gateway.is_empty() && c.gateway != gateway {
                return Err(BackendError::InvalidArgument(format!(
                    "IPAM.Config.Gateway {}: skiff's gateway is the subnet's first address, {gateway}",
                    c.gateway
                )));
            }
            if let Some(n) = existing.iter().find(|n| n.overlaps(subnet, prefix)) {
                return Err(BackendError::Forbidden(format!(
                    "Pool overlaps with other one on this address space (network {})",
                    n.name
                )));
            }
            (subnet, prefix)
        }
        None => (0..POOL_SUBNETS)
            .map(|i| Ipv4Addr::from(u32::from(POOL_FIRST) + (i << 8)))
            .find(|s| !existing.iter().any(|n| n.overlaps(*s, 24)))
            .map(|s| (s, 24))
            .ok_or_else(|| {
                BackendError::Forbidden(
                    "could not find an available, non-overlapping IPv4 address pool among the \
                     defaults to assign to the network"
                        .into(),
                )
            })?,
    };
    let id = create::new_id()?;
    let record = NetworkRecord {
        bridge: format!("skb{}", &id[..12]),
        id: id.clone(),
        name: body.name.clone(),
        subnet,
        prefix,
        internal: body.internal,
        attachable: body.attachable,
        labels: body.labels.clone(),
        created: rfc3339(std::time::SystemTime::now()),
    };
    if !inner.store.insert_network(&record).map_err(internal)? {
        return Err(BackendError::Conflict(format!(
            "network with name {} already exists",
            body.name
        )));
    }
    Ok(NetworkCreated {
        id,
        warning: String::new(),
    })
}

/// Containers (running or not) that name `network` as theirs.
fn users(inner: &Inner, network: &NetworkRecord) -> Result<Vec<ContainerRecord>> {
    let records = inner.store.all().map_err(internal)?;
    Ok(records
        .into_iter()
        .filter(|r| {
            let primary = match &r.request.network {
                NetworkMode::Named(key) => {
                    key == &network.name || network.id.starts_with(key.as_str())
                }
                NetworkMode::Default => !network.user_defined(),
                NetworkMode::None => false,
            };
            primary
                || r.request
                    .more_networks
                    .iter()
                    .any(|j| j.network == network.name)
        })
        .collect())
}

/// `network rm`: refused for the predefined ones and while containers use it; its bridge goes.
pub(super) async fn remove(inner: &Inner, key: &str) -> Result<()> {
    if key == "none" || key == "host" {
        return Err(BackendError::Forbidden(format!(
            "{key} is a pre-defined network and cannot be removed"
        )));
    }
    let network = find(inner, key)?;
    if !network.user_defined() {
        return Err(BackendError::Forbidden(format!(
            "{} is a pre-defined network and cannot be removed",
            network.name
        )));
    }
    let used: Vec<String> = users(inner, &network)?
        .into_iter()
        .map(|r| r.name)
        .collect();
    if !used.is_empty() {
        return Err(BackendError::Forbidden(format!(
            "error while removing network: network {} id {} has active endpoints ({})",
            network.name,
            network.id,
            used.join(", ")
        )));
    }
    inner
        .store
        .delete_network(&network.name)
        .map_err(internal)?;
    let remaining = all(inner)?;
    inner
        .networks
        .reconcile(&remaining, Some(&network))
        .await
        .map_err(|e| internal(format!("removing network {}: {e}", network.name)))
}

/// `network prune`: every user-defined network no container uses.
pub(super) async fn prune(inner: &Inner, filters: &Filters) -> Result<NetworkPruneReport> {
    check_filters(filters, &["label"])?;
    let mut deleted = Vec::new();
    for network in inner.store.networks().map_err(internal)? {
        if labels_match(filters, &network.labels) && users(inner, &network)?.is_empty() {
            remove(inner, &network.id).await?;
            deleted.push(network.name);
        }
    }
    Ok(NetworkPruneReport {
        networks_deleted: deleted,
    })
}

fn check_filters(filters: &Filters, known: &[&str]) -> Result<()> {
    match filters.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(BackendError::InvalidArgument(format!(
            "invalid filter '{key}'"
        ))),
        None => Ok(()),
    }
}

/// `network ls`: the default network, `none`, and the user-defined ones.
pub(super) fn list(inner: &Inner, filters: &Filters) -> Result<Vec<Network>> {
    check_filters(filters, &["name", "id", "label", "driver", "type"])?;
    let mut out = Vec::new();
    let records = inner.store.all().map_err(internal)?;
    let mut networks: Vec<Network> = all(inner)?
        .iter()
        .map(|n| api_network(n, &records))
        .collect();
    networks.push(none_network());
    for n in networks {
        let any = |key: &str, ok: &dyn Fn(&str) -> bool| {
            filters
                .get(key)
                .is_none_or(|vals| vals.iter().any(|v| ok(v)))
        };
        let builtin = n.name == DEFAULT_NETWORK || n.name == "none";
        let keep = any("name", &|v| n.name.contains(v))
            && any("id", &|v| n.id.starts_with(v))
            && any("driver", &|v| v == n.driver)
            && any("type", &|v| {
                (v == "builtin") == builtin && matches!(v, "builtin" | "custom")
            })
            && labels_match(filters, &n.labels);
        if keep {
            out.push(n);
        }
    }
    Ok(out)
}

/// `network inspect`.
pub(super) fn inspect(inner: &Inner, key: &str) -> Result<Network> {
    if key == "none" {
        return Ok(none_network());
    }
    let records = inner.store.all().map_err(internal)?;
    Ok(api_network(&find(inner, key)?, &records))
}

fn none_network() -> Network {
    Network {
        name: "none".into(),
        id: "0".repeat(64),
        created: ZERO_TIME.into(),
        scope: "local".into(),
        driver: "null".into(),
        ..Network::default()
    }
}

/// `n` as Docker shows it; its containers are those of `records` running on it.
fn api_network(n: &NetworkRecord, records: &[ContainerRecord]) -> Network {
    // The default network has no creation time of its own: Go's zero time parses.
    let created = if n.created.is_empty() {
        ZERO_TIME.to_string()
    } else {
        n.created.clone()
    };
    let containers = records
        .iter()
        .filter_map(|r| {
            let e = r.state.endpoints.iter().find(|e| e.network == n.name)?;
            Some((
                r.id.clone(),
                NetworkContainer {
                    name: r.name.clone(),
                    endpoint_id: e.endpoint_id(),
                    mac_address: e.mac.clone(),
                    ipv4_address: format!("{}/{}", e.ip, e.prefix),
                    ipv6_address: String::new(),
                },
            ))
        })
        .collect();
    Network {
        name: n.name.clone(),
        id: n.id.clone(),
        created,
        scope: "local".into(),
        driver: "bridge".into(),
        ipam: Ipam {
            driver: "default".into(),
            config: vec![IpamConfig {
                subnet: format!("{}/{}", n.subnet, n.prefix),
                gateway: n.gateway().to_string(),
                ip_range: String::new(),
            }],
            options: Default::default(),
        },
        internal: n.internal,
        attachable: n.attachable,
        containers,
        options: [(
            "com.docker.network.bridge.name".to_string(),
            n.bridge.clone(),
        )]
        .into(),
        labels: n.labels.clone(),
        ..Network::default()
    }
}
