//! skiff's settings, read once at a binary's edge and passed down: nothing below a binary's
//! `main` reads the process environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use skiff_images::{ImageService, StoreConfig};

use crate::engine::network::NetworkConfig;
use crate::jail::JailIds;

/// State directory when `$SKIFF_ROOT` is unset.
pub const DEFAULT_ROOT: &str = "/var/lib/skiff";
/// Time from starting the VMM to guest-init's connection when `$SKIFF_BOOT_TIMEOUT` is unset.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where skiff keeps its state and finds what it boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// State: the image store (`images/`) and one directory per running container (`run/`).
    /// `$SKIFF_ROOT`, default [`DEFAULT_ROOT`].
    pub root: PathBuf,
    /// The guest kernel: `$SKIFF_KERNEL`, else the newest `build-kernel` output.
    pub kernel: PathBuf,
    /// The `skiff-vmm` binary: `$SKIFF_VMM` (as given: a bare name is looked up in `PATH`), else
    /// the one next to the running executable.
    pub vmm: PathBuf,
    /// guest-init, packed into each VM's initramfs: `$SKIFF_INIT`, else `skiff-init` next to
    /// the running executable.
    pub init: PathBuf,
    /// How long guest-init gets to connect after the VMM starts (`$SKIFF_BOOT_TIMEOUT` seconds).
    pub boot_timeout: Duration,
    /// Where the guest console goes, for debugging (`$SKIFF_CONSOLE`); discarded when unset.
    pub console: Option<PathBuf>,
    /// The image store's caps and registry timeouts (`$SKIFF_UNPACK_*`, `$SKIFF_IMAGE_*`,
    /// `$SKIFF_REGISTRY_*`; see `StoreConfig::from_env`).
    pub images: StoreConfig,
    /// The default bridge network (skiffd's `--bridge-subnet`, the host's name servers).
    pub network: NetworkConfig,
    /// The parent of the VMs' cgroups (`$SKIFF_CGROUP_ROOT`; `off` for none). Default
    /// [`crate::cgroup::DEFAULT_ROOT`] for root on a cgroup v2 host, else none (an unprivileged
    /// user cannot make cgroups unless one was delegated to them: name it then).
    pub cgroup_root: Option<PathBuf>,
    /// The uids VMMs are jailed as (`$SKIFF_JAIL_IDS`, `FIRST:COUNT`, 65536 a VMM; `off` for no
    /// jail).
    /// Default [`crate::jail::DEFAULT_IDS`] for root, none otherwise (an unprivileged user's
    /// VMM runs in a user namespace of its own instead). A malformed value is kept as its
    /// error, which starting a VM reports.
    pub jail: Result<Option<JailIds>, String>,
}

impl Config {
    /// The settings from `env` (a binary passes `std::env::var_os`); helper binaries that `env`
    /// does not name are expected in `exe_dir`. Relative paths are made absolute here, against
    /// the current directory, since the VMM's spec takes only absolute ones. Nothing is checked
    /// for existence: commands that do not run containers must work without a kernel.
    pub fn from_env(env: &dyn Fn(&str) -> Option<OsString>, exe_dir: &Path) -> Config {
        let path = |key: &str| env(key).map(|value| absolute(PathBuf::from(value)));
        Config {
            root: path("SKIFF_ROOT").unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
            kernel: absolute(skiff_kernel_config::default_kernel(env)),
            vmm: env("SKIFF_VMM").map_or_else(|| exe_dir.join("skiff-vmm"), PathBuf::from),
            init: path("SKIFF_INIT").unwrap_or_else(|| exe_dir.join("skiff-init")),
            boot_timeout: env("SKIFF_BOOT_TIMEOUT")
                .and_then(|s| s.to_str()?.parse().ok())
                .map_or(DEFAULT_BOOT_TIMEOUT, Duration::from_secs),
            console: path("SKIFF_CONSOLE"),
            images: StoreConfig::from_env(env),
            network: NetworkConfig::default(),
            cgroup_root: match env("SKIFF_CGROUP_ROOT") {
                Some(v) if v.is_empty() || v == "off" || v == "none" => None,
                Some(v) => Some(absolute(PathBuf::from(v))),
                // SAFETY: geteuid only reads the process's effective user ID.
                None if unsafe { libc::geteuid() } == 0 && crate::cgroup::v2_mounted() => {
                    Some(PathBuf::from(crate::cgroup::DEFAULT_ROOT))
                }
                None => None,
            },
            jail: match env("SKIFF_JAIL_IDS") {
                Some(v) if v.is_empty() || v == "off" || v == "none" => Ok(None),
                Some(v) => JailIds::parse(&v.to_string_lossy()).map(Some),
                // SAFETY: geteuid only reads the process's effective user ID.
                None if unsafe { libc::geteuid() } == 0 => Ok(Some(crate::jail::DEFAULT_IDS)),
                None => Ok(None),
            },
        }
    }

