//! The codec's round trips and its refusals of hostile input.

use super::*;

fn all_messages() -> Vec<Message> {
    let mut spec = ProcessSpec::new(vec!["sh".into(), "-c".into(), "echo hi".into()]);
    spec.env = vec!["A=b".into()];
    spec.cwd = "/tmp".into();
    spec.uid = 1000;
    spec.gid = 100;
    spec.additional_gids = vec![10, 20];
    spec.hostname = Some("box".into());
    spec.rlimits = vec![Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 1024,
        hard: 4096,
    }];
    spec.tty = true;
    spec.pids_limit = Some(64);
    spec.terminal_size = Some(TerminalSize { rows: 24, cols: 80 });
    spec.mounts = vec![
        GuestMount {
            source: MountSource::Share { tag: "vol0".into() },
            target: "/data".into(),
            read_only: true,
            copy_up: false,
        },
        GuestMount {
            source: MountSource::Tmpfs {
                options: "size=64m".into(),
            },
            target: "/scratch".into(),
            read_only: false,
            copy_up: true,
        },
    ];
    spec.network = Some(Box::new(GuestNetwork {
        interfaces: vec![GuestInterface {
            mac: "02:42:0a:58:00:02".into(),
            name: "eth0".into(),
            addresses: vec!["10.88.0.2/16".into(), "fd00::2/64".into()],
            gateway: Some("10.88.0.1".into()),
            mtu: Some(1500),
        }],
        hosts: vec![HostEntry {
            ip: "10.0.0.9".into(),
            names: vec!["db".into(), "db.local".into()],
        }],
        dns: vec!["10.88.0.1".into()],
        dns_search: vec!["example.com".into()],
        dns_options: vec!["ndots:2".into()],
    }));
    vec![
        Message::Hello(Hello::ours("test")),
        Message::Spec(spec),
        Message::Started(Started { pid: 42 }),
        Message::Stdin(b"abc\0\xff".to_vec()),
        Message::StdinEof,
        Message::Stdout(Vec::new()),
        Message::Stderr(vec![7; DATA_CHUNK]),
        Message::Signal(SignalMsg { signal: 15 }),
        Message::Resize(TerminalSize {
            rows: 50,
            cols: 132,
        }),
        Message::Exit(ExitStatus::Code(7)),
        Message::Exit(ExitStatus::Signal(9)),
        Message::Error(ErrorReport {
            message: "exec: \"foo\": no such file".into(),
            exit_code: 127,
        }),
        Message::ListProcesses,
        Message::Processes(ProcessList {
            uptime_ms: 5000,
            processes: vec![ProcessInfo {
                pid: 7,
                ppid: 1,
                uid: 0,
                user: "root".into(),
                tty: "?".into(),
                started_ms: 1200,
                cpu_ms: 30,
                cmd: "sleep 300".into(),
            }],
            truncated: false,
        }),
    ]
}

#[test]
fn every_message_round_trips_blocking() {
    let mut wire = Vec::new();
    for m in all_messages() {
        write_message(&mut wire, &m).unwrap();
    }
    let mut r = wire.as_slice();
    for m in all_messages() {
        assert_eq!(read_message(&mut r).unwrap(), Some(m));
    }
    assert_eq!(read_message(&mut r).unwrap(), None);
}

#[test]
fn every_message_round_trips_incrementally_byte_by_byte() {
    let mut wire = Vec::new();
    for m in all_messages() {
        m.encode_into(&mut wire).unwrap();
    }
    let mut decoder = FrameDecoder::new();
    let mut got = Vec::new();
    for b in wire {
        decoder.push(&[b]);
        while let Some(m) = decoder.next_message().unwrap() {
            got.push(m);
        }
    }
    decoder.finish().unwrap();
    assert_eq!(got, all_messages());
}

