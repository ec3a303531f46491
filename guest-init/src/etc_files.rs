//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, provided the way Docker provides them:
//! written outside the container's file system and bind-mounted over the image's files, which are
//! hidden but not changed (so the copy-on-write layer, and `docker diff`, never see them).
//!
//! The files live on a small tmpfs that guest-init mounts in the initramfs before it enters the
//! container root ([`Staging::prepare`]): the container cannot reach it by any path, only through
//! the three bind mounts. Their content is built by pure functions from checked input: every
//! address is parsed, every name is one word, so no spec can add lines of its own.

use crate::network::{invalid, parse_ip, NetworkError};
use crate::protocol::GuestNetwork;
use crate::system::{mount, SystemError};
use std::ffi::{CStr, CString};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// What Docker's `/etc/hosts` starts with (libnetwork's `etchosts` defaults).
pub const DEFAULT_HOSTS: &str = "127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
";
/// Longest host name, search domain or option accepted (a DNS name's limit).
const MAX_WORD: usize = 253;
/// Size of the staging tmpfs: three small files.
const STAGING_OPTIONS: &CStr = c"size=1m,mode=0755";

/// The files' contents; `None` leaves the image's file alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub hosts: String,
    pub hostname: Option<String>,
    pub resolv_conf: Option<String>,
}

/// A host name, domain or resolver option: one word of printable ASCII, no `#` (which would
/// start a comment in these files).
fn check_word<'a>(what: &str, word: &'a str) -> Result<&'a str, NetworkError> {
    let ok = !word.is_empty()
        && word.len() <= MAX_WORD
        && word.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
    if ok {
        Ok(word)
    } else {
        Err(invalid(
            format!("{what} {word:?}"),
            "not one word of printable characters (no spaces, no '#', at most 253)",
        ))
    }
}

/// `/etc/hosts`: Docker's defaults, the extra entries, then each of the container's addresses
/// with its host name (Docker's order).
pub fn hosts(hostname: Option<&str>, own: &[IpAddr], extra: &[(IpAddr, Vec<&str>)]) -> String {
    let mut out = String::from(DEFAULT_HOSTS);
    for (ip, names) in extra {
        out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    if let Some(name) = hostname {
        for ip in own {
            out.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    out
}

/// `/etc/resolv.conf` as Docker writes it: name servers, search domains (none for `.`), options.
pub fn resolv_conf(servers: &[IpAddr], search: &[&str], options: &[&str]) -> String {
    let mut out = String::new();
    for server in servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !search.is_empty() && search != ["."] {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

impl EtcFiles {
    /// Checks the spec's names and addresses and builds the files. `own` are the container's
    /// addresses (already checked).
    pub fn new(
        network: &GuestNetwork,
        hostname: Option<&str>,
        own: &[IpAddr],
    ) -> Result<EtcFiles, NetworkError> {
        let hostname = hostname.map(|h| check_word("host name", h)).transpose()?;
        let mut extra = Vec::with_capacity(network.hosts.len());
        for entry in &network.hosts {
            let ip = parse_ip("extra host address", &entry.ip)?;
            if entry.names.is_empty() {
                return Err(invalid(
                    format!("extra host {:?}", entry.ip),
                    "has no names",
                ));
            }
            let names = entry
                .names
                .iter()
                .map(|n| check_word("extra host name", n))
                .collect::<Result<Vec<_>, _>>()?;
            extra.push((ip, names));
        }
        let servers = network
            .dns
            .iter()
            .map(|s| parse_ip("DNS server", s))
            .collect::<Result<Vec<_>, _>>()?;
        let search = network
            .dns_search
            .iter()
            .map(|s| check_word("DNS search domain", s))
            .collect::<Result<Vec<_>, _>>()?;
        let options = network
            .dns_options
            .iter()
            .map(|o| check_word("DNS option", o))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EtcFiles {
            hosts: hosts(hostname, own, &extra),
            hostname: hostname.map(|h| format!("{h}\n")),
            resolv_conf: (!servers.is_empty()).then(|| resolv_conf(&servers, &search, &options)),
        })
    }

    /// `(file name in /etc, content)` of each file to provide.
    pub fn entries(&self) -> Vec<(&'static str, &str)> {
        let mut out = vec![("hosts", self.hosts.as_str())];
        if let Some(hostname) = &self.hostname {
            out.push(("hostname", hostname));
        }
        if let Some(resolv_conf) = &self.resolv_conf {
            out.push(("resolv.conf", resolv_conf));
        }
        out
    }
}

fn io_error(what: String) -> impl FnOnce(io::Error) -> SystemError {
    move |source| SystemError { what, source }
}

/// Makes sure `target` exists as something a file can be bind-mounted on, creating an empty file
/// (and its directory) when it is missing. An existing file is not opened for writing, so the
/// image's copy is never copied up. A dangling symbolic link gets the file it points to, as the
/// bind mount follows it.
pub fn ensure_target(target: &Path) -> io::Result<()> {
    match std::fs::metadata(target) {
        Ok(meta) if meta.is_dir() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "is a directory in the image",
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(target)
                .map(drop)
        }
        Err(e) => Err(e),
    }
}

/// The staging tmpfs, held open by a directory descriptor.
#[derive(Debug)]
pub struct Staging {
    dir: OwnedFd,
}

impl Staging {
    /// Mounts a small tmpfs on `path` (created) and opens it. guest-init does this in the
    /// initramfs, before the container root covers it: the directory stays reachable through the
    /// descriptor only.
    pub fn prepare(path: &CStr) -> Result<Staging, SystemError> {
        let shown = path.to_string_lossy();
        std::fs::create_dir_all(&*shown).map_err(io_error(format!("mkdir {shown}")))?;
        mount(
            c"tmpfs",
            path,
            c"tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            STAGING_OPTIONS,
        )?;
        // SAFETY: valid path string; the result is checked and owned.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io_error(format!("opening {shown}"))(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Staging { dir })
    }

    /// Writes `name` in the staging directory and returns it open.
    fn write(&self, name: &str, content: &str) -> Result<File, SystemError> {
        let c_name = CString::new(name)
            .map_err(|_| io_error(format!("staging {name}"))(io::ErrorKind::InvalidInput.into()))?;
        // SAFETY: valid directory descriptor and name; the result is checked and owned.
        let fd = unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                c_name.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io_error(format!("creating {name} on the staging tmpfs"))(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(content.as_bytes())
            .map_err(io_error(format!("writing {name} on the staging tmpfs")))?;
        Ok(file)
    }

    /// Writes each file and bind-mounts it over `etc/<name>` (created empty when missing). Needs
    /// `/proc` (the bind's source is the written file's `/proc/self/fd` link).
    pub fn provide(&self, files: &EtcFiles, etc: &Path) -> Result<(), SystemError> {
        for (name, content) in files.entries() {
            let file = self.write(name, content)?;
            let target = etc.join(name);
            let shown = target.display().to_string();
            ensure_target(&target).map_err(io_error(format!("creating {shown}")))?;
            let source = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .map_err(|_| io_error(shown.clone())(io::ErrorKind::InvalidInput.into()))?;
            let c_target = CString::new(shown.clone())
                .map_err(|_| io_error(shown.clone())(io::ErrorKind::InvalidInput.into()))?;
            mount(&source, &c_target, c"", libc::MS_BIND, c"").map_err(|e| SystemError {
                what: format!("bind-mounting the provided {name} over {shown}"),
                source: e.source,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "etc_files_tests.rs"]
mod tests;
