//! Checking a spec's network, and configuring a real link in a network namespace of its own.

use super::netlink::{Request, IFLA_ADDRESS, IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINKINFO};
use super::*;
use crate::protocol::HostEntry;

fn interface(mac: &str, name: &str) -> GuestInterface {
    GuestInterface {
        mac: mac.into(),
        name: name.into(),
        addresses: vec!["10.88.0.2/16".into()],
        gateway: Some("10.88.0.1".into()),
        mtu: Some(1500),
    }
}

fn network(interfaces: Vec<GuestInterface>) -> GuestNetwork {
    GuestNetwork {
        interfaces,
        ..GuestNetwork::default()
    }
}

fn refused(network: &GuestNetwork) -> String {
    NetworkPlan::new(network, Some("box"))
        .unwrap_err()
        .to_string()
}

/// A change that spoils a valid spec; the cases pair it with what the refusal must say.
type Change = Box<dyn Fn(&mut GuestInterface)>;

#[test]
fn a_typical_spec_is_planned() {
    let mut spec = network(vec![interface("02:42:0A:58:00:02", "eth0")]);
    spec.interfaces[0].addresses.push("fd00::2/64".into());
    let plan = NetworkPlan::new(&spec, Some("box")).unwrap();
    assert_eq!(
        plan.links,
        vec![LinkPlan {
            mac: [0x02, 0x42, 0x0a, 0x58, 0, 2],
            mac_text: "02:42:0a:58:00:02".into(),
            name: "eth0".into(),
            addresses: vec![
                Cidr {
                    ip: "10.88.0.2".parse().unwrap(),
                    prefix: 16
                },
                Cidr {
                    ip: "fd00::2".parse().unwrap(),
                    prefix: 64
                },
            ],
            gateway: Some("10.88.0.1".parse().unwrap()),
            mtu: Some(1500),
        }]
    );
    assert!(plan.etc.hosts.ends_with("10.88.0.2\tbox\nfd00::2\tbox\n"));
}

#[test]
fn macs_are_parsed_strictly() {
    assert_eq!(
        parse_mac("aa:BB:cc:00:01:ff"),
        Some([0xaa, 0xbb, 0xcc, 0, 1, 0xff])
    );
    for bad in [
        "",
        "aa:bb:cc:dd:ee",
        "aa:bb:cc:dd:ee:ff:00",
        "aa-bb-cc-dd-ee-ff",
        "a:bb:cc:dd:ee:fff",
        "+a:bb:cc:dd:ee:ff",
        "gg:bb:cc:dd:ee:ff",
        "aa:bb:cc:dd:ee:ff ",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad:?}");
    }
}

#[test]
fn cidrs_are_parsed_strictly() {
    let ok = Cidr::parse("a", "10.0.0.1/8").unwrap();
    assert_eq!(ok.to_string(), "10.0.0.1/8");
    assert_eq!(Cidr::parse("a", "fd00::1/128").unwrap().prefix, 128);
    for bad in [
        "10.0.0.1",
        "10.0.0.1/33",
        "10.0.0.1/+8",
        "10.0.0.1/",
        "10.0.0.1/8 ",
        "10.0.0.1 /8",
        "fd00::1/129",
        "0.0.0.0/0",
        "224.0.0.1/4",
        "::/0",
        "host/8",
        "10.0.0.1/8\n",
    ] {
        assert!(Cidr::parse("a", bad).is_err(), "{bad:?}");
    }
}

