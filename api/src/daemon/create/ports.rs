//! `HostConfig.PortBindings` and `PublishAllPorts`: which container ports are published on which
//! host addresses and ports (Docker's `-p [IP:]HOST:CONTAINER[/PROTO]` and `-P`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::body::PortBinding;
use super::decode::CreateError;

/// One container port published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRequest {
    pub container_port: u16,
    /// `tcp` or `udp` (sctp is refused at create).
    pub proto: String,
    /// None: every host address (`0.0.0.0`).
    pub host_ip: Option<IpAddr>,
    /// 0: any free port, chosen when the container starts.
    pub host_port: u16,
}

/// `80/tcp` (or `80`, tcp by default) as (port, proto).
pub fn parse_port_key(key: &str) -> Result<(u16, String), CreateError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let port: u16 =
        port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
            CreateError::Invalid(format!("invalid port specification: \"{key}\""))
        })?;
    match proto {
        "tcp" | "udp" => Ok((port, proto.to_string())),
        "sctp" => Err(CreateError::Refused(vec![format!(
            "publishing sctp ports ({key}) is not supported by skiff yet; only tcp and udp"
        )])),
        _ => Err(CreateError::Invalid(format!(
            "invalid proto \"{proto}\" in port specification \"{key}\""
        ))),
    }
}

/// The ports to publish: every binding of `PortBindings`, then, with `PublishAllPorts`, each
/// exposed port (of the request; the image's are added by the engine) not bound yet, on any
/// host port.
pub fn decode_ports(
    bindings: &BTreeMap<String, Option<Vec<PortBinding>>>,
) -> Result<Vec<PortRequest>, CreateError> {
    let mut out = Vec::new();
    for (key, list) in bindings {
        let (container_port, proto) = parse_port_key(key)?;
        let list = list.as_deref().unwrap_or_default();
        let default = [PortBinding::default()];
        let list = if list.is_empty() { &default[..] } else { list };
        for binding in list {
            let host_ip = match binding.host_ip.as_deref().unwrap_or("") {
                "" => None,
                ip => Some(ip.parse::<IpAddr>().map_err(|_| {
                    CreateError::Invalid(format!("invalid host IP address \"{ip}\" for {key}"))
                })?),
            };
            let host_port = match binding.host_port.as_deref().unwrap_or("") {
                "" => 0,
                p if p.contains('-') => {
                    return Err(CreateError::Refused(vec![format!(
                        "host port ranges ({p} for {key}) are not supported by skiff yet"
                    )]))
                }
                p => p.parse::<u16>().map_err(|_| {
                    CreateError::Invalid(format!("invalid host port \"{p}\" for {key}"))
                })?,
            };
            out.push(PortRequest {
                container_port,
                proto: proto.clone(),
                host_ip,
                host_port,
            });
        }
    }
    Ok(out)
}

/// Adds, for `-P`, a binding on any host port for each exposed port that has none.
pub fn publish_all(ports: &mut Vec<PortRequest>, exposed: &[String]) -> Result<(), CreateError> {
    for key in exposed {
        let (container_port, proto) = parse_port_key(key)?;
        if !ports
            .iter()
            .any(|p| p.container_port == container_port && p.proto == proto)
        {
            ports.push(PortRequest {
                container_port,
                proto,
                host_ip: None,
                host_port: 0,
            });
        }
    }
    Ok(())
}

