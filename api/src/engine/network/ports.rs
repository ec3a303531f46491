//! Published ports: a listener on the host address and port for each, relaying every connection
//! (tcp) or flow of datagrams (udp, `udp_relay`) to the container's address (Docker's userland
//! proxy). One mechanism serves clients on other
//! machines, on the host's own loopback and in other containers (hairpin) alike, and a port that
//! is taken fails the start with the kernel's answer instead of being shadowed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::udp_relay;
use crate::daemon::create::ports::PortRequest;

/// A published port as it was bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundPort {
    pub container_port: u16,
    pub proto: String,
    pub host_ip: IpAddr,
    pub host_port: u16,
}

/// The relays of one container; dropping it closes the listeners.
#[derive(Default)]
pub struct Relays {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Relays {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("Bind for {addr} failed: {source}")]
pub struct BindError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds every requested port (0: a free one) and relays it to `target`. All or nothing.
pub async fn publish(
    requests: &[PortRequest],
    target: Ipv4Addr,
) -> Result<(Vec<BoundPort>, Relays), BindError> {
    let mut bound = Vec::new();
    let mut relays = Relays::default();
    for request in requests {
        let ip = request.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let addr = SocketAddr::new(ip, request.host_port);
        let to = SocketAddr::new(IpAddr::V4(target), request.container_port);
        let fail = |source| BindError { addr, source };
        let local = if request.proto == "udp" {
            let socket = UdpSocket::bind(addr).await.map_err(fail)?;
            let local = socket.local_addr().map_err(fail)?;
            let relay = udp_relay::relay(socket, to, udp_relay::IDLE);
            relays.tasks.push(tokio::spawn(relay));
            local
        } else {
            let listener = bind(addr).await?;
            let local = listener.local_addr().map_err(fail)?;
            relays.tasks.push(tokio::spawn(relay(listener, to)));
            local
        };
        bound.push(BoundPort {
            container_port: request.container_port,
            proto: request.proto.clone(),
            host_ip: ip,
            host_port: local.port(),
        });
    }
    Ok((bound, relays))
}

/// Binds the ports a running container had before (after a daemon restart).
pub async fn republish(ports: &[BoundPort], target: Ipv4Addr) -> Result<Relays, BindError> {
    let requests: Vec<PortRequest> = ports
        .iter()
        .map(|p| PortRequest {
            container_port: p.container_port,
            proto: p.proto.clone(),
            host_ip: Some(p.host_ip),
            host_port: p.host_port,
        })
        .collect();
    Ok(publish(&requests, target).await?.1)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    };
    let fail = |source| BindError { addr, source };
    let socket = socket.map_err(fail)?;
    // A port of a container that just stopped may still be in TIME_WAIT: Docker reuses it too.
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    socket.listen(1024).map_err(fail)
}

async fn relay(listener: TcpListener, to: SocketAddr) {
    loop {
        let (mut client, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("accepting on a published port: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            match TcpStream::connect(to).await {
                Ok(mut server) => {
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
                Err(e) => tracing::debug!("relaying {from} to {to}: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn request(port: u16) -> PortRequest {
        PortRequest {
            container_port: port,
            proto: "tcp".into(),
            host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            host_port: 0,
        }
    }

    #[tokio::test]
    async fn a_published_port_relays_both_ways_and_a_taken_port_is_refused() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf.map(|b| b.to_ascii_uppercase()))
                .await
                .unwrap();
        });
        let (bound, relays) = publish(&[request(port)], Ipv4Addr::LOCALHOST)
            .await
            .unwrap();
        assert_eq!(bound[0].container_port, port);
        let mut client = TcpStream::connect(("127.0.0.1", bound[0].host_port))
            .await
            .unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HELLO");

        let mut taken = request(port);
        taken.host_port = bound[0].host_port;
        let e = publish(&[taken], Ipv4Addr::LOCALHOST).await.err().unwrap();
        assert!(e.to_string().starts_with("Bind for 127.0.0.1:"), "{e}");

        drop(relays);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(TcpStream::connect(("127.0.0.1", bound[0].host_port))
            .await
            .is_err());
    }
}
