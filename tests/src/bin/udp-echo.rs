//! `udp-echo`: a UDP peer for the test host's published-port checks (busybox's nc has no UDP).
//!
//!   udp-echo serve PORT          answers every datagram with its bytes in upper case
//!   udp-echo ask HOST:PORT TEXT  sends TEXT, prints the reply (exit 1 after 5 s without one)

use anyhow::Context;
use std::net::UdpSocket;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", port] => {
            let socket = UdpSocket::bind(("0.0.0.0", port.parse::<u16>()?)).context("bind")?;
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = socket.recv_from(&mut buf)?;
                socket.send_to(&buf[..n].to_ascii_uppercase(), from)?;
            }
        }
        ["ask", to, text] => {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(Duration::from_secs(5)))?;
            socket.send_to(text.as_bytes(), to).context("send")?;
            let mut buf = [0u8; 2048];
            let n = socket.recv(&mut buf).context("no reply")?;
            println!("{}", String::from_utf8_lossy(&buf[..n]));
            Ok(())
        }
        _ => anyhow::bail!("usage: udp-echo serve PORT | udp-echo ask HOST:PORT TEXT"),
    }
}
