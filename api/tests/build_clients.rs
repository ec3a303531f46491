//! `docker build` (the classic builder's API, `DOCKER_BUILDKIT=0`) and docker-py's
//! `images.build` against skiffd's front end on the real engine: Dockerfiles without RUN, so
//! no VM boots. The built image is compared, tree and config, with what Debian's buildah
//! builds from the same context. Skipped, loudly, without the clients.

#[allow(dead_code)] // the fake engine is not used here
mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;
use std::process::{Command, Output};

use common::{docker_cli, docker_py, engine_daemon, ok, text, TestDaemon};

const DOCKERFILE: &str = r#"# syntax is read as BuildKit reads it
ARG BASE=scratch
FROM ${BASE} AS files
COPY --chmod=0640 dir/ /stage/
FROM scratch
ARG VERSION=1.2
ENV APP=/app PATH=/usr/bin:/bin VERSION=${VERSION}
LABEL org.example.v="${VERSION}" other=x
WORKDIR ${APP}/work
COPY *.txt ./
COPY --chown=1000:1001 dir /app/tree
COPY --from=files /stage /from-stage
ADD archive.tar.gz /unpacked/
USER 1000:1001
EXPOSE 8080 53/udp
VOLUME ["/data"]
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/app"]
CMD ["--serve", "${APP:-none}"]
"#;

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn context(dir: &Path) {
    write(&dir.join("Dockerfile"), DOCKERFILE);
    write(&dir.join(".dockerignore"), "*.md\nsecret\n");
    write(&dir.join("a.txt"), "a\n");
    write(&dir.join("b.txt"), "b\n");
    write(&dir.join("notes.md"), "ignored\n");
    write(&dir.join("secret/key"), "ignored\n");
    write(&dir.join("dir/x"), "x\n");
    write(&dir.join("dir/sub/y"), "y\n");
    symlink("x", dir.join("dir/link")).unwrap();
    let tar_src = dir.join("../tarsrc");
    write(&tar_src.join("t/inside"), "from the tar\n");
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(dir.join("archive.tar.gz"))
        .arg("-C")
        .arg(&tar_src)
        .arg("t")
        .status()
        .unwrap();
    assert!(ok.success());
}

fn docker_build(d: &TestDaemon, cli: &Path, args: &[&str]) -> Output {
    let config = d.docker_config();
    let _ = std::fs::create_dir_all(&config);
    Command::new(cli)
        .arg("-H")
        .arg(&d.endpoint)
        .arg("build")
        .args(args)
        .env("DOCKER_CONFIG", &config)
        .env("DOCKER_BUILDKIT", "0")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .output()
        .unwrap()
}

/// path → "type mode uid:gid content-or-target" of an unpacked tree.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else {
                format!("file {:?}", std::fs::read_to_string(&p).unwrap_or_default())
            };
            let mode = if m.file_type().is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            out.insert(rel, format!("{what} {mode:o} {}:{}", m.uid(), m.gid()));
        }
    }
    out
}

/// The image `name` of an OCI layout `layout`, unpacked with umoci: (tree, config).
fn unpack_oci(
    layout: &Path,
    name: &str,
    into: &Path,
) -> (BTreeMap<String, String>, serde_json::Value) {
    let bundle = into.join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{name}", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    ok(&out);
    let config = Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:{name}", layout.display()))
        .output()
        .unwrap();
    let config: serde_json::Value = serde_json::from_str(&ok(&config)).unwrap();
    (tree(&bundle.join("rootfs")), config["config"].clone())
}

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("\n*** SKIPPED part: no {tool} ***\n");
    }
    found
}

