//! The spec's JSON form and its checks.

use super::*;

/// A spec with every field set.
fn full() -> VmSpec {
    VmSpec {
        cpus: 2,
        memory_mib: 256,
        init: Some("/i".into()),
        cmdline_extra: "-- a=b c".into(),
        serial: SerialOutput::File("/console.log".into()),
        rootfs: Some(RootfsSpec {
            layers: vec!["/l1".into(), "/l0".into()],
            upper: Some("/u".into()),
            upper_disk: Some("/u.img".into()),
        }),
        vsock: Some(VsockSpec {
            guest_cid: DEFAULT_GUEST_CID,
            uds: "/v.sock".into(),
        }),
        shares: vec![
            ShareSpec {
                tag: "data".into(),
                source: "/srv/data".into(),
                read_only: false,
            },
            ShareSpec {
                tag: "logs".into(),
                source: "/srv/logs".into(),
                read_only: true,
            },
        ],
        net: vec![
            NetSpec {
                fd: Some(5),
                mac: Some("02:5f:00:00:00:02".into()),
                mtu: Some(1500),
                ..NetSpec::default()
            },
            NetSpec {
                tap: Some("tap-dev0".into()),
                ..NetSpec::default()
            },
            NetSpec {
                stream: Some("/run/passt.sock".into()),
                ..NetSpec::default()
            },
        ],
        ..VmSpec::new("/k")
    }
}

fn parse(json: &str) -> Result<VmSpec, SpecError> {
    VmSpec::from_json(json.as_bytes())
}

