//! AF_VSOCK stream sockets with plain libc (std has no vsock support).
//!
//! Connected sockets are returned as `File`: `read`/`write` on a socket descriptor are exactly
//! what a stream needs, and `File` gives us `Read`, `Write` and `AsFd` for free.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn address(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain data; all-zero is valid.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    addr
}

const ADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;

/// Connects to `cid:port`, retrying refusals until `patience` runs out (the host may still be
/// setting up its listener).
pub fn connect(cid: u32, port: u32, patience: Duration) -> io::Result<File> {
    let deadline = Instant::now() + patience;
    loop {
        let fd = socket()?;
        let addr = address(cid, port);
        // SAFETY: addr is a valid sockaddr_vm of ADDR_LEN bytes.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_vm).cast(),
                ADDR_LEN,
            )
        };
        if rc == 0 {
            return Ok(File::from(fd));
        }
        let err = io::Error::last_os_error();
        let retryable = matches!(
            err.raw_os_error(),
            Some(libc::ECONNREFUSED | libc::ECONNRESET | libc::ETIMEDOUT | libc::EINTR)
        );
        if !retryable || Instant::now() >= deadline {
            return Err(err);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A listening vsock socket on `port` of this VM.
pub struct Listener(OwnedFd);

impl Listener {
    pub fn bind(port: u32) -> io::Result<Listener> {
        let fd = socket()?;
        let addr = address(libc::VMADDR_CID_ANY, port);
        // SAFETY: addr is a valid sockaddr_vm of ADDR_LEN bytes.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_vm).cast(),
                ADDR_LEN,
            )
        };
        // SAFETY: listen(2) on our socket.
        if rc != 0 || unsafe { libc::listen(fd.as_raw_fd(), 16) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Listener(fd))
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<File> {
        loop {
            // SAFETY: accept4 without an address buffer.
            let fd = unsafe {
                libc::accept4(
                    self.0.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: fresh descriptor from accept4.
                return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}
