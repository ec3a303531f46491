//! The host's packet rules for container networks, in nftables' own table `inet skiff`: outbound
//! NAT for the bridge's subnet, and forwarding only for what containers start (replies come back
//! through conntrack). Written whole with `nft -f -` each time, so the table always matches the
//! engine's state and nothing of an older daemon is left over; other tables are never touched.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("running nft (nftables): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft refused skiff's rules: {0}")]
    Refused(String),
    #[error("enabling IPv4 forwarding: {0}")]
    Forwarding(#[source] std::io::Error),
}

/// The table name, in the `inet` family.
pub const TABLE: &str = "skiff";

/// The ruleset for one bridge and its subnet.
pub fn ruleset(bridge: &str, subnet: Ipv4Addr, prefix: u8) -> String {
    format!(
        "table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {subnet}/{prefix} oifname != \"{bridge}\" masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname \"{bridge}\" accept
        oifname \"{bridge}\" ct state established,related accept
        oifname \"{bridge}\" drop
    }}
}}
"
    )
}

/// Replaces the `inet skiff` table with `rules` and turns on IPv4 forwarding (as Docker does).
pub fn apply(rules: &str) -> Result<(), RulesError> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1").map_err(RulesError::Forwarding)?;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RulesError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(RulesError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(RulesError::Spawn)?;
    if !out.status.success() {
        return Err(RulesError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_replaces_only_its_own_table() {
        let rules = ruleset("skiff0", Ipv4Addr::new(10, 88, 0, 0), 16);
        assert!(rules.starts_with("table inet skiff\ndelete table inet skiff\n"));
        assert!(rules.contains("ip saddr 10.88.0.0/16 oifname != \"skiff0\" masquerade"));
        assert!(rules.contains("oifname \"skiff0\" drop"));
        assert_eq!(rules.matches("table ").count(), 3);
    }
}
