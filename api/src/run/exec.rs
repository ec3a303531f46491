//! Exec into a running VM: connect to its vsock Unix socket, ask the VMM for guest port 1025
//! (Firecracker's convention: `CONNECT 1025\n` → `OK <host port>\n`), then speak the protocol.

use skiff_protocol::EXEC_PORT;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The VMM's answer line is short; anything longer is not a VMM talking.
const MAX_REPLY: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to the VM's vsock socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("the VM refused vsock port {port} (is guest-init running?)")]
    Refused { port: u32 },
    #[error("unexpected answer from the VMM's vsock socket: {0:?}")]
    BadReply(String),
}

/// Opens a stream to `port` in the guest behind the VMM socket `vsock_socket`.
pub async fn connect_guest_port(
    vsock_socket: &Path,
    port: u32,
) -> Result<UnixStream, ConnectError> {
    let socket_error = |source| ConnectError::Socket {
        path: vsock_socket.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(vsock_socket)
        .await
        .map_err(socket_error)?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(socket_error)?;
    // Byte by byte: what follows the newline already belongs to the guest's protocol.
    let mut line = Vec::new();
    loop {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) if line.is_empty() => return Err(ConnectError::Refused { port }),
            Ok(0) | Err(_) => {
                return Err(ConnectError::BadReply(
                    String::from_utf8_lossy(&line).into(),
                ))
            }
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
        }
        if line.len() > MAX_REPLY {
            return Err(ConnectError::BadReply(
                String::from_utf8_lossy(&line).into(),
            ));
        }
    }
    let line = String::from_utf8_lossy(&line);
    if !line.starts_with("OK ") {
        return Err(ConnectError::BadReply(line.into()));
    }
    Ok(stream)
}

/// Opens an exec session stream into the VM behind `vsock_socket`.
pub async fn connect_exec(vsock_socket: &Path) -> Result<UnixStream, ConnectError> {
    connect_guest_port(vsock_socket, EXEC_PORT).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    async fn fake_vmm(reply: &'static [u8]) -> (tempdir::Dir, tokio::task::JoinHandle<Vec<u8>>) {
        let dir = tempdir::Dir::new();
        let listener = UnixListener::bind(dir.0.join("v.sock")).unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; 13];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(reply).await.unwrap();
            got
        });
        (dir, task)
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "skiff-exec-test-{}-{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[tokio::test]
    async fn connect_sends_port_and_accepts_ok() {
        let (dir, task) = fake_vmm(b"OK 1073741824\nXY").await;
        let mut s = connect_exec(&dir.0.join("v.sock")).await.unwrap();
        assert_eq!(task.await.unwrap(), b"CONNECT 1025\n");
        let mut rest = [0u8; 2];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(
            &rest, b"XY",
            "bytes after the reply line belong to the session"
        );
    }

    #[tokio::test]
    async fn refusal_and_garbage_are_errors() {
        let (dir, _task) = fake_vmm(b"").await;
        let err = connect_exec(&dir.0.join("v.sock")).await.unwrap_err();
        assert!(matches!(err, ConnectError::Refused { port: 1025 }), "{err}");

        let (dir, _task) = fake_vmm(b"NO way\n").await;
        let err = connect_exec(&dir.0.join("v.sock")).await.unwrap_err();
        assert!(matches!(err, ConnectError::BadReply(_)), "{err}");

        let (dir, _task) = fake_vmm(&[b'A'; 200]).await;
        let err = connect_exec(&dir.0.join("v.sock")).await.unwrap_err();
        assert!(matches!(err, ConnectError::BadReply(_)), "{err}");
    }
}
