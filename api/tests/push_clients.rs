//! `docker push`, `docker history` and docker-py's push against skiffd's front end backed by
//! the real engine (its image store only: nothing here boots a VM), pushing real bytes to
//! Debian's docker-registry and reading them back with skopeo. The images and registries are
//! the images crate's real-registry fixtures. Skipped, loudly, without the clients.

#[allow(dead_code)] // the fake engine is not used here
mod common;
#[path = "../../images/tests/common/mod.rs"]
mod fixtures;

use std::path::Path;

use base64::Engine as _;
use common::{docker_cli, docker_py, engine_daemon, ok, text, TestDaemon};
use fixtures::{fixture, run, Auth, Registry};

fn raw_manifest_digest(reference: &str) -> String {
    let raw = fixtures::raw_manifest(reference);
    format!("sha256:{}", fixtures::sha256_hex(&raw))
}

/// A source registry on the fixtures, an empty target registry, skiffd on the real engine
/// with `image` pulled from the source and tagged `name` on the target (with the docker CLI).
struct Setup {
    daemon: TestDaemon,
    target: Registry,
    pulled: String,
    name: String,
    _source: Registry,
    _tmp: tempfile::TempDir,
}

impl Setup {
    fn new(auth: Auth, cli: &Path, image: &str, name: &str) -> Setup {
        let fx = fixture();
        let tmp = tempfile::tempdir().unwrap();
        let source = Registry::start(&fx.storage, Auth::None);
        let target = Registry::start(&tmp.path().join("storage"), auth);
        let daemon = engine_daemon(&tmp.path().join("root"));
        let pulled = format!("{}/{image}", source.addr);
        ok(&daemon.docker(cli, &["pull", &pulled]));
        let name = format!("{}/{name}", target.addr);
        ok(&daemon.docker(cli, &["tag", &pulled, &name]));
        Setup {
            daemon,
            target,
            pulled,
            name,
            _source: source,
            _tmp: tmp,
        }
    }
}

#[test]
fn docker_cli_push_and_history_through_the_real_engine() {
    let Some(cli) = docker_cli() else { return };
    let fx = fixture();
    let s = Setup::new(Auth::None, &cli, "whiteout:test", "pushed/whiteout:v1");
    let (d, target, pulled, name) = (&s.daemon, &s.target, &s.pulled, &s.name);

    let out = ok(&d.docker(&cli, &["push", name]));
    let (digest, _) = fixtures::tag_descriptor(&fx.layout, "whiteout-test");
    assert!(
        out.contains(&format!(
            "The push refers to repository [{}/pushed/whiteout]",
            target.addr
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("v1: digest: {digest} size: ")),
        "{out}"
    );
    assert_eq!(out.matches(": Pushed").count(), 2, "{out}");
    assert_eq!(raw_manifest_digest(name), digest);

    let again = ok(&d.docker(&cli, &["push", name]));
    assert_eq!(
        again.matches(": Layer already exists").count(),
        2,
        "{again}"
    );

    // Another repository on the same registry: mounted, not uploaded.
    let other = format!("{}/pushed/copy:v1", target.addr);
    ok(&d.docker(&cli, &["tag", pulled, &other]));
    let mounted = ok(&d.docker(&cli, &["push", &other]));
    assert_eq!(
        mounted.matches(": Mounted from pushed/whiteout").count(),
        2,
        "{mounted}"
    );

    // Every tag of the repository, with skiff's CLI: through skiffd, then on the store alone.
    let repo = format!("{}/pushed/whiteout", target.addr);
    ok(&d.docker(&cli, &["tag", pulled, &format!("{repo}:v2")]));
    let skiff = |args: &[&str], through: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"));
        if through {
            cmd.args(["-H", &d.endpoint]);
        }
        cmd.args(args)
            .env_remove("SKIFF_HOST")
            .env("SKIFF_ROOT", s._tmp.path().join("root"))
            .output()
            .unwrap()
    };
    let all = ok(&skiff(&["push", "--all-tags", &repo], true));
    assert!(
        all.contains(&format!("v1: digest: {digest} size: ")),
        "{all}"
    );
    assert!(
        all.contains(&format!("v2: digest: {digest} size: ")),
        "{all}"
    );
    ok(&d.docker(&cli, &["tag", pulled, &format!("{repo}:v3")]));
    let local = ok(&skiff(&["push", "-a", "-q", &repo], false));
    assert_eq!(local, format!("{digest}\n").repeat(3), "{local}");
    assert_eq!(raw_manifest_digest(&format!("{repo}:v3")), digest);
    let both = skiff(&["push", "-a", name], false);
    assert!(
        text(&both.stderr).contains("tag can't be used with --all-tags"),
        "{}",
        text(&both.stderr)
    );

    // An index over pushed images (skiff manifest create), read back; one platform twice is
    // refused by name.
    let list = format!("{}/pushed/list:v1", target.addr);
    let created = ok(&skiff(
        &["manifest", "create", &list, &format!("{repo}:v1")],
        false,
    ));
    assert!(
        created.contains(&format!("linux/amd64: {digest} {repo}:v1")),
        "{created}"
    );
    let index_digest = raw_manifest_digest(&list);
    assert!(
        created.contains(&format!("v1: digest: {index_digest} size: ")),
        "{created}"
    );
    let shown = ok(&skiff(&["manifest", "inspect", &list], false));
    let doc: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(doc["manifests"][0]["digest"], digest.as_str(), "{shown}");
    let twice = skiff(
        &[
            "manifest",
            "create",
            &list,
            &format!("{repo}:v1"),
            &format!("{repo}:v2"),
        ],
        false,
    );
    assert!(!twice.status.success());
    assert!(
        text(&twice.stderr).contains("its platform linux/amd64 is"),
        "{}",
        text(&twice.stderr)
    );

    let out = d.docker(&cli, &["push", &format!("{}/nothing:here", target.addr)]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("An image does not exist locally with the tag"),
        "{}",
        text(&out.stderr)
    );

    let history = ok(&d.docker(
        &cli,
        &[
            "history",
            "--no-trunc",
            "--format",
            "{{.ID}}|{{.CreatedBy}}|{{.Size}}",
            name,
        ],
    ));
    let rows: Vec<&str> = history.lines().collect();
    // umoci's fixture: one history entry per layer plus the config's, newest first.
    assert!(rows.len() >= 2, "{history}");
    let id = ok(&d.docker(&cli, &["inspect", "-f", "{{.Id}}", name]));
    assert!(rows[0].starts_with(&format!("{}|", id.trim())), "{history}");
    assert!(
        rows[1..].iter().all(|r| r.starts_with("<missing>|")),
        "{history}"
    );
    assert!(rows.iter().all(|r| r.contains("|fixture|")), "{history}");
}

