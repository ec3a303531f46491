//! The host's packet rules for container networks, in nftables' own table `inet skiff`: outbound
//! NAT for each network's subnet, forwarding only for what containers start (replies come back
//! through conntrack), no forwarding between networks. Written whole each time, as one
//! libnftables JSON transaction (`nft -j -f -`: structured, no rule text to inject into), so the
//! table always matches the engine's state and nothing of an older daemon is left over; other
//! tables are never touched.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::defs::NetworkRecord;

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

/// `LEFT == RIGHT` (or `!=`, `in`) as a JSON match expression.
fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn rule(chain: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {"family": "inet", "table": TABLE, "chain": chain, "expr": expr}}})
}

fn chain(name: &str, kind: &str, prio: i32) -> Value {
    json!({"add": {"chain": {
        "family": "inet", "table": TABLE, "name": name,
        "type": kind, "hook": name, "prio": prio, "policy": "accept"
    }}})
}

/// The ruleset for `networks`: each subnet's traffic out is masqueraded (not an internal
/// network's), containers may start connections out of their bridge but not into another
/// network's, only replies come in, and a user-defined network's name server answers only its
/// own bridge.
pub fn ruleset(networks: &[NetworkRecord]) -> Value {
    let table = json!({"table": {"family": "inet", "name": TABLE}});
    // Adding first makes the delete succeed on a host without the table; one transaction.
    let mut commands = vec![
        json!({"add": table.clone()}),
        json!({"delete": table.clone()}),
        json!({"add": table}),
        chain("postrouting", "nat", 100),
        chain("forward", "filter", 0),
        chain("input", "filter", 0),
    ];
    let (mut nat, mut forward, mut input) = (Vec::new(), Vec::new(), Vec::new());
    for n in networks {
        let bridge = json!(n.bridge);
        let into = |b: &Value| matches("==", meta("iifname"), b.clone());
        let out_to = |b: &Value| matches("==", meta("oifname"), b.clone());
        let others: Vec<&str> = networks
            .iter()
            .filter(|o| o.bridge != n.bridge)
            .map(|o| o.bridge.as_str())
            .collect();
        if !others.is_empty() {
            let set = json!({ "set": others });
            let to_others = matches("==", meta("oifname"), set);
            forward.push(vec![into(&bridge), to_others, json!({"drop": null})]);
        }
        if n.internal {
            forward.push(vec![into(&bridge), json!({"drop": null})]);
        } else {
            let subnet = json!({"prefix": {"addr": n.subnet.to_string(), "len": n.prefix}});
            nat.push(vec![
                matches("==", payload("ip", "saddr"), subnet),
                matches("!=", meta("oifname"), bridge.clone()),
                json!({"masquerade": null}),
            ]);
            forward.push(vec![into(&bridge), json!({"accept": null})]);
        }
        let replies = json!(["established", "related"]);
        let state = matches("in", json!({"ct": {"key": "state"}}), replies);
        forward.push(vec![out_to(&bridge), state, json!({"accept": null})]);
        forward.push(vec![out_to(&bridge), json!({"drop": null})]);
        if n.user_defined() {
            input.push(vec![
                matches("==", payload("ip", "daddr"), json!(n.gateway().to_string())),
                matches("==", meta("l4proto"), json!({"set": ["tcp", "udp"]})),
                matches("==", payload("th", "dport"), json!(53)),
                matches("!=", meta("iifname"), bridge.clone()),
                json!({"drop": null}),
            ]);
        }
    }
    for (name, rules) in [("postrouting", nat), ("forward", forward), ("input", input)] {
        commands.extend(rules.into_iter().map(|expr| rule(name, expr)));
    }
    json!({ "nftables": commands })
}

