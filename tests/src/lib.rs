//! Integration and end-to-end tests for skiff, and the helpers they share.
//!
//! Tests that need real KVM run their payload inside the nested test host (`tests/testhost/run`,
//! wrapped by [`testhost`]): the host's own /dev/kvm is a paravirtual backend on which guest
//! kernels run emulated.

pub mod testhost;

/// Runs the bash `script` on this host with `dir` as `$1` (e.g. to build a test image into it
/// with umoci and skopeo); panics with its stderr when it fails.
pub fn host_script(script: &str, dir: &std::path::Path) {
    let out = std::process::Command::new("bash")
        .args(["-c", script, "host-script"])
        .arg(dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "host script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free TCP port on the host's loopback (bound, read, released), e.g. for `TestHost::forward`.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// In the test host: skiffd on tcp (its loud warning is expected), until `finish` exists.
pub const SERVE_DOCKER_API_ON_TCP: &str = r#"
export SKIFF_ROOT=/run/skiff
mkdir -p $SKIFF_ROOT
/skiff/bin/skiffd --root $SKIFF_ROOT -H tcp://0.0.0.0:2375 2>/tmp/skiffd.log &
for i in $(seq 3000); do
    wget -q -O /dev/null http://127.0.0.1:2375/containers/finish/json 2>/dev/null && break
    sleep 0.5
done
kill %1
wait
grep -q 'PLAIN TCP' /tmp/skiffd.log && echo warned=yes
"#;
