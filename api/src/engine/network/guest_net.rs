//! What a container's VM is told about its endpoint: the VMM's NIC (the tap it inherits) and
//! guest-init's interface settings, `/etc/hosts` and `/etc/resolv.conf` entries.

use skiff_protocol::{GuestInterface, GuestNetwork, ProcessSpec};
use skiff_vmm::spec::NetSpec;

use super::Endpoint;

/// The fd number the VMM inherits the tap under (see `vmm_process::spawn`).
pub const TAP_FD: i32 = 3;
/// The name the guest's interface gets, as in a Docker container.
const GUEST_IFACE: &str = "eth0";

/// The VMM's virtio-net device for `endpoint`.
pub fn nic(endpoint: &Endpoint) -> NetSpec {
    NetSpec {
        tap: None,
        fd: Some(TAP_FD),
        stream: None,
        mac: Some(endpoint.mac.clone()),
        mtu: u16::try_from(endpoint.mtu).ok(),
    }
}

/// The container's process spec with its network settings (none without an endpoint).
pub fn with_network(
    process: &ProcessSpec,
    endpoint: Option<&Endpoint>,
    dns: &[String],
) -> ProcessSpec {
    let mut process = process.clone();
    process.network = endpoint.map(|e| {
        Box::new(GuestNetwork {
            interfaces: vec![GuestInterface {
                mac: e.mac.clone(),
                name: GUEST_IFACE.into(),
                addresses: vec![format!("{}/{}", e.ip, e.prefix)],
                gateway: Some(e.gateway.to_string()),
                mtu: Some(e.mtu),
            }],
            hosts: Vec::new(),
            dns: dns.to_vec(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
        })
    });
    process
}
