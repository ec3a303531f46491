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
        network_id: endpoint.network_id.clone(),
        endpoint_id: endpoint.endpoint_id(),
        gateway: endpoint.gateway.to_string(),
        ip_address: endpoint.ip.to_string(),
        ip_prefix_len: endpoint.prefix,
        mac_address: endpoint.mac.clone(),
    }
}

/// `Networks` of `ps` and inspect: the networks the container is on while it runs.
pub fn networks(endpoints: &[Endpoint]) -> BTreeMap<String, EndpointSettings> {
    endpoints
        .iter()
        .map(|e| (e.network.clone(), endpoint_settings(e)))
        .collect()
}

/// inspect's `NetworkSettings`: `Ports` lists the exposed and requested ports, each with its
/// host bindings while running (`docker port` reads it); the top-level address is the first
/// network's, as Docker's.
pub fn inspect_settings(
    endpoints: &[Endpoint],
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
        networks: networks(endpoints),
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
        let endpoints = [endpoint, second];
        let s = inspect_settings(&endpoints, &["80/tcp".into(), "443".into()], &[]);
        assert_eq!(
            serde_json::to_value(&s.ports).unwrap(),
            json!({"443/tcp": null, "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]})
        );
        assert_eq!(s.ip_address, "10.88.0.2");
        assert_eq!(s.networks["bridge"].ip_prefix_len, 16);
        assert_eq!(s.networks["front"].ip_address, "10.89.0.2");
        let ps = summary_ports(&endpoints);
        assert_eq!((ps[0].private_port, ps[0].public_port), (80, Some(8080)));
        let stopped = inspect_settings(&[], &["80/tcp".into()], &[]);
        assert_eq!(
            serde_json::to_value(&stopped.ports).unwrap(),
            json!({"80/tcp": null})
        );
        assert!(stopped.networks.is_empty() && summary_ports(&[]).is_empty());
    }
}
