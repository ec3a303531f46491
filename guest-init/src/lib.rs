//! guest-init: the static PID 1 of every skiff microVM.
//!
//! It mounts the pseudo file systems, applies the container spec, runs the container process with
//! its stdio carried over vsock, forwards signals, reaps zombies, reports the exit status and powers
//! the VM off. The library half holds the host<->guest control protocol shared with the host side,
//! and the process runner, which also works outside a VM (over any stream) so it can be tested.

pub mod exec_sessions;
pub mod process;
pub mod protocol;
pub mod reaper;
pub mod session;
pub mod system;
pub mod vsock;
