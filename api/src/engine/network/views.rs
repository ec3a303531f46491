//! A container's network as Docker shows it: `ps`'s `Ports`, inspect's `NetworkSettings`.

use std::collections::BTreeMap;

use serde_json::json;

use super::Endpoint;
use crate::daemon::create::ports::PortRequest;
use crate::daemon::model::{EndpointSettings, InspectNetworkSettings, PortSummary};

/// `Ports` of `ps`: each published port as bound; without an endpoint (not running), nothing.
pub fn summary_ports(endpoints: &[Endpoint]) -> Vec<PortSummary> {
    endpoints
        .iter()
        .flat_map(|e| &e.ports)
        .map(|p| PortSummary {
            ip: Some(p.host_ip.to_string()),
            private_port: p.container_port,
            public_port: Some(p.host_port),
            kind: p.proto.clone(),
        })
        .collect()
}

fn endpoint_settings(endpoint: &Endpoint) -> EndpointSettings {
    EndpointSettings {
        aliases: None,
        network_id: endpoint.network_id.clone(),
        endpoint_id: endpoint.endpoint_id(),
        gateway: endpoint.gateway.to_string(),
        ip_address: endpoint.ip.to_string(),
        ip_prefix_len: endpoint.prefix,
        mac_address: endpoint.mac.clone(),
    }
}

/// `Networks` of `ps` and inspect: each network the container joins (`joins`: name and
/// aliases; a created or stopped container shows them without addresses, as Docker's), with its
/// endpoint while it runs; on a user-defined network the short ID is an alias then.
pub fn networks(
    joins: &[(String, Vec<String>)],
    endpoints: &[Endpoint],
    short_id: &str,
) -> BTreeMap<String, EndpointSettings> {
    let mut out: BTreeMap<String, EndpointSettings> = joins
        .iter()
        .map(|(name, aliases)| {
            let aliases = (!aliases.is_empty()).then(|| aliases.clone());
            let settings = EndpointSettings {
                aliases,
                ..EndpointSettings::default()
            };
            (name.clone(), settings)
        })
        .collect();
    for e in endpoints {
        let entry = out.entry(e.network.clone()).or_default();
        let mut aliases = entry.aliases.take();
        if !e.names.is_empty() {
            aliases
                .get_or_insert_with(Vec::new)
                .push(short_id.to_string());
        }
        *entry = EndpointSettings {
            aliases,
            ..endpoint_settings(e)
        };
    }
    out
}

/// inspect's `NetworkSettings`: `Ports` lists the exposed and requested ports, each with its
/// host bindings while running (`docker port` reads it); the top-level address is the first
/// network's, as Docker's.
pub fn inspect_settings(
    joins: &[(String, Vec<String>)],
    endpoints: &[Endpoint],
    short_id: &str,
    exposed: &[String],
    requested: &[PortRequest],
) -> InspectNetworkSettings {
    let mut ports: BTreeMap<String, Option<Vec<serde_json::Value>>> = exposed
        .iter()
        .map(|k| (with_proto(k), None))
        .chain(
            requested
                .iter()
                .map(|p| (format!("{}/{}", p.container_port, p.proto), None)),
        )
        .collect();
    for p in endpoints.iter().flat_map(|e| &e.ports) {
        let bindings = ports
            .entry(format!("{}/{}", p.container_port, p.proto))
            .or_insert(None)
            .get_or_insert_with(Vec::new);
        bindings
            .push(json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}));
    }
    let endpoint = endpoints.first();
    InspectNetworkSettings {
        bridge: String::new(),
        sandbox_id: String::new(),
        ports,
        ip_address: endpoint.map(|e| e.ip.to_string()).unwrap_or_default(),
        gateway: endpoint.map(|e| e.gateway.to_string()).unwrap_or_default(),
        mac_address: endpoint.map(|e| e.mac.clone()).unwrap_or_default(),
        networks: networks(joins, endpoints, short_id),
    }
}

fn with_proto(key: &str) -> String {
    if key.contains('/') {
        key.to_string()
    } else {
        format!("{key}/tcp")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::network::ports::BoundPort;

    #[test]
    fn ports_show_their_bindings_while_running() {
        let endpoint = Endpoint {
            network: "bridge".into(),
            network_id: "b".repeat(64),
            names: Vec::new(),
            ip: "10.88.0.2".parse().unwrap(),
            prefix: 16,
            gateway: "10.88.0.1".parse().unwrap(),
            mac: "02:42:0a:58:00:02".into(),
            mtu: 1500,
            ports: vec![BoundPort {
                container_port: 80,
                proto: "tcp".into(),
                host_ip: "0.0.0.0".parse().unwrap(),
                host_port: 8080,
            }],
        };
        let mut second = endpoint.clone();
        second.network = "front".into();
        second.ip = "10.89.0.2".parse().unwrap();
        second.ports.clear();
        second.names = vec!["web".into()];
        let endpoints = [endpoint, second];
        let joins = [
            ("bridge".to_string(), vec![]),
            ("front".into(), vec!["a".into()]),
        ];
        let s = inspect_settings(
            &joins,
            &endpoints,
            "123456789abc",
            &["80/tcp".into(), "443".into()],
            &[],
        );
        assert_eq!(
            serde_json::to_value(&s.ports).unwrap(),
            json!({"443/tcp": null, "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]})
        );
        assert_eq!(s.ip_address, "10.88.0.2");
        assert_eq!(s.networks["bridge"].ip_prefix_len, 16);
        assert_eq!(s.networks["front"].ip_address, "10.89.0.2");
        let ps = summary_ports(&endpoints);
        assert_eq!((ps[0].private_port, ps[0].public_port), (80, Some(8080)));
        assert_eq!(s.networks["bridge"].aliases, None);
        assert_eq!(
            s.networks["front"].aliases,
            Some(vec!["a".into(), "123456789abc".into()])
        );
        let stopped = inspect_settings(&joins, &[], "123456789abc", &["80/tcp".into()], &[]);
        assert_eq!(
            serde_json::to_value(&stopped.ports).unwrap(),
            json!({"80/tcp": null})
        );
        // Stopped: the networks it joins, no addresses, the short ID not an alias.
        assert_eq!(stopped.networks["front"].aliases, Some(vec!["a".into()]));
        assert_eq!(stopped.networks["front"].ip_address, "");
        assert_eq!(stopped.networks.len(), 2);
        assert!(summary_ports(&[]).is_empty());
    }
}
