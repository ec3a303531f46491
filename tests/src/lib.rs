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
