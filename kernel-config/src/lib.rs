//! The shared microVM guest kernel.
//!
//! `kernel-config/` holds the configuration fragment (`microvm.config`, applied on `tinyconfig`) and
//! `build-kernel`, which builds `vmlinux` and `bzImage` from a kernel source tree into a cache
//! outside the repository, keyed by the hash of the configuration and the source version. This
//! crate tells the rest of skiff where that build lands.
//!
//! The functions take the environment as a lookup (a binary passes `std::env::var_os`): a library
//! does not read the process environment itself.

use std::ffi::OsString;
use std::path::PathBuf;

/// Environment variable naming the guest kernel image explicitly.
pub const KERNEL_ENV: &str = "SKIFF_KERNEL";

/// The directory holding kernel builds: `$SKIFF_KERNEL_CACHE`, else `$XDG_CACHE_HOME/skiff/kernel`,
/// else `~/.cache/skiff/kernel`. Must match `build-kernel`.
pub fn cache_dir(env: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    if let Some(dir) = env("SKIFF_KERNEL_CACHE") {
        return PathBuf::from(dir);
    }
    let base = env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("skiff").join("kernel")
}

/// The guest kernel to boot when the user names none: `$SKIFF_KERNEL`, else the most recent build
/// (`<cache>/vmlinux`, a link `build-kernel` keeps pointing at its latest output).
pub fn default_kernel(env: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    match env(KERNEL_ENV) {
        Some(p) => PathBuf::from(p),
        None => cache_dir(env).join("vmlinux"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |key| {
            vars.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn kernel_lookup_order() {
        let all = [
            ("SKIFF_KERNEL", "/k"),
            ("SKIFF_KERNEL_CACHE", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(default_kernel(&env(&all)), PathBuf::from("/k"));
        assert_eq!(default_kernel(&env(&all[1..])), PathBuf::from("/c/vmlinux"));
        assert_eq!(
            default_kernel(&env(&all[2..])),
            PathBuf::from("/x/skiff/kernel/vmlinux")
        );
        assert_eq!(
            default_kernel(&env(&all[3..])),
            PathBuf::from("/h/.cache/skiff/kernel/vmlinux")
        );
        assert_eq!(
            default_kernel(&env(&[])),
            PathBuf::from("/var/cache/skiff/kernel/vmlinux")
        );
    }
}