/// Replaces the `inet skiff` table with `rules` and turns on IPv4 forwarding (as Docker does).
pub fn apply(rules: &Value) -> Result<(), RulesError> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1").map_err(RulesError::Forwarding)?;
    let out = run_nft(&["-j", "-f", STDIN], rules).map_err(RulesError::Spawn)?;
    if !out.status.success() {
        return Err(RulesError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Where nft reads the rules: its stdin. Not `-`: for JSON input nft opens `/dev/stdin`, which a
/// minimal `/dev` (a bare devtmpfs, as in the test host) does not have.
const STDIN: &str = "/proc/self/fd/0";

/// Runs nft with `args`, `input` on its stdin.
fn run_nft(args: &[&str], input: &Value) -> std::io::Result<std::process::Output> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.to_string().as_bytes())?;
    }
    child.wait_with_output()
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
            attachable: false,
            labels: Default::default(),
            created: String::new(),
        };
        [NetworkConfig::default().default_network().unwrap(), user]
    }

    /// Each rule as nft prints it back would be hard to read here: the rules as (chain, compact
    /// JSON of the expression) pairs.
    fn rules_of(ruleset: &Value) -> Vec<(String, String)> {
        ruleset["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .map(|r| {
                (
                    r["chain"].as_str().unwrap().to_string(),
                    r["expr"].to_string(),
                )
            })
            .collect()
    }

    fn has(rules: &[(String, String)], chain: &str, parts: &[&str]) -> bool {
        rules
            .iter()
            .any(|(c, e)| c == chain && parts.iter().all(|p| e.contains(p)))
    }

    #[test]
    fn the_ruleset_replaces_only_its_own_table_and_isolates_networks() {
        let set = ruleset(&networks(true));
        let commands = set["nftables"].as_array().unwrap();
        let table = json!({"table": {"family": "inet", "name": "skiff"}});
        assert_eq!(commands[0], json!({"add": table}));
        assert_eq!(commands[1], json!({"delete": table}));
        assert_eq!(commands[2], json!({"add": table}));
        let rules = rules_of(&set);
        assert!(has(
            &rules,
            "postrouting",
            &[
                r#""addr":"10.88.0.0","len":16"#,
                r#""op":"!=""#,
                r#""right":"skiff0""#,
                "masquerade"
            ]
        ));
        assert!(
            !rules.iter().any(|(_, e)| e.contains("10.89.1.0")),
            "internal: no NAT"
        );
        let between = [r#"{"set":["skb111111111111"]}"#, "drop"];
        assert!(has(&rules, "forward", &between));
        assert!(has(&rules, "forward", &[r#"{"set":["skiff0"]}"#, "drop"]));
        assert!(has(
            &rules,
            "forward",
            &[r#""right":["established","related"]"#, "accept"]
        ));
        assert!(has(
            &rules,
            "input",
            &[
                r#""right":"10.89.1.1""#,
                r#""right":53"#,
                r#""right":"skb111111111111""#,
                "drop"
            ]
        ));
        assert!(rules_of(&ruleset(&[])).is_empty());
    }

    /// Runs `nft -c -j` (checked, not applied) on `rules`: None when nft is not installed.
    fn nft_check(rules: &Value) -> Option<(bool, String)> {
        let out = run_nft(&["-c", "-j", "-f", STDIN], rules).ok()?;
        Some((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// nft itself accepts what `ruleset` writes. Skipped where nft is not installed or cannot
    /// check even an empty table (no nf_tables in the kernel, no permission).
    #[test]
    fn nft_accepts_the_ruleset() {
        let probe =
            json!({"nftables": [{"add": {"table": {"family": "inet", "name": "skiff_probe"}}}]});
        match nft_check(&probe) {
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
        let bad = json!({"nftables": [{"add": {"rule": {"family": "inet", "table": "skiff",
            "chain": "forward", "expr": [{"nonsense": 1}]}}}]});
        let (ok, _) = nft_check(&bad).expect("nft ran a moment ago");
        assert!(!ok, "a rule nft refuses is refused");
    }
}