/// Credentials from the CLI's config.json travel in X-Registry-Auth to an htpasswd registry;
/// without them the push fails naming the registry.
#[test]
fn docker_cli_push_with_credentials() {
    let Some(cli) = docker_cli() else { return };
    let s = Setup::new(Auth::Htpasswd, &cli, "busybox:test", "private/busybox:v1");
    let (d, target, name) = (&s.daemon, &s.target, &s.name);

    let out = d.docker(&cli, &["push", name]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains(&target.addr) && err.contains("requires authentication"),
        "{err}"
    );

    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        fixtures::USER,
        fixtures::PASSWORD
    ));
    std::fs::create_dir_all(d.docker_config()).unwrap();
    std::fs::write(
        d.docker_config().join("config.json"),
        serde_json::json!({"auths": {target.addr.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let out = ok(&d.docker(&cli, &["push", name]));
    assert!(out.contains("v1: digest: sha256:"), "{out}");

    // The client's credentials also serve pulls (X-Registry-Auth) and a build's base image
    // (X-Registry-Config); skiffd's own host has none for this registry.
    ok(&d.docker(&cli, &["rmi", name, &s.pulled]));
    let pulled = ok(&d.docker(&cli, &["pull", name]));
    assert!(pulled.contains("Downloaded newer image"), "{pulled}");
    ok(&d.docker(&cli, &["rmi", name]));
    let ctx = s._tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {name}\nLABEL built=yes\n"),
    )
    .unwrap();
    let build = std::process::Command::new(&cli)
        .args(["-H", &d.endpoint, "build", "-t", "from-private:1"])
        .arg(&ctx)
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CONFIG", d.docker_config())
        .output()
        .unwrap();
    let built = ok(&build);
    assert!(
        built.contains("Successfully tagged from-private:1"),
        "{built}"
    );
    // Without them, the pull fails naming the registry.
    ok(&d.docker(&cli, &["rmi", "from-private:1", name]));
    std::fs::write(d.docker_config().join("config.json"), "{}").unwrap();
    let out = d.docker(&cli, &["pull", name]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&target.addr),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn docker_py_push_streams_decoded_progress() {
    let Some(py) = docker_py() else { return };
    let fx = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let source = Registry::start(&fx.storage, Auth::None);
    let target = Registry::start(&tmp.path().join("storage"), Auth::Htpasswd);
    let d = engine_daemon(&tmp.path().join("root"));
    let script = r#"
import json, sys, docker
sock, src, repo, user, password = sys.argv[1:6]
c = docker.DockerClient(base_url="unix://" + sock)
c.images.pull(src)
assert c.images.get(src).tag(repo, "py")
lines = list(c.images.push(repo, tag="py", stream=True, decode=True,
                           auth_config={"username": user, "password": password}))
print(json.dumps(lines))
"#;
    let repo = format!("{}/py/busybox", target.addr);
    let out = std::process::Command::new(&py)
        .args(["-c", script])
        .arg(&d.socket)
        .args([
            format!("{}/busybox:test", source.addr),
            repo.clone(),
            fixtures::USER.to_string(),
            fixtures::PASSWORD.to_string(),
        ])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = serde_json::from_str(&ok(&out)).unwrap();
    assert!(lines.iter().all(|l| l.get("error").is_none()), "{lines:?}");
    let aux = lines
        .iter()
        .find_map(|l| l.get("aux"))
        .unwrap_or_else(|| panic!("no aux in {lines:?}"));
    assert_eq!(aux["Tag"], "py");
    let (digest, _) = fixtures::tag_descriptor(&fx.layout, "busybox-test");
    assert_eq!(aux["Digest"], digest.as_str());
    assert!(
        lines
            .iter()
            .any(|l| l["status"] == "Pushing" && l["progressDetail"]["total"].as_u64() > Some(0)),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l["status"] == "Pushed"), "{lines:?}");
    // skopeo needs the credentials too.
    let raw = run(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            &format!("{}:{}", fixtures::USER, fixtures::PASSWORD),
            &format!("docker://{repo}:py"),
        ],
    );
    assert_eq!(
        format!("sha256:{}", fixtures::sha256_hex(raw.as_bytes())),
        digest
    );
}
