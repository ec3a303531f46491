//! The container's root tree: read-only image layers under a per-container copy-on-write upper
//! layer, merged by a host overlayfs mount that only this VMM can see.
//!
//! The mount lives in a private mount namespace of the VMM (unshare(CLONE_NEWNS)): nobody else
//! sees it and the kernel tears it down when the process ends, however it ends. A mount namespace
//! belongs to a thread and the threads it starts afterwards, so `Rootfs::prepare` must run on the
//! thread that later starts the vCPUs and device workers, before it starts them.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::jail::idmap::UserNamespace;
use crate::loop_disk::{DiskError, DiskMount};

/// Kernel limit on the mount option string (one page).
const MAX_MOUNT_OPTIONS: usize = 4095;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("no root filesystem layer given")]
    NoLayers,
    #[error("{count} layers need a copy-on-write upper directory (--rootfs-upper) to be merged")]
    LayersNeedUpper { count: usize },
    #[error("an upper disk image needs the upper directory (--rootfs-upper) it is mounted on")]
    DiskNeedsUpper,
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("root filesystem layer {path}: {source}")]
    Layer {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("root filesystem layer {0} is not a directory")]
    LayerNotADirectory(PathBuf),
    #[error("path {0} contains a NUL byte")]
    NulInPath(PathBuf),
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot make a private mount namespace (needs root / CAP_SYS_ADMIN): {0}")]
    Unshare(#[source] io::Error),
    #[error("cannot make the mounts of the private namespace private: {0}")]
    MakePrivate(#[source] io::Error),
    #[error(
        "overlayfs is not available in this kernel: load it with `modprobe overlay` \
         (or build the kernel with CONFIG_OVERLAY_FS)"
    )]
    OverlayMissing,
    #[error("too many or too long layer paths: the overlay options take {0} bytes, the kernel accepts {MAX_MOUNT_OPTIONS}")]
    OptionsTooLong(usize),
    #[error("cannot make {path} read-only for the VM ({step}): {source}")]
    BindReadOnly {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot idmap {path} for the jail's user namespace: {source}")]
    Idmap {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount the overlay on {merged} (options {options}): {source}")]
    Mount {
        merged: PathBuf,
        options: String,
        #[source]
        source: io::Error,
    },
}

/// The tree a container runs in, ready to be served as its root.
#[derive(Debug)]
pub struct Rootfs {
    dir: PathBuf,
    /// Whether `dir` is our overlay mount (and so ours to unmount).
    mounted: bool,
    /// The upper disk image's mount, unmounted after the overlay (field drop order).
    _disk: Option<DiskMount>,
}

impl Rootfs {
    /// Merges `layers` (top-most first) under `upper`, which receives every change the container
    /// makes (in `upper/upper`, with overlayfs' scratch space in `upper/work`, merged view in
    /// `upper/merged`). The layers themselves are never written. Without `upper`, a single layer is
    /// used as it is, read-write (tests and debugging).
    ///
    /// With `upper_disk` (an ext4 image), the image is mounted on `upper` first and the three
    /// directories live in it: the image's size caps what the container can write.
    ///
    /// With `idmap` (a jailed VMM's user namespace; its private mount namespace exists), the
    /// layers and `upper` are idmapped mounts of it, and the overlay is mounted as its 0.
    pub fn prepare(
        layers: &[PathBuf],
        upper: Option<&Path>,
        upper_disk: Option<&Path>,
        idmap: Option<&UserNamespace>,
    ) -> Result<Rootfs, RootfsError> {
        if layers.is_empty() {
            return Err(RootfsError::NoLayers);
        }
        for layer in layers {
            let meta = std::fs::metadata(layer).map_err(|source| RootfsError::Layer {
                path: layer.clone(),
                source,
            })?;
            if !meta.is_dir() {
                return Err(RootfsError::LayerNotADirectory(layer.clone()));
            }
        }
        let Some(upper) = upper else {
            return match (layers, upper_disk) {
                (_, Some(_)) => Err(RootfsError::DiskNeedsUpper),
                ([single], None) => {
                    if let Some(ns) = idmap {
                        idmap_in_place(ns, single)?;
                    }
                    Ok(Rootfs {
                        dir: single.clone(),
                        mounted: false,
                        _disk: None,
                    })
                }
                _ => Err(RootfsError::LayersNeedUpper {
                    count: layers.len(),
                }),
            };
        };
        let upper_dir = upper.join("upper");
        let work_dir = upper.join("work");
        let merged = upper.join("merged");
        let options = overlay_options(layers, &upper_dir, &work_dir);
        if options.len() > MAX_MOUNT_OPTIONS {
            return Err(RootfsError::OptionsTooLong(options.len()));
        }
        let disk = match upper_disk {
            Some(image) => {
                create_dir(upper)?;
                enter_private_mount_namespace()?;
                Some(DiskMount::mount(image, upper)?)
            }
            None => None,
        };
        for dir in [&upper_dir, &work_dir, &merged] {
            create_dir(dir)?;
        }
        enter_private_mount_namespace()?;
        match idmap {
            Some(ns) => {
                for dir in layers.iter().map(PathBuf::as_path).chain([upper]) {
                    idmap_in_place(ns, dir)?;
                }
                ns.as_mounter(|| mount_overlay(&merged, &options))
                    .map_err(|source| RootfsError::Idmap {
                        path: merged.clone(),
                        source,
                    })??;
            }
            None => mount_overlay(&merged, &options)?,
        }
        tracing::debug!(merged = %merged.display(), "root overlay mounted");
        Ok(Rootfs {
            dir: merged,
            mounted: true,
            _disk: disk,
        })
    }

    /// The merged tree to serve to the guest.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        // A jailed VMM may not unmount; its namespace goes with it.
        if !self.mounted || crate::jail::active() {
            return;
        }
        // Detached: an open file (e.g. the file server's) must not keep the unmount from
        // happening; the namespace dies with the process anyway.
        if let Ok(path) = CString::new(self.dir.as_os_str().as_bytes()) {
            // SAFETY: umount2 only reads the NUL-terminated path.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
                tracing::warn!(
                    "cannot unmount {}: {}",
                    self.dir.display(),
                    io::Error::last_os_error()
                );
            }
        }
    }
}

