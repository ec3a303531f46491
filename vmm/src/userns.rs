//! Running unprivileged: a VMM started by a user other than root enters a user namespace of its
//! own in which that user is root, so that the mounts the root file system needs (the private
//! mount namespace and the overlay, see [`crate::rootfs`]) are allowed, as the kernel allows them
//! to any user in a user namespace it owns (overlayfs since Linux 5.11). Nothing changes outside:
//! files the VMM creates belong to the user, other users' files show as the overflow uid (65534),
//! and /dev/kvm stays open to whoever could open it before (the user's groups are kept).

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error(
        "cannot make a user namespace to run unprivileged (unprivileged user namespaces may be \
         disabled: kernel.unprivileged_userns_clone or user.max_user_namespaces): {0}"
    )]
    Unshare(#[source] io::Error),
    #[error("cannot write {file} of the new user namespace: {source}")]
    Map {
        file: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Enters a new user namespace mapping the caller's uid and gid to 0, when the caller is not
/// root already (then nothing happens); false when nothing was done. It must run before the
/// process starts a thread: the kernel refuses a user namespace to a multithreaded process.
pub fn enter_unless_root() -> Result<bool, UsernsError> {
    // SAFETY: getters without arguments.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 {
        return Ok(false);
    }
    // SAFETY: unshare takes no pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return Err(UsernsError::Unshare(io::Error::last_os_error()));
    }
    // setgroups must be denied before an unprivileged process may write its gid_map.
    for (file, text) in [
        ("/proc/self/setgroups", "deny".to_string()),
        ("/proc/self/uid_map", format!("0 {uid} 1")),
        ("/proc/self/gid_map", format!("0 {gid} 1")),
    ] {
        std::fs::write(file, text).map_err(|source| UsernsError::Map { file, source })?;
    }
    Ok(true)
}
