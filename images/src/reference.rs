//! Image references in Docker's grammar: `[domain[:port]/]path[:tag][@digest]`, with Docker Hub
//! defaults (`busybox` = `docker.io/library/busybox:latest`).

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::Error;

pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's API lives on another host than its name.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `quay.io`, `127.0.0.1:5000`, ...
    pub registry: String,
    /// `library/busybox`, `ns/name`, ...
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, Error> {
        let bad = |reason: &str| Error::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        if s.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            // `user:pass@host/repo`: a URL habit. Said plainly, and without echoing the
            // password back.
            Some((userinfo, host)) if host.contains('/') && !userinfo.contains('/') => {
                return Err(Error::InvalidReference {
                    reference: format!("<credentials>@{host}"),
                    reason: "credentials do not go in an image reference: run `skiff login` \
                             for the registry"
                        .into(),
                })
            }
            Some((rest, d)) => (rest, Some(d.parse::<Digest>()?)),
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            let valid = !tag.is_empty()
                && tag.len() <= MAX_TAG_LEN
                && tag.as_bytes()[0] != b'.'
                && tag.as_bytes()[0] != b'-'
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !valid {
                return Err(bad("invalid tag"));
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if !valid_domain(&registry) {
            return Err(bad("invalid registry host"));
        }
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(bad("invalid repository name"));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(bad("repository name longer than 255 characters"));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Host (and port) to talk to for this registry.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// `registry/repository`, the fully qualified name without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short form Docker prints: `busybox` for `docker.io/library/busybox`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix("library/") {
                Some(short) if !short.contains('/') => short.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest if there is one (pinned),
    /// else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

fn valid_domain(host: &str) -> bool {
    let (h, port) = if let Some(rest) = host.strip_prefix('[') {
        // [IPv6]:port
        match rest.split_once(']') {
            Some((ip, port)) => {
                if ip.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                ("x", port.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match host.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return false;
        }
    }
    !h.is_empty()
        && h.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Reference::parse(s)
    }
}

/// The canonical form stored in the image index: `docker.io/library/busybox:latest`,
/// `host:5000/ns/name@sha256:...` (the digest wins when both are given: it pins the content).
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.digest, &self.tag) {
            (Some(d), _) => write!(f, "{}@{}", self.name(), d),
            (None, Some(t)) => write!(f, "{}:{}", self.name(), t),
            (None, None) => write!(f, "{}:latest", self.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_defaults() {
        let r = p("busybox");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(p("busybox:1.36").tag.as_deref(), Some("1.36"));
        assert_eq!(p("user/app").repository, "user/app");
        assert_eq!(p("docker.io/library/busybox:1.36"), p("busybox:1.36"));
        assert_eq!(p("index.docker.io/library/busybox"), p("busybox"));
    }

    #[test]
    fn registry_hosts_and_ports() {
        let r = p(&format!("127.0.0.1:5000/ns/name@{D}"));
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "ns/name");
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_ref().unwrap().to_string(), D);
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/ns/name@{D}"));
        let r = p("localhost/foo:bar");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost", "foo")
        );
        let r = p("localhost:5000/foo");
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        let r = p("quay.io/coreos/etcd:v3.5.0");
        assert_eq!(r.registry, "quay.io");
        assert_eq!(r.familiar_name(), "quay.io/coreos/etcd");
        let r = p("[::1]:5000/x:y");
        assert_eq!(r.registry, "[::1]:5000");
        // A first component without '.', ':' or "localhost" is a namespace, not a host.
        assert_eq!(p("myhost/foo").registry, "docker.io");
    }

    #[test]
    fn tag_and_digest_together() {
        let r = p(&format!("busybox:1.36@{D}"));
        assert_eq!(r.tag.as_deref(), Some("1.36"));
        assert!(r.digest.is_some());
        assert_eq!(r.manifest_reference(), D);
    }

    #[test]
    fn separators_in_names() {
        for ok in ["a.b/c", "a/b_c", "a/b__c", "a/b---c", "a/b-c.d_e"] {
            p(ok);
        }
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:123",
            "busybox@md5:d41d8cd98f00b204e9800998ecf8427e",
            "a//b",
            "/busybox",
            "busybox/",
            "a/b___c",
            "a/.b",
            "host:99999/x",
            "host:port/x",
            "a b",
            "../etc",
            "busybox:tag:more",
        ] {
            assert!(Reference::parse(bad).is_err(), "accepted {bad:?}");
        }
        let long = "a".repeat(300);
        assert!(Reference::parse(&long).is_err());
        let err = Reference::parse("UPPER/case").unwrap_err().to_string();
        assert!(err.contains("lowercase"), "{err}");
    }

    #[test]
    fn credentials_in_a_reference_are_named_not_echoed() {
        for r in ["user:s3cret@host.example/x", "user@localhost:5000/ns/x:tag"] {
            let err = Reference::parse(r).unwrap_err().to_string();
            assert!(err.contains("skiff login"), "{err}");
            assert!(!err.contains("s3cret") && !err.contains("digest"), "{err}");
        }
        // A digest still parses after '@', with or without a registry host.
        let d = Digest::of(b"x");
        assert!(Reference::parse(&format!("host.example/x@{d}")).is_ok());
        assert!(Reference::parse(&format!("busybox@{d}")).is_ok());
    }
}