fn idmap_in_place(ns: &UserNamespace, dir: &Path) -> Result<(), RootfsError> {
    ns.idmap_in_place(dir).map_err(|source| RootfsError::Idmap {
        path: dir.to_owned(),
        source,
    })
}

fn create_dir(dir: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(dir).map_err(|source| RootfsError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// The overlay mount data; `:` `,` and `\` in paths are escaped as overlayfs expects.
fn overlay_options(layers: &[PathBuf], upper_dir: &Path, work_dir: &Path) -> String {
    let escape = |p: &Path| {
        let mut out = String::new();
        for c in p.to_string_lossy().chars() {
            if matches!(c, ':' | ',' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    let lower: Vec<String> = layers.iter().map(|l| escape(l)).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape(upper_dir),
        escape(work_dir)
    )
}

std::thread_local! {
    /// Whether this thread already has its private mount namespace.
    static PRIVATE_NAMESPACE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes `dir` read-only for this VMM alone: a read-only bind mount of it over itself in the
/// VMM's private mount namespace. A share served from it then gets EROFS from the host kernel
/// for every write, whatever the guest sends; everyone else still sees `dir` as it was. Like
/// [`Rootfs::prepare`], it must run on the thread that starts the device workers, before them.
pub fn bind_read_only(dir: &Path) -> Result<(), RootfsError> {
    enter_private_mount_namespace()?;
    let path =
        CString::new(dir.as_os_str().as_bytes()).map_err(|_| RootfsError::NulInPath(dir.into()))?;
    let fail = |step: &'static str| RootfsError::BindReadOnly {
        path: dir.to_owned(),
        step,
        source: io::Error::last_os_error(),
    };
    // SAFETY: NUL-terminated paths and null pointers where mount(2) allows them.
    unsafe {
        if libc::mount(
            path.as_ptr(),
            path.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) != 0
        {
            return Err(fail("bind"));
        }
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        if libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        ) != 0
        {
            return Err(fail("remount read-only"));
        }
    }
    Ok(())
}

/// Moves this thread (and the threads it starts later) into a new mount namespace whose mounts
/// do not propagate back to the host; once per thread.
pub(crate) fn enter_private_mount_namespace() -> Result<(), RootfsError> {
    if PRIVATE_NAMESPACE.get() {
        return Ok(());
    }
    // SAFETY: unshare takes no pointers.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(RootfsError::Unshare(io::Error::last_os_error()));
    }
    // SAFETY: all pointers are NUL-terminated literals or null, as mount(2) allows for a
    // propagation change.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(RootfsError::MakePrivate(io::Error::last_os_error()));
    }
    PRIVATE_NAMESPACE.set(true);
    Ok(())
}

fn mount_overlay(merged: &Path, options: &str) -> Result<(), RootfsError> {
    let target = CString::new(merged.as_os_str().as_bytes())
        .map_err(|_| RootfsError::NulInPath(merged.to_owned()))?;
    let data = CString::new(options).map_err(|_| RootfsError::NulInPath(merged.to_owned()))?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENODEV) {
            return Err(RootfsError::OverlayMissing);
        }
        return Err(RootfsError::Mount {
            merged: merged.to_owned(),
            options: options.to_owned(),
            source: err,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;
    use crate::virtio::fs::tests::{call, create, create_and_write, fuse_init, lookup, started};
    use crate::virtio::test_driver::guest_memory;
    use fuse_backend_rs::abi::fuse_abi::{MkdirIn, Opcode};
    use vm_memory::ByteValued;

    /// Every path below `root` with its type, mode and content: what "unchanged" means.
    fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                let meta = std::fs::symlink_metadata(&path).expect("stat");
                let content = if meta.is_file() {
                    std::fs::read(&path).expect("read")
                } else {
                    Vec::new()
                };
                if meta.is_dir() {
                    stack.push(path.clone());
                }
                out.insert(path, (meta.mode(), content));
            }
        }
        out
    }

    /// Two layers: the bottom one with a/b/dir/c, the top one overriding a.
    fn two_layers(root: &Path) -> (PathBuf, PathBuf) {
        let bottom = root.join("bottom");
        let top = root.join("top");
        std::fs::create_dir_all(bottom.join("dir")).expect("mkdir");
        std::fs::create_dir_all(&top).expect("mkdir");
        std::fs::write(bottom.join("a"), b"bottom a").expect("write");
        std::fs::write(bottom.join("b"), b"bottom b").expect("write");
        std::fs::write(bottom.join("dir/c"), b"bottom c").expect("write");
        std::fs::write(top.join("a"), b"top a").expect("write");
        (top, bottom)
    }

    /// Mounts the overlay, or says why this host cannot (then the caller skips).
    fn prepare_or_skip(layers: &[PathBuf], upper: &Path) -> Option<Rootfs> {
        match Rootfs::prepare(layers, Some(upper), None, None) {
            Ok(rootfs) => Some(rootfs),
            Err(e @ (RootfsError::Unshare(_) | RootfsError::OverlayMissing)) => {
                eprintln!("SKIPPED: overlay mount impossible here: {e}");
                None
            }
            Err(e) => panic!("prepare failed: {e}"),
        }
    }

    #[test]
    fn writes_go_to_upper_and_layers_stay_identical() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (top, bottom) = two_layers(tmp.path());
        let before = (snapshot(&top), snapshot(&bottom));
        let upper = tmp.path().join("container");
        let Some(rootfs) = prepare_or_skip(&[top.clone(), bottom.clone()], &upper) else {
            return;
        };
        let merged = rootfs.dir().to_path_buf();
        assert_eq!(merged, upper.join("merged"));
        assert_eq!(std::fs::read(merged.join("a")).expect("a"), b"top a");
        assert_eq!(std::fs::read(merged.join("b")).expect("b"), b"bottom b");

        std::fs::write(merged.join("new"), b"fresh").expect("create");
        std::fs::write(merged.join("b"), b"changed b").expect("modify");
        std::fs::remove_file(merged.join("dir/c")).expect("delete");

        assert_eq!(
            std::fs::read(upper.join("upper/new")).expect("new in upper"),
            b"fresh"
        );
        assert_eq!(
            std::fs::read(upper.join("upper/b")).expect("b in upper"),
            b"changed b"
        );
        let whiteout = std::fs::symlink_metadata(upper.join("upper/dir/c")).expect("whiteout");
        assert!(
            whiteout.file_type().is_char_device(),
            "deletion must leave a whiteout"
        );
        assert_eq!(whiteout.rdev(), 0);
        assert!(!merged.join("dir/c").exists());
        assert_eq!(
            (snapshot(&top), snapshot(&bottom)),
            before,
            "a layer changed"
        );
    }

    #[test]
    fn the_file_server_works_on_the_overlay() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (top, bottom) = two_layers(tmp.path());
        let before = snapshot(&bottom);
        let upper = tmp.path().join("container");
        let Some(rootfs) = prepare_or_skip(&[top, bottom.clone()], &upper) else {
            return;
        };
        let mem = guest_memory();
        let (_dev, [_, mut req]) = started(rootfs.dir(), &mem);
        fuse_init(&mut req);
        let (err, entry) = lookup(&mut req, 1, "dir");
        assert_eq!(err, 0);
        let dir = entry.expect("dir entry").nodeid;
        assert_eq!(lookup(&mut req, dir, "c").0, 0);
        create_and_write(&mut req, dir, "from-guest", b"guest bytes");
        assert_eq!(
            std::fs::read(upper.join("upper/dir/from-guest")).expect("in upper"),
            b"guest bytes"
        );
        assert_eq!(snapshot(&bottom), before, "the lower layer changed");
    }

    #[test]
    fn a_read_only_share_refuses_the_guest_s_writes_and_only_the_guest_s() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("kept"), b"data").expect("write");
        let share = tmp.path().to_path_buf();
        // The mount namespace is the thread's: a thread of its own plays the VMM's main thread.
        let answers = std::thread::spawn(move || {
            if let Err(e) = bind_read_only(&share) {
                eprintln!("skipped: needs root for a mount namespace: {e}");
                return None;
            }
            let mem = guest_memory();
            let (_dev, [_, mut req]) = started(&share, &mem);
            fuse_init(&mut req);
            let found = lookup(&mut req, 1, "kept").0;
            let created = create(&mut req, 1, "planted").0.error;
            let unlinked = call(&mut req, Opcode::Unlink, 1, b"kept\0").0.error;
            let made_dir = call(&mut req, Opcode::Mkdir, 1, &mkdir_body("d")).0.error;
            Some([found, created, unlinked, made_dir])
        })
        .join()
        .expect("the share thread");
        let Some(answers) = answers else { return };
        assert_eq!(answers, [0, -libc::EROFS, -libc::EROFS, -libc::EROFS]);
        // Outside the VMM's namespace the directory is as it was, and writable.
        assert_eq!(
            std::fs::read(tmp.path().join("kept")).expect("kept"),
            b"data"
        );
        assert!(!tmp.path().join("planted").exists());
        std::fs::write(tmp.path().join("by-host"), b"x").expect("the host still writes");
    }

    fn mkdir_body(name: &str) -> Vec<u8> {
        let mut body = MkdirIn {
            mode: 0o755,
            umask: 0o022,
        }
        .as_slice()
        .to_vec();
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body
    }

    #[test]
    fn a_single_layer_without_upper_is_served_directly() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rootfs =
            Rootfs::prepare(&[tmp.path().to_path_buf()], None, None, None).expect("prepare");
        assert_eq!(rootfs.dir(), tmp.path());
    }

    #[test]
    fn bad_layer_sets_are_refused_with_reasons() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Rootfs::prepare(&[], None, None, None),
            Err(RootfsError::NoLayers)
        ));
        let two = [tmp.path().to_path_buf(), tmp.path().to_path_buf()];
        let err = Rootfs::prepare(&two, None, None, None).expect_err("two layers need an upper");
        assert!(err.to_string().contains("--rootfs-upper"), "{err}");
        let missing = tmp.path().join("missing");
        let err =
            Rootfs::prepare(&[missing], Some(tmp.path()), None, None).expect_err("missing layer");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn overlay_options_escape_separators() {
        let opts = overlay_options(
            &[PathBuf::from("/l:1"), PathBuf::from("/l,2")],
            Path::new("/u"),
            Path::new("/w"),
        );
        assert_eq!(opts, r"lowerdir=/l\:1:/l\,2,upperdir=/u,workdir=/w");
    }
}
