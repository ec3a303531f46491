//! The layer writer on real directories (whiteouts, opaque directories and trusted xattrs
//! need root: skipped without it), the commit into a store, and `--change` parsing.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;
use crate::config::StoreConfig;
use crate::sys;

fn whiteout(p: &Path) {
    sys::mknod(p, libc::S_IFCHR, 0, 0).unwrap();
}

/// A tree as a container leaves it in its upper directory.
fn upper_tree(root: &Path) {
    fs::create_dir(root.join("d")).unwrap();
    fs::write(root.join("d/f"), b"hello").unwrap();
    // chown clears setuid: first.
    std::os::unix::fs::chown(root.join("d/f"), Some(7), Some(8)).unwrap();
    fs::set_permissions(root.join("d/f"), fs::Permissions::from_mode(0o4755)).unwrap();
    sys::lsetxattr(&root.join("d/f"), "user.note", b"kept").unwrap();
    fs::hard_link(root.join("d/f"), root.join("d/g")).unwrap();
    sys::lsetxattr(&root.join("d"), "trusted.overlay.origin", b"x").unwrap();
    symlink("/etc/passwd", root.join("link")).unwrap();
    whiteout(&root.join("gone"));
    fs::create_dir(root.join("o")).unwrap();
    sys::lsetxattr(&root.join("o"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(root.join("o/new"), b"n").unwrap();
    sys::mknod(&root.join("fifo"), libc::S_IFIFO | 0o640, 0, 0).unwrap();
    fs::write(root.join("n".repeat(150)), b"long").unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    for p in ["d/f", "o/new", "fifo", "d", "o"] {
        sys::set_times_nofollow(&root.join(p), 1_700_000_000).unwrap();
    }
}

struct Entry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    link: Option<String>,
    data: Vec<u8>,
    xattrs: Vec<(String, Vec<u8>)>,
    mtime: u64,
}

fn read_back(tar_bytes: &[u8]) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(tar_bytes);
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = Vec::new();
        if let Some(pax) = e.pax_extensions().unwrap() {
            for x in pax {
                let x = x.unwrap();
                let name = x.key().unwrap().strip_prefix("SCHILY.xattr.").unwrap();
                xattrs.push((name.to_string(), x.value_bytes().to_vec()));
            }
        }
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((
            e.path().unwrap().to_string_lossy().into_owned(),
            Entry {
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                link: e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
                data,
                xattrs,
                mtime: h.mtime().unwrap(),
            },
        ));
    }
    out
}