/// A `-p` flag as the docker CLI takes it, `[IP:][HOST:]CONTAINER[/PROTO]` (`[::1]:` for an
/// IPv6 address), as a `PortBindings` key and binding.
pub fn parse_publish(spec: &str) -> Result<(String, PortBinding), String> {
    let bad = || format!("invalid publish spec {spec:?}: want [IP:][HOST:]CONTAINER[/PROTO]");
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((rest, proto)) => (rest, proto),
        None => (spec, "tcp"),
    };
    let (ip, ports) = if let Some(v6) = rest.strip_prefix('[') {
        let (ip, after) = v6.split_once("]:").ok_or_else(bad)?;
        (Some(ip), after)
    } else {
        match rest.matches(':').count() {
            0 | 1 => (None, rest),
            2 => {
                let (ip, after) = rest.split_once(':').ok_or_else(bad)?;
                (Some(ip), after)
            }
            _ => return Err(bad()),
        }
    };
    let (host, container) = match ports.split_once(':') {
        Some((host, container)) => (host, container),
        None => ("", ports),
    };
    if container.is_empty() || !container.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok((
        format!("{container}/{proto}"),
        PortBinding {
            host_ip: ip.filter(|i| !i.is_empty()).map(str::to_string),
            host_port: Some(host.to_string()),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_flags_parse_as_the_docker_cli_does() {
        let p = |s: &str| {
            let (k, b) = parse_publish(s).unwrap();
            (k, b.host_ip, b.host_port.unwrap())
        };
        assert_eq!(p("8080:80"), ("80/tcp".into(), None, "8080".into()));
        assert_eq!(p("80"), ("80/tcp".into(), None, "".into()));
        assert_eq!(
            p("127.0.0.1:8080:80/tcp"),
            ("80/tcp".into(), Some("127.0.0.1".into()), "8080".into())
        );
        assert_eq!(
            p("127.0.0.1::80"),
            ("80/tcp".into(), Some("127.0.0.1".into()), "".into())
        );
        assert_eq!(
            p("[::1]:9000:90"),
            ("90/tcp".into(), Some("::1".into()), "9000".into())
        );
        assert_eq!(p("53:53/udp").0, "53/udp");
        for bad in ["", "a:b", "1:2:3:4", "8080:", "[::1:80"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    fn binding(ip: &str, port: &str) -> PortBinding {
        PortBinding {
            host_ip: Some(ip.into()),
            host_port: Some(port.into()),
        }
    }

    #[test]
    fn bindings_become_port_requests() {
        let mut map = BTreeMap::new();
        map.insert(
            "80/tcp".to_string(),
            Some(vec![binding("", "8080"), binding("127.0.0.1", "")]),
        );
        map.insert("443".to_string(), None);
        let ports = decode_ports(&map).unwrap();
        assert_eq!(
            ports,
            [
                PortRequest {
                    container_port: 443,
                    proto: "tcp".into(),
                    host_ip: None,
                    host_port: 0
                },
                PortRequest {
                    container_port: 80,
                    proto: "tcp".into(),
                    host_ip: None,
                    host_port: 8080
                },
                PortRequest {
                    container_port: 80,
                    proto: "tcp".into(),
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                    host_port: 0
                },
            ]
        );
    }

    #[test]
    fn bad_and_unsupported_specs_are_refused_by_name() {
        for (key, b, want) in [
            ("x/tcp", binding("", "1"), "invalid port specification"),
            ("0/tcp", binding("", "1"), "invalid port specification"),
            ("80/tcpx", binding("", "1"), "invalid proto"),
            (
                "80/sctp",
                binding("", "1"),
                "publishing sctp ports (80/sctp) is not supported",
            ),
            (
                "80/tcp",
                binding("nope", "1"),
                "invalid host IP address \"nope\"",
            ),
            (
                "80/tcp",
                binding("", "70000"),
                "invalid host port \"70000\"",
            ),
            ("80/tcp", binding("", "80-90"), "host port ranges"),
        ] {
            let mut map = BTreeMap::new();
            map.insert(key.to_string(), Some(vec![b]));
            let e = decode_ports(&map).unwrap_err().to_string();
            assert!(e.contains(want), "{key}: {e}");
        }
    }

    #[test]
    fn publish_all_adds_only_unbound_exposed_ports() {
        let mut ports = vec![PortRequest {
            container_port: 80,
            proto: "tcp".into(),
            host_ip: None,
            host_port: 8080,
        }];
        publish_all(&mut ports, &["80/tcp".into(), "9000/tcp".into()]).unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!((ports[1].container_port, ports[1].host_port), (9000, 0));
    }
}
