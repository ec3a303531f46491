//! Which KVM backend serves this host's `/dev/kvm`, and opening it only where guests can run.
//!
//! Some cloud machines expose `/dev/kvm` through the paravirtual PVM backend (`kvm_pvm`). There,
//! guest user code runs natively but guest *kernel* code is emulated thousands of times slower and
//! stock kernels live-lock in timer interrupts: a boot looks like a silent hang. We refuse such a
//! backend up front with a plain explanation instead.

use std::path::{Path, PathBuf};

use kvm_ioctls::Kvm;

/// The environment variable that lets a user boot on the PVM backend anyway.
pub const ALLOW_PVM_ENV: &str = "SKIFF_ALLOW_PVM";

/// The kernel module that provides `/dev/kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmBackend {
    /// Intel VT-x (`kvm_intel`).
    Vmx,
    /// AMD-V (`kvm_amd`).
    Svm,
    /// The paravirtual PVM backend (`kvm_pvm`): guest kernel code runs emulated.
    Pvm,
    /// `/dev/kvm` exists but no known backend module is loaded (e.g. built into the kernel).
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum KvmHostError {
    #[error("{0} does not exist: this host offers no KVM; run skiff on a host with VT-x/AMD-V (or load kvm_intel/kvm_amd)")]
    NoDevice(PathBuf),
    #[error(
        "/dev/kvm here is the paravirtual PVM backend (kvm_pvm): guest kernels run emulated \
         (~4000x slower) and typically hang in timer interrupts. Run skiff on a host with \
         VT-x/AMD-V, or inside the nested test host (tests/testhost/run). \
         Set {ALLOW_PVM_ENV}=1 to try anyway."
    )]
    PvmBackend,
    #[error("cannot open /dev/kvm: {0}")]
    Open(#[source] kvm_ioctls::Error),
}

/// Tells which backend serves `/dev/kvm`, reading loaded modules below `sys_root` (normally `/sys`).
pub fn detect_backend(sys_root: &Path) -> KvmBackend {
    let loaded = |m: &str| sys_root.join("module").join(m).exists();
    if loaded("kvm_pvm") {
        KvmBackend::Pvm
    } else if loaded("kvm_intel") {
        KvmBackend::Vmx
    } else if loaded("kvm_amd") {
        KvmBackend::Svm
    } else {
        KvmBackend::Unknown
    }
}

/// Decides whether guests may be booted on `backend`; `allow_pvm` is the user's explicit override.
pub fn check_backend(backend: KvmBackend, allow_pvm: bool) -> Result<(), KvmHostError> {
    if backend == KvmBackend::Pvm && !allow_pvm {
        return Err(KvmHostError::PvmBackend);
    }
    Ok(())
}

/// Opens `/dev/kvm` after checking that its backend can run guest kernels at native speed.
pub fn open_kvm() -> Result<Kvm, KvmHostError> {
    let dev = Path::new("/dev/kvm");
    if !dev.exists() {
        return Err(KvmHostError::NoDevice(dev.to_path_buf()));
    }
    let backend = detect_backend(Path::new("/sys"));
    let allow_pvm = std::env::var(ALLOW_PVM_ENV).is_ok_and(|v| v == "1");
    check_backend(backend, allow_pvm)?;
    if backend == KvmBackend::Pvm {
        tracing::warn!(
            "booting on the PVM backend because {ALLOW_PVM_ENV}=1: expect guest kernels to crawl"
        );
    }
    Kvm::new().map_err(KvmHostError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway `/sys` with the given modules loaded.
    fn fake_sys(modules: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        for m in modules {
            std::fs::create_dir_all(root.path().join("module").join(m)).expect("mkdir");
        }
        root
    }

    #[test]
    fn pvm_wins_over_hardware_modules() {
        let sys = fake_sys(&["kvm", "kvm_pvm", "kvm_intel"]);
        assert_eq!(detect_backend(sys.path()), KvmBackend::Pvm);
    }

    #[test]
    fn hardware_backends_are_recognised() {
        let intel = fake_sys(&["kvm", "kvm_intel"]);
        assert_eq!(detect_backend(intel.path()), KvmBackend::Vmx);
        let amd = fake_sys(&["kvm", "kvm_amd"]);
        assert_eq!(detect_backend(amd.path()), KvmBackend::Svm);
        let none = fake_sys(&[]);
        assert_eq!(detect_backend(none.path()), KvmBackend::Unknown);
    }

    #[test]
    fn pvm_is_refused_with_a_plain_reason_unless_allowed() {
        let err = check_backend(KvmBackend::Pvm, false).expect_err("PVM must be refused");
        let msg = err.to_string();
        assert!(
            msg.contains("PVM") && msg.contains("emulated") && msg.contains("tests/testhost/run"),
            "{msg}"
        );
        assert!(check_backend(KvmBackend::Pvm, true).is_ok());
        assert!(check_backend(KvmBackend::Svm, false).is_ok());
        assert!(check_backend(KvmBackend::Unknown, false).is_ok());
    }
}
