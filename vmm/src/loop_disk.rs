//! A file system image mounted as a directory of this VMM alone: attached to a free loop device
//! and mounted in the VMM's private mount namespace. A container's copy-on-write layer kept in
//! such an image can grow no larger than the image (`--storage-opt size=`): the guest gets ENOSPC
//! when it is full, and the host's own file systems are not touched beyond the image's size.
//!
//! The guest never reaches the image's blocks: it asks the VMM's file server for file operations
//! and the host kernel's ext4 does them, so the image holds only what that ext4 wrote itself
//! ([`create`] formats it). The loop device is set to clear itself when its last user goes: when the
//! mount goes with the VMM's namespace, however the VMM ends, the device is free again.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The smallest image [`create`] makes: below it, the file system's own journal and tables
/// would leave a container almost nothing.
pub const MIN_DISK_BYTES: u64 = 16 << 20;
/// The program that formats images (e2fsprogs).
const MKFS: &str = "mkfs.ext4";

const LOOP_CONTROL: &str = "/dev/loop-control";
/// ioctls of `<linux/loop.h>` (plain numbers, not `_IO` encoded).
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// Detach the device when its last user (our mount) closes it.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// Read and write the image with direct I/O where its file system allows it (the kernel falls
/// back to buffered I/O otherwise): the mounted file system's page cache is then the only one.
const LO_FLAGS_DIRECT_IO: u32 = 16;
/// The device's logical block size: what direct I/O on common host file systems needs, and the
/// block size [`create`] formats images with.
const BLOCK_SIZE: u32 = 4096;
/// Another process may take the free device we were told of before we configure it.
const ATTACH_ATTEMPTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("a disk of {bytes} bytes is too small: at least {MIN_DISK_BYTES} bytes (16MiB)")]
    TooSmall { bytes: u64 },
    #[error("cannot create the disk image {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{MKFS} is not installed (it comes with e2fsprogs): it formats disk images")]
    NoMkfs,
    #[error("{MKFS} {path} failed: {message}")]
    Format { path: PathBuf, message: String },
    #[error("cannot open the disk image {path}: {source}")]
    Image {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "no loop devices: {LOOP_CONTROL} is missing; load them with `modprobe loop` \
         (or build the kernel with CONFIG_BLK_DEV_LOOP)"
    )]
    NoLoopControl,
    #[error("cannot get a free loop device from {LOOP_CONTROL}: {0}")]
    LoopControl(#[source] io::Error),
    #[error("cannot attach {image} to {device}: {source}")]
    Attach {
        image: PathBuf,
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("path {0} contains a NUL byte")]
    NulInPath(PathBuf),
    #[error("cannot mount the ext4 image {image} ({device}) on {target}: {source}")]
    Mount {
        image: PathBuf,
        device: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (LOOP_CONFIGURE, Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// Makes `path` (which must not exist) a sparse file of `bytes` (rounded up to whole blocks)
/// holding an empty ext4 file system whose root belongs to root, with no blocks reserved for root
/// (the cap is the cap for every guest user). Only what the file system's metadata needs is
/// allocated on the host until the container writes; [`DiskMount::mount`] mounts it. Refused on
/// a host without loop devices, where it could not be mounted. On failure nothing is left
/// behind.
pub fn create(path: &Path, bytes: u64) -> Result<(), DiskError> {
    if bytes < MIN_DISK_BYTES {
        return Err(DiskError::TooSmall { bytes });
    }
    if !Path::new(LOOP_CONTROL).exists() {
        return Err(DiskError::NoLoopControl);
    }
    let fail = |source| DiskError::Create {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    let formatted = file
        .set_len(bytes.next_multiple_of(u64::from(BLOCK_SIZE)))
        .map_err(fail)
        .and_then(|()| format(path));
    if formatted.is_err() {
        let _ = std::fs::remove_file(path);
    }
    formatted
}

fn format(path: &Path) -> Result<(), DiskError> {
    // Lazy init: mke2fs leaves the inode tables and the journal unwritten (they read as zeros
    // in a fresh sparse file), so the image takes well under a MiB of the host until used.
    let out = std::process::Command::new(MKFS)
        .args(["-q", "-F", "-b", &BLOCK_SIZE.to_string(), "-m", "0"])
        .args([
            "-E",
            "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
        ])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => DiskError::NoMkfs,
            _ => DiskError::Format {
                path: path.to_owned(),
                message: e.to_string(),
            },
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut message = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if message.is_empty() {
        message = out.status.to_string();
    }
    Err(DiskError::Format {
        path: path.to_owned(),
        message,
    })
}

/// An ext4 image mounted on a directory in this thread's mount namespace; unmounted when dropped
/// (and in any case when the namespace ends with the process).
#[derive(Debug)]
pub struct DiskMount {
    target: PathBuf,
}

impl DiskMount {
    /// Attaches `image` to a free loop device and mounts its ext4 file system on `target`
    /// (nosuid, nodev; `discard`, so that what the container deletes is given back to the host:
    /// the image stays sparse). Call it in the VMM's private mount namespace: anywhere else the
    /// mount would be everyone's.
    pub fn mount(image: &Path, target: &Path) -> Result<DiskMount, DiskError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(image)
            .map_err(|source| DiskError::Image {
                path: image.to_owned(),
                source,
            })?;
        // Held open until the mount has the device: then the last close is the unmount's.
        let (_device, device_path) = attach(&file, image)?;
        let source = c_path(&device_path)?;
        let target_c = c_path(target)?;
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target_c.as_ptr(),
                c"ext4".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"discard".as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(DiskError::Mount {
                image: image.to_owned(),
                device: device_path,
                target: target.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        tracing::debug!(
            "{} mounted on {} through {}",
            image.display(),
            target.display(),
            device_path.display()
        );
        Ok(DiskMount {
            target: target.to_owned(),
        })
    }
}

impl Drop for DiskMount {
    fn drop(&mut self) {
        // A jailed VMM may not unmount; its namespace goes with it (and autoclear frees the
        // loop device then).
        if crate::jail::active() {
            return;
        }
        if let Ok(path) = CString::new(self.target.as_os_str().as_bytes()) {
            // SAFETY: umount2 only reads the NUL-terminated path.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
                tracing::warn!(
                    "cannot unmount {}: {}",
                    self.target.display(),
                    io::Error::last_os_error()
                );
            }
        }
    }
}

fn c_path(path: &Path) -> Result<CString, DiskError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| DiskError::NulInPath(path.to_owned()))
}

/// Binds `file` to a free loop device (autoclear, direct I/O where possible); returns the open
/// device and its path.
fn attach(file: &File, image: &Path) -> Result<(File, PathBuf), DiskError> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open(LOOP_CONTROL)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => DiskError::NoLoopControl,
            _ => DiskError::LoopControl(e),
        })?;
    let mut name = [0u8; 64];
    let bytes = image.as_os_str().as_bytes();
    let kept = bytes.len().min(name.len() - 1);
    name[..kept].copy_from_slice(&bytes[..kept]);
    let config = LoopConfig {
        // A descriptor is never negative; the kernel's field is unsigned.
        fd: file.as_raw_fd().unsigned_abs(),
        block_size: BLOCK_SIZE,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO,
            lo_file_name: name,
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        // SAFETY: LOOP_CTL_GET_FREE takes no argument; it returns a device number or -1.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(DiskError::LoopControl(io::Error::last_os_error()));
        }
        let device_path = PathBuf::from(format!("/dev/loop{number}"));
        let fail = |source| DiskError::Attach {
            image: image.to_owned(),
            device: device_path.clone(),
            source,
        };
        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&device_path)
            .map_err(fail)?;
        // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which `config` is and which
        // outlives the call; the descriptors in it and the call's are open.
        let rc = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if rc == 0 {
            return Ok((device, device_path));
        }
        let err = io::Error::last_os_error();
        // EBUSY: taken by someone else meanwhile; ask for another.
        if err.raw_os_error() != Some(libc::EBUSY) || attempt == ATTACH_ATTEMPTS {
            return Err(fail(err));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::rootfs::{Rootfs, RootfsError};

    /// A formatted image of `bytes` in `dir`, or None when this host has no mkfs.ext4.
    fn image_or_skip(dir: &Path, bytes: u64) -> Option<PathBuf> {
        let path = dir.join("rootfs.img");
        match create(&path, bytes) {
            Ok(()) => Some(path),
            Err(e @ (DiskError::NoMkfs | DiskError::NoLoopControl)) => {
                eprintln!("SKIPPED: {e}");
                None
            }
            Err(e) => panic!("create: {e}"),
        }
    }

    /// Bytes the host has allocated to `path`.
    fn allocated(path: &Path) -> u64 {
        std::fs::metadata(path).expect("stat").blocks() * 512
    }

    #[test]
    fn small_sizes_and_existing_files_are_refused_leaving_things_as_they_were() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("disk.img");
        let err = create(&path, MIN_DISK_BYTES - 1).expect_err("too small");
        assert!(err.to_string().contains("at least 16777216 bytes"), "{err}");
        assert!(!path.exists());
        std::fs::write(&path, b"keep").expect("write");
        let err = create(&path, MIN_DISK_BYTES).expect_err("exists");
        assert!(matches!(err, DiskError::Create { .. }), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), b"keep");
    }

    #[test]
    fn a_new_image_is_sparse() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let Some(path) = image_or_skip(tmp.path(), (1 << 30) + 1) else {
            return;
        };
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            (1 << 30) + 4096
        );
        assert!(allocated(&path) < 2 << 20, "{} bytes", allocated(&path));
    }

    /// What a guest can do to a layer in a 32 MiB image: fill it to ENOSPC, no further.
    struct Filled {
        size: u64,
        written: u64,
        error: Option<i32>,
        /// Bytes of the image allocated on the host when full, and after the big file went.
        allocated: (u64, u64),
    }

    /// Prepares the root with the disk on a thread of its own (the mount namespace is the
    /// thread's), runs `work` on the merged tree; None when this host cannot mount.
    fn in_vmm_namespace<T: Send + 'static>(
        layer: &Path,
        upper: &Path,
        image: &Path,
        work: impl FnOnce(&Path) -> T + Send + 'static,
    ) -> Option<T> {
        let (layer, upper, image) = (layer.to_owned(), upper.to_owned(), image.to_owned());
        std::thread::spawn(move || {
            match Rootfs::prepare(&[layer], Some(&upper), Some(&image), None) {
                Ok(rootfs) => Some(work(rootfs.dir())),
                Err(
                    e @ (RootfsError::Unshare(_)
                    | RootfsError::OverlayMissing
                    | RootfsError::Disk(DiskError::NoLoopControl)),
                ) => {
                    eprintln!("SKIPPED: cannot mount here: {e}");
                    None
                }
                Err(e) => panic!("prepare: {e}"),
            }
        })
        .join()
        .expect("the VMM thread")
    }

    #[test]
    fn a_layer_in_a_disk_is_capped_by_it_and_kept_across_mounts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let layer = tmp.path().join("layer");
        std::fs::create_dir(&layer).expect("mkdir");
        std::fs::write(layer.join("from-image"), b"image").expect("write");
        let upper = tmp.path().join("rootfs");
        let Some(image) = image_or_skip(tmp.path(), 32 << 20) else {
            return;
        };
        let image_in = image.clone();
        let filled = in_vmm_namespace(&layer, &upper, &image, move |merged| {
            // SAFETY: statvfs is plain data; all-zero is a valid value to be overwritten.
            let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
            let path = c_path(merged).expect("path");
            // SAFETY: a NUL-terminated path and a statvfs the call fills.
            assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
            std::fs::write(merged.join("kept"), b"data").expect("write");
            let mut big = File::create(merged.join("big")).expect("create");
            let chunk = vec![0x5a_u8; 1 << 20];
            let mut written = 0;
            let error = loop {
                match big.write(&chunk).and_then(|n| big.sync_all().map(|()| n)) {
                    Ok(n) => written += n as u64,
                    Err(e) => break e.raw_os_error(),
                }
                if written > 64 << 20 {
                    break None;
                }
            };
            drop(big);
            let full = allocated(&image_in);
            std::fs::remove_file(merged.join("big")).expect("rm");
            // SAFETY: sync takes no arguments.
            unsafe { libc::sync() };
            // ext4 discards freed blocks on a worker after the commit: give it a moment.
            let mut emptied = allocated(&image_in);
            for _ in 0..100 {
                if emptied < 8 << 20 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
                emptied = allocated(&image_in);
            }
            Filled {
                size: st.f_blocks * st.f_frsize,
                written,
                error,
                allocated: (full, emptied),
            }
        });
        let Some(filled) = filled else { return };
        assert_eq!(filled.error, Some(libc::ENOSPC));
        assert!(
            (20 << 20..32 << 20).contains(&filled.size),
            "statfs shows {} bytes",
            filled.size
        );
        assert!(
            (16 << 20..32 << 20).contains(&filled.written),
            "{} bytes written",
            filled.written
        );
        let (full, emptied) = filled.allocated;
        assert!(
            (16 << 20..=32 << 20).contains(&full),
            "{full} bytes when full"
        );
        assert!(
            emptied < 8 << 20,
            "{emptied} bytes after the delete: discard gives them back"
        );
        // The writes went into the image: the host's directory only held its mount.
        assert!(!upper.join("upper").exists());
        let kept = in_vmm_namespace(&layer, &upper, &image, |merged| {
            let read = |name: &str| std::fs::read(merged.join(name)).expect("read");
            (read("kept"), read("from-image"))
        });
        assert_eq!(kept, Some((b"data".to_vec(), b"image".to_vec())));
    }

    #[test]
    fn a_disk_needs_an_upper_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = Rootfs::prepare(
            &[tmp.path().to_owned()],
            None,
            Some(&tmp.path().join("x.img")),
            None,
        )
        .expect_err("refused");
        assert!(matches!(err, RootfsError::DiskNeedsUpper), "{err}");
    }
}