#[test]
fn docker_cli_builds_without_buildkit_and_matches_buildah() {
    let Some(cli) = docker_cli() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    context(&ctx);
    let d = engine_daemon(&tmp.path().join("root"));
    let ctx_s = ctx.display().to_string();
    let first = ok(&docker_build(&d, &cli, &["-t", "built:1", &ctx_s]));
    assert!(
        first.contains("Step 1/17 : FROM ${BASE} AS files"),
        "{first}"
    );
    assert!(first.contains("Successfully built "), "{first}");
    assert!(first.contains("Successfully tagged built:1"), "{first}");
    assert!(!first.contains("Using cache"), "{first}");

    // The same build again: every step from the cache; one changed file rebuilds from there.
    let again = ok(&docker_build(&d, &cli, &["-t", "built:1", &ctx_s]));
    let steps_after_from = again.matches(" ---> Using cache").count();
    assert_eq!(steps_after_from, 15, "{again}");
    write(&ctx.join("dir/sub/y"), "changed\n");
    let changed = ok(&docker_build(&d, &cli, &["-t", "built:2", &ctx_s]));
    let tail = changed.split("COPY --chown").nth(1).unwrap_or("");
    assert!(!tail.contains("Using cache"), "{changed}");
    assert!(changed.contains("Using cache"), "{changed}");
    write(&ctx.join("dir/sub/y"), "y\n");

    // docker images hides the steps' images; -a shows them.
    let images = ok(&d.docker(&cli, &["images", "-q"]));
    let all = ok(&d.docker(&cli, &["images", "-a", "-q"]));
    assert!(
        images.lines().count() < all.lines().count(),
        "{images}\n---\n{all}"
    );

    if !(have("buildah") && have("umoci") && have("skopeo")) {
        return;
    }
    // skiff's image, through docker save and skopeo into an OCI layout.
    let layout = tmp.path().join("layouts");
    let saved = tmp.path().join("saved.tar");
    ok(&d.docker(
        &cli,
        &["save", "-o", &saved.display().to_string(), "built:1"],
    ));
    ok(&Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci-archive:{}", saved.display()))
        .arg(format!("oci:{}:skiff", layout.display()))
        .output()
        .unwrap());
    let (skiff_tree, skiff_config) = unpack_oci(&layout, "skiff", &tmp.path().join("u1"));
    // buildah's, in its own storage.
    let storage = tmp.path().join("buildah");
    let buildah = |args: &[&str]| {
        Command::new("buildah")
            .arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .unwrap()
    };
    ok(&buildah(&[
        "bud",
        "--isolation",
        "chroot",
        "--format",
        "docker",
        "-t",
        "localhost/cmp:1",
        &ctx_s,
    ]));
    ok(&buildah(&[
        "push",
        "localhost/cmp:1",
        &format!("oci:{}:buildah", layout.display()),
    ]));
    let (buildah_tree, buildah_config) = unpack_oci(&layout, "buildah", &tmp.path().join("u2"));
    assert_eq!(skiff_tree, buildah_tree);
    // Docker's classic builder keeps ENV's order; buildah (as BuildKit) starts a scratch
    // image with a default PATH that ENV then replaces in place.
    let sorted = |v: &serde_json::Value| {
        let mut env: Vec<String> = serde_json::from_value(v.clone()).unwrap_or_default();
        env.sort();
        env
    };
    assert_eq!(sorted(&skiff_config["Env"]), sorted(&buildah_config["Env"]));
    for key in [
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Volumes",
        "StopSignal",
    ] {
        assert_eq!(skiff_config[key], buildah_config[key], "{key}");
    }
    let mut labels = buildah_config["Labels"].clone();
    if let Some(l) = labels.as_object_mut() {
        l.remove("io.buildah.version");
    }
    assert_eq!(skiff_config["Labels"], labels);
}

#[test]
fn build_errors_name_their_line_and_hostile_contexts_are_refused() {
    let Some(cli) = docker_cli() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = engine_daemon(&tmp.path().join("root"));
    let cases: [(&str, &str); 5] = [
        ("FROM scratch\nFROB x\n", "unknown instruction"),
        ("FROM scratch\nCOPY missing /x\n", "line 2"),
        (
            "FROM scratch\nCOPY ../outside /x\n",
            "Forbidden path outside the build context",
        ),
        ("FROM scratch\nCOPY escape /x\n", "escape -> /etc/passwd"),
        (
            "FROM scratch AS a\nFROM scratch\nCOPY --from=b /x /x\n",
            "line 3",
        ),
    ];
    for (i, (dockerfile, expected)) in cases.iter().enumerate() {
        let ctx = tmp.path().join(format!("ctx{i}"));
        write(&ctx.join("Dockerfile"), dockerfile);
        symlink("/etc/passwd", ctx.join("escape")).unwrap();
        let out = docker_build(&d, &cli, &[&ctx.display().to_string()]);
        assert!(!out.status.success(), "{dockerfile}");
        let err = text(&out.stderr) + &text(&out.stdout);
        assert!(err.contains(expected), "{dockerfile}: {err}");
        assert!(!err.contains("root:x:0:0"), "{err}");
    }
    let out = docker_build(
        &d,
        &cli,
        &[
            "--target",
            "nope",
            &tmp.path().join("ctx1").display().to_string(),
        ],
    );
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
}

#[test]
fn a_context_tar_with_dot_dot_entries_is_refused() {
    let Some(py) = docker_py() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let d = engine_daemon(&tmp.path().join("root"));
    let script = r#"
import docker, io, sys, tarfile
c = docker.APIClient(base_url="unix://" + sys.argv[1])
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    for name, data in [("Dockerfile", b"FROM scratch\nCOPY . /\n"), ("../evil", b"x")]:
        info = tarfile.TarInfo(name); info.size = len(data); t.addfile(info, io.BytesIO(data))
buf.seek(0)
out = list(c.build(fileobj=buf, custom_context=True, decode=True))
print(out[-1].get("error", "no error"))
"#;
    let out = Command::new(&py)
        .args(["-c", script])
        .arg(&d.socket)
        .output()
        .unwrap();
    let printed = ok(&out);
    assert!(printed.contains(".."), "{printed}");
    assert!(!tmp.path().join("root/images/tmp/evil").exists());
}

