//! A created container's networks as Compose handles them before starting it, through the real
//! docker CLI on the real engine (no VM boots): inspect shows the networks a created container
//! joins with their aliases; leaving its only network and joining it again (what
//! `docker-compose up` does) brings it back as its first network; `--network none` stays none.

#[allow(dead_code)] // the fake engine is not used here
mod common;

use common::{docker_cli, engine_daemon, ok, text};

#[test]
fn a_created_container_leaves_and_joins_its_network_as_compose_does() {
    let Some(cli) = docker_cli() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    std::fs::write(ctx.join("f"), "x\n").unwrap();
    let d = engine_daemon(&tmp.path().join("root"));
    let docker = |args: &[&str]| d.docker(&cli, args);
    let build = std::process::Command::new(&cli)
        .args(["-H", &d.endpoint, "build", "-q", "-t", "img:1"])
        .arg(&ctx)
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CONFIG", d.docker_config())
        .output()
        .unwrap();
    ok(&build);
    ok(&docker(&["network", "create", "--attachable", "app"]));
    let attachable = ok(&docker(&[
        "network",
        "inspect",
        "-f",
        "{{.Attachable}}",
        "app",
    ]));
    assert_eq!(attachable, "true\n");
    ok(&docker(&[
        "create",
        "--name",
        "web",
        "--network",
        "app",
        "--network-alias",
        "w",
        "img:1",
        "/x",
    ]));
    let nets = |name: &str| {
        ok(&docker(&[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.Aliases}};{{end}}",
            name,
        ]))
    };
    assert_eq!(nets("web"), "app=[w];\n");
    // Connecting again while joined is refused, as Docker refuses it.
    let again = docker(&["network", "connect", "app", "web"]);
    assert!(
        text(&again.stderr).contains("already exists in network app"),
        "{}",
        text(&again.stderr)
    );
    ok(&docker(&["network", "disconnect", "app", "web"]));
    assert_eq!(nets("web"), "\n");
    ok(&docker(&[
        "network", "connect", "--alias", "web", "app", "web",
    ]));
    assert_eq!(nets("web"), "app=[web];\n");
    ok(&docker(&["network", "connect", "bridge", "web"]));
    assert_eq!(nets("web"), "app=[web];bridge=[];\n");
    // An explicit none joins nothing.
    ok(&docker(&[
        "create",
        "--name",
        "alone",
        "--network",
        "none",
        "img:1",
        "/x",
    ]));
    let none = docker(&["network", "connect", "app", "alone"]);
    assert!(
        text(&none.stderr).contains("network mode none"),
        "{}",
        text(&none.stderr)
    );
}
