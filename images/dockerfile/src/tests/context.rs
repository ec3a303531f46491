use super::stage::{parse_chmod, stage, StageOptions};
use super::*;
use std::os::unix::fs::{symlink, PermissionsExt};

/// A context: `a.txt`, `b.txt`, `c.md`, `dir/{x,sub/y}`, `dir/link -> x`, `logs/1.log`,
/// `Dockerfile`, `.dockerignore` (ignoring `logs` and `*.md`).
fn context() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    for (f, c) in [
        ("a.txt", "A"),
        ("b.txt", "B"),
        ("c.md", "C"),
        ("dir/x", "X"),
        ("dir/sub/y", "Y"),
        ("logs/1.log", "L"),
        ("Dockerfile", "FROM scratch\n"),
        (".dockerignore", "logs\n*.md\n"),
    ] {
        fs::create_dir_all(p.join(f).parent().unwrap()).unwrap();
        fs::write(p.join(f), c).unwrap();
    }
    symlink("x", p.join("dir/link")).unwrap();
    t
}

fn step(sources: &[&str], dest: &str) -> CopyStep {
    CopyStep {
        add: false,
        from: None,
        sources: sources.iter().map(|s| s.to_string()).collect(),
        inline: Vec::new(),
        dest: dest.to_string(),
        dest_is_dir: dest.ends_with('/'),
        chown: None,
        chmod: None,
        link: false,
        checksum: None,
    }
}

fn plan(dir: &Path, sources: &[&str], dest: &str) -> Result<CopyPlan> {
    let ignore = Ignore::parse(&fs::read_to_string(dir.join(".dockerignore")).unwrap());
    let root = Root::Context {
        dir,
        ignore: &ignore,
    };
    plan_copy(&root, &step(sources, dest), false)
}

fn dests(p: &CopyPlan) -> Vec<&str> {
    p.items.iter().map(|i| i.dest.as_str()).collect()
}

#[test]
fn destinations_follow_docker_rules() {
    let t = context();
    let d = t.path();
    assert_eq!(dests(&plan(d, &["a.txt"], "/f").unwrap()), ["/f"]);
    assert_eq!(dests(&plan(d, &["a.txt"], "/d/").unwrap()), ["/d/a.txt"]);
    let ignore = Ignore::default();
    let root = Root::Context {
        dir: d,
        ignore: &ignore,
    };
    let in_dir = plan_copy(&root, &step(&["a.txt"], "/existing"), true).unwrap();
    assert_eq!(dests(&in_dir), ["/existing/a.txt"]);
    let p = plan(d, &["dir"], "/app").unwrap();
    assert_eq!(
        dests(&p),
        ["/app/link", "/app/sub", "/app/sub/y", "/app/x"],
        "a directory's contents, not itself"
    );
    assert_eq!(p.items[0].kind, ItemKind::Symlink("x".into()));
    assert!(p.digest.starts_with("dir:"));
    assert!(plan(d, &["a.txt"], "/f")
        .unwrap()
        .digest
        .starts_with("file:"));
    let err = plan(d, &["a.txt", "b.txt"], "/f").unwrap_err().to_string();
    assert_eq!(
        err,
        "When using COPY with more than one source file, the destination must be a directory \
         and end with a /"
    );
    let err = plan(d, &["*.txt"], "/f").unwrap_err().to_string();
    assert!(err.contains("must be a directory"), "{err}");
}

#[test]
fn wildcards_and_dockerignore() {
    let t = context();
    let d = t.path();
    assert_eq!(
        dests(&plan(d, &["*.txt"], "/w/").unwrap()),
        ["/w/a.txt", "/w/b.txt"]
    );
    assert_eq!(dests(&plan(d, &["[ab].t?t"], "/w/").unwrap()).len(), 2);
    assert_eq!(dests(&plan(d, &["dir/s*/y"], "/w/").unwrap()), ["/w/y"]);
    // c.md and logs/ are ignored: not matched, not found, not copied with `.`.
    let err = plan(d, &["c.md"], "/w/").unwrap_err().to_string();
    assert_eq!(
        err,
        "file not found in build context or excluded by .dockerignore: stat c.md: file does \
         not exist"
    );
    assert!(plan(d, &["*.md"], "/w/")
        .unwrap_err()
        .to_string()
        .contains("no source files"));
    let all = plan(d, &["."], "/").unwrap();
    let all = dests(&all);
    assert!(all.contains(&"/Dockerfile") && all.contains(&"/.dockerignore"));
    assert!(!all.iter().any(|p| p.contains("logs") || p.ends_with(".md")));
    let err = plan(d, &["missing"], "/").unwrap_err().to_string();
    assert!(err.contains("stat missing: file does not exist"), "{err}");
    // The Dockerfile and .dockerignore are left out of COPY when ignored.
    fs::write(d.join(".dockerignore"), "Dockerfile\n.dockerignore\n").unwrap();
    let all = plan(d, &["."], "/").unwrap();
    assert!(!dests(&all).iter().any(|p| p.contains("ocker")));
    // An exception below an excluded directory.
    fs::write(d.join(".dockerignore"), "dir\n!dir/sub/y\n").unwrap();
    assert_eq!(
        dests(&plan(d, &["."], "/").unwrap())
            .iter()
            .filter(|p| p.starts_with("/dir"))
            .count(),
        1
    );
}

