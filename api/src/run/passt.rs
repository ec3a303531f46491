//! Rootless networking for a run without skiffd: passt (Debian's `passt`) as the VM's network.
//!
//! skiff starts passt as the calling user (no privilege needed: passt NATs the guest's traffic
//! through ordinary sockets of the host and binds the published ports itself), with its socket in
//! the run directory; the VMM connects its virtio-net device there (`NetSpec.stream`). guest-init
//! configures eth0 statically with what passt was told (`-a/-n/-g`), so no DHCP client is needed
//! in the image. passt is told to serve one client (`--one-off`), so it also ends when the VMM
//! does; skiff ends it anyway once the run is over.

use super::rundir::RunDir;
use crate::daemon::create::ports::parse_publish;
use anyhow::Context;
use skiff_protocol::{GuestInterface, GuestNetwork};
use skiff_vmm::spec::NetSpec;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The guest's address and prefix length, its gateway (passt itself, standing for the host) and
/// the address passt forwards DNS queries from (to the host's first name server).
const GUEST_ADDRESS: &str = "10.0.2.15";
const PREFIX_LEN: u8 = 24;
const GATEWAY: &str = "10.0.2.2";
const DNS: &str = "10.0.2.3";
/// The guest's MAC address (one interface per VM, so one address serves every run).
const GUEST_MAC: &str = "02:5f:00:00:02:0f";
/// How long passt gets to set up and bind its socket.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// A published port: passt listens on the host (on `host_ip`, or every address) and forwards to
/// the guest's port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub udp: bool,
    pub host_ip: Option<String>,
    pub host_port: u16,
    pub container_port: u16,
}

impl Publish {
    /// A `-p` flag, `[IP:]HOST:CONTAINER[/tcp|/udp]`: passt needs the host port spelled out.
    pub fn parse(spec: &str) -> anyhow::Result<Publish> {
        let (key, binding) = parse_publish(spec).map_err(anyhow::Error::msg)?;
        let (port, proto) = key.split_once('/').unwrap_or((&key, "tcp"));
        let udp = match proto {
            "tcp" => false,
            "udp" => true,
            _ => anyhow::bail!("-p {spec}: passt forwards tcp and udp only"),
        };
        let number = |text: &str| text.parse::<u16>().ok().filter(|&p| p != 0);
        let container_port =
            number(port).with_context(|| format!("-p {spec}: invalid container port"))?;
        let host_port = binding
            .host_port
            .as_deref()
            .and_then(number)
            .with_context(|| format!("-p {spec}: --network passt needs HOST:CONTAINER"))?;
        let host_ip = binding.host_ip;
        if let Some(ip) = &host_ip {
            ip.parse::<std::net::Ipv4Addr>().with_context(|| {
                format!("-p {spec}: {ip:?} is not an IPv4 address (passt runs IPv4-only here)")
            })?;
        }
        Ok(Publish {
            udp,
            host_ip,
            host_port,
            container_port,
        })
    }

    /// As passt's `-t`/`-u` take it: `[ADDRESS/]HOST:CONTAINER`.
    fn passt_spec(&self) -> String {
        let ip = self
            .host_ip
            .as_deref()
            .map_or(String::new(), |ip| format!("{ip}/"));
        format!("{ip}{}:{}", self.host_port, self.container_port)
    }
}

/// passt's command line, after the program: serving `socket`, forwarding `ports`.
fn passt_args(socket: &Path, pid_file: &Path, ports: &[Publish]) -> Vec<String> {
    let mut args: Vec<String> = ["--foreground", "--quiet", "--one-off", "-4"]
        .map(String::from)
        .to_vec();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    args.extend([
        "--socket".into(),
        path(socket),
        "--pid".into(),
        path(pid_file),
    ]);
    args.extend(
        [
            "-a",
            GUEST_ADDRESS,
            "-n",
            &PREFIX_LEN.to_string(),
            "-g",
            GATEWAY,
        ]
        .map(String::from),
    );
    args.extend(["--dns-forward".into(), DNS.into()]);
    for (flag, udp) in [("-t", false), ("-u", true)] {
        let specs: Vec<String> = ports
            .iter()
            .filter(|p| p.udp == udp)
            .map(Publish::passt_spec)
            .collect();
        args.push(flag.into());
        args.push(if specs.is_empty() {
            "none".into()
        } else {
            specs.join(",")
        });
    }
    args
}