#[test]
fn spec_defaults_fill_missing_fields() {
    let m = Message::decode(frame_type::SPEC, br#"{"args":["true"]}"#).unwrap();
    assert_eq!(m, Message::Spec(ProcessSpec::new(vec!["true".into()])));
}

#[test]
fn network_defaults_fill_missing_fields() {
    let m = Message::decode(
        frame_type::SPEC,
        br#"{"args":["true"],"network":{"interfaces":[{"mac":"02:00:00:00:00:01","name":"eth0"}]}}"#,
    )
    .unwrap();
    let Message::Spec(spec) = m else {
        panic!("not a spec: {m:?}")
    };
    let network = spec.network.unwrap();
    assert_eq!(
        *network,
        GuestNetwork {
            interfaces: vec![GuestInterface {
                mac: "02:00:00:00:00:01".into(),
                name: "eth0".into(),
                ..GuestInterface::default()
            }],
            ..GuestNetwork::default()
        }
    );
    let m = Message::decode(frame_type::SPEC, br#"{"args":["true"],"network":{}}"#).unwrap();
    let Message::Spec(spec) = m else {
        panic!("not a spec: {m:?}")
    };
    assert_eq!(spec.network, Some(Box::default()));
}

#[test]
fn network_interface_needs_mac_and_name() {
    for json in [
        &br#"{"args":["true"],"network":{"interfaces":[{"name":"eth0"}]}}"#[..],
        br#"{"args":["true"],"network":{"interfaces":[{"mac":"02:00:00:00:00:01"}]}}"#,
        br#"{"args":["true"],"network":{"hosts":[{"ip":"10.0.0.1"}]}}"#,
        br#"{"args":["true"],"network":{"interfaces":[{"mac":"x","name":"e","mtu":-1}]}}"#,
    ] {
        let err = Message::decode(frame_type::SPEC, json).unwrap_err();
        assert!(
            matches!(err, ProtocolError::BadJson { kind: "Spec", .. }),
            "{err}"
        );
    }
}

#[test]
fn truncated_frame_is_an_error() {
    let wire = Message::Stdout(b"hello".to_vec()).encode().unwrap();
    for cut in 1..wire.len() {
        let err = read_message(&mut &wire[..cut]).unwrap_err();
        assert!(
            matches!(err, ProtocolError::Truncated { got, .. } if got == cut),
            "{err}"
        );
        let mut decoder = FrameDecoder::new();
        decoder.push(&wire[..cut]);
        assert_eq!(decoder.next_message().unwrap(), None);
        assert!(matches!(
            decoder.finish(),
            Err(ProtocolError::Truncated { .. })
        ));
    }
}

#[test]
fn oversize_frame_is_rejected_from_the_header() {
    let mut wire = vec![frame_type::STDOUT];
    wire.extend_from_slice(&u32::MAX.to_be_bytes());
    // No payload follows: rejection must not wait for (or allocate) 4 GiB.
    let err = read_message(&mut wire.as_slice()).unwrap_err();
    assert!(matches!(err, ProtocolError::TooLarge { .. }), "{err}");
    let mut decoder = FrameDecoder::new();
    decoder.push(&wire);
    assert!(matches!(
        decoder.next_message(),
        Err(ProtocolError::TooLarge { .. })
    ));
}

#[test]
fn oversize_message_is_not_encoded() {
    let err = Message::Stdout(vec![0; MAX_PAYLOAD + 1])
        .encode()
        .unwrap_err();
    assert!(matches!(err, ProtocolError::TooLarge { .. }));
}

#[test]
fn unknown_type_is_an_error() {
    let wire = [0x7f, 0, 0, 0, 0];
    let err = read_message(&mut &wire[..]).unwrap_err();
    assert!(matches!(err, ProtocolError::UnknownType(0x7f)), "{err}");
}

#[test]
fn garbage_json_is_an_error() {
    for payload in [&b"{not json"[..], b"", b"[1,2]", br#"{"signal":"x"}"#] {
        let mut wire = vec![frame_type::SIGNAL];
        wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        wire.extend_from_slice(payload);
        let err = read_message(&mut wire.as_slice()).unwrap_err();
        assert!(
            matches!(err, ProtocolError::BadJson { kind: "Signal", .. }),
            "{err}"
        );
    }
}

#[test]
fn empty_messages_with_a_payload_are_errors() {
    for ty in [frame_type::STDIN_EOF, frame_type::LIST_PROCESSES] {
        let err = Message::decode(ty, b"x").unwrap_err();
        assert!(matches!(err, ProtocolError::UnexpectedPayload { .. }));
    }
}

#[test]
fn hello_version_is_checked() {
    assert!(check_hello(Message::Hello(Hello::ours("x"))).is_ok());
    let old = Hello {
        version: 0,
        agent: String::new(),
    };
    assert!(matches!(
        check_hello(Message::Hello(old)),
        Err(ProtocolError::VersionMismatch { theirs: 0, .. })
    ));
    assert!(matches!(
        check_hello(Message::StdinEof),
        Err(ProtocolError::Unexpected { .. })
    ));
}

#[test]
fn decoder_stops_asking_for_input_when_a_full_frame_waits() {
    let mut decoder = FrameDecoder::new();
    let big = Message::Stdout(vec![1; MAX_PAYLOAD]).encode().unwrap();
    decoder.push(&big);
    assert!(!decoder.wants_input());
    assert!(matches!(
        decoder.next_message(),
        Ok(Some(Message::Stdout(_)))
    ));
    assert!(decoder.wants_input());
    assert_eq!(decoder.next_message().unwrap(), None);
}

#[test]
fn exit_status_shell_codes() {
    assert_eq!(ExitStatus::Code(7).shell_code(), 7);
    assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
}