#[test]
fn an_upper_becomes_a_layer_with_whiteouts_links_and_metadata() {
    if !sys::is_root() {
        eprintln!("skipped: whiteouts and trusted.* xattrs need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    upper_tree(&upper);
    let (bytes, summary) = layer::write_layer(&upper, Vec::new()).unwrap();
    let (again, _) = layer::write_layer(&upper, Vec::new()).unwrap();
    assert!(bytes == again, "the same tree gives the same bytes");
    assert_eq!(summary.diff_id, Digest::of(&bytes));

    let entries = read_back(&bytes);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let long = "n".repeat(150);
    assert_eq!(
        names,
        [
            "d/",
            "d/f",
            "d/g",
            "fifo",
            ".wh.gone",
            "link",
            long.as_str(),
            "o/",
            "o/.wh..wh..opq",
            "o/new"
        ],
        "sorted, the socket left out, the opaque marker right after its directory"
    );
    let get = |n: &str| &entries.iter().find(|(name, _)| name == n).unwrap().1;
    let f = get("d/f");
    assert_eq!(
        (f.kind, f.mode, f.uid),
        (tar::EntryType::Regular, 0o4755, 7)
    );
    assert_eq!((f.data.as_slice(), f.mtime), (&b"hello"[..], 1_700_000_000));
    assert_eq!(f.xattrs, [("user.note".to_string(), b"kept".to_vec())]);
    let g = get("d/g");
    assert_eq!(
        (g.kind, g.link.as_deref()),
        (tar::EntryType::Link, Some("d/f"))
    );
    assert!(
        get("d/").xattrs.is_empty(),
        "overlayfs' own xattrs stay out"
    );
    let l = get("link");
    assert_eq!(
        (l.kind, l.link.as_deref()),
        (tar::EntryType::Symlink, Some("/etc/passwd"))
    );
    assert_eq!(get(".wh.gone").kind, tar::EntryType::Regular);
    assert_eq!(get("fifo").kind, tar::EntryType::Fifo);
    assert_eq!(get("fifo").mode, 0o640);
    assert_eq!(get(&long).data, b"long");
}

#[test]
fn overlay_redirects_are_refused_by_name() {
    if !sys::is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("moved")).unwrap();
    sys::lsetxattr(
        &tmp.path().join("moved"),
        "trusted.overlay.redirect",
        b"/old",
    )
    .unwrap();
    let err = layer::write_layer(tmp.path(), Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("trusted.overlay.redirect"),
        "{err}"
    );
}

/// A one-layer base image recorded in `store`: `/etc/keep`, `/bin/true`, `/o/old`.
fn base_image(store: &Store) -> ImageRecord {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in [("etc/keep", &b"k"[..]), ("bin/true", b"t"), ("o/old", b"o")] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data).unwrap();
    }
    let layer = tar.into_inner().unwrap();
    let diff_id = Digest::of(&layer);
    let blob = store.put_blob(&layer, None, "layer").unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin", "A=1"], "Shell": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "base"}]
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = store.put_blob(&config, None, "config").unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::DOCKER_MANIFEST,
        "config": {"mediaType": media::DOCKER_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                    "digest": blob, "size": layer.len()}]
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let digest = store.put_blob(&manifest, None, "manifest").unwrap();
    record(store, "localhost/base:1".into(), &digest, None).unwrap()
}

fn options(changes: &[&str]) -> CommitOptions {
    CommitOptions {
        reference: Some(Reference::parse("localhost/committed:1").unwrap()),
        author: Some("A <a@example.com>".into()),
        comment: Some("msg".into()),
        changes: Change::parse_all(changes).unwrap(),
        created: "2026-11-30T12:00:00Z".into(),
        created_by: "sh -c echo hi".into(),
        config: None,
    }
}