/// The VM's interface on passt's socket.
pub fn nic(socket: &Path) -> NetSpec {
    NetSpec {
        stream: Some(socket.to_path_buf()),
        mac: Some(GUEST_MAC.into()),
        ..NetSpec::default()
    }
}

/// eth0 as passt expects it, for guest-init.
pub fn guest_network() -> GuestNetwork {
    GuestNetwork {
        interfaces: vec![GuestInterface {
            mac: GUEST_MAC.into(),
            name: "eth0".into(),
            addresses: vec![format!("{GUEST_ADDRESS}/{PREFIX_LEN}")],
            gateway: Some(GATEWAY.into()),
            mtu: None,
        }],
        dns: vec![DNS.into()],
        ..GuestNetwork::default()
    }
}

/// A running passt, killed when dropped.
pub struct Passt {
    child: Child,
    socket: PathBuf,
}

impl Passt {
    /// Starts passt for the run in `dir` and waits until it serves its socket.
    pub async fn start(dir: &RunDir, ports: &[Publish]) -> anyhow::Result<Passt> {
        let socket = dir.path().join("passt.sock");
        let pid_file = dir.path().join("passt.pid");
        let log = dir.path().join("passt.log");
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new("passt")
            .args(passt_args(&socket, &pid_file, ports))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // Not in our terminal's process group: ^C reaches skiff, which ends the run.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("starting passt (--network passt needs Debian's passt package)")?;
        // passt writes its PID file once it is set up, its socket bound.
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while !std::fs::metadata(&pid_file).is_ok_and(|m| m.len() > 0) {
            if let Some(status) = child.try_wait().context("waiting for passt")? {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                anyhow::bail!("passt ended during its start ({status}): {}", said.trim());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("passt did not set up within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::debug!(pid = ?child.id(), socket = %socket.display(), "passt started");
        Ok(Passt { child, socket })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Ends passt (it normally has ended with the VMM already).
    pub async fn stop(mut self) {
        if let Err(e) = self.child.start_kill() {
            tracing::debug!("passt: {e}");
        }
        let _ = self.child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_flags_become_passt_forwards() {
        let p = Publish::parse("8080:80").unwrap();
        assert_eq!((p.udp, p.host_port, p.container_port), (false, 8080, 80));
        let q = Publish::parse("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(q.host_ip.as_deref(), Some("127.0.0.1"));
        assert!(q.udp);
        let r = Publish::parse("10.1.2.3:8443:443/tcp").unwrap();
        let args = passt_args(Path::new("/r/s"), Path::new("/r/p"), &[p, q, r]);
        let at = |flag: &str| {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1].clone()
        };
        assert_eq!(at("-t"), "8080:80,10.1.2.3/8443:443");
        assert_eq!(at("-u"), "127.0.0.1/5353:53");
        assert_eq!(at("--socket"), "/r/s");
        assert_eq!(
            (at("-a"), at("-n"), at("-g")),
            ("10.0.2.15".into(), "24".into(), "10.0.2.2".into())
        );
        let none = passt_args(Path::new("/s"), Path::new("/p"), &[]);
        assert!(none.windows(2).any(|w| w == ["-t", "none"]));
        let bad = [
            "80",
            ":80",
            "8080:80/sctp",
            "0:80",
            "8080:0",
            "x:8080:80",
            "70000:80",
            "[::1]:8443:443",
        ];
        for bad in bad {
            assert!(Publish::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_guest_is_configured_as_passt_is() {
        let net = guest_network();
        let nic = nic(Path::new("/r/passt.sock"));
        assert_eq!(nic.mac.as_deref(), Some(net.interfaces[0].mac.as_str()));
        assert_eq!(net.interfaces[0].addresses, ["10.0.2.15/24"]);
        assert_eq!(net.interfaces[0].gateway.as_deref(), Some(GATEWAY));
    }
}
