//! The shared microVM guest kernel.
//!
//! `kernel-config/` holds the configuration fragment (`microvm.config`, applied on `tinyconfig`) and
//! `build-kernel`, which builds `vmlinux` and `bzImage` from a kernel source tree into a cache
//! outside the repository, keyed by the hash of the configuration and the source version. This
//! crate tells the rest of skiff where that build lands.

use std::path::PathBuf;

/// Environment variable naming the guest kernel image explicitly.
pub const KERNEL_ENV: &str = "SKIFF_KERNEL";

/// The directory holding kernel builds: `$SKIFF_KERNEL_CACHE`, else `$XDG_CACHE_HOME/skiff/kernel`,
/// else `~/.cache/skiff/kernel`. Must match `build-kernel`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SKIFF_KERNEL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("skiff").join("kernel")
}

/// The guest kernel to boot when the user names none: `$SKIFF_KERNEL`, else the most recent build
/// (`<cache>/vmlinux`, a link `build-kernel` keeps pointing at its latest output).
pub fn default_kernel() -> PathBuf {
    match std::env::var_os(KERNEL_ENV) {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join("vmlinux"),
    }
}
