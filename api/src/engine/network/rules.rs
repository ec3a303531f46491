//! The host's packet rules for container networks, in nftables' own table `inet skiff`: outbound
//! NAT for each network's subnet, forwarding only for what containers start (replies come back
//! through conntrack), no forwarding between networks. Written whole with `nft -f -` each time, so the table always matches the
//! engine's state and nothing of an older daemon is left over; other tables are never touched.

use std::io::Write;

use super::defs::NetworkRecord;
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

/// The ruleset for `networks`: each subnet's traffic out is masqueraded (not an internal
/// network's), containers may start connections out of their bridge but not into another
/// network's, only replies come in, and a user-defined network's name server answers only its
/// own bridge.
pub fn ruleset(networks: &[NetworkRecord]) -> String {
    let mut nat = String::new();
    let mut forward = String::new();
    let mut input = String::new();
    for n in networks {
        let (bridge, subnet, prefix) = (&n.bridge, n.subnet, n.prefix);
        let others: Vec<String> = networks
            .iter()
            .filter(|o| o.bridge != n.bridge)
            .map(|o| format!("\"{}\"", o.bridge))
            .collect();
        if !others.is_empty() {
            forward.push_str(&format!(
                "        iifname \"{bridge}\" oifname {{ {} }} drop\n",
                others.join(", ")
            ));
        }
        if n.internal {
            forward.push_str(&format!("        iifname \"{bridge}\" drop\n"));
        } else {
            nat.push_str(&format!(
                "        ip saddr {subnet}/{prefix} oifname != \"{bridge}\" masquerade\n"
            ));
            forward.push_str(&format!("        iifname \"{bridge}\" accept\n"));
        }
        forward.push_str(&format!(
            "        oifname \"{bridge}\" ct state established,related accept\n        oifname \"{bridge}\" drop\n"
        ));
        if n.user_defined() {
            input.push_str(&format!(
                "        ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 iifname != \"{bridge}\" drop\n",
                n.gateway()
            ));
        }
    }
    format!(
        "table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
{nat}    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
{forward}    }}
    chain input {{
        type filter hook input priority filter; policy accept;
{input}    }}
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
    use crate::engine::network::defs::{parse_subnet, NetworkConfig};

    /// The default network and a user-defined one, `back`.
    fn networks(internal: bool) -> [NetworkRecord; 2] {
        let (subnet, prefix) = parse_subnet("10.89.1.0/24").unwrap();
        let user = NetworkRecord {
            id: "1".repeat(64),
            name: "back".into(),
            bridge: "skb111111111111".into(),
            subnet,
            prefix,
            internal,
            labels: Default::default(),
            created: String::new(),
        };
        [NetworkConfig::default().default_network().unwrap(), user]
    }

    #[test]
    fn the_ruleset_replaces_only_its_own_table_and_isolates_networks() {
        let rules = ruleset(&networks(true));
        assert!(rules.starts_with("table inet skiff\ndelete table inet skiff\n"));
        assert!(rules.contains("ip saddr 10.88.0.0/16 oifname != \"skiff0\" masquerade"));
        assert!(
            !rules.contains("10.89.1.0/24 oifname"),
            "internal: no NAT\n{rules}"
        );
        assert!(rules.contains("iifname \"skiff0\" oifname { \"skb111111111111\" } drop"));
        assert!(rules.contains("iifname \"skb111111111111\" oifname { \"skiff0\" } drop"));
        assert!(rules.contains("iifname \"skb111111111111\" drop"));
        assert!(rules.contains("oifname \"skiff0\" drop"));
        assert!(rules.contains("ip daddr 10.89.1.1 meta l4proto { tcp, udp } th dport 53 iifname != \"skb111111111111\" drop"));
        assert_eq!(rules.matches("table ").count(), 3);
        assert!(ruleset(&[]).contains("chain forward"));
    }

    /// Runs `nft -c -f -` (checked, not applied) on `rules`: None when nft is not installed.
    fn nft_check(rules: &str) -> Option<(bool, String)> {
        let mut child = Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(rules.as_bytes()).ok()?;
        let out = child.wait_with_output().ok()?;
        Some((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// nft itself accepts what `ruleset` writes. Skipped where nft is not installed or cannot
    /// check even an empty table (no nf_tables in the kernel, no permission).
    #[test]
    fn nft_accepts_the_ruleset() {
        match nft_check("table inet skiff_probe {}\n") {
            Some((true, _)) => {}
            Some((false, err)) => {
                eprintln!("nft cannot check rules here ({err}): skipped");
                return;
            }
            None => {
                eprintln!("nft is not installed: skipped");
                return;
            }
        }
        let rules = ruleset(&networks(false));
        let (ok, err) = nft_check(&rules).expect("nft ran a moment ago");
        assert!(ok, "{err}\n{rules}");
        let (ok, _) = nft_check("table inet skiff { chain c { iifname != oifname drop } }\n")
            .expect("nft ran a moment ago");
        assert!(!ok, "a rule nft refuses is refused");
    }
}