fn config_of(store: &Store, rec: &ImageRecord) -> Value {
    let bytes = store
        .read_blob(&rec.config_digest, MAX_CONFIG_BYTES, "config")
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn commit_records_a_runnable_image_with_history_and_changes() {
    if !sys::is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store"), StoreConfig::default()).unwrap();
    let base = base_image(&store);
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("bin")).unwrap();
    fs::write(upper.join("f"), b"hi\n").unwrap();
    whiteout(&upper.join("bin/true"));
    fs::create_dir(upper.join("o")).unwrap();
    sys::lsetxattr(&upper.join("o"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(upper.join("o/new"), b"n").unwrap();

    let opts = options(&[r#"CMD ["cat", "/f"]"#, "ENV A=2 B=\"x y\"", "EXPOSE 80"]);
    let rec = commit(&store, Some(&base), &upper, &opts).unwrap();
    assert_eq!(rec.name, "localhost/committed:1");
    assert_eq!(rec.layers.len(), 2);
    assert_eq!(rec.layers[0].blob, base.layers[0].blob);
    assert_eq!(rec.media_type, media::OCI_MANIFEST);
    let top = store.layer_path(&rec.layers[1].diff_id);
    let wh = fs::symlink_metadata(top.join("bin/true")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert!(crate::unpack::is_overlay_opaque(&top.join("o")).unwrap());

    let cfg = config_of(&store, &rec);
    assert_eq!(cfg["config"]["Cmd"], serde_json::json!(["cat", "/f"]));
    assert_eq!(
        cfg["config"]["Env"],
        serde_json::json!(["PATH=/bin", "A=2", "B=x y"])
    );
    assert_eq!(
        cfg["config"]["ExposedPorts"]["80/tcp"],
        serde_json::json!({})
    );
    assert_eq!(
        cfg["config"]["Shell"],
        serde_json::json!(["/bin/sh"]),
        "kept"
    );
    assert_eq!(cfg["author"], "A <a@example.com>");
    assert_eq!(
        cfg["rootfs"]["diff_ids"][1],
        rec.layers[1].diff_id.to_string()
    );
    let history = cfg["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["comment"], "msg");
    assert_eq!(history[1]["created_by"], "sh -c echo hi");

    let merged = tmp.path().join("merged");
    crate::rootfs::merge_layers(&store, &rec, &merged).unwrap();
    assert_eq!(fs::read(merged.join("f")).unwrap(), b"hi\n");
    assert!(merged.join("etc/keep").exists());
    assert!(
        !merged.join("bin/true").exists(),
        "a deleted file stays deleted"
    );
    assert!(
        !merged.join("o/old").exists(),
        "an opaque directory hides what was below"
    );
    assert!(merged.join("o/new").exists());

    // The same tree again: the same layer blob, the same unpacked directory.
    let again = commit(&store, Some(&base), &upper, &options(&[])).unwrap();
    assert_eq!(again.layers[1].blob, rec.layers[1].blob);
}

#[test]
fn an_unchanged_container_adds_an_empty_history_entry_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("store"), StoreConfig::default()).unwrap();
    let base = base_image(&store);
    let upper = tmp.path().join("upper");
    fs::create_dir(&upper).unwrap();
    let mut opts = options(&["ENTRYPOINT /bin/x"]);
    opts.reference = None;
    let rec = commit(&store, Some(&base), &upper, &opts).unwrap();
    assert_eq!(rec.layers.len(), 1);
    assert_eq!(rec.name, rec.manifest_digest.to_string(), "untagged");
    let cfg = config_of(&store, &rec);
    assert_eq!(cfg["history"][1]["empty_layer"], true);
    assert_eq!(
        cfg["config"]["Entrypoint"],
        serde_json::json!(["/bin/sh", "-c", "/bin/x"])
    );
    assert!(
        cfg["config"].get("Cmd").is_none(),
        "ENTRYPOINT clears the image's CMD"
    );
}

#[test]
fn changes_parse_as_docker_reads_them() {
    let one = |s: &str| Change::parse(s).unwrap();
    assert_eq!(
        one("cmd echo hi"),
        Change::Cmd(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
    );
    assert_eq!(
        one(r#"CMD ["a","b c"]"#),
        Change::Cmd(vec!["a".into(), "b c".into()])
    );
    assert_eq!(
        one("ENV K V W"),
        Change::Env(vec![("K".into(), "V W".into())])
    );
    assert_eq!(
        one(r#"LABEL a=1 "b c"='d e'"#),
        Change::Label(vec![("a".into(), "1".into()), ("b c".into(), "d e".into())])
    );
    assert_eq!(
        one("EXPOSE 53/udp 8000-8001"),
        Change::Expose(vec!["53/udp".into(), "8000/tcp".into(), "8001/tcp".into()])
    );
    assert_eq!(one("USER 1000:1000"), Change::User("1000:1000".into()));
    assert_eq!(
        one(r#"VOLUME ["/data"]"#),
        Change::Volume(vec!["/data".into()])
    );
    assert_eq!(
        Change::parse_all(&["WORKDIR /a\nWORKDIR b/../c"])
            .unwrap()
            .len(),
        2
    );
    let mut cfg = serde_json::Map::new();
    Change::apply_all(
        &Change::parse_all(&["WORKDIR /a", "WORKDIR b/../c"]).unwrap(),
        &mut cfg,
    );
    assert_eq!(cfg["WorkingDir"], "/a/c");
    for (bad, says) in [
        ("RUN rm -rf /", "RUN cannot be applied by commit"),
        ("ONBUILD RUN x", "ONBUILD"),
        ("EXPOSE 70000", "not a port number"),
        ("EXPOSE 80/icmp", "tcp, udp or sctp"),
        ("ENV", "needs arguments"),
        ("LABEL x", "KEY=VALUE"),
        ("ENV A=1 \"B", "unterminated"),
    ] {
        let err = Change::parse(bad).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}
