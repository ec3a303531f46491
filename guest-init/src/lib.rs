//! guest-init: the static PID 1 of every skiff microVM.
//!
//! It mounts the pseudo file systems, applies the container spec, runs the container process with
//! its stdio carried over vsock, forwards signals, reaps zombies, reports the exit status and powers
//! the VM off. The library half holds the process runner, which also works outside a VM (over any
//! stream) so it can be tested. The host<->guest control protocol lives in its own crate,
//! `skiff-protocol` (`guest-init/protocol/`), so the host does not depend on PID 1.

pub mod cgroup;
pub mod copy_up;
pub mod etc_files;
pub mod exec_sessions;
pub mod network;
pub mod process;
pub mod processes;
/// The host<->guest protocol, under the name guest-init's modules have always used for it.
pub use skiff_protocol as protocol;
pub mod reaper;
pub mod session;
pub mod system;
pub mod volumes;
pub mod vsock;
