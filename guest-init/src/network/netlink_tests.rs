//! The messages byte for byte (as `linux/rtnetlink.h` lays them out), and the reply parsers on
//! good and hostile input.

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A netlink header as the kernel expects it (native byte order).
fn header(len: u32, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&len.to_ne_bytes());
    h.extend_from_slice(&kind.to_ne_bytes());
    h.extend_from_slice(&flags.to_ne_bytes());
    h.extend_from_slice(&seq.to_ne_bytes());
    h.extend_from_slice(&0u32.to_ne_bytes());
    h
}

fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&kind.to_ne_bytes());
    a.extend_from_slice(payload);
    a.resize(align4(a.len()), 0);
    a
}

fn ifinfomsg(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut h = vec![0u8; 4];
    h.extend_from_slice(&index.to_ne_bytes());
    h.extend_from_slice(&flags.to_ne_bytes());
    h.extend_from_slice(&change.to_ne_bytes());
    h
}

#[test]
fn rename_is_a_newlink_with_the_name() {
    let got = rename(3, "eth0").finish(7);
    let mut want = header(44, 16, 0x1 | 0x4, 7);
    want.extend(ifinfomsg(3, 0, 0));
    want.extend(attr(3, b"eth0\0"));
    assert_eq!(got, want);
    // Length 9 (header and NUL-terminated name), padded to 12.
    assert_eq!(&got[32..34], &9u16.to_ne_bytes());
    assert_eq!(&got[36..44], b"eth0\0\0\0\0");
}

#[test]
fn up_down_and_mtu() {
    let mut want = header(32, 16, 0x5, 1);
    want.extend(ifinfomsg(2, 1, 1));
    assert_eq!(set_up(2, true).finish(1), want);
    let mut want = header(32, 16, 0x5, 1);
    want.extend(ifinfomsg(2, 0, 1));
    assert_eq!(set_up(2, false).finish(1), want);
    let mut want = header(40, 16, 0x5, 9);
    want.extend(ifinfomsg(2, 0, 0));
    want.extend(attr(4, &1400u32.to_ne_bytes()));
    assert_eq!(set_mtu(2, 1400).finish(9), want);
}

#[test]
fn ipv4_address_has_local_address_and_broadcast() {
    let got = add_address(2, Ipv4Addr::new(10, 88, 0, 2).into(), 16).finish(4);
    let mut want = header(48, 20, 0x1 | 0x4 | 0x400 | 0x100, 4);
    want.extend([2, 16, 0, 0]);
    want.extend(2u32.to_ne_bytes());
    want.extend(attr(2, &[10, 88, 0, 2]));
    want.extend(attr(1, &[10, 88, 0, 2]));
    want.extend(attr(4, &[10, 88, 255, 255]));
    assert_eq!(got, want);
    // A /31 or /32 has no broadcast address.
    let point_to_point = add_address(2, Ipv4Addr::new(10, 0, 0, 1).into(), 31).finish(4);
    assert_eq!(point_to_point.len(), 40);
}

#[test]
fn ipv6_address_skips_duplicate_detection() {
    let ip: Ipv6Addr = "fd00::2".parse().unwrap();
    let got = add_address(5, ip.into(), 64).finish(1);
    let mut want = header(16 + 8 + 20 + 20, 20, 0x505, 1);
    want.extend([10, 64, IFA_F_NODAD, 0]);
    want.extend(5u32.to_ne_bytes());
    want.extend(attr(2, &ip.octets()));
    want.extend(attr(1, &ip.octets()));
    assert_eq!(got, want);
}

#[test]
fn default_route_via_the_gateway() {
    let got = add_default_route(2, Ipv4Addr::new(10, 88, 0, 1).into()).finish(3);
    let mut want = header(44, 24, 0x505, 3);
    want.extend([2, 0, 0, 0, 254, 3, 0, 1]);
    want.extend(0u32.to_ne_bytes());
    want.extend(attr(5, &[10, 88, 0, 1]));
    want.extend(attr(4, &2u32.to_ne_bytes()));
    assert_eq!(got, want);
    let v6 = add_default_route(2, "fd00::1".parse().unwrap()).finish(3);
    assert_eq!(v6[16], libc::AF_INET6 as u8);
    assert_eq!(v6.len(), 16 + 12 + 20 + 8);
}