/// `DIR/ctx`: a Dockerfile of three steps (FROM scratch, COPY f, LABEL) and its file.
fn small_context(dir: &Path) -> std::path::PathBuf {
    let ctx = dir.join("ctx");
    write(
        &ctx.join("Dockerfile"),
        "FROM scratch\nCOPY f /f\nLABEL k=v\n",
    );
    write(&ctx.join("f"), "hello\n");
    ctx
}

#[test]
fn docker_py_builds_and_reads_the_id() {
    let Some(py) = docker_py() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ctx = small_context(tmp.path());
    let d = engine_daemon(&tmp.path().join("root"));
    let script = r#"
import docker, sys
c = docker.DockerClient(base_url="unix://" + sys.argv[1])
image, logs = c.images.build(path=sys.argv[2], tag="py:1", buildargs={"UNUSED": "1"})
lines = [l.get("stream", "") for l in logs]
print(image.id)
print("".join(lines))
"#;
    let out = Command::new(&py)
        .args(["-c", script])
        .arg(&d.socket)
        .arg(&ctx)
        .output()
        .unwrap();
    let printed = ok(&out);
    assert!(printed.starts_with("sha256:"), "{printed}");
    assert!(printed.contains("Step 3/3 : LABEL k=v"), "{printed}");
    assert!(
        printed.contains("[Warning] One or more build-args [UNUSED] were not consumed"),
        "{printed}"
    );
    let inspect = ok(&d.docker(
        &docker_cli().unwrap_or_else(|| "docker".into()),
        &["images", "py"],
    ));
    assert!(inspect.contains("py"), "{inspect}");
}

#[test]
fn skiff_build_sends_its_context_and_prints_the_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = small_context(tmp.path());
    write(&ctx.join(".dockerignore"), "ignored\nDockerfile\n");
    write(&ctx.join("ignored/big"), "not sent\n");
    write(
        &tmp.path().join("elsewhere/Df"),
        "FROM scratch\nCOPY f /g\n",
    );
    let d = engine_daemon(&tmp.path().join("root"));
    let skiff = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .arg("-H")
            .arg(&d.endpoint)
            .args(args)
            .env_remove("SKIFF_HOST")
            .env("FROM_ENV", "env-value")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let ctx_s = ctx.display().to_string();
    let first = ok(&skiff(
        &["build", "-t", "sk:1", "--label", "l=1", &ctx_s],
        "",
    ));
    assert!(
        first.starts_with("Sending build context to skiffd"),
        "{first}"
    );
    for line in [
        "Step 1/3 : FROM scratch",
        "Step 3/3 : LABEL k=v",
        "Successfully tagged sk:1",
    ] {
        assert!(first.contains(line), "{line}: {first}");
    }
    // Quiet: the ID alone, the one the image has; everything came from the cache.
    let quiet = ok(&skiff(&["build", "-q", "--label", "l=1", &ctx_s], ""));
    let id = ok(&d.docker(
        &docker_cli().unwrap_or_else(|| "docker".into()),
        &["images", "--no-trunc", "-q", "sk:1"],
    ));
    if docker_cli().is_some() {
        assert_eq!(quiet, id);
    }
    assert!(
        quiet.starts_with("sha256:") && quiet.lines().count() == 1,
        "{quiet}"
    );
    // A Dockerfile from outside the context; a bare --build-arg from the environment.
    let outside = tmp.path().join("elsewhere/Df").display().to_string();
    let out = ok(&skiff(
        &["build", "-f", &outside, "--build-arg", "FROM_ENV", &ctx_s],
        "",
    ));
    assert!(out.contains("Step 2/2 : COPY f /g"), "{out}");
    assert!(out.contains("[FROM_ENV] were not consumed"), "{out}");
    // A lone Dockerfile on stdin; a Dockerfile on stdin with a directory context.
    let out = ok(&skiff(&["build", "-"], "FROM scratch\nLABEL from=stdin\n"));
    assert!(out.contains("Step 2/2 : LABEL from=stdin"), "{out}");
    let out = ok(&skiff(
        &["build", "-f", "-", &ctx_s],
        "FROM scratch\nCOPY f /h\n",
    ));
    assert!(out.contains("Step 2/2 : COPY f /h"), "{out}");
    // Failures: the builder's error and exit 1; no daemon: what to do.
    let bad = skiff(&["build", "-"], "FROM scratch\nFROB x\n");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("unknown instruction"),
        "{}",
        text(&bad.stderr)
    );
    // A refusal reaches a client still sending a large context (not "broken pipe").
    std::fs::write(ctx.join("large"), vec![7u8; 48 << 20]).unwrap();
    let host = skiff(&["build", "--network", "host", &ctx_s], "");
    assert_eq!(host.status.code(), Some(125));
    let err = text(&host.stderr);
    assert!(
        err.contains("networkmode=host") && !err.contains("start it"),
        "{err}"
    );
    let none = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["-H", "unix:///nonexistent/skiffd.sock", "build", &ctx_s])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(125));
    assert!(
        text(&none.stderr).contains("start it"),
        "{}",
        text(&none.stderr)
    );
}