    /// The image store under the state root.
    pub fn images(&self) -> anyhow::Result<ImageService> {
        ImageService::open_with(&self.root.join("images"), self.images)
            .context("cannot open the image store (set SKIFF_ROOT to use another root)")
    }

    /// A uid for one VMM's jail, leased from [`Config::jail`]'s range under the state root;
    /// none when the jail is off. Held until the VMM has inherited the lock.
    pub fn jail_lease(&self) -> anyhow::Result<Option<crate::jail::JailLease>> {
        let Some(ids) = self.jail.clone().map_err(anyhow::Error::msg)? else {
            return Ok(None);
        };
        let lease = ids
            .lease(&self.root)
            .context("leasing a uid for the VMM's jail")?;
        Ok(Some(lease))
    }

    /// Fails with a hint when a file every run needs is missing.
    pub fn check_run_files(&self) -> anyhow::Result<()> {
        let needed = [
            (
                &self.kernel,
                "guest kernel",
                "set SKIFF_KERNEL or build it with kernel-config/build-kernel",
            ),
            (
                &self.init,
                "skiff-init",
                "install it next to skiff or set SKIFF_INIT",
            ),
        ];
        for (path, what, hint) in needed {
            if !path.is_file() {
                anyhow::bail!("{what} not found at {} ({hint})", path.display());
            }
        }
        Ok(())
    }
}

/// `path` made absolute against the current directory; as it is when that cannot be done (an
/// empty path: the VM spec's validation then names it).
fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        let env = |key: &str| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| OsString::from(v))
        };
        Config::from_env(&env, Path::new("/opt/skiff/bin"))
    }

    #[test]
    fn defaults() {
        let c = config(&[("HOME", "/home/u")]);
        assert_eq!(c.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(
            c.kernel,
            PathBuf::from("/home/u/.cache/skiff/kernel/vmlinux")
        );
        assert_eq!(c.vmm, PathBuf::from("/opt/skiff/bin/skiff-vmm"));
        assert_eq!(c.init, PathBuf::from("/opt/skiff/bin/skiff-init"));
        assert_eq!(c.boot_timeout, DEFAULT_BOOT_TIMEOUT);
        assert_eq!(c.console, None);
    }

    #[test]
    fn environment_overrides() {
        let cwd = std::env::current_dir().unwrap();
        let c = config(&[
            ("SKIFF_ROOT", "/srv/skiff"),
            ("SKIFF_KERNEL", "vmlinux"),
            ("SKIFF_VMM", "skiff-vmm"),
            ("SKIFF_INIT", "/x/init"),
            ("SKIFF_BOOT_TIMEOUT", "7"),
            ("SKIFF_CONSOLE", "console.log"),
            ("SKIFF_CGROUP_ROOT", "/sys/fs/cgroup/vms"),
        ]);
        assert_eq!(c.root, PathBuf::from("/srv/skiff"));
        assert_eq!(c.kernel, cwd.join("vmlinux"));
        assert_eq!(
            c.vmm,
            PathBuf::from("skiff-vmm"),
            "left for the PATH lookup"
        );
        assert_eq!(c.init, PathBuf::from("/x/init"));
        assert_eq!(c.boot_timeout, Duration::from_secs(7));
        assert_eq!(c.cgroup_root, Some(PathBuf::from("/sys/fs/cgroup/vms")));
        assert_eq!(config(&[("SKIFF_CGROUP_ROOT", "off")]).cgroup_root, None);
        assert_eq!(config(&[("SKIFF_JAIL_IDS", "off")]).jail, Ok(None));
        let ids = crate::jail::JailIds {
            first: 70_000,
            count: 131_072,
        };
        assert_eq!(
            config(&[("SKIFF_JAIL_IDS", "70000:131072")]).jail,
            Ok(Some(ids))
        );
        let bad = config(&[("SKIFF_JAIL_IDS", "70000")]).jail.unwrap_err();
        assert!(bad.starts_with("SKIFF_JAIL_IDS: want FIRST:COUNT"), "{bad}");
        assert_eq!(c.console, Some(cwd.join("console.log")));
        let c = config(&[("SKIFF_BOOT_TIMEOUT", "soon")]);
        assert_eq!(c.boot_timeout, DEFAULT_BOOT_TIMEOUT);
    }

    #[test]
    fn missing_run_files_are_named_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(&[]);
        c.kernel = dir.path().join("vmlinux");
        c.init = dir.path().join("skiff-init");
        let err = c.check_run_files().unwrap_err().to_string();
        assert!(err.starts_with("guest kernel not found at"), "{err}");
        assert!(err.contains("SKIFF_KERNEL"), "{err}");
        std::fs::write(&c.kernel, b"k").unwrap();
        let err = c.check_run_files().unwrap_err().to_string();
        assert!(
            err.contains("skiff-init not found") && err.contains("SKIFF_INIT"),
            "{err}"
        );
        std::fs::write(&c.init, b"i").unwrap();
        assert!(c.check_run_files().is_ok());
    }
}
