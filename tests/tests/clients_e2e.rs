//! Docker clients on this host against skiffd in the nested test host, over a forwarded TCP
//! port, in one boot: Debian's `docker-compose` 1.29 (a docker-py client) brings up and tears
//! down an application unchanged (a web server and a client on a user network, a named volume,
//! a published port, `depends_on`, environment; `up -d`, `ps`, `logs`, `exec`, `port`,
//! `down -v`), then docker-py drives containers directly.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use skiff_tests::testhost::{Machine, TestHost};

/// Builds `skiff-test/busybox:1` into `$1/share/image.tar`.
const BUSYBOX_IMAGE: &str = include_str!("../images/busybox.sh");

const COMPOSE_FILE: &str = r#"version: "3.8"
services:
  web:
    image: skiff-test/busybox:1
    command: sh -c 'echo started; mkdir -p /www; echo "$$GREETING" >/www/index.html; cp /www/index.html /data/seen; exec httpd -f -p 80 -h /www'
    environment:
      GREETING: hello-compose
    ports: ["8089:80"]
    volumes: ["data:/data"]
    networks: [app]
  client:
    image: skiff-test/busybox:1
    command: sleep 1000
    depends_on: [web]
    networks: [app]
networks:
  app: {}
volumes:
  data: {}
"#;

/// On this host: `$1` the forwarded port, `$2` the image archive, `$3` the project directory.
/// Prints NAME=VALUE lines.
const COMPOSE_STORY: &str = r#"
P=$1 TAR=$2 DIR=$3
export DOCKER_HOST=tcp://127.0.0.1:$P COMPOSE_HTTP_TIMEOUT=600
# The test host may first wait for the machine lock, then boot.
for i in $(seq 3000); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
docker load -i "$TAR" >/dev/null
cd "$DIR"
dc() { timeout -k 10 300 docker-compose -p demo "$@"; }
dc up -d >/tmp/compose-up.out 2>&1; echo "up=$?"
echo "running=$(dc ps --services --filter status=running | sort | tr '\n' ',')"
echo "served=$(dc exec -T client sh -c 'for i in $(seq 120); do out=$(printf "GET / HTTP/1.0\r\n\r\n" | nc web 80 2>/dev/null | tail -n 1); [ -n "$out" ] && break; sleep 0.5; done; echo $out')"
echo "env=$(dc exec -T web sh -c 'echo $GREETING')"
echo "in_volume=$(dc exec -T web cat /data/seen)"
echo "logs=$(dc logs --no-color web | grep -c started)"
echo "port=$(dc port web 80)"
echo "volume=$(docker volume ls -q | grep -c demo_data)"
echo "network=$(docker network ls --format '{{.Name}}' | grep -c demo_app)"
dc down -v >/tmp/compose-down.out 2>&1; echo "down=$?"
echo "left_containers=$(docker ps -aq | wc -l)"
echo "left_volumes=$(docker volume ls -q | grep -c demo)"
echo "left_networks=$(docker network ls --format '{{.Name}}' | grep -c demo)"
cat /tmp/compose-up.out /tmp/compose-down.out >&2
"#;

/// docker-py's story, after Compose's; the JSON it prints is checked below. It creates
/// `finish` last, whatever happened: the in-host script ends when that container exists.
const DOCKER_PY: &str = r#"
import docker, json, sys, time
port, tar = sys.argv[1], sys.argv[2]
# A fixed version: "auto" would ask the daemon at once, before it is up.
c = docker.DockerClient(base_url="tcp://127.0.0.1:" + port, version="1.47", timeout=600)
deadline = time.time() + 1500  # the test host may first wait for the machine lock
while True:
    try:
        c.ping()
        break
    except Exception:
        if time.time() > deadline:
            raise
        time.sleep(0.5)
