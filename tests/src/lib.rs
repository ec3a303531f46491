//! Integration and end-to-end tests for skiff, and the helpers they share.
//!
//! Tests that need real KVM run their payload inside the nested test host (`tests/testhost/run`,
//! wrapped by [`testhost`]): the host's own /dev/kvm is a paravirtual backend on which guest
//! kernels run emulated.

pub mod testhost;
