//! Compose against skiffd: Debian's `docker-compose` 1.29 (a docker-py client) on this host drives
//! skiffd in the nested test host over a forwarded TCP port, unchanged: a web server and a client
//! on a user network, a named volume, a published port, `depends_on` and environment; `up -d`,
//! `ps`, `logs`, `exec`, `port`, `down -v`.

use std::collections::BTreeMap;
use std::time::Duration;

use skiff_tests::testhost::TestHost;

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
/// Prints NAME=VALUE lines; ends the test host's skiffd by creating `finish`.
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
docker create --name finish skiff-test/busybox:1 >/dev/null
"#;

#[test]
fn docker_compose_brings_up_and_tears_down_an_application() {
    assert!(
        std::path::Path::new("/usr/bin/docker-compose").exists(),
        "docker-compose is missing (tests/setup installs Debian's)"
    );
    let work = tempfile::tempdir().expect("tempdir");
    skiff_tests::host_script(BUSYBOX_IMAGE, work.path());
    let project = work.path().join("project");
    std::fs::create_dir(&project).expect("mkdir");
    std::fs::write(project.join("docker-compose.yml"), COMPOSE_FILE).expect("compose file");
    let port = skiff_tests::free_port();
    let host = std::thread::spawn(move || {
        TestHost::new()
            .timeout(Duration::from_secs(900))
            .mem_mib(2048)
            .forward(port, 2375)
            .sh(skiff_tests::SERVE_DOCKER_API_ON_TCP)
    });
    let story = std::process::Command::new("bash")
        .args(["-c", COMPOSE_STORY, "compose-story", &port.to_string()])
        .arg(work.path().join("share/image.tar"))
        .arg(&project)
        .output()
        .expect("bash");
    let out = host.join().expect("test host thread");
    let stdout = String::from_utf8_lossy(&story.stdout);
    let stderr = String::from_utf8_lossy(&story.stderr);
    let results: BTreeMap<&str, &str> = stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
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
            "{name}\n--- story stdout ---\n{stdout}\n--- story stderr ---\n{stderr}\n{out}"
        );
    }
}
