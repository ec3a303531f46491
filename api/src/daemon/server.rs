//! Listening: Unix sockets (stale ones replaced, live ones left alone, mode 0660 and group
//! `skiff`) and TCP, plain or TLS; HTTP/1.1 with upgrades per connection; a clean stop that refuses new
//! connections, lets in-flight requests finish for a grace period, cuts the rest and removes the
//! sockets.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::router::{self, Daemon};

/// Where skiffd listens by default, as dockerd on `/var/run/docker.sock`.
pub const DEFAULT_SOCKET: &str = "/run/skiff/skiff.sock";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid address {0:?}: expected unix:///PATH or tcp://HOST:PORT")]
    BadAddress(String),
    #[error("{path}: another daemon is answering on this socket; not replacing it")]
    SocketInUse { path: PathBuf },
    #[error("{path}: exists and is not a socket; not replacing it")]
    NotASocket { path: PathBuf },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: io::Error },
}

/// A `-H` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
    /// `HOST:PORT` as given.
    Tcp(String),
}

impl FromStr for ListenAddr {
    type Err = ServerError;

    fn from_str(s: &str) -> Result<ListenAddr, ServerError> {
        if let Some(path) = s.strip_prefix("unix://") {
            let path = if path.is_empty() {
                DEFAULT_SOCKET
            } else {
                path
            };
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        match s.strip_prefix("tcp://") {
            Some(addr)
                if addr
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
            {
                Ok(ListenAddr::Tcp(addr.to_string()))
            }
            _ => Err(ServerError::BadAddress(s.to_string())),
        }
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// A bound listener. A Unix one removes its socket file when the server stops.
pub enum Listener {
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Tcp(TcpListener),
    Tls {
        listener: TcpListener,
        acceptor: TlsAcceptor,
    },
}

impl Listener {
    /// Where it listens (a TCP port chosen by the system shows here).
    pub fn local_addr(&self) -> String {
        let tcp = |l: &TcpListener| l.local_addr().map(|a| format!("tcp://{a}"));
        match self {
            Listener::Unix { path, .. } => Ok(format!("unix://{}", path.display())),
            Listener::Tcp(l) | Listener::Tls { listener: l, .. } => tcp(l),
        }
        .unwrap_or_else(|e| format!("(unknown address: {e})"))
    }
}

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr`. A Unix socket gets mode 0660 and, when given and present, the group
/// `socket_group`: whoever can connect to it is root on this host. A TCP address is served
/// with `tls` when given.
pub async fn bind(
    addr: &ListenAddr,
    socket_group: Option<&str>,
    tls: Option<&TlsAcceptor>,
) -> Result<Listener, ServerError> {
    let listen_err = |source| ServerError::Listen {
        addr: addr.to_string(),
        source,
    };
    match addr {
        ListenAddr::Tcp(a) => {
            let listener = TcpListener::bind(a).await.map_err(listen_err)?;
            Ok(match tls {
                Some(acceptor) => Listener::Tls {
                    listener,
                    acceptor: acceptor.clone(),
                },
                None => Listener::Tcp(listener),
            })
        }
        ListenAddr::Unix(path) => {
            clear_stale_socket(path)?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(listen_err)?;
            }
            let listener = UnixListener::bind(path).map_err(listen_err)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                .map_err(listen_err)?;
            if let Some(gid) = socket_group.and_then(group_id) {
                std::os::unix::fs::chown(path, None, Some(gid)).map_err(listen_err)?;
            }
            Ok(Listener::Unix {
                listener,
                path: path.clone(),
            })
        }
    }
}

/// Removes a socket file left by a daemon that died; refuses when something answers on it or
/// when the path is not a socket.
fn clear_stale_socket(path: &Path) -> Result<(), ServerError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServerError::SocketInUse {
            path: path.to_path_buf(),
        });
    }
    tracing::info!(path = %path.display(), "replacing a stale socket");
    std::fs::remove_file(path).map_err(|source| ServerError::Listen {
        addr: format!("unix://{}", path.display()),
        source,
    })
}

/// The gid of a group in the host's /etc/group, if it exists (read directly: NSS lookups are
/// unavailable to a statically linked binary).
fn group_id(name: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    crate::run::image::lookup(&text, name).map(|(gid, _)| gid)
}

/// A client connection of any listener; its descriptor is reachable so that a hijacked stream
/// can see whether the client has read what was sent (`streams::hijack`).
pub trait Io: AsyncRead + AsyncWrite + AsRawFd + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + AsRawFd + Send + Unpin + 'static> Io for T {}

/// What hyper serves each connection over.
pub type Connection = TokioIo<Box<dyn Io>>;

/// Accepts on one listener and hands each connection to the serving loop (TLS ones once their
/// handshake, run on its own task, has succeeded).
async fn accept_loop(listener: Listener, conns: mpsc::Sender<Box<dyn Io>>) {
    loop {
        let accepted: io::Result<Box<dyn Io>> = match &listener {
            Listener::Unix { listener, .. } => {
                listener.accept().await.map(|(s, _)| Box::new(s) as _)
            }
            Listener::Tcp(listener) => listener.accept().await.map(|(s, _)| Box::new(s) as _),
            Listener::Tls { listener, acceptor } => match listener.accept().await {
                Ok((tcp, peer)) => {
                    let (acceptor, conns) = (acceptor.clone(), conns.clone());
                    tokio::spawn(async move {
                        let handshake = acceptor.accept(tcp);
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                            Ok(Ok(tls)) => {
                                let _ = conns.send(Box::new(tls)).await;
                            }
                            Ok(Err(e)) => tracing::info!(%peer, "TLS handshake failed: {e}"),
                            Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                        }
                    });
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        match accepted {
            Ok(io) => {
                if conns.send(io).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves every listener until `shutdown` resolves, then stops as described above; in-flight
/// requests get `grace` to finish.
pub async fn serve(
    listeners: Vec<Listener>,
    daemon: Arc<Daemon>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let socket_paths: Vec<PathBuf> = listeners
        .iter()
        .filter_map(|l| match l {
            Listener::Unix { path, .. } => Some(path.clone()),
            Listener::Tcp(_) | Listener::Tls { .. } => None,
        })
        .collect();
    let (conn_tx, mut conn_rx) = mpsc::channel(64);
    let mut acceptors = JoinSet::new();
    for l in listeners {
        acceptors.spawn(accept_loop(l, conn_tx.clone()));
    }
    drop(conn_tx);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            conn = conn_rx.recv() => match conn {
                Some(io) => {
                    connections.spawn(serve_connection(io, daemon.clone(), stop_rx.clone()));
                }
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    acceptors.abort_all();
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            cut = connections.len(),
            "in-flight requests still running after {grace:?}: cut"
        );
        connections.abort_all();
    }
    for path in socket_paths {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), "cannot remove the socket: {e}");
        }
    }
}

async fn serve_connection(io: Box<dyn Io>, daemon: Arc<Daemon>, mut stop: watch::Receiver<bool>) {
    let service = service_fn(move |req| router::serve(daemon.clone(), req));
    let conn = http1::Builder::new()
        .serve_connection(Connection::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!("connection ended: {e}");
            }
            return;
        }
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!("connection ended during shutdown: {e}");
    }
}