#[test]
fn json_round_trip() {
    let spec = full();
    assert!(spec.validate().is_ok());
    let json = spec.to_json().unwrap();
    assert_eq!(VmSpec::from_json(&json).unwrap(), spec);
    let text = String::from_utf8(json).unwrap();
    assert!(text.contains(r#""serial": {"#), "{text}");
    let mut stdout = VmSpec::new("/k");
    stdout.serial = SerialOutput::Stdout;
    assert_eq!(
        VmSpec::from_json(&stdout.to_json().unwrap()).unwrap(),
        stdout
    );
}

#[test]
fn optional_fields_may_be_left_out() {
    let spec = parse(r#"{"kernel": "/k", "cpus": 1, "memory_mib": 128}"#).unwrap();
    assert_eq!(spec, VmSpec::new("/k"));
    let spec = parse(r#"{"kernel": "/k", "cpus": 1, "memory_mib": 128, "serial": "stdout"}"#);
    assert_eq!(spec.unwrap().serial, SerialOutput::Stdout);
}

#[test]
fn unknown_and_missing_fields_are_refused() {
    let err = parse(r#"{"kernel": "/k", "cpus": 1, "memory_mib": 128, "cpu": 2}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `cpu`"), "{err}");
    let err = parse(
        r#"{"kernel": "/k", "cpus": 1, "memory_mib": 128,
            "rootfs": {"layers": ["/l"], "lower": "/x"}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `lower`"), "{err}");
    let err = parse(r#"{"kernel": "/k", "cpus": 1}"#).unwrap_err();
    assert!(
        err.to_string().contains("missing field `memory_mib`"),
        "{err}"
    );
    let err = parse(r#"{"kernel": "/k", "cpus": 300, "memory_mib": 128}"#).unwrap_err();
    assert!(matches!(err, SpecError::Json(_)), "{err}");
}

/// A change that makes [`full`] invalid.
type Change = fn(&mut VmSpec);

#[test]
fn invalid_values_are_refused_naming_the_field() {
    let cases: Vec<(Change, &str)> = vec![
        (|s| s.cpus = 0, "cpus: 0 vCPUs requested"),
        (|s| s.cpus = 255, "cpus: 255 vCPUs requested"),
        (
            |s| s.memory_mib = 4,
            "memory_mib: guest memory of 4 MiB is too small",
        ),
        (|s| s.memory_mib = u64::MAX, "memory_mib: guest memory of"),
        (
            |s| s.kernel = "vmlinux".into(),
            "kernel: \"vmlinux\" is not an absolute",
        ),
        (
            |s| s.init = Some("".into()),
            "init: \"\" is not an absolute",
        ),
        (
            |s| s.serial = SerialOutput::File("c.log".into()),
            "serial.file: \"c.log\"",
        ),
        (
            |s| s.rootfs.as_mut().unwrap().layers[1] = "l0".into(),
            "rootfs.layers[1]: \"l0\"",
        ),
        (
            |s| s.rootfs.as_mut().unwrap().layers.clear(),
            "rootfs.layers: a root file system needs at least one layer",
        ),
        (
            |s| s.rootfs.as_mut().unwrap().upper = None,
            "rootfs.upper: 2 layers need",
        ),
        (
            |s| s.rootfs.as_mut().unwrap().upper_disk = Some("u.img".into()),
            "rootfs.upper_disk: \"u.img\" is not an absolute",
        ),
        (
            |s| {
                let rootfs = s.rootfs.as_mut().unwrap();
                rootfs.layers.pop();
                rootfs.upper = None;
            },
            "rootfs.upper_disk: needs rootfs.upper",
        ),
        (
            |s| s.vsock.as_mut().unwrap().guest_cid = 2,
            "vsock.guest_cid: 2 is reserved",
        ),
        (
            |s| s.vsock.as_mut().unwrap().uds = "v.sock".into(),
            "vsock.uds: \"v.sock\"",
        ),
        (
            |s| s.shares[0].tag = ROOTFS_TAG.into(),
            "shares[0].tag: \"rootfs\" is taken",
        ),
        (
            |s| s.shares[1].tag = "data".into(),
            "shares[1].tag: \"data\" is taken",
        ),
        (
            |s| s.shares[1].tag = String::new(),
            "shares[1].tag: \"\" must be",
        ),
        (
            |s| s.shares[1].source = "logs".into(),
            "shares[1].source: \"logs\" is not an absolute",
        ),
        (
            |s| s.net[0].tap = Some("tap0".into()),
            "net[0]: give exactly one of tap (a tap's name), fd",
        ),
        (
            |s| s.net[1].tap = None,
            "net[1]: give exactly one of tap (a tap's name), fd",
        ),
        (
            |s| s.net[2].fd = Some(7),
            "net[2]: give exactly one of tap (a tap's name), fd",
        ),
        (
            |s| s.net[2].stream = Some("passt.sock".into()),
            "net[2].stream: \"passt.sock\" is not an absolute",
        ),
        (
            |s| s.net[1].tap = Some("a/b".into()),
            "net[1]: tap \"a/b\": not a valid",
        ),
        (
            |s| s.net[1].tap = Some("sixteen-chars-xx".into()),
            "net[1]: tap \"sixteen-chars-xx\": not a valid",
        ),
        (
            |s| s.net[0].fd = Some(1),
            "net[0]: fd 1: 0 to 2 are standard",
        ),
        (
            |s| s.net[0].fd = Some(-1),
            "net[0]: fd -1: 0 to 2 are standard",
        ),
        (
            |s| s.net[0].mac = Some("02:00:00:00:00".into()),
            "net[0]: mac: \"02:00:00:00:00\" is not a unicast MAC",
        ),
        (
            |s| s.net[1].mac = Some("01:00:5e:00:00:01".into()),
            "net[1]: mac: \"01:00:5e:00:00:01\" is not a unicast MAC",
        ),
        (
            |s| s.net[1].mac = Some("02:00:00:00:00:0g".into()),
            "net[1]: mac: \"02:00:00:00:00:0g\"",
        ),
        (|s| s.net[0].mtu = Some(67), "net[0]: mtu: 67 is below"),
        (
            |s| s.net.push(s.net[0].clone()),
            "net[3].fd: 5 is taken by net[0]",
        ),
        (
            |s| {
                for i in 0..15 {
                    s.shares.push(ShareSpec {
                        tag: format!("v{i}"),
                        source: "/v".into(),
                        read_only: false,
                    });
                }
            },
            "too many devices: 23 virtio devices",
        ),
        (
            |s| {
                s.disks.push(DiskSpec {
                    path: "/disk.img".into(),
                    read_only: false,
                })
            },
            "not supported yet: disks",
        ),
    ];
    for (change, expected) in cases {
        let mut spec = full();
        change(&mut spec);
        let err = spec.validate().expect_err("refused").to_string();
        assert!(
            err.starts_with(expected),
            "{err:?} should start with {expected:?}"
        );
    }
}

#[test]
fn net_entries_as_hosts_write_them() {
    let spec = parse(
        r#"{"kernel": "/k", "cpus": 1, "memory_mib": 128, "net": [
            {"fd": 5, "mac": "02:5F:00:00:00:02", "mtu": 1500}, {"tap": "tap-dev0"},
            {"stream": "/run/passt.sock"}]}"#,
    )
    .unwrap();
    assert_eq!(
        spec.net[2].stream.as_deref(),
        Some(Path::new("/run/passt.sock"))
    );
    assert!(spec.validate().is_ok());
    assert_eq!(spec.net[0].fd, Some(5));
    assert_eq!(spec.net[1].tap.as_deref(), Some("tap-dev0"));
    assert_eq!((spec.net[1].mac.as_ref(), spec.net[1].mtu), (None, None));
    let err = parse(
        r#"{"kernel": "/k", "cpus": 1, "memory_mib": 128, "net": [{"tap": "t", "ip": "x"}]}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `ip`"), "{err}");
    let err = parse(r#"{"kernel": "/k", "cpus": 1, "memory_mib": 128, "net": [{}]}"#)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("net[0]: give exactly one of tap"), "{err}");
}

#[test]
fn a_single_layer_needs_no_upper() {
    let mut spec = full();
    spec.rootfs = Some(RootfsSpec {
        layers: vec!["/l".into()],
        upper: None,
        upper_disk: None,
    });
    assert!(spec.validate().is_ok());
}