#[test]
fn nested_attributes_carry_their_full_length() {
    let mut r = Request::new(RTM_NEWLINK, 0);
    r.ifinfomsg(0, 0, 0).nested(IFLA_LINKINFO, |r| {
        r.attr_str(IFLA_INFO_KIND, "bridge");
    });
    let got = r.finish(1);
    // linkinfo header (4) + kind attribute (4 + "bridge\0" = 11, padded to 12).
    assert_eq!(&got[32..34], &16u16.to_ne_bytes());
    assert_eq!(&got[34..36], &IFLA_LINKINFO.to_ne_bytes());
    assert_eq!(got.len(), 48);
}

#[test]
fn link_dump_replies_are_read() {
    let mac = [0x02, 0x42, 0x0a, 0x58, 0, 2];
    let mut link = Request::new(RTM_NEWLINK, 0x2);
    link.ifinfomsg(5, IFF_UP, 0)
        .attr_str(IFLA_IFNAME, "eth0")
        .attr(IFLA_ADDRESS, &mac)
        .attr(IFLA_MTU, &1500u32.to_ne_bytes())
        .attr(99, b"ignored");
    let mut datagram = link.finish(1);
    datagram.extend(header(20, NLMSG_DONE, 0x2, 1));
    datagram.extend(0u32.to_ne_bytes());
    let got = replies(&datagram).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].kind, got[0].seq), (RTM_NEWLINK, 1));
    assert_eq!(
        parse_link(got[0].payload),
        Some(Link {
            index: 5,
            name: "eth0".into(),
            mac: mac.to_vec(),
            mtu: Some(1500),
            flags: IFF_UP,
        })
    );
    assert_eq!(got[1].kind, NLMSG_DONE);
}

#[test]
fn acks_and_errors_are_told_apart() {
    assert!(parse_error(&[0; 20], 0).is_ok());
    // Capped error with an extended-ack message.
    let mut payload = (-libc::EEXIST).to_ne_bytes().to_vec();
    payload.extend(header(32, 16, 5, 1));
    payload.extend(attr(NLMSGERR_ATTR_MSG, b"Nexthop has invalid gateway\0"));
    let err = parse_error(&payload, NLM_F_CAPPED | NLM_F_ACK_TLVS).unwrap_err();
    assert_eq!(err.errno.raw_os_error(), Some(libc::EEXIST));
    assert_eq!(err.message.as_deref(), Some("Nexthop has invalid gateway"));
    assert!(
        err.to_string().ends_with("(Nexthop has invalid gateway)"),
        "{err}"
    );
    // Uncapped: the whole request is echoed before the attributes.
    let mut payload = (-libc::EINVAL).to_ne_bytes().to_vec();
    payload.extend(rename(3, "eth0").finish(1));
    payload.extend(attr(NLMSGERR_ATTR_MSG, b"bad name\0"));
    let err = parse_error(&payload, NLM_F_ACK_TLVS).unwrap_err();
    assert_eq!(err.errno.raw_os_error(), Some(libc::EINVAL));
    assert_eq!(err.message.as_deref(), Some("bad name"));
    // Without the flag nothing after the code is read.
    let err = parse_error(&(-libc::EPERM).to_ne_bytes(), 0).unwrap_err();
    assert_eq!(err.errno.raw_os_error(), Some(libc::EPERM));
    assert!(err.message.is_none());
}

#[test]
fn malformed_replies_are_errors_not_panics() {
    assert!(replies(&header(8, 2, 0, 1)).is_err());
    assert!(replies(&header(400, 2, 0, 1)).is_err());
    assert!(parse_error(&[1, 2], 0).is_err());
    assert_eq!(parse_link(&[0; 8]), None);
    // An attribute claiming less than its own header ends the walk.
    assert_eq!(attributes(&[0, 0, 3, 0, 9, 9, 9, 9]).count(), 0);
    // Pseudo-random garbage through every parser.
    let mut state = 0x9e37_79b9_u32;
    for round in 0..2000 {
        let mut bytes = Vec::new();
        for _ in 0..(round % 97) {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            bytes.push(state as u8);
        }
        if let Ok(all) = replies(&bytes) {
            for r in all {
                let _ = parse_link(r.payload);
                let _ = parse_error(r.payload, r.flags);
            }
        }
        let _ = parse_link(&bytes);
        let _ = parse_error(&bytes, NLM_F_ACK_TLVS);
        let _ = attributes(&bytes).count();
    }
}
