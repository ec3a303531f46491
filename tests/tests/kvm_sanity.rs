//! Real KVM in the test host runs 64-bit guest code at CPL0: the `kvm-sanity` payload (see
//! src/bin/kvm-sanity.rs) enters long mode, writes to an I/O port and halts. (That this KVM is AMD
//! SVM, not this machine's PVM backend, testhost_run checks.)

use skiff_tests::testhost;

#[test]
fn long_mode_guest_writes_a_port_and_halts_under_test_host_kvm() {
    let out = testhost::run(&["kvm-sanity"]);
    out.assert_success();
    let lines: Vec<&str> = out.lines_with_prefix("kvm-sanity: ").collect();
    assert_eq!(
        lines.get(1..),
        Some(
            &[
                "io_out port=0xe9 data=67452301",
                "io_out port=0xe9 data=21",
                "hlt rax=0x1234521 rip=0x8017 long_mode=true",
                "PASS",
            ][..]
        ),
        "{out}"
    );
    assert!(lines[0].starts_with("api_version="), "{out}");
}
