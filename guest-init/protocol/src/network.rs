//! The container's network as the host hands it to guest-init: which links to configure and what
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` say. Text is checked by guest-init before
//! anything is applied (addresses parse, names hold no white space), so a hostile or broken spec
//! fails the start instead of injecting lines.

use serde::{Deserialize, Serialize};

/// The container's network; for the main process only (exec shares the VM's). When a spec has
/// none, guest-init only brings `lo` up and leaves the image's `/etc` files as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    /// Configured in order.
    #[serde(default)]
    pub interfaces: Vec<GuestInterface>,
    /// Extra `/etc/hosts` lines (Docker's `--add-host`), after the container's own.
    #[serde(default)]
    pub hosts: Vec<HostEntry>,
    /// Name server IPs for `/etc/resolv.conf`; when empty the image's file is left alone.
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    #[serde(default)]
    pub dns_options: Vec<String>,
}

/// One network link of the VM, found by its MAC address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestInterface {
    /// `aa:bb:cc:dd:ee:ff`, as the VMM gave it to the virtio-net device.
    pub mac: String,
    /// The name the link gets (`eth0`).
    pub name: String,
    /// CIDR addresses, IPv4 or IPv6 (`10.88.0.2/16`).
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Default route via this address (its family picks the IPv4 or IPv6 table).
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// One extra `/etc/hosts` line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub ip: String,
    pub names: Vec<String>,
}
