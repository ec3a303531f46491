//! Hostile and ordinary layers, crafted in-test with the tar crate.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

/// Builds an uncompressed layer tar entry by entry.
#[derive(Default)]
struct Layer {
    out: Vec<u8>,
}

impl Layer {
    fn header(kind: tar::EntryType, path: &str, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        // Written raw: set_path refuses the `..` and absolute names these tests need.
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        h
    }

    fn push(&mut self, h: &tar::Header, data: &[u8]) {
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    fn dir(mut self, path: &str, mode: u32) -> Self {
        let h = Self::header(tar::EntryType::Directory, path, 0, mode);
        self.push(&h, b"");
        self
    }

    fn file(mut self, path: &str, data: &[u8]) -> Self {
        let h = Self::header(tar::EntryType::Regular, path, data.len() as u64, 0o644);
        self.push(&h, data);
        self
    }

    fn file_owned(mut self, path: &str, data: &[u8], mode: u32, uid: u64) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, path, data.len() as u64, mode);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_cksum();
        self.push(&h, data);
        self
    }

    fn link(mut self, kind: tar::EntryType, path: &str, target: &str) -> Self {
        let mut h = Self::header(kind, path, 0, 0o777);
        let ln = &mut h.as_old_mut().linkname;
        ln.fill(0);
        ln[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.push(&h, b"");
        self
    }

    fn symlink(self, path: &str, target: &str) -> Self {
        self.link(tar::EntryType::Symlink, path, target)
    }

    fn hardlink(self, path: &str, target: &str) -> Self {
        self.link(tar::EntryType::Link, path, target)
    }

    fn pax_xattr(mut self, path: &str, name: &str, value: &str) -> Self {
        let rec = format!("SCHILY.xattr.{name}={value}\n");
        let rec = format!(
            "{} {rec}",
            rec.len() + 1 + (rec.len() + 3).to_string().len()
        );
        let h = Self::header(
            tar::EntryType::XHeader,
            "PaxHeader",
            rec.len() as u64,
            0o644,
        );
        self.push(&h, rec.as_bytes());
        self.file(path, b"x")
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

fn limited(max_bytes: u64, max_entries: u64) -> UnpackOptions {
    UnpackOptions {
        limits: UnpackLimits {
            max_bytes,
            max_entries,
            max_image_bytes: u64::MAX,
        },
        devices: DevicePolicy::Skip,
    }
}

fn apply(tar: &[u8], root: &Path, mode: Whiteouts) -> Result<LayerStats> {
    apply_layer(
        tar,
        Compression::None,
        root,
        mode,
        &UnpackOptions::default(),
        &ImageBudget::new(&UnpackLimits::default()),
    )
}

/// A sandbox: `root` is the unpack target, `outside` must never be touched.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"untouched").unwrap();
    Sandbox {
        _dir: dir,
        root,
        outside,
    }
}

impl Sandbox {
    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
        assert_eq!(fs::read(self.outside.join("secret")).unwrap(), b"untouched");
    }
}

