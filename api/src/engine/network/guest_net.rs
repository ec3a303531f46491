//! What a container's VM is told about its endpoint: the VMM's NIC (the tap it inherits) and
//! guest-init's interface settings, `/etc/hosts` and `/etc/resolv.conf` entries.

use skiff_protocol::{GuestInterface, GuestNetwork, ProcessSpec};
use skiff_vmm::spec::NetSpec;

use super::Endpoint;

/// The fd number the VMM inherits the first tap under, the next ones follow (see
/// `vmm_process::spawn`).
pub const TAP_FD: i32 = 3;

/// The VMM's virtio-net devices for `endpoints`, in order.
pub fn nics(endpoints: &[Endpoint]) -> Vec<NetSpec> {
    (TAP_FD..)
        .zip(endpoints)
        .map(|(fd, endpoint)| NetSpec {
            tap: None,
            fd: Some(fd),
            stream: None,
            mac: Some(endpoint.mac.clone()),
            mtu: u16::try_from(endpoint.mtu).ok(),
        })
        .collect()
}

/// The container's process spec with its network settings (none without an endpoint): the
/// interfaces `eth0`, `eth1`, … as in a Docker container, the default route through the
/// first network's gateway.
pub fn with_network(process: &ProcessSpec, endpoints: &[Endpoint], dns: &[String]) -> ProcessSpec {
    let mut process = process.clone();
    process.network = (!endpoints.is_empty()).then(|| {
        Box::new(GuestNetwork {
            interfaces: endpoints
                .iter()
                .enumerate()
                .map(|(i, e)| GuestInterface {
                    mac: e.mac.clone(),
                    name: format!("eth{i}"),
                    addresses: vec![format!("{}/{}", e.ip, e.prefix)],
                    gateway: (i == 0).then(|| e.gateway.to_string()),
                    mtu: Some(e.mtu),
                })
                .collect(),
            hosts: Vec::new(),
            dns: dns.to_vec(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
        })
    });
    process
}
