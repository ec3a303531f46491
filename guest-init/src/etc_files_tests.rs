//! The files' contents (byte for byte what Docker writes), the refusal of injected lines, and the
//! creation of missing mount targets.

use super::*;
use crate::protocol::HostEntry;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn spec() -> GuestNetwork {
    GuestNetwork {
        interfaces: Vec::new(),
        hosts: vec![HostEntry {
            ip: "10.0.0.9".into(),
            names: vec!["db".into(), "db.local".into()],
        }],
        dns: vec!["10.88.0.1".into(), "2001:4860:4860::8888".into()],
        dns_search: vec!["example.com".into(), "corp".into()],
        dns_options: vec!["ndots:2".into(), "timeout:1".into()],
    }
}

/// A change that spoils a valid spec; the cases pair it with what the refusal must say.
type Change = Box<dyn Fn(&mut GuestNetwork)>;

#[test]
fn files_are_written_as_docker_writes_them() {
    let own = [ip("10.88.0.2"), ip("fd00::2")];
    let files = EtcFiles::new(&spec(), Some("box"), &own).unwrap();
    assert_eq!(
        files.hosts,
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n\
         10.0.0.9\tdb db.local\n\
         10.88.0.2\tbox\n\
         fd00::2\tbox\n"
    );
    assert_eq!(files.hostname.as_deref(), Some("box\n"));
    assert_eq!(
        files.resolv_conf.as_deref(),
        Some(
            "nameserver 10.88.0.1\n\
             nameserver 2001:4860:4860::8888\n\
             search example.com corp\n\
             options ndots:2 timeout:1\n"
        )
    );
    let names: Vec<_> = files.entries().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["hosts", "hostname", "resolv.conf"]);
}

#[test]
fn without_dns_or_hostname_those_files_are_left_alone() {
    let files = EtcFiles::new(&GuestNetwork::default(), None, &[ip("10.88.0.2")]).unwrap();
    // No host name: the container's addresses have no name to carry.
    assert_eq!(files.hosts, DEFAULT_HOSTS);
    assert_eq!(files.hostname, None);
    assert_eq!(files.resolv_conf, None);
    let names: Vec<_> = files.entries().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["hosts"]);
    // Search domains and options alone do not make a resolv.conf (no name server to use).
    let mut only_search = spec();
    only_search.dns.clear();
    assert_eq!(
        EtcFiles::new(&only_search, None, &[]).unwrap().resolv_conf,
        None
    );
}

#[test]
fn a_dot_search_domain_means_none() {
    assert_eq!(
        resolv_conf(&[ip("1.1.1.1")], &["."], &[]),
        "nameserver 1.1.1.1\n"
    );
    assert_eq!(
        resolv_conf(&[ip("1.1.1.1")], &[], &["ndots:0"]),
        "nameserver 1.1.1.1\noptions ndots:0\n"
    );
}

#[test]
fn addresses_are_written_in_canonical_form() {
    let mut s = spec();
    s.dns = vec!["2001:db8:0:0:0:0:0:1".into()];
    s.hosts[0].ip = "2001:DB8::5".into();
    let files = EtcFiles::new(&s, None, &[]).unwrap();
    assert!(
        files.hosts.ends_with("2001:db8::5\tdb db.local\n"),
        "{}",
        files.hosts
    );
    assert!(files
        .resolv_conf
        .unwrap()
        .starts_with("nameserver 2001:db8::1\n"));
}

#[test]
fn injected_lines_are_refused() {
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|n| n.dns = vec!["1.1.1.1\nnameserver 6.6.6.6".into()]),
            "DNS server",
        ),
        (Box::new(|n| n.dns = vec![" 1.1.1.1".into()]), "DNS server"),
        (
            Box::new(|n| n.dns = vec!["fe80::1%eth0".into()]),
            "DNS server",
        ),
        (
            Box::new(|n| n.dns_search = vec!["a.com\nnameserver 6.6.6.6".into()]),
            "DNS search domain",
        ),
        (
            Box::new(|n| n.dns_search = vec!["".into()]),
            "DNS search domain",
        ),
        (
            Box::new(|n| n.dns_options = vec!["ndots:1 rotate".into()]),
            "DNS option",
        ),
        (
            Box::new(|n| n.dns_options = vec!["#x".into()]),
            "DNS option",
        ),
        (
            Box::new(|n| n.hosts[0].ip = "10.0.0.9 6.6.6.6".into()),
            "extra host address",
        ),
        (Box::new(|n| n.hosts[0].names = vec![]), "has no names"),
        (
            Box::new(|n| n.hosts[0].names = vec!["db\t#".into()]),
            "extra host name",
        ),
        (
            Box::new(|n| n.hosts[0].names = vec!["é".into()]),
            "extra host name",
        ),
        (
            Box::new(|n| n.hosts[0].names = vec!["a".repeat(254)]),
            "extra host name",
        ),
    ];
    for (change, want) in cases {
        let mut s = spec();
        change(&mut s);
        let got = EtcFiles::new(&s, Some("box"), &[]).unwrap_err().to_string();
        assert!(got.contains(want), "{got:?} lacks {want:?}");
    }
    for hostname in ["", "box\n127.0.0.1 bank", "a b", "x\0"] {
        let got = EtcFiles::new(&spec(), Some(hostname), &[]).unwrap_err();
        assert!(got.to_string().starts_with("host name"), "{got}");
    }
}

#[test]
fn mount_targets_are_created_only_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    // /etc itself missing.
    ensure_target(&etc.join("hosts")).unwrap();
    assert_eq!(std::fs::read(etc.join("hosts")).unwrap(), b"");
    // An image's file is kept as it is.
    std::fs::write(etc.join("resolv.conf"), "nameserver 9.9.9.9\n").unwrap();
    ensure_target(&etc.join("resolv.conf")).unwrap();
    assert_eq!(
        std::fs::read_to_string(etc.join("resolv.conf")).unwrap(),
        "nameserver 9.9.9.9\n"
    );
    // A dangling link gets the file it points to (the bind mount follows it).
    std::fs::create_dir(dir.path().join("run")).unwrap();
    std::os::unix::fs::symlink("../run/hostname", etc.join("hostname")).unwrap();
    ensure_target(&etc.join("hostname")).unwrap();
    assert!(dir.path().join("run/hostname").is_file());
    // A directory cannot take a file's bind mount.
    std::fs::create_dir(etc.join("hosts.d")).unwrap();
    assert!(ensure_target(&etc.join("hosts.d")).is_err());
}