#[test]
fn bad_interfaces_are_refused_naming_the_field() {
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|i| i.mac = "zz".into()),
            "interface 0 MAC address \"zz\": not a MAC address",
        ),
        (
            Box::new(|i| i.mac = "00:00:00:00:00:00".into()),
            "interface 0 MAC address",
        ),
        (Box::new(|i| i.name = "".into()), "interface 0 name \"\""),
        (
            Box::new(|i| i.name = "sixteen-chars-xx".into()),
            "not a valid interface name",
        ),
        (
            Box::new(|i| i.name = "eth 0".into()),
            "interface 0 name \"eth 0\"",
        ),
        (
            Box::new(|i| i.name = "eth0\n".into()),
            "not a valid interface name",
        ),
        (
            Box::new(|i| i.name = "a/b".into()),
            "not a valid interface name",
        ),
        (
            Box::new(|i| i.name = "..".into()),
            "not a valid interface name",
        ),
        (
            Box::new(|i| i.addresses = vec!["10.0.0.1/40".into()]),
            "interface 0 address \"10.0.0.1/40\": prefix length",
        ),
        (
            Box::new(|i| i.gateway = Some("10.0.0.1\nnameserver 6.6.6.6".into())),
            "interface 0 gateway",
        ),
        (
            Box::new(|i| i.gateway = Some("0.0.0.0".into())),
            "not a unicast address",
        ),
        (
            Box::new(|i| i.mtu = Some(67)),
            "interface 0 MTU 67: not from 68 to 65535",
        ),
        (Box::new(|i| i.mtu = Some(70000)), "interface 0 MTU 70000"),
    ];
    for (change, want) in cases {
        let mut spec = network(vec![interface("02:00:00:00:00:01", "eth0")]);
        change(&mut spec.interfaces[0]);
        let got = refused(&spec);
        assert!(got.contains(want), "{got:?} lacks {want:?}");
    }
}

#[test]
fn names_and_macs_are_unique() {
    let twice_named = network(vec![
        interface("02:00:00:00:00:01", "eth0"),
        interface("02:00:00:00:00:02", "eth0"),
    ]);
    assert!(refused(&twice_named).contains("given twice"));
    let twice_found = network(vec![
        interface("02:00:00:00:00:01", "eth0"),
        interface("02:00:00:00:00:01", "eth1"),
    ]);
    assert!(refused(&twice_found).contains("given twice"));
}

#[test]
fn etc_content_is_checked_with_the_links() {
    let mut spec = network(vec![interface("02:00:00:00:00:01", "eth0")]);
    spec.hosts = vec![HostEntry {
        ip: "10.0.0.1".into(),
        names: vec!["db\n10.6.6.6 evil".into()],
    }];
    assert!(refused(&spec).contains("extra host name"));
    let hostile_host = NetworkPlan::new(&network(vec![]), Some("box\n6.6.6.6 bank"));
    assert!(hostile_host.unwrap_err().to_string().contains("host name"));
}

#[test]
fn no_interfaces_configure_nothing() {
    let plan = NetworkPlan::new(&GuestNetwork::default(), None).unwrap();
    plan.configure_links().unwrap();
}

const TEST_MAC: [u8; 6] = [0x02, 0x5c, 0x1f, 0, 0, 7];

/// Creates a bridge (built into most kernels, unlike `dummy`) named `name` with `mac`: a link
/// the plan can find by MAC, rename, address and route through.
fn create_test_link(socket: &mut Socket, name: &str, mac: [u8; 6]) -> Result<(), NetlinkError> {
    let mut r = Request::new(netlink::RTM_NEWLINK, 0x4 | 0x400 | 0x200);
    r.ifinfomsg(0, 0, 0)
        .attr_str(IFLA_IFNAME, name)
        .attr(IFLA_ADDRESS, &mac)
        .nested(IFLA_LINKINFO, |r| {
            r.attr_str(IFLA_INFO_KIND, "bridge");
        });
    socket.execute(&r)
}

/// Runs `test` on a thread of its own in a new network namespace (namespaces are per thread):
/// the namespace, its links and routes go away with the thread. Skipped without the privilege.
fn in_fresh_network_namespace(
    test: impl FnOnce(&mut Socket) -> Result<(), String> + Send + 'static,
) {
    let outcome = std::thread::spawn(|| -> Result<(), String> {
        // SAFETY: unshare(2) moves only this thread into a new, empty network namespace; nothing
        // else in the process shares it, and it is destroyed when the thread ends.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("skip: unshare: {}", io::Error::last_os_error()));
        }
        let mut socket = Socket::open().map_err(|e| e.to_string())?;
        test(&mut socket)
    })
    .join()
    .expect("the namespace thread panicked");
    match outcome {
        Ok(()) => {}
        Err(skip) if skip.starts_with("skip: ") => eprintln!("{skip}"),
        Err(e) => panic!("{e}"),
    }
}

