//! The name server of a user-defined network (Docker's 127.0.0.11, podman's aardvark-dns): it
//! answers the names of the network's containers with their addresses and relays every other
//! query to the host's resolvers.
//!
//! One UDP socket per network, bound by the caller on the gateway address. A query for a name the
//! network knows (class IN) is answered at once and authoritatively; anything else that parses is
//! forwarded as it came, on its own task and from its own ephemeral socket, to each upstream in
//! turn until one answers, and the reply relayed unchanged; SERVFAIL if none does. Packets that do
//! not parse get FORMERR (NOTIMP for other opcodes) when they have a header, else nothing; a
//! response is never answered. Malformed upstream replies are ignored, so that try times out.

pub mod message;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::debug;

use message::{Query, CLASS_IN};

/// Answers the names of one network's containers; everything else goes to `upstream`.
pub trait NameTable: Send + Sync + 'static {
    /// IPv4 addresses of `name` (lower-case, no trailing dot) as `client` reaches it; empty:
    /// unknown.
    fn lookup(&self, name: &str, client: std::net::IpAddr) -> Vec<std::net::Ipv4Addr>;
}

/// How long each upstream has to answer a forwarded query.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Forwarded queries in flight at once; past it, queries get SERVFAIL.
const MAX_FORWARDS: usize = 256;
/// The largest datagram read (queries with EDNS, replies relayed from upstream).
const MAX_DATAGRAM: usize = 65535;

/// Serves DNS on `socket` (UDP, bound by the caller on the network's gateway address, port 53)
/// until the returned task is aborted.
pub fn serve(
    socket: tokio::net::UdpSocket,
    names: std::sync::Arc<dyn NameTable>,
    upstream: Vec<std::net::SocketAddr>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(Arc::new(socket), names, Arc::new(upstream)))
}

async fn run(socket: Arc<UdpSocket>, names: Arc<dyn NameTable>, upstream: Arc<Vec<SocketAddr>>) {
    let permits = Arc::new(Semaphore::new(MAX_FORWARDS));
    // The forwards in flight, aborted with the server.
    let mut forwards = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                debug!(%err, "dns: receiving");
                // Do not spin should the error persist.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let packet = &buf[..len];
        let query = match message::parse_query(packet) {
            Ok(query) => query,
            Err(err) => {
                debug!(%client, %err, "dns: malformed query");
                if let Some(reply) = message::error_reply(packet, &err) {
                    send(&socket, &reply, client).await;
                }
                continue;
            }
        };
        if query.qclass == CLASS_IN {
            let addrs = names.lookup(&query.name, client.ip());
            if !addrs.is_empty() {
                send(&socket, &message::answer(&query, &addrs), client).await;
                continue;
            }
        }
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                debug!(%client, name = %query.name, "dns: too many queries in flight");
                send(&socket, &message::servfail(&query), client).await;
                continue;
            }
        };
        while forwards.try_join_next().is_some() {}
        forwards.spawn(forward(
            Arc::clone(&socket),
            packet.to_vec(),
            query,
            client,
            Arc::clone(&upstream),
            permit,
        ));
    }
}

async fn send(socket: &UdpSocket, reply: &[u8], client: SocketAddr) {
    if let Err(err) = socket.send_to(reply, client).await {
        debug!(%client, %err, "dns: sending a reply");
    }
}

/// Relays `packet` to the upstreams in turn and the first reply back to `client`.
async fn forward(
    socket: Arc<UdpSocket>,
    packet: Vec<u8>,
    query: Query,
    client: SocketAddr,
    upstream: Arc<Vec<SocketAddr>>,
    _permit: OwnedSemaphorePermit,
) {
    for &server in upstream.iter() {
        match ask(&packet, query.id, server).await {
            Ok(Some(reply)) => {
                send(&socket, &reply, client).await;
                return;
            }
            Ok(None) => debug!(%server, name = %query.name, "dns: upstream timed out"),
            Err(err) => debug!(%server, %err, "dns: upstream"),
        }
    }
    send(&socket, &message::servfail(&query), client).await;
}