#[test]
fn hostile_sources_are_refused_by_name() {
    let t = context();
    let d = t.path();
    let err = plan(d, &["../etc/passwd"], "/x").unwrap_err().to_string();
    assert!(
        err.starts_with("Forbidden path outside the build context: ../etc/passwd"),
        "{err}"
    );
    assert!(plan(d, &["dir/../../x"], "/x").is_err());
    symlink("/etc/passwd", d.join("abs")).unwrap();
    let err = plan(d, &["abs"], "/x").unwrap_err().to_string();
    assert!(err.contains("abs -> /etc/passwd"), "{err}");
    symlink("../../../../etc", d.join("up")).unwrap();
    let err = plan(d, &["up/passwd"], "/x").unwrap_err().to_string();
    assert!(err.contains("Forbidden path"), "{err}");
    // A symlink that stays inside is followed when named, copied as a link inside a directory.
    symlink("dir/x", d.join("inside")).unwrap();
    let p = plan(d, &["inside"], "/x").unwrap();
    assert_eq!(p.items[0].source, d.join("dir/x"));
    assert!(plan(d, &["http://example.com/x"], "/x")
        .unwrap_err()
        .to_string()
        .contains("URL"));
    // In an image root, absolute links stay inside it.
    let img = tempfile::tempdir().unwrap();
    fs::create_dir_all(img.path().join("usr/bin")).unwrap();
    fs::write(img.path().join("usr/bin/tool"), "T").unwrap();
    symlink("/usr/bin", img.path().join("bin")).unwrap();
    let root = Root::Image { dir: img.path() };
    let p = plan_copy(&root, &step(&["/bin/tool"], "/t"), false).unwrap();
    assert_eq!(p.items[0].source, img.path().join("usr/bin/tool"));
}

#[test]
fn staging_sets_owners_modes_and_extracts_archives() {
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let t = context();
    let d = t.path();
    fs::set_permissions(d.join("dir/x"), fs::Permissions::from_mode(0o600)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let p = plan(d, &["dir"], "/app/").unwrap();
    let opts = StageOptions {
        owner: Some((5, 6)),
        ..StageOptions::default()
    };
    stage(&p, out.path(), &opts).unwrap();
    let x = fs::metadata(out.path().join("app/x")).unwrap();
    assert_eq!((x.uid(), x.gid(), x.mode() & 0o7777), (5, 6, 0o600));
    assert_eq!(
        fs::read_link(out.path().join("app/link")).unwrap(),
        Path::new("x")
    );
    let out2 = tempfile::tempdir().unwrap();
    let opts = StageOptions {
        mode: Some(parse_chmod("751").unwrap()),
        ..StageOptions::default()
    };
    stage(&p, out2.path(), &opts).unwrap();
    let y = fs::metadata(out2.path().join("app/sub/y")).unwrap();
    assert_eq!((y.uid(), y.mode() & 0o7777), (0, 0o751));
    assert!(parse_chmod("9").is_err() && parse_chmod("u+x").is_err());

    // ADD of plain, gzip, bzip2 and xz tars (made with the system's tools when present).
    let tar = d.join("t.tar");
    let status = std::process::Command::new("tar")
        .args(["-cf"])
        .arg(&tar)
        .args(["-C"])
        .arg(d.join("dir"))
        .args(["x", "sub"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut kinds = vec!["t.tar".to_string()];
    for (tool, ext) in [("gzip", "gz"), ("bzip2", "bz2"), ("xz", "xz")] {
        let made = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{tool} -c t.tar > t.tar.{ext}"))
            .current_dir(d)
            .status()
            .is_ok_and(|s| s.success());
        if made {
            kinds.push(format!("t.tar.{ext}"));
        }
    }
    for name in kinds {
        let mut s = step(&[&name], "/untar");
        s.add = true;
        let ignore = Ignore::default();
        let root = Root::Context {
            dir: d,
            ignore: &ignore,
        };
        let p = plan_copy(&root, &s, false).unwrap();
        assert_eq!(p.items[0].kind, ItemKind::Archive, "{name}");
        let out = tempfile::tempdir().unwrap();
        stage(&p, out.path(), &StageOptions::default()).unwrap();
        assert_eq!(
            fs::read_to_string(out.path().join("untar/sub/y")).unwrap(),
            "Y",
            "{name}"
        );
    }
    // COPY of a tar does not extract it.
    let ignore = Ignore::default();
    let root = Root::Context {
        dir: d,
        ignore: &ignore,
    };
    let p = plan_copy(&root, &step(&["t.tar"], "/t"), false).unwrap();
    assert_eq!(p.items[0].kind, ItemKind::File);
}

#[test]
fn hostile_archives_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    // `append_data` refuses `..`: write the name into the header by hand.
    h.as_gnu_mut().unwrap().name[..8].copy_from_slice(b"../evil\0");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    fs::write(t.path().join("evil.tar"), b.into_inner().unwrap()).unwrap();
    let mut s = step(&["evil.tar"], "/x/");
    s.add = true;
    let ignore = Ignore::default();
    let root = Root::Context {
        dir: t.path(),
        ignore: &ignore,
    };
    let p = plan_copy(&root, &s, false).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = stage(&p, out.path(), &StageOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains(".."), "{err}");
    assert!(!out.path().join("evil").exists());
}
