//! The few DNS messages the responder reads and writes (RFC 1035 §4), hand-written: a query's
//! header and its one question, and the replies built from them. Pure functions over bytes, so
//! hostile input is tested without sockets.
//!
//! Queries must carry their name uncompressed (every resolver sends them so); a compression
//! pointer in a question is answered with FORMERR rather than followed, which also rules out
//! pointer loops. Replies are at most 512 bytes: the question is at most 259 bytes, leaving room
//! for 15 A records at least; more than fit are cut and TC is set.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The header's length.
pub const HEADER_LEN: usize = 12;
/// The largest reply built here (a UDP message without EDNS).
pub const MAX_REPLY: usize = 512;
/// The longest name on the wire, its root label included (RFC 1035 §3.1).
const MAX_NAME: usize = 255;
/// Each answer: a pointer to the question's name, type, class, TTL, length and an address.
const A_RECORD_LEN: usize = 2 + 2 + 2 + 4 + 2 + 4;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const CLASS_IN: u16 = 1;

pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NOTIMP: u8 = 4;

const QR: u16 = 0x8000;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const OPCODE_MASK: u16 = 0x7800;

/// Why a packet is not a query this responder can take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("{0} bytes, shorter than a DNS header")]
    Short(usize),
    #[error("a response, not a query")]
    Response,
    #[error("opcode {0} is not a standard query")]
    Opcode(u8),
    #[error("{0} questions instead of one")]
    QuestionCount(u16),
    #[error("the question runs past the end of the packet")]
    Truncated,
    #[error("label type {0:#04x} (a compression pointer or reserved) in the question's name")]
    LabelType(u8),
    #[error("the question's name is longer than 255 bytes")]
    NameTooLong,
}

impl DnsError {
    /// The RCODE to answer with; None: no answer at all (no header to answer, or a response,
    /// which must never be answered lest two servers bounce packets between them).
    pub fn rcode(&self) -> Option<u8> {
        match self {
            DnsError::Short(_) | DnsError::Response => None,
            DnsError::Opcode(_) => Some(RCODE_NOTIMP),
            DnsError::QuestionCount(_)
            | DnsError::Truncated
            | DnsError::LabelType(_)
            | DnsError::NameTooLong => Some(RCODE_FORMERR),
        }
    }
}

/// A standard query with one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// The header's second word as sent.
    pub flags: u16,
    /// The question's name in presentation form: ASCII lower-cased, no trailing dot, labels
    /// joined by dots; a `.` or `\` inside a label is escaped with `\`, bytes outside printable
    /// ASCII as `\DDD` (RFC 4343), so such a name never equals a container's.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section as sent (name in its original case, type, class), echoed in replies.
    question: Vec<u8>,
}

impl Query {
    /// Whether recursion was desired (copied into the reply).
    pub fn rd(&self) -> bool {
        self.flags & RD != 0
    }
}