/// One try: `packet` to `server` from a fresh socket; its reply, None if none came in time.
async fn ask(packet: &[u8], id: u16, server: SocketAddr) -> std::io::Result<Option<Vec<u8>>> {
    let local = match server {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from anyone else.
    socket.connect(server).await?;
    socket.send(packet).await?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let wait = async {
        loop {
            let len = socket.recv(&mut buf).await?;
            if message::is_reply_to(&buf[..len], id) {
                return Ok::<_, std::io::Error>(len);
            }
            debug!(%server, len, "dns: dropping a malformed or mismatched upstream reply");
        }
    };
    match tokio::time::timeout(UPSTREAM_TIMEOUT, wait).await {
        Ok(Ok(len)) => {
            buf.truncate(len);
            Ok(Some(buf))
        }
        Ok(Err(err)) => Err(err),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Instant;

    struct Table(HashMap<String, Vec<Ipv4Addr>>);

    impl NameTable for Table {
        fn lookup(&self, name: &str, _client: std::net::IpAddr) -> Vec<Ipv4Addr> {
            self.0.get(name).cloned().unwrap_or_default()
        }
    }

    fn table() -> Arc<dyn NameTable> {
        let mut names = HashMap::new();
        names.insert("web".to_string(), vec![Ipv4Addr::new(10, 89, 0, 2)]);
        Arc::new(Table(names))
    }

    fn query(id: u16, labels: &[&str], qtype: u16) -> Vec<u8> {
        let labels: Vec<&[u8]> = labels.iter().map(|l| l.as_bytes()).collect();
        message::test_query(id, &labels, qtype, message::CLASS_IN)
    }

    /// A fake upstream answering anything with `canned`, the query's id put in.
    async fn upstream(canned: Vec<u8>) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                if len >= 2 {
                    let mut reply = canned.clone();
                    reply[..2].copy_from_slice(&buf[..2]);
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        addr
    }

    async fn server(upstream: Vec<SocketAddr>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        (addr, serve(socket, table(), upstream))
    }

    async fn ask_server(client: &UdpSocket, server: SocketAddr, packet: &[u8]) -> Vec<u8> {
        client.send_to(packet, server).await.unwrap();
        let mut buf = [0u8; 1024];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("a reply in time")
            .unwrap();
        buf[..len].to_vec()
    }

    #[tokio::test]
    async fn known_names_locally_others_upstream() {
        let canned = vec![0, 0, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0xAB];
        let (addr, task) = server(vec![upstream(canned).await]).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        let reply = ask_server(&client, addr, &query(7, &["WEB"], 1)).await;
        assert_eq!(&reply[..4], &[0, 7, 0x85, 0x80]);
        assert_eq!(&reply[reply.len() - 4..], &[10, 89, 0, 2]);

        let reply = ask_server(&client, addr, &query(8, &["example", "com"], 1)).await;
        assert_eq!(reply, vec![0, 8, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0xAB]);

        // A malformed packet gets FORMERR and the server goes on.
        let reply = ask_server(&client, addr, &[0, 9, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0]).await;
        assert_eq!(reply, vec![0, 9, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0]);
        client.send_to(&[1, 2, 3], addr).await.unwrap();
        let reply = ask_server(&client, addr, &query(10, &["web"], 28)).await;
        assert_eq!(&reply[..12], &[0, 10, 0x85, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]);
        task.abort();
    }

    #[tokio::test]
    async fn silent_upstream_means_servfail() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (addr, task) = server(vec![silent.local_addr().unwrap()]).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = Instant::now();
        let reply = ask_server(&client, addr, &query(11, &["example", "com"], 1)).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(&reply[..4], &[0, 11, 0x81, 0x82]);
        task.abort();
    }

    #[tokio::test]
    async fn no_upstream_means_servfail_at_once() {
        let (addr, task) = server(vec![]).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let reply = ask_server(&client, addr, &query(12, &["example", "com"], 1)).await;
        assert_eq!(&reply[..4], &[0, 12, 0x81, 0x82]);
        task.abort();
    }

    #[tokio::test]
    async fn a_bad_upstream_reply_is_skipped_for_the_next_upstream() {
        // The first upstream's reply is a query (QR clear): ignored until that try times out.
        let bad = upstream(vec![0, 0, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]).await;
        let good = upstream(vec![0, 0, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0]).await;
        let (addr, task) = server(vec![bad, good]).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let reply = ask_server(&client, addr, &query(13, &["example", "com"], 1)).await;
        assert_eq!(&reply[..4], &[0, 13, 0x81, 0x80]);
        task.abort();
    }
}
