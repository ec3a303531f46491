//! Facts about the host that `/version` and `/info` report, read once at startup.

use std::ffi::CStr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// `uname -r`.
    pub kernel_version: String,
    /// `uname -m` (`x86_64`), as `/info` reports it.
    pub machine: String,
    /// `uname -n`.
    pub hostname: String,
    pub ncpu: usize,
    /// Bytes of RAM.
    pub mem_total: u64,
}

impl HostFacts {
    pub fn read() -> HostFacts {
        // SAFETY: utsname is plain old data; all-zero bytes are a valid value.
        let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `uts` is a valid, writable utsname for the duration of the call.
        let uname_ok = unsafe { libc::uname(&mut uts) } == 0;
        let field = |f: &[libc::c_char]| -> String {
            if !uname_ok {
                return String::new();
            }
            // SAFETY: on success uname NUL-terminates every field within its array.
            unsafe { CStr::from_ptr(f.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        };
        // SAFETY: sysinfo is plain old data; all-zero bytes are a valid value.
        let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
        // SAFETY: `si` is a valid, writable sysinfo for the duration of the call.
        let mem_total = if unsafe { libc::sysinfo(&mut si) } == 0 {
            si.totalram.saturating_mul(u64::from(si.mem_unit))
        } else {
            0
        };
        HostFacts {
            kernel_version: field(&uts.release),
            machine: field(&uts.machine),
            hostname: field(&uts.nodename),
            ncpu: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_total,
        }
    }

    /// Go's name for the architecture (`amd64`), as `/version` reports it.
    pub fn go_arch(&self) -> &str {
        match self.machine.as_str() {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "i686" | "i386" => "386",
            other => other,
        }
    }
}
