//! A tiny HTTP proxy in front of a registry: logs every request (method, target, body size,
//! answer status) and can cut the first PATCH, to prove what a push sent and that it survives
//! a broken chunk. One request per connection (`Connection: close` both ways).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub body_len: usize,
    /// The registry's answer; 0 when the proxy cut the request.
    pub status: u16,
}

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    None,
    /// Cuts the first PATCH after handing this many of its body bytes to the registry (0: the
    /// registry never sees it).
    CutFirstPatch {
        forward: usize,
    },
    /// Sends cross-repository mounts on as plain upload starts: the registry answers 202 with
    /// a session, as one that declines the mount does.
    DeclineMounts,
}

pub struct Proxy {
    pub addr: String,
    pub log: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    pub fn start(upstream: &str, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let cut_done = Arc::new(AtomicBool::new(false));
        let (upstream, seen) = (upstream.to_string(), log.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (upstream, seen, cut_done) = (upstream.clone(), seen.clone(), cut_done.clone());
                std::thread::spawn(move || relay(conn, &upstream, fault, &cut_done, &seen));
            }
        });
        Proxy { addr, log }
    }

    pub fn take_log(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// Logs the request when it has arrived (the log is in the client's order) and its status
/// before the client gets the answer (complete once the client has all its answers).
fn relay(
    client: TcpStream,
    upstream: &str,
    fault: Fault,
    cut_done: &AtomicBool,
    log: &Mutex<Vec<Seen>>,
) -> Option<()> {
    let mut reader = BufReader::new(client.try_clone().ok()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    let mut request_line = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if request_line.is_empty() {
            request_line = line.trim_end().to_string();
            head.push(line);
            continue;
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if !lower.starts_with("connection:") {
            head.push(line);
        }
    }
    head.push("Connection: close\r\n\r\n".into());
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let is_patch = method == "PATCH";
    if matches!(fault, Fault::DeclineMounts) && method == "POST" && target.contains("mount=") {
        let path = target.split('?').next().unwrap_or_default();
        head[0] = format!("POST {path} HTTP/1.1\r\n");
    }
    let index = {
        let mut log = log.lock().unwrap();
        log.push(Seen {
            method,
            target,
            body_len: length,
            status: 0,
        });
        log.len() - 1
    };
    if let Fault::CutFirstPatch { forward } = fault {
        if is_patch && !cut_done.swap(true, Ordering::SeqCst) {
            if forward > 0 {
                let mut up = TcpStream::connect(upstream).ok()?;
                up.write_all(head.concat().as_bytes()).ok()?;
                up.write_all(&body[..forward.min(body.len())]).ok()?;
                let _ = up.shutdown(Shutdown::Both);
            }
            let _ = client.shutdown(Shutdown::Both);
            return Some(());
        }
    }
    let mut up = TcpStream::connect(upstream).ok()?;
    up.write_all(head.concat().as_bytes()).ok()?;
    up.write_all(&body).ok()?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).ok()?;
    let status = String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if let Some(s) = log.lock().unwrap().get_mut(index) {
        s.status = status;
    }
    let mut client = client;
    client.write_all(&answer).ok()?;
    let _ = client.shutdown(Shutdown::Both);
    Some(())
}