fn err_text(r: Result<LayerStats>) -> String {
    match r {
        Ok(_) => panic!("hostile layer was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn ordinary_layer_and_diff_id() {
    let s = sandbox();
    let tar = Layer::default()
        .dir("bin/", 0o755)
        .file("bin/busybox", b"ELF")
        .hardlink("bin/true", "bin/busybox")
        .symlink("bin/sh", "busybox")
        .dir("tmp/", 0o1777)
        .file_owned("home/user/.profile", b"PS1", 0o4755, 1000)
        .finish();
    let stats = apply(&tar, &s.root, Whiteouts::Overlay).unwrap();
    assert_eq!(stats.diff_id, Digest::of(&tar));
    assert_eq!(stats.entries, 6);
    let r = &s.root;
    assert_eq!(fs::read(r.join("bin/busybox")).unwrap(), b"ELF");
    assert_eq!(
        fs::metadata(r.join("bin/true")).unwrap().ino(),
        fs::metadata(r.join("bin/busybox")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(r.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let tmp = fs::metadata(r.join("tmp")).unwrap();
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    assert_eq!(tmp.mtime(), 1_700_000_000);
    let profile = fs::metadata(r.join("home/user/.profile")).unwrap();
    assert_eq!(profile.permissions().mode() & 0o7777, 0o4755);
    if sys::is_root() {
        assert_eq!((profile.uid(), profile.gid()), (1000, 1000));
    }
    // Implicit parent directories are created 0755.
    let home = fs::metadata(r.join("home")).unwrap();
    assert_eq!(home.permissions().mode() & 0o777, 0o755);
}

#[test]
fn refuses_dotdot() {
    let s = sandbox();
    let tar = Layer::default()
        .file("../outside/secret", b"pwned")
        .finish();
    let e = err_text(apply(&tar, &s.root, Whiteouts::Apply));
    assert!(e.contains("'..'"), "{e}");
    s.assert_outside_untouched();
}

#[test]
fn refuses_absolute_paths() {
    let s = sandbox();
    let path = format!("{}/secret", s.outside.display());
    let tar = Layer::default().file(&path, b"pwned").finish();
    let e = err_text(apply(&tar, &s.root, Whiteouts::Apply));
    assert!(e.contains("absolute path"), "{e}");
    s.assert_outside_untouched();
}

#[test]
fn symlinked_parent_stays_inside() {
    let s = sandbox();
    // `escape` points at the real outside dir (absolute) and `up` climbs with `..`; writing
    // through either must land inside the root.
    let tar = Layer::default()
        .symlink("escape", s.outside.to_str().unwrap())
        .symlink("up", "../../../../..")
        .file("escape/secret", b"pwned")
        .file("up/evil", b"pwned")
        .finish();
    apply(&tar, &s.root, Whiteouts::Apply).unwrap();
    s.assert_outside_untouched();
    let inside = s
        .root
        .join(s.outside.strip_prefix("/").unwrap())
        .join("secret");
    assert_eq!(fs::read(inside).unwrap(), b"pwned");
    assert_eq!(fs::read(s.root.join("evil")).unwrap(), b"pwned");
    // The links themselves are kept verbatim.
    assert!(fs::symlink_metadata(s.root.join("escape"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn symlink_as_final_component_is_replaced_not_followed() {
    let s = sandbox();
    let target = s.outside.join("secret");
    let tar = Layer::default()
        .symlink("victim", target.to_str().unwrap())
        .file("victim", b"pwned")
        .finish();
    apply(&tar, &s.root, Whiteouts::Apply).unwrap();
    s.assert_outside_untouched();
    assert_eq!(fs::read(s.root.join("victim")).unwrap(), b"pwned");
}

#[test]
fn hardlink_tricks_are_refused() {
    let s = sandbox();
    let outside_secret = s.outside.join("secret");
    let cases = [
        Layer::default().hardlink("h", outside_secret.to_str().unwrap()),
        Layer::default().hardlink("h", "../outside/secret"),
        // Through a symlink: resolves inside the root, where there is no such file.
        Layer::default()
            .symlink("d", s.outside.to_str().unwrap())
            .hardlink("h", "d/secret"),
        Layer::default().dir("adir/", 0o755).hardlink("h", "adir"),
    ];
    for (i, layer) in cases.into_iter().enumerate() {
        let root = s.root.join(format!("case{i}"));
        fs::create_dir(&root).unwrap();
        let e = err_text(apply(&layer.finish(), &root, Whiteouts::Overlay));
        assert!(e.contains("hard link"), "case {i}: {e}");
    }
    s.assert_outside_untouched();
    assert_eq!(fs::metadata(&outside_secret).unwrap().nlink(), 1);
}

#[test]
fn byte_and_entry_limits() {
    let s = sandbox();
    let big = vec![0u8; 64 * 1024];
    let tar = Layer::default().file("big", &big).finish();
    let opts = limited(16 * 1024, 100);
    let e = err_text(apply_layer(
        &tar[..],
        Compression::None,
        &s.root,
        Whiteouts::Overlay,
        &opts,
        &ImageBudget::new(&UnpackLimits::default()),
    ));
    assert!(e.contains("limit") && e.contains("16384"), "{e}");

    let mut many = Layer::default();
    for i in 0..20 {
        many = many.file(&format!("f{i}"), b"");
    }
    let opts = limited(1 << 20, 10);
    let root2 = s.root.join("many");
    fs::create_dir(&root2).unwrap();
    let e = err_text(apply_layer(
        &many.finish()[..],
        Compression::None,
        &root2,
        Whiteouts::Overlay,
        &opts,
        &ImageBudget::new(&UnpackLimits::default()),
    ));
    assert!(e.contains("more than 10 entries"), "{e}");
}

#[test]
fn gzip_bomb_is_stopped() {
    use std::io::Write;
    let s = sandbox();
    let zeros = vec![0u8; 8 << 20];
    let tar = Layer::default().file("zeros", &zeros).finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 64 * 1024);
    let opts = limited(1 << 20, 10);
    let e = err_text(apply_layer(
        &gz[..],
        Compression::Gzip,
        &s.root,
        Whiteouts::Overlay,
        &opts,
        &ImageBudget::new(&UnpackLimits::default()),
    ));
    assert!(e.contains("unpack limit"), "{e}");
}

#[test]
fn truncated_stream_is_an_error() {
    let s = sandbox();
    let tar = Layer::default().file("f", &[7u8; 4000]).finish();
    let e = err_text(apply(&tar[..1500], &s.root, Whiteouts::Overlay));
    assert!(e.contains("malformed layer tar"), "{e}");
    let e = err_text(apply_layer(
        &b"\x1f\x8bnot gzip"[..],
        Compression::Gzip,
        &s.root,
        Whiteouts::Overlay,
        &UnpackOptions::default(),
        &ImageBudget::new(&UnpackLimits::default()),
    ));
    assert!(e.contains("malformed"), "{e}");
}

#[test]
fn overlay_whiteouts() {
    if !sys::is_root() {
        eprintln!("skipped: overlay whiteouts need root (mknod, trusted.* xattrs)");
        return;
    }
    let s = sandbox();
    let tar = Layer::default()
        .file("etc/.wh.old.txt", b"")
        .file("data/.wh..wh..opq", b"")
        .file("data/c.txt", b"c")
        .finish();
    apply(&tar, &s.root, Whiteouts::Overlay).unwrap();
    let wh = fs::symlink_metadata(s.root.join("etc/old.txt")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!s.root.join("etc/.wh.old.txt").exists());
    assert!(is_overlay_opaque(&s.root.join("data")).unwrap());
    assert!(!is_overlay_opaque(&s.root.join("etc")).unwrap());
    assert_eq!(fs::read(s.root.join("data/c.txt")).unwrap(), b"c");
}

#[test]
fn applied_whiteouts_hide_lower_entries_only() {
    let s = sandbox();
    let lower = Layer::default()
        .file("etc/old.txt", b"old")
        .file("etc/keep.txt", b"keep")
        .file("data/a.txt", b"a")
        .file("data/sub/b.txt", b"b")
        .finish();
    apply(&lower, &s.root, Whiteouts::Apply).unwrap();
    // The same-layer file before the marker must survive: opaque hides lower layers only.
    let upper = Layer::default()
        .file("data/c.txt", b"c")
        .file("data/.wh..wh..opq", b"")
        .file("etc/.wh.old.txt", b"")
        .file("etc/.wh.never-existed", b"")
        .finish();
    apply(&upper, &s.root, Whiteouts::Apply).unwrap();
    assert!(!s.root.join("etc/old.txt").exists());
    assert!(s.root.join("etc/keep.txt").exists());
    let data: Vec<_> = fs::read_dir(s.root.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(data, vec!["c.txt"]);
}

#[test]
fn forged_overlay_xattrs_are_dropped() {
    if !sys::is_root() {
        return;
    }
    let s = sandbox();
    let tar = Layer::default()
        .dir("d/", 0o755)
        .pax_xattr("d/f", "trusted.overlay.opaque", "y")
        .pax_xattr("d/g", "user.note", "hello")
        .finish();
    apply(&tar, &s.root, Whiteouts::Overlay).unwrap();
    assert_eq!(
        sys::lgetxattr(&s.root.join("d/f"), "trusted.overlay.opaque").unwrap(),
        None
    );
    assert_eq!(
        sys::lgetxattr(&s.root.join("d/g"), "user.note")
            .unwrap()
            .as_deref(),
        Some(&b"hello"[..])
    );
}

#[test]
fn device_nodes_follow_policy() {
    if !sys::is_root() {
        return;
    }
    let s = sandbox();
    let mut h = Layer::header(tar::EntryType::Char, "dev/null", 0, 0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_cksum();
    let mut l = Layer::default();
    l.push(&h, b"");
    let tar = l.finish();
    apply(&tar, &s.root, Whiteouts::Overlay).unwrap();
    assert!(!s.root.join("dev/null").exists());
    let opts = UnpackOptions {
        devices: DevicePolicy::Create,
        ..Default::default()
    };
    apply_layer(
        &tar[..],
        Compression::None,
        &s.root,
        Whiteouts::Overlay,
        &opts,
        &ImageBudget::new(&UnpackLimits::default()),
    )
    .unwrap();
    let m = fs::symlink_metadata(s.root.join("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), libc::makedev(1, 3));
}

mod oversized;
