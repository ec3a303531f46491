//! The per-run directory `$SKIFF_ROOT/run/<id>`: the VM's spec, the VMM's vsock sockets and the
//! container's copy-on-write upper layer live there, and it is removed when the run ends.

use anyhow::Context;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Unix socket paths longer than this do not fit `sockaddr_un`.
const MAX_SOCKET_PATH: usize = 107;

/// `bytes` random bytes from /dev/urandom as lower-case hex (run IDs, container and exec IDs).
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A fresh random run id: 12 hex digits.
pub fn new_id() -> anyhow::Result<String> {
    random_hex(6).context("reading /dev/urandom for a run id")
}

/// A run directory, removed (with everything in it) on drop.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `<root>/run/<id>` (mode 0700) and its `rootfs/` upper directory.
    pub fn create(root: &Path, id: &str) -> anyhow::Result<RunDir> {
        let runs = root.join("run");
        std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        let path = runs.join(id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating run directory {}", path.display()))?;
        let dir = RunDir { path };
        std::fs::create_dir(dir.upper())
            .with_context(|| format!("creating {}", dir.upper().display()))?;
        let longest = dir.control_socket();
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            anyhow::bail!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter SKIFF_ROOT",
                longest.display()
            );
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container's copy-on-write upper layer.
    pub fn upper(&self) -> PathBuf {
        self.path.join("rootfs")
    }

    /// The VM's spec as handed to the VMM (JSON).
    pub fn vm_spec(&self) -> PathBuf {
        self.path.join("vm.json")
    }

    /// The VMM's vsock Unix socket; host→guest connections go here.
    pub fn vsock_socket(&self) -> PathBuf {
        self.path.join("vsock.sock")
    }

    /// The jailed VMM's `/` (empty here: the VMM mounts its own tmpfs on it).
    pub fn jail(&self) -> PathBuf {
        self.path.join("jail")
    }

    /// Where guest-init's control connection (guest→host port 1024) arrives.
    pub fn control_socket(&self) -> PathBuf {
        let port = skiff_protocol::CONTROL_PORT;
        self.path.join(format!("vsock.sock_{port}"))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let mut result = std::fs::remove_dir_all(&self.path);
        if result
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
        {
            // Unprivileged, the overlay's scratch directory (`rootfs/work/work`) is ours but left
            // with mode 000 by overlayfs: open up our own directories and try again.
            open_up(&self.path);
            result = std::fs::remove_dir_all(&self.path);
        }
        if let Err(e) = result {
            tracing::warn!("cannot remove run directory {}: {e}", self.path.display());
        }
    }
}

/// Gives the owner full access to `dir` and every directory below it (symlinks not followed).
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            open_up(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_dir_with_a_closed_directory_is_removed() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = RunDir::create(root.path(), "closed").unwrap();
        let work = dir.upper().join("work/work");
        std::fs::create_dir_all(work.join("inner")).unwrap();
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o000)).unwrap();
        let path = dir.path().to_path_buf();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn run_dir_is_created_with_upper_and_removed_on_drop() {
        let root = std::env::temp_dir().join(format!("skiff-rundir-test-{}", std::process::id()));
        let id = new_id().unwrap();
        assert_eq!(id.len(), 12);
        let dir = RunDir::create(&root, &id).unwrap();
        let path = dir.path().to_path_buf();
        assert!(dir.upper().is_dir());
        assert_eq!(dir.control_socket(), path.join("vsock.sock_1024"));
        std::fs::write(dir.upper().join("f"), b"x").unwrap();
        assert!(
            RunDir::create(&root, &id).is_err(),
            "ids must not be reused"
        );
        drop(dir);
        assert!(!path.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn overlong_socket_path_is_refused() {
        let root = std::env::temp_dir().join("x".repeat(100));
        let err = RunDir::create(&root, "abc").unwrap_err();
        assert!(err.to_string().contains("longer than 107 bytes"), "{err}");
        assert!(!root.join("run").join("abc").exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
