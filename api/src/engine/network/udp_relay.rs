//! A published UDP port: datagrams from each client go to the container from a socket of the
//! client's own (so replies find their way back), the way Docker's userland proxy does it. A
//! client's flow ends after `IDLE` without traffic, and at most `MAX_FLOWS` flows live at once
//! (a flood of spoofed sources cannot make skiffd open sockets without bound; the oldest flow
//! makes room for a new one).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// How long a client's flow lives without a datagram either way (Docker's proxy: 90 s).
pub const IDLE: Duration = Duration::from_secs(90);
pub const MAX_FLOWS: usize = 1024;
/// The largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

struct Flow {
    socket: Arc<UdpSocket>,
    last: Arc<Mutex<Instant>>,
    replies: JoinHandle<()>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// Relays datagrams between clients of `listener` and `to` until the task is aborted.
pub async fn relay(listener: UdpSocket, to: SocketAddr, idle: Duration) {
    let listener = Arc::new(listener);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match listener.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors of earlier sends surface here; the socket itself is fine.
                tracing::debug!("receiving on a published udp port: {e}");
                continue;
            }
        };
        flows.retain(|_, f| !f.replies.is_finished());
        if !flows.contains_key(&client) {
            if flows.len() >= MAX_FLOWS {
                evict_oldest(&mut flows);
            }
            match open_flow(&listener, client, to, idle).await {
                Ok(flow) => {
                    flows.insert(client, flow);
                }
                Err(e) => {
                    tracing::debug!("relaying udp from {client} to {to}: {e}");
                    continue;
                }
            }
        }
        if let Some(flow) = flows.get(&client) {
            *lock(&flow.last) = Instant::now();
            if let Err(e) = flow.socket.send(&buf[..n]).await {
                tracing::debug!("relaying udp from {client} to {to}: {e}");
            }
        }
    }
}

fn lock(last: &Mutex<Instant>) -> std::sync::MutexGuard<'_, Instant> {
    last.lock().unwrap_or_else(|p| p.into_inner())
}

fn evict_oldest(flows: &mut HashMap<SocketAddr, Flow>) {
    let oldest = flows
        .iter()
        .min_by_key(|(_, f)| *lock(&f.last))
        .map(|(k, _)| *k);
    if let Some(k) = oldest {
        flows.remove(&k);
    }
}

async fn open_flow(
    listener: &Arc<UdpSocket>,
    client: SocketAddr,
    to: SocketAddr,
    idle: Duration,
) -> std::io::Result<Flow> {
    let local: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()
    } else {
        "[::]:0".parse()
    }
    .map_err(std::io::Error::other)?;
    let socket = Arc::new(UdpSocket::bind(local).await?);
    socket.connect(to).await?;
    let last = Arc::new(Mutex::new(Instant::now()));
    let replies = tokio::spawn(send_replies(
        socket.clone(),
        listener.clone(),
        client,
        last.clone(),
        idle,
    ));
    Ok(Flow {
        socket,
        last,
        replies,
    })
}

/// Sends what the container answers back to the client, from the published port, until the
/// flow has been idle for `idle`.
async fn send_replies(
    from: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    last: Arc<Mutex<Instant>>,
    idle: Duration,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let deadline = *lock(&last) + idle;
        match tokio::time::timeout_at(deadline.into(), from.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                *lock(&last) = Instant::now();
                if let Err(e) = listener.send_to(&buf[..n], client).await {
                    tracing::debug!("relaying a udp reply to {client}: {e}");
                }
            }
            // Nothing listens in the container (ICMP port unreachable): keep the flow.
            Ok(Err(_)) => {}
            Err(_) if *lock(&last) + idle <= Instant::now() => return,
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_upper() -> SocketAddr {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 100];
            loop {
                let (n, from) = server.recv_from(&mut buf).await.unwrap();
                let reply = buf[..n].to_ascii_uppercase();
                server.send_to(&reply, from).await.unwrap();
            }
        });
        addr
    }

    async fn ask(client: &UdpSocket, to: SocketAddr, what: &[u8]) -> Vec<u8> {
        client.send_to(what, to).await.unwrap();
        let mut buf = [0u8; 100];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("a reply")
            .unwrap();
        assert_eq!(from, to, "replies come from the published port");
        buf[..n].to_vec()
    }

    #[tokio::test]
    async fn each_client_gets_its_own_replies_and_idle_flows_end() {
        let server = echo_upper().await;
        let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let published = listener.local_addr().unwrap();
        let task = tokio::spawn(relay(listener, server, Duration::from_millis(300)));

        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(ask(&a, published, b"one").await, b"ONE");
        assert_eq!(ask(&b, published, b"two").await, b"TWO");
        assert_eq!(ask(&a, published, b"three").await, b"THREE");
        // After the idle time the flow is gone; a new datagram opens a new one.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(ask(&a, published, b"four").await, b"FOUR");
        task.abort();
    }

    #[tokio::test]
    async fn a_flood_of_clients_keeps_at_most_max_flows_and_still_serves() {
        let server = echo_upper().await;
        let listener = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let published = listener.local_addr().unwrap();
        let task = tokio::spawn(relay(listener, server, IDLE));
        let mut clients = Vec::new();
        for _ in 0..MAX_FLOWS + 20 {
            let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            c.send_to(b"x", published).await.unwrap();
            clients.push(c);
        }
        let fresh = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(ask(&fresh, published, b"still").await, b"STILL");
        task.abort();
    }
}