fn word(packet: &[u8], at: usize) -> Option<u16> {
    let bytes = packet.get(at..at + 2)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Reads a query: its header, and its one question with an uncompressed name. What follows the
/// question (an EDNS OPT record, say) is not read.
pub fn parse_query(packet: &[u8]) -> Result<Query, DnsError> {
    if packet.len() < HEADER_LEN {
        return Err(DnsError::Short(packet.len()));
    }
    let id = word(packet, 0).ok_or(DnsError::Short(packet.len()))?;
    let flags = word(packet, 2).ok_or(DnsError::Short(packet.len()))?;
    if flags & QR != 0 {
        return Err(DnsError::Response);
    }
    let opcode = ((flags & OPCODE_MASK) >> 11) as u8;
    if opcode != 0 {
        return Err(DnsError::Opcode(opcode));
    }
    let qdcount = word(packet, 4).ok_or(DnsError::Short(packet.len()))?;
    if qdcount != 1 {
        return Err(DnsError::QuestionCount(qdcount));
    }

    let mut name = String::new();
    let mut at = HEADER_LEN;
    loop {
        let len = *packet.get(at).ok_or(DnsError::Truncated)?;
        if len & 0xC0 != 0 {
            return Err(DnsError::LabelType(len & 0xC0));
        }
        at += 1;
        if len == 0 {
            break;
        }
        let len = usize::from(len);
        // The name so far (this label's length byte included), the label, and the root to come.
        if at - HEADER_LEN + len + 1 > MAX_NAME {
            return Err(DnsError::NameTooLong);
        }
        let label = packet.get(at..at + len).ok_or(DnsError::Truncated)?;
        if !name.is_empty() {
            name.push('.');
        }
        push_label(&mut name, label);
        at += len;
    }
    let qtype = word(packet, at).ok_or(DnsError::Truncated)?;
    let qclass = word(packet, at + 2).ok_or(DnsError::Truncated)?;
    let question = packet[HEADER_LEN..at + 4].to_vec();
    Ok(Query {
        id,
        flags,
        name,
        qtype,
        qclass,
        question,
    })
}

fn push_label(name: &mut String, label: &[u8]) {
    for &byte in label {
        match byte {
            b'.' | b'\\' => {
                name.push('\\');
                name.push(char::from(byte));
            }
            0x21..=0x7e => name.push(char::from(byte.to_ascii_lowercase())),
            _ => {
                // Writing to a String cannot fail.
                let _ = write!(name, "\\{byte:03}");
            }
        }
    }
}

/// A reply's header for `query`'s id and flags: QR and RA set, opcode and RD copied.
fn reply_header(id: u16, query_flags: u16, extra_flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let flags = QR | (query_flags & (OPCODE_MASK | RD)) | RA | extra_flags;
    let mut out = Vec::with_capacity(MAX_REPLY);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    for count in counts {
        out.extend_from_slice(&count.to_be_bytes());
    }
    out
}

/// The authoritative answer to `query` for a name known to have `addrs`: their A records (TTL
/// 0, so a restarted container's new address is seen at once) for an A question, none (NOERROR,
/// so resolvers go on at once) for any other type.
pub fn answer(query: &Query, addrs: &[Ipv4Addr]) -> Vec<u8> {
    let addrs = if query.qtype == TYPE_A { addrs } else { &[] };
    let room = (MAX_REPLY - HEADER_LEN - query.question.len()) / A_RECORD_LEN;
    let (addrs, truncated) = if addrs.len() > room {
        (&addrs[..room], TC)
    } else {
        (addrs, 0)
    };
    // At most 30 records fit, see `room`.
    let ancount = addrs.len() as u16;
    let mut out = reply_header(query.id, query.flags, AA | truncated, [1, ancount, 0, 0]);
    out.extend_from_slice(&query.question);
    for addr in addrs {
        out.extend_from_slice(&[0xC0, 0x0C]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&addr.octets());
    }
    out
}

/// SERVFAIL for `query`, its question echoed (no upstream answered).
pub fn servfail(query: &Query) -> Vec<u8> {
    let mut out = reply_header(
        query.id,
        query.flags,
        u16::from(RCODE_SERVFAIL),
        [1, 0, 0, 0],
    );
    out.extend_from_slice(&query.question);
    out
}

/// The header-only reply to a packet `parse_query` refused with `err`, if it gets one.
pub fn error_reply(packet: &[u8], err: &DnsError) -> Option<Vec<u8>> {
    let rcode = err.rcode()?;
    let id = word(packet, 0)?;
    let flags = word(packet, 2)?;
    Some(reply_header(id, flags, u16::from(rcode), [0; 4]))
}

/// Whether `reply` (from an upstream) is a well-formed enough response to the query `id`.
pub fn is_reply_to(reply: &[u8], id: u16) -> bool {
    reply.len() >= HEADER_LEN
        && word(reply, 0) == Some(id)
        && word(reply, 2).is_some_and(|flags| flags & QR != 0)
}

/// A query packet for the tests: `labels`, RD set, one question of `qtype` and `qclass`.
#[cfg(test)]
pub(super) fn test_query(id: u16, labels: &[&[u8]], qtype: u16, qclass: u16) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in labels {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&qclass.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `labels` with id 0x1234.
    fn query(labels: &[&[u8]], qtype: u16, qclass: u16) -> Vec<u8> {
        test_query(0x1234, labels, qtype, qclass)
    }

    #[test]
    fn a_query_round_trip() {
        let packet = query(&[b"web"], TYPE_A, CLASS_IN);
        let q = parse_query(&packet).unwrap();
        assert_eq!(
            (q.id, q.name.as_str(), q.qtype, q.qclass),
            (0x1234, "web", 1, 1)
        );
        assert!(q.rd());
        let reply = answer(&q, &[Ipv4Addr::new(10, 89, 0, 2)]);
        #[rustfmt::skip]
        let expected = vec![
            0x12, 0x34, 0x85, 0x80, 0, 1, 0, 1, 0, 0, 0, 0,
            3, b'w', b'e', b'b', 0, 0, 1, 0, 1,
            0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 89, 0, 2,
        ];
        assert_eq!(reply, expected);
    }

    #[test]
    fn other_types_of_a_known_name_get_no_answers() {
        let q = parse_query(&query(&[b"web"], TYPE_AAAA, CLASS_IN)).unwrap();
        let reply = answer(&q, &[Ipv4Addr::new(10, 89, 0, 2)]);
        assert_eq!(&reply[2..4], &[0x85, 0x80]); // QR AA RD RA, NOERROR
        assert_eq!(&reply[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(reply.len(), HEADER_LEN + 9);
    }

    #[test]
    fn names_are_lower_cased_and_the_question_echoed_as_sent() {
        let packet = query(&[b"Web", b"NET"], TYPE_A, CLASS_IN);
        let q = parse_query(&packet).unwrap();
        assert_eq!(q.name, "web.net");
        let reply = answer(&q, &[]);
        assert_eq!(&reply[HEADER_LEN..], &packet[HEADER_LEN..]);
        // Without RD the reply has none either.
        let mut packet = packet;
        packet[2] = 0;
        let q = parse_query(&packet).unwrap();
        assert_eq!(answer(&q, &[])[2], 0x84);
        // The root.
        assert_eq!(parse_query(&query(&[], TYPE_A, CLASS_IN)).unwrap().name, "");
    }

    #[test]
    fn odd_bytes_in_labels_are_escaped() {
        let q = parse_query(&query(&[b"we.b", b"a\\b", b"x y\xff"], TYPE_A, CLASS_IN)).unwrap();
        assert_eq!(q.name, "we\\.b.a\\\\b.x\\032y\\255");
    }

    #[test]
    fn too_many_addresses_are_cut_and_tc_set() {
        let q = parse_query(&long_query(61)).unwrap();
        let addrs: Vec<Ipv4Addr> = (0..40).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        let reply = answer(&q, &addrs);
        assert!(reply.len() <= MAX_REPLY);
        assert_eq!(reply[2] & 0x02, 0x02);
        assert_eq!(word(&reply, 6), Some(15));
        let q = parse_query(&query(&[b"web"], TYPE_A, CLASS_IN)).unwrap();
        let reply = answer(&q, &addrs[..20]);
        assert_eq!(reply[2] & 0x02, 0);
        assert_eq!(word(&reply, 6), Some(20));
    }

    #[test]
    fn servfail_echoes_the_question() {
        let packet = query(&[b"example", b"com"], TYPE_A, CLASS_IN);
        let reply = servfail(&parse_query(&packet).unwrap());
        assert_eq!(&reply[..4], &[0x12, 0x34, 0x81, 0x82]);
        assert_eq!(&reply[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&reply[HEADER_LEN..], &packet[HEADER_LEN..]);
    }

    #[test]
    fn malformed_queries() {
        let good = query(&[b"web"], TYPE_A, CLASS_IN);
        let with = |at: usize, bytes: &[u8]| {
            let mut p = good.clone();
            p[at..at + bytes.len()].copy_from_slice(bytes);
            p
        };
        let mut pointer_loop = good[..HEADER_LEN].to_vec();
        pointer_loop.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        let mut long_name = good[..HEADER_LEN].to_vec();
        for _ in 0..10 {
            long_name.push(29);
            long_name.extend_from_slice(&[b'x'; 29]);
        }
        long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut reserved = good[..HEADER_LEN].to_vec();
        reserved.extend_from_slice(&[0x41, b'a', 0, 0, 1, 0, 1]);
        let cases: Vec<(&str, Vec<u8>, DnsError)> = vec![
            ("empty", vec![], DnsError::Short(0)),
            ("11 bytes", good[..11].to_vec(), DnsError::Short(11)),
            ("qdcount 0", with(4, &[0, 0]), DnsError::QuestionCount(0)),
            ("qdcount 2", with(4, &[0, 2]), DnsError::QuestionCount(2)),
            (
                "header only",
                good[..HEADER_LEN].to_vec(),
                DnsError::Truncated,
            ),
            ("label past end", with(12, &[40]), DnsError::Truncated),
            (
                "no type",
                good[..good.len() - 4].to_vec(),
                DnsError::Truncated,
            ),
            (
                "half a class",
                good[..good.len() - 1].to_vec(),
                DnsError::Truncated,
            ),
            ("pointer loop", pointer_loop, DnsError::LabelType(0xC0)),
            ("reserved label", reserved, DnsError::LabelType(0x40)),
            ("300-byte name", long_name, DnsError::NameTooLong),
            ("response", with(2, &[0x81, 0x80]), DnsError::Response),
            ("opcode 2", with(2, &[0x10, 0x00]), DnsError::Opcode(2)),
        ];
        for (what, packet, expected) in cases {
            let err = parse_query(&packet).expect_err(what);
            assert_eq!(err, expected, "{what}");
            let reply = error_reply(&packet, &err);
            match err.rcode() {
                None => assert_eq!(reply, None, "{what}"),
                Some(rcode) => {
                    let reply = reply.expect(what);
                    assert_eq!(reply.len(), HEADER_LEN, "{what}");
                    assert_eq!(&reply[..2], &[0x12, 0x34], "{what}");
                    assert_eq!(reply[2] & 0x80, 0x80, "{what}");
                    assert_eq!(reply[3] & 0x0F, rcode, "{what}");
                }
            }
        }
        assert_eq!(DnsError::QuestionCount(0).rcode(), Some(RCODE_FORMERR));
        assert_eq!(DnsError::Opcode(2).rcode(), Some(RCODE_NOTIMP));
    }

    #[test]
    fn the_longest_name_is_taken() {
        // 3 × 63 + 61 bytes of labels, 4 length bytes and the root: 255.
        assert!(parse_query(&long_query(61)).is_ok());
        assert_eq!(parse_query(&long_query(62)), Err(DnsError::NameTooLong));
    }

    /// An A query for a name of three 63-byte labels and one of `last` bytes.
    fn long_query(last: usize) -> Vec<u8> {
        let long = [
            b"a".repeat(63),
            b"b".repeat(63),
            b"c".repeat(63),
            b"d".repeat(last),
        ];
        let labels: Vec<&[u8]> = long.iter().map(|l| l.as_slice()).collect();
        query(&labels, TYPE_A, CLASS_IN)
    }

    #[test]
    fn upstream_replies_are_checked() {
        assert!(is_reply_to(
            &[0x12, 0x34, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0],
            0x1234
        ));
        assert!(!is_reply_to(
            &[0x12, 0x34, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0],
            0x1234
        ));
        assert!(!is_reply_to(
            &[0x12, 0x35, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0],
            0x1234
        ));
        assert!(!is_reply_to(
            &[0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0],
            0x1234
        ));
    }

    /// Random packets, and valid queries with random bytes flipped: no panic, replies bounded.
    #[test]
    fn random_bytes_never_panic() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let addrs = [Ipv4Addr::new(10, 89, 0, 2), Ipv4Addr::new(10, 89, 0, 3)];
        let good = query(&[b"web", b"example", b"com"], TYPE_A, CLASS_IN);
        for i in 0..5000 {
            let packet: Vec<u8> = if i % 2 == 0 {
                let len = (next() % 600) as usize;
                let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if p.len() > 5 && i % 4 == 0 {
                    // Mostly plausible headers, so the question parser is reached.
                    p[2] = 0x01;
                    p[4] = 0;
                    p[5] = 1;
                }
                p
            } else {
                let mut p = good.clone();
                for _ in 0..(next() % 4 + 1) {
                    let at = (next() as usize) % p.len();
                    p[at] = next() as u8;
                }
                p.truncate((next() as usize) % (good.len() + 1));
                p
            };
            match parse_query(&packet) {
                Ok(q) => {
                    assert!(answer(&q, &addrs).len() <= MAX_REPLY);
                    assert!(servfail(&q).len() <= MAX_REPLY);
                }
                Err(err) => {
                    if let Some(reply) = error_reply(&packet, &err) {
                        assert_eq!(reply.len(), HEADER_LEN);
                    }
                }
            }
        }
    }
}
