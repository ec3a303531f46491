//! The real `skiff-vmm` on this machine's real `/dev/kvm`: on a paravirtual PVM backend it must
//! refuse at once with a plain explanation, never start a guest that would crawl or hang.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs skiff-vmm on a stand-in kernel file; kills it (and fails) if it does not end on its own.
fn run_vmm_on_this_host() -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"not a kernel").expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff-vmm"))
        .arg("--kernel")
        .arg(&kernel)
        .env_remove("SKIFF_ALLOW_PVM")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn skiff-vmm");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("skiff-vmm did not end on its own: it must never hang silently");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().expect("output");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pvm_backend_is_refused_with_an_explanation() {
    let (code, stderr) = run_vmm_on_this_host();
    assert_eq!(code, 1, "stderr: {stderr}");
    if Path::new("/sys/module/kvm_pvm").exists() {
        for needle in ["PVM", "emulated", "tests/testhost/run", "SKIFF_ALLOW_PVM=1"] {
            assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
        }
    } else {
        // A hardware backend: the stand-in kernel is what fails, and PVM is never blamed.
        assert!(!stderr.contains("PVM"), "{stderr}");
    }
}
