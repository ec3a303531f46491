//! Create requests recorded from the docker CLI 28.2.2 and docker-py 7 (see
//! `fixtures/docker-requests/record.py`), decoded as skiffd decodes them: accepted with the right
//! typed values, or refused naming the right fields.

use skiff_api::daemon::create::mounts::{MountKind, MountRequest};
use skiff_api::daemon::create::ports::PortRequest;
use skiff_api::daemon::create::{
    decode_create, CreateError, CreateRequest, JsonFileLog, NetworkJoin, NetworkMode,
    RestartPolicy, Stdio,
};

/// The fixture's recorded request: its `?name=` and its body.
fn fixture(name: &str) -> (Option<String>, Vec<u8>) {
    let path = format!(
        "{}/tests/fixtures/docker-requests/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let url = v["path"].as_str().unwrap();
    let name = url.split_once("?name=").map(|(_, n)| n.to_string());
    (name, serde_json::to_vec(&v["body"]).unwrap())
}

fn decode(name: &str) -> Result<CreateRequest, CreateError> {
    let (n, body) = fixture(name);
    decode_create(n.as_deref(), &body)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn refused(name: &str) -> Vec<String> {
    match decode(name) {
        Err(CreateError::Refused(fields)) => fields,
        other => panic!("{name}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn cli_run_detached_with_limits_and_restart() {
    let (name, body) = fixture("cli-run-detached-env-memory-cpus-restart-label");
    // Docker's name rule wants two characters at least: `--name n` is refused, as dockerd does.
    assert_eq!(name.as_deref(), Some("n"));
    let err = decode_create(name.as_deref(), &body).unwrap_err();
    assert!(
        err.to_string().starts_with("Invalid container name (n)"),
        "{err}"
    );
    let r = decode_create(Some("/n2"), &body).unwrap();
    assert_eq!(r.name.as_deref(), Some("n2"));
    assert_eq!(r.image, "busybox");
    assert_eq!(r.cmd, Some(strings(&["echo", "hi"])));
    assert_eq!(r.entrypoint, None);
    assert_eq!(r.env, strings(&["A=1"]));
    assert_eq!(r.labels.get("k").map(String::as_str), Some("v"));
    assert_eq!(r.memory_bytes, Some(256 << 20));
    assert_eq!(r.nano_cpus, Some(1_500_000_000));
    assert_eq!(
        r.restart_policy,
        RestartPolicy::OnFailure {
            max_retries: Some(3)
        }
    );
    assert_eq!(r.network, NetworkMode::Default);
    assert_eq!(r.log, JsonFileLog::default());
    assert_eq!(r.stdio, Stdio::default());
}

#[test]
fn cli_run_interactive_tty() {
    let r = decode("cli-run-it").unwrap();
    assert_eq!(
        r.stdio,
        Stdio {
            tty: true,
            open_stdin: true,
            stdin_once: true,
            attach_stdin: true,
            attach_stdout: true,
            attach_stderr: true,
        }
    );
    assert_eq!(r.cmd, Some(strings(&["sh"])));
}

#[test]
fn cli_create_and_run_rm() {
    let r = decode("cli-create").unwrap();
    assert_eq!((r.image.as_str(), r.cmd.as_ref()), ("busybox", None));
    assert!(r.stdio.attach_stdout && r.stdio.attach_stderr);
    let r = decode("cli-run-rm-echo").unwrap();
    assert!(r.auto_remove);
    assert_eq!(r.restart_policy, RestartPolicy::No);
}

#[test]
fn cli_run_supported_options() {
    let r = decode("cli-run-supported-options").unwrap();
    assert_eq!(r.hostname.as_deref(), Some("h"));
    assert_eq!(r.user.as_deref(), Some("1000:1000"));
    assert_eq!(r.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(r.entrypoint, Some(strings(&["/bin/sh"])));
    assert_eq!(r.cmd, Some(strings(&["-c", "echo hi"])));
    assert_eq!(r.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(r.stop_timeout, Some(5));
    assert!(r.init && r.stdio.tty && r.stdio.open_stdin);
    assert_eq!(r.restart_policy, RestartPolicy::UnlessStopped);
    assert_eq!(
        r.log,
        JsonFileLog {
            max_size: Some(10 << 20),
            max_file: Some(3)
        }
    );
}

#[test]
fn docker_py_requests() {
    let r = decode("py-run-attached").unwrap();
    assert_eq!(r.cmd, Some(strings(&["echo", "hi"])));
    assert_eq!(r.env, strings(&["A=1"]));
    let r = decode("py-run-detached-limits").unwrap();
    assert_eq!(r.name.as_deref(), Some("py"));
    assert_eq!(r.memory_bytes, Some(128 << 20));
    assert_eq!(r.nano_cpus, Some(500_000_000));
    assert_eq!(r.restart_policy, RestartPolicy::Always);
}

#[test]
fn published_ports_and_binds_are_decoded() {
    let r = decode("cli-run-publish-80").unwrap();
    assert_eq!(
        r.ports,
        [PortRequest {
            container_port: 80,
            proto: "tcp".into(),
            host_ip: None,
            host_port: 80,
        }]
    );
    assert_eq!(r.exposed_ports, ["80/tcp"]);
    let mounts = decode("cli-run-bind-mount").unwrap().mounts;
    assert_eq!(
        mounts,
        [MountRequest {
            kind: MountKind::Bind {
                source: "/a".into(),
                create: true
            },
            target: "/b".into(),
            read_only: false,
        }]
    );
}

#[test]
fn every_unsupported_field_is_named() {
    let fields = refused("cli-run-unsupported-everything");
    for expected in [
        "HostConfig.CapAdd",
        "HostConfig.Devices",
        "HostConfig.Privileged",
        "HostConfig.SecurityOpt",
        "HostConfig.NetworkMode \"host\"",
        "HostConfig.Runtime \"runc\"",
        "HostConfig.LogConfig.Type \"syslog\"",
    ] {
        assert!(
            fields.iter().any(|f| f.starts_with(expected)),
            "{expected} not named in {fields:?}"
        );
    }
    // The CLI's --health-cmd in the same request is honoured now.
    assert!(
        !fields.iter().any(|f| f.contains("Healthcheck")),
        "{fields:?}"
    );
}

#[test]
fn a_pids_limit_is_decoded_and_zero_or_minus_one_mean_none() {
    let limit = |v: &str| {
        let body = format!(r#"{{"Image":"b","HostConfig":{{"PidsLimit":{v}}}}}"#);
        decode_create(None, body.as_bytes()).map(|r| r.pids_limit)
    };
    assert_eq!(limit("5").unwrap(), Some(5));
    assert_eq!(limit("0").unwrap(), None);
    assert_eq!(limit("-1").unwrap(), None);
    assert_eq!(limit("null").unwrap(), None);
    let err = limit("-2").unwrap_err().to_string();
    assert!(err.contains("HostConfig.PidsLimit"), "{err}");
    assert_eq!(decode("cli-create").unwrap().pids_limit, None);
}

#[test]
fn wrong_types_and_bad_json_name_the_field() {
    let err = decode_create(
        None,
        br#"{"Image":"busybox","HostConfig":{"Memory":"lots"}}"#,
    );
    match err {
        Err(CreateError::Field { path, .. }) => assert_eq!(path, "HostConfig.Memory"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decode_create(None, b"{\"Image\":"),
        Err(CreateError::Json(_))
    ));
    let err = decode_create(None, br#"{"Image":"busybox","Env":"A=1"}"#).unwrap_err();
    assert!(err.to_string().contains("Env"), "{err}");
}

#[test]
fn unknown_fields_pass_at_default_and_are_refused_when_set() {
    let ok = decode_create(
        None,
        br#"{"Image":"b","Future":null,"HostConfig":{"NewThing":0}}"#,
    );
    assert!(ok.is_ok(), "{ok:?}");
    let err = decode_create(None, br#"{"Image":"b","HostConfig":{"NewThing":1}}"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        "HostConfig.NewThing is not supported by skiff yet"
    );
}

#[test]
fn network_modes() {
    let mode = |m: &str| {
        let body = format!(r#"{{"Image":"b","HostConfig":{{"NetworkMode":"{m}"}}}}"#);
        decode_create(None, body.as_bytes())
    };
    assert_eq!(mode("bridge").unwrap().network, NetworkMode::Default);
    assert_eq!(mode("none").unwrap().network, NetworkMode::None);
    assert_eq!(
        mode("mynet").unwrap().network,
        NetworkMode::Named("mynet".into())
    );
    for m in ["host", "container:abc", "-bad", "a b"] {
        assert!(mode(m)
            .unwrap_err()
            .to_string()
            .contains("HostConfig.NetworkMode"));
    }
}

#[test]
fn aliases_on_user_defined_networks_and_more_networks_joined() {
    let create = |mode: &str, net: &str, aliases: &str| {
        let body = format!(
            r#"{{"Image":"b","HostConfig":{{"NetworkMode":"{mode}"}},
                "NetworkingConfig":{{"EndpointsConfig":{{"{net}":{{"Aliases":{aliases}}}}}}}}}"#
        );
        decode_create(None, body.as_bytes())
    };
    assert_eq!(
        create("front", "front", r#"["www","api.v1"]"#)
            .unwrap()
            .aliases,
        ["www", "api.v1"]
    );
    // Another network's endpoint: the container joins it too, with its aliases there.
    let r = create("front", "back", r#"["db"]"#).unwrap();
    assert_eq!(r.network, NetworkMode::Named("front".into()));
    assert_eq!(
        r.more_networks,
        [NetworkJoin {
            network: "back".into(),
            aliases: vec!["db".into()]
        }]
    );
    let e = create("none", "back", "null").unwrap_err().to_string();
    assert!(e.contains("network mode none"), "{e}");
    let e = create("front", "none", "null").unwrap_err().to_string();
    assert!(e.contains("network mode none"), "{e}");
    let e = create("front", "bridge", r#"["www"]"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("only for containers in user defined networks"),
        "{e}"
    );
    let e = create("bridge", "bridge", r#"["www"]"#)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("only for containers in user defined networks"),
        "{e}"
    );
    let e = create("front", "front", r#"["bad name"]"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid network alias"), "{e}");
    // Other endpoint settings are still refused by name.
    let body = br#"{"Image":"b","HostConfig":{"NetworkMode":"front"},
        "NetworkingConfig":{"EndpointsConfig":{"front":{"IPAMConfig":{"IPv4Address":"10.0.0.9"}}}}}"#;
    let e = decode_create(None, body).unwrap_err().to_string();
    assert!(
        e.contains("NetworkingConfig.EndpointsConfig.front.IPAMConfig"),
        "{e}"
    );
}

#[test]
fn docker_validation_messages() {
    let d = |b: &str| decode_create(None, b.as_bytes()).unwrap_err().to_string();
    assert_eq!(
        d(r#"{"Image":"b","HostConfig":{"Memory":1024}}"#),
        "Minimum memory limit allowed is 6MB"
    );
    assert!(
        d(r#"{"Image":"b","HostConfig":{"RestartPolicy":{"Name":"sometimes"}}}"#)
            .contains("unknown policy 'sometimes'")
    );
    assert_eq!(
        d(r#"{"Image":"b","HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#),
        "can't create 'AutoRemove' container with restart policy"
    );
    assert!(d(r#"{"Image":"b","WorkingDir":"rel"}"#).contains("absolute path"));
    assert!(d(r#"{"Cmd":["x"]}"#).contains("Image"));
    let bad_name = decode_create(Some("-x"), br#"{"Image":"b"}"#).unwrap_err();
    assert!(bad_name
        .to_string()
        .starts_with("Invalid container name (-x)"));
    assert!(d(r#"{"Image":"b","HostConfig":{"LogConfig":{"Type":"json-file","Config":{"max-size":"big"}}}}"#)
        .contains("max-size"));
}

#[test]
fn storage_opt_size_caps_the_writable_layer() {
    // As the docker CLI 28 sends `--storage-opt size=1G`.
    let r = decode_create(
        None,
        br#"{"Image":"b","HostConfig":{"StorageOpt":{"size":"1G"}}}"#,
    )
    .unwrap();
    assert_eq!(r.storage_size, Some(1 << 30));
    let r = decode_create(None, br#"{"Image":"b","HostConfig":{"StorageOpt":{}}}"#).unwrap();
    assert_eq!(r.storage_size, None);
    let e = decode_create(
        None,
        br#"{"Image":"b","HostConfig":{"StorageOpt":{"size":"1m"}}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("--storage-opt size=1m is too small"), "{e}");
    let e = decode_create(
        None,
        br#"{"Image":"b","HostConfig":{"Privileged":true,"StorageOpt":{"dm.basesize":"1G"}}}"#,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "HostConfig.Privileged is not supported by skiff yet; \
         HostConfig.StorageOpt.dm.basesize is not supported by skiff (only size)"
    );
}