/// The source address the kernel picks to reach `to`: proves the addresses and routes are in.
fn source_for(to: &str) -> io::Result<IpAddr> {
    let any = if to.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.connect(to)?;
    Ok(socket.local_addr()?.ip())
}

#[test]
fn configures_a_link_in_a_fresh_network_namespace() {
    in_fresh_network_namespace(|socket| {
        if let Err(e) = create_test_link(socket, "skiff-test0", TEST_MAC) {
            return Err(format!("skip: cannot create a bridge: {e}"));
        }
        let mut spec = network(vec![GuestInterface {
            mac: "02:5C:1F:00:00:07".into(),
            name: "eth0".into(),
            addresses: vec!["10.88.0.2/16".into(), "fd00::2/64".into()],
            gateway: Some("10.88.0.1".into()),
            mtu: Some(1400),
        }]);
        let plan = NetworkPlan::new(&spec, Some("box")).map_err(|e| e.to_string())?;
        plan.configure_links()
            .map_err(|e| format!("configure: {e}"))?;
        // Applying twice is harmless (addresses and routes are replaced).
        plan.configure_links().map_err(|e| format!("again: {e}"))?;
        let links = socket.links().map_err(|e| e.to_string())?;
        let link = links
            .iter()
            .find(|l| l.mac == TEST_MAC)
            .ok_or("link gone")?;
        assert_eq!(link.name, "eth0");
        assert_eq!(link.mtu, Some(1400));
        assert_ne!(link.flags & libc::IFF_UP as u32, 0, "not up");
        let v4 = source_for("203.0.113.9:9").map_err(|e| format!("route v4: {e}"))?;
        assert_eq!(v4, "10.88.0.2".parse::<IpAddr>().unwrap());
        let v6 = source_for("[fd00::9]:9").map_err(|e| format!("route v6: {e}"))?;
        assert_eq!(v6, "fd00::2".parse::<IpAddr>().unwrap());
        // A MAC nobody has, and a gateway outside every subnet, fail naming link and step.
        spec.interfaces[0].mac = "02:00:00:00:00:99".into();
        let err = NetworkPlan::new(&spec, None).unwrap().configure_links();
        let err = err.unwrap_err().to_string();
        assert_eq!(
            err,
            "no network interface has MAC address 02:00:00:00:00:99 (to become eth0)"
        );
        spec.interfaces[0].mac = "02:5c:1f:00:00:07".into();
        spec.interfaces[0].gateway = Some("192.0.2.1".into());
        let err = NetworkPlan::new(&spec, None).unwrap().configure_links();
        let err = err.unwrap_err().to_string();
        assert!(
            err.starts_with(
                "interface eth0 (02:5c:1f:00:00:07): adding the default route via 192.0.2.1: "
            ),
            "{err}"
        );
        Ok(())
    });
}

/// The kernel named the links the other way round: eth0 where the spec wants eth1 and back.
#[test]
fn links_named_in_another_order_swap_names() {
    in_fresh_network_namespace(|socket| {
        let other_mac = [0x02, 0x5c, 0x1f, 0, 0, 8];
        for (name, mac) in [("eth0", other_mac), ("eth1", TEST_MAC)] {
            if let Err(e) = create_test_link(socket, name, mac) {
                return Err(format!("skip: cannot create a bridge: {e}"));
            }
        }
        let spec = network(vec![
            interface("02:5c:1f:00:00:07", "eth0"),
            interface("02:5c:1f:00:00:08", "eth1"),
        ]);
        let plan = NetworkPlan::new(&spec, None).map_err(|e| e.to_string())?;
        plan.configure_links()
            .map_err(|e| format!("configure: {e}"))?;
        let links = socket.links().map_err(|e| e.to_string())?;
        let name_of = |mac| links.iter().find(|l| l.mac == mac).map(|l| l.name.clone());
        assert_eq!(name_of(TEST_MAC).as_deref(), Some("eth0"));
        assert_eq!(name_of(other_mac).as_deref(), Some("eth1"));
        Ok(())
    });
}
