//! The in-memory initramfs: a `newc` cpio archive holding guest-init as `/init`.
//!
//! The kernel unpacks it into its rootfs before running `/init`, so guest-init needs no place in
//! the container image. Uncompressed on purpose: unpacking costs the guest nothing but a copy.

use std::io;
use std::path::Path;

/// `newc` cpio magic.
const MAGIC: &[u8] = b"070701";
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// A cpio archive under construction. Entries keep their insertion order; parents must come
/// before their children, as the kernel creates them in order.
pub struct Initramfs {
    data: Vec<u8>,
    next_ino: u32,
}

impl Default for Initramfs {
    fn default() -> Self {
        Self::new()
    }
}

impl Initramfs {
    pub fn new() -> Self {
        Initramfs {
            data: Vec::new(),
            next_ino: 1,
        }
    }

    /// The archive skiff boots with: `/init` (the given binary, mode 0755), the mount points
    /// guest-init uses, and `/dev/console` so the kernel can open stdio for `/init`.
    pub fn with_init(init: &[u8]) -> Self {
        let mut cpio = Initramfs::new();
        for dir in ["dev", "proc", "sys", "newroot"] {
            cpio.dir(dir, 0o755);
        }
        cpio.char_device("dev/console", 0o600, 5, 1);
        cpio.file("init", 0o755, init);
        cpio
    }

    /// Reads the init binary at `path` and builds [`Initramfs::with_init`] around it.
    pub fn from_init_file(path: &Path) -> io::Result<Self> {
        Ok(Self::with_init(&std::fs::read(path)?))
    }

    pub fn dir(&mut self, name: &str, perm: u32) -> &mut Self {
        self.entry(name, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])
    }

    pub fn file(&mut self, name: &str, perm: u32, contents: &[u8]) -> &mut Self {
        self.entry(name, S_IFREG | (perm & 0o7777), 1, (0, 0), contents)
    }

    pub fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> &mut Self {
        self.entry(name, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        contents: &[u8],
    ) -> &mut Self {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(ino, mode, nlink, contents.len(), rdev, name);
        self.data.extend_from_slice(contents);
        self.pad4();
        self
    }

    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: usize,
        rdev: (u32, u32),
        name: &str,
    ) {
        use std::io::Write;
        self.data.reserve(110 + name.len() + size + 8);
        self.data.extend_from_slice(MAGIC);
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            size as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        for f in fields {
            // Writing to a Vec cannot fail.
            let _ = write!(self.data, "{f:08x}");
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad4();
    }

    fn pad4(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    /// Closes the archive and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.header(0, 0, 1, 0, (0, 0), "TRAILER!!!");
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed `newc` entry: (name, mode, rdev major, rdev minor, contents).
    type Entry = (String, u32, u32, u32, Vec<u8>);

    /// An independent reader of the format, so the test checks bytes against the spec.
    fn parse(mut data: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let start_len = data.len();
        loop {
            assert_eq!((start_len - data.len()) % 4, 0, "entry not 4-byte aligned");
            assert_eq!(&data[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&data[6 + i * 8..14 + i * 8]).unwrap(),
                    16,
                )
                .unwrap()
            };
            let (mode, size, rmaj, rmin, namesize) = (
                field(1),
                field(6) as usize,
                field(9),
                field(10),
                field(11) as usize,
            );
            let name = std::str::from_utf8(&data[110..110 + namesize - 1])
                .unwrap()
                .to_owned();
            assert_eq!(data[110 + namesize - 1], 0);
            let body = (110 + namesize).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                assert_eq!(data.len(), body, "bytes after the trailer");
                return out;
            }
            out.push((name, mode, rmaj, rmin, data[body..body + size].to_vec()));
            data = &data[(body + size).div_ceil(4) * 4..];
        }
    }

    #[test]
    fn init_archive_holds_init_dirs_and_console() {
        let bytes = Initramfs::with_init(b"\x7fELF-ish binary").finish();
        let entries = parse(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "proc", "sys", "newroot", "dev/console", "init"]
        );
        let init = &entries[5];
        assert_eq!(init.1, 0o100755);
        assert_eq!(init.4, b"\x7fELF-ish binary");
        let console = &entries[4];
        assert_eq!((console.1, console.2, console.3), (0o020600, 5, 1));
        assert_eq!(entries[0].1, 0o040755);
    }

    #[test]
    fn gnu_cpio_lists_and_extracts_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let mut cpio = Initramfs::new();
        cpio.dir("etc", 0o755)
            .file("etc/odd-length", 0o644, b"12345")
            .file("init", 0o755, b"#!/bin/sh\n");
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, cpio.finish()).unwrap();
        let Ok(out) = std::process::Command::new("cpio")
            .arg("-itv")
            .stdin(std::fs::File::open(&archive).unwrap())
            .output()
        else {
            eprintln!("cpio(1) not installed; skipping the cross-check");
            return;
        };
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            listing.contains("etc/odd-length") && listing.contains("-rwxr-xr-x"),
            "{listing}"
        );
        let extract = dir.path().join("x");
        std::fs::create_dir(&extract).unwrap();
        let st = std::process::Command::new("cpio")
            .args(["-id", "--quiet"])
            .current_dir(&extract)
            .stdin(std::fs::File::open(&archive).unwrap())
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            std::fs::read(extract.join("etc/odd-length")).unwrap(),
            b"12345"
        );
    }
}