def story():
    r = {}
    with open(tar, "rb") as f:
        r["loaded"] = [t for i in c.images.load(f.read()) for t in i.tags]
    img = "skiff-test/busybox:1"
    r["run"] = c.containers.run(img, "echo hi", remove=True).decode()
    bg = c.containers.run(img, ["sh", "-c", "echo up; while :; do sleep 0.1; done"],
                          detach=True, name="pybg", labels={"k": "v"})
    for _ in range(600):
        if bg.logs():
            break
        time.sleep(0.2)
    r["logs"] = bg.logs().decode()
    bg.reload()
    r["status"] = bg.status
    r["by_label"] = [x.name for x in c.containers.list(filters={"label": "k=v"})]
    code, out = bg.exec_run(["sh", "-c", "echo ex; exit 3"])
    r["exec"] = [code, out.decode()]
    r["top"] = [p[-1] for p in bg.top()["Processes"] if p[-1].startswith("sh -c echo up")]
    r["df_containers"] = [x["Names"] for x in c.df()["Containers"]]
    # Detach keys end an attachment, and without StdinOnce (-d) stdin stays open for the next.
    cat = c.containers.run(img, "cat", detach=True, stdin_open=True, name="pycat")
    for _ in range(600):
        if cat.exec_run("true").exit_code == 0:
            break
        time.sleep(0.2)
    def attach_and_detach(word):
        params = {"stdin": 1, "stdout": 1, "stream": 1, "detachKeys": "ctrl-a,x"}
        raw = c.api.attach_socket(cat.id, params=params)._sock
        raw.settimeout(120)
        raw.sendall(word + b"\n")
        got = b""
        while word not in got:
            chunk = raw.recv(4096)
            if not chunk:
                break
            got += chunk
        raw.sendall(b"\x01x")
        rest = raw.recv(4096)
        raw.close()
        return [word in got, rest.decode(errors="replace")]
    r["detach"] = [attach_and_detach(b"one"), attach_and_detach(b"two")]
    cat.reload()
    r["cat_after"] = cat.status
    r["cat_logs"] = cat.logs().decode()
    cat.remove(force=True)
    try:
        c.containers.get("nosuch")
        r["nosuch"] = "found"
    except docker.errors.NotFound:
        r["nosuch"] = "NotFound"
    bg.stop(timeout=1)
    r["stopped"] = bg.wait()["StatusCode"]
    bg.remove()
    print(json.dumps(r, sort_keys=True))


try:
    story()
finally:
    c.containers.create("skiff-test/busybox:1", "true", name="finish")
"#;

/// docker-py's venv from tests/setup.
fn docker_py() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/docker-py/bin/python3")
}

#[test]
fn compose_and_docker_py_drive_skiffd_over_a_forwarded_tcp_port() {
    let python = docker_py();
    assert!(
        python.exists(),
        "docker-py is missing at {} (tests/setup installs it)",
        python.display()
    );
    assert!(
        Path::new("/usr/bin/docker-compose").exists(),
        "docker-compose is missing (tests/setup installs Debian's)"
    );
    let work = tempfile::tempdir().expect("tempdir");
    skiff_tests::host_script(BUSYBOX_IMAGE, work.path());
    let project = work.path().join("project");
    std::fs::create_dir(&project).expect("mkdir");
    std::fs::write(project.join("docker-compose.yml"), COMPOSE_FILE).expect("compose file");
    let port = skiff_tests::free_port();
    let tar = work.path().join("share/image.tar");
    // Both clients run on this host while the test host serves; an emulator fault reruns all.
    let clients = |machine: &Machine| {
        let compose = machine.output(
            Command::new("bash")
                .args(["-c", COMPOSE_STORY, "compose-story", &port.to_string()])
                .arg(&tar)
                .arg(&project),
        );
        let py = machine.output(
            Command::new(&python)
                .args(["-c", DOCKER_PY, &port.to_string()])
                .arg(&tar),
        );
        (compose, py)
    };
    let (out, (compose, py)) = TestHost::new()
        .timeout(Duration::from_secs(900))
        .mem_mib(2048)
        .forward(port, 2375)
        .sh_beside(skiff_tests::SERVE_DOCKER_API_ON_TCP, clients);

    let stdout = String::from_utf8_lossy(&compose.stdout);
    let stderr = String::from_utf8_lossy(&compose.stderr);
    let results: BTreeMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let expected = [
        ("up", "0"),
        ("running", "client,web,"),
        ("served", "hello-compose"),
        ("env", "hello-compose"),
        ("in_volume", "hello-compose"),
        ("logs", "1"),
        ("port", "0.0.0.0:8089"),
        ("volume", "1"),
        ("network", "1"),
        ("down", "0"),
        ("left_containers", "0"),
        ("left_volumes", "0"),
        ("left_networks", "0"),
    ];
    for (name, value) in expected {
        assert_eq!(
            results.get(name).copied(),
            Some(value),
            "{name}\n--- compose stdout ---\n{stdout}\n--- compose stderr ---\n{stderr}\n{out}"
        );
    }

    let stdout = String::from_utf8_lossy(&py.stdout);
    let stderr = String::from_utf8_lossy(&py.stderr);
    assert!(py.status.success(), "{stdout}\n{stderr}\n{out}");
    assert_eq!(
        stdout.trim(),
        r#"{"by_label": ["pybg"], "cat_after": "running", "cat_logs": "one\ntwo\n", "detach": [[true, ""], [true, ""]], "df_containers": [["/pybg"]], "exec": [3, "ex\n"], "loaded": ["skiff-test/busybox:1"], "logs": "up\n", "nosuch": "NotFound", "run": "hi\n", "status": "running", "stopped": 143, "top": ["sh -c echo up; while :; do sleep 0.1; done"]}"#,
        "{stderr}\n{out}"
    );
    out.expect_results(&[("warned", "yes")]);
}
