//! The container's own mounts, made before its main process starts: volumes (virtio-fs shares
//! the VMM serves, read-only ones refused writes by the VMM too) and tmpfs mounts.

use std::ffi::CString;

use crate::protocol::{GuestMount, MountSource};
use crate::system::{mount, SystemError};

/// Docker's flags for a tmpfs mount: no devices, no set-user-ID programs.
const TMPFS_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

fn invalid(what: String, why: &str) -> SystemError {
    SystemError {
        what,
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned()),
    }
}

fn c_string(what: &str, text: &str) -> Result<CString, SystemError> {
    CString::new(text).map_err(|_| invalid(format!("{what} {text:?}"), "contains a NUL byte"))
}

/// Mounts each of `mounts` in order, creating its target directory.
pub fn mount_all(mounts: &[GuestMount]) -> Result<(), SystemError> {
    for m in mounts {
        if !m.target.starts_with('/') {
            return Err(invalid(
                format!("mount target {:?}", m.target),
                "not an absolute path",
            ));
        }
        std::fs::create_dir_all(&m.target).map_err(|source| SystemError {
            what: format!("creating mount point {}", m.target),
            source,
        })?;
        let target = c_string("mount target", &m.target)?;
        let read_only = if m.read_only { libc::MS_RDONLY } else { 0 };
        match &m.source {
            MountSource::Share { tag } => {
                let tag = c_string("share tag", tag)?;
                // The image's directory, still reachable once the volume covers it.
                let image_dir = if m.copy_up {
                    Some(
                        std::fs::File::open(&m.target).map_err(|source| SystemError {
                            what: format!("opening {} for the volume's first copy", m.target),
                            source,
                        })?,
                    )
                } else {
                    None
                };
                mount(&tag, &target, c"virtiofs", read_only, c"")?;
                if let Some(dir) = image_dir {
                    fill_new_volume(&dir, &m.target)?;
                }
            }
            MountSource::Tmpfs { options } => {
                let options = c_string("tmpfs options", options)?;
                mount(
                    c"tmpfs",
                    &target,
                    c"tmpfs",
                    TMPFS_FLAGS | read_only,
                    &options,
                )?;
            }
        }
    }
    Ok(())
}

/// Copies the image's files into the volume now mounted at `target` when it is empty.
fn fill_new_volume(image_dir: &std::fs::File, target: &str) -> Result<(), SystemError> {
    use std::os::fd::AsRawFd;
    let fail = |source| SystemError {
        what: format!("copying the image's files into the volume at {target}"),
        source,
    };
    let volume = std::path::Path::new(target);
    if !crate::copy_up::is_empty(volume).map_err(fail)? {
        return Ok(());
    }
    let from = format!("/proc/self/fd/{}", image_dir.as_raw_fd());
    crate::copy_up::copy_tree(std::path::Path::new(&from), volume).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_targets_are_refused_before_anything_is_mounted() {
        let relative = GuestMount {
            source: MountSource::Share { tag: "vol0".into() },
            target: "data".into(),
            read_only: false,
            copy_up: false,
        };
        let err = mount_all(&[relative]).unwrap_err().to_string();
        assert_eq!(err, "mount target \"data\": not an absolute path");
        let nul = GuestMount {
            source: MountSource::Tmpfs {
                options: "size=1m".into(),
            },
            target: "/tmp/skiff-volume-test\0x".into(),
            read_only: false,
            copy_up: false,
        };
        assert!(mount_all(&[nul]).is_err());
    }
}
