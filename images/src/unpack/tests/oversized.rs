//! Layers that declare more than they carry: sparse maps and sizes that would get around the
//! byte limit (hole 2), and header extensions the parser would read whole into memory (hole 3).

use super::*;

const MIB: u64 = 1 << 20;

/// A GNU sparse entry whose data chunks (each 512 bytes of 'x') are at `offsets`, the last one
/// ending the file; chunks past the header's four slots go to extension blocks.
fn sparse(path: &str, offsets: &[u64]) -> Vec<u8> {
    let real_size = offsets.last().map_or(0, |o| o + 512);
    let mut h = Layer::header(
        tar::EntryType::GNUSparse,
        path,
        512 * offsets.len() as u64,
        0o644,
    );
    let mut ext: Vec<tar::GnuExtSparseHeader> = Vec::new();
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.set_real_size(real_size);
        for (i, off) in offsets.iter().enumerate() {
            let slot = if i < 4 {
                &mut gnu.sparse[i]
            } else {
                let (block, slot) = ((i - 4) / 21, (i - 4) % 21);
                if ext.len() <= block {
                    ext.push(tar::GnuExtSparseHeader::new());
                }
                &mut ext[block].sparse[slot]
            };
            slot.set_offset(*off);
            slot.set_length(512);
        }
        gnu.set_is_extended(!ext.is_empty());
    }
    let blocks = ext.len();
    for (i, e) in ext.iter_mut().enumerate() {
        e.set_is_extended(i + 1 < blocks);
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    for e in &ext {
        out.extend_from_slice(e.as_bytes());
    }
    out.extend(std::iter::repeat_n(b'x', 512 * offsets.len()));
    out
}

fn layer_of(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = parts.concat();
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn unpack_limited(tar: &[u8], root: &Path, max_bytes: u64) -> Result<LayerStats> {
    apply_layer(
        tar,
        Compression::None,
        root,
        Whiteouts::Overlay,
        &limited(max_bytes, 1000),
        &ImageBudget::new(&UnpackLimits::default()),
    )
}

fn assert_limit(r: Result<LayerStats>) {
    match r {
        Err(Error::LimitExceeded(_)) => {}
        other => panic!("expected the unpack limit, got {other:?}"),
    }
}

/// The biggest file the unpack left behind.
fn largest_file(root: &Path) -> u64 {
    let mut max = 0;
    for e in fs::read_dir(root).unwrap().flatten() {
        let m = fs::symlink_metadata(e.path()).unwrap();
        max = max.max(if m.is_dir() {
            largest_file(&e.path())
        } else {
            m.len()
        });
    }
    max
}

#[test]
fn sparse_files_count_at_their_expanded_size() {
    let layouts: [(&str, Vec<Vec<u8>>); 3] = [
        // One chunk at the end of a 64 MiB file.
        ("tail chunk", vec![sparse("big", &[64 * MIB - 512])]),
        // Chunks spread over two extension blocks.
        (
            "extension blocks",
            vec![sparse(
                "big",
                &(0..30).map(|i| i * 2 * MIB).collect::<Vec<_>>(),
            )],
        ),
        // Files each under the limit, together over it.
        (
            "several files",
            (0..3)
                .map(|i| sparse(&format!("f{i}"), &[(600 << 10) - 512]))
                .collect(),
        ),
    ];
    for (what, parts) in layouts {
        let sb = sandbox();
        let tar = layer_of(&parts);
        assert!(tar.len() < 64 << 10, "{what}: the layer itself is small");
        assert_limit(unpack_limited(&tar, &sb.root, MIB));
        assert!(largest_file(&sb.root) <= MIB, "{what}");
    }
    // Within the limit a sparse file unpacks to its full size.
    let sb = sandbox();
    let tar = layer_of(&[sparse("ok", &[0, (256 << 10) - 512])]);
    unpack_limited(&tar, &sb.root, MIB).unwrap();
    let data = fs::read(sb.root.join("ok")).unwrap();
    assert_eq!(data.len(), 256 << 10);
    assert_eq!(
        (data[0], data[1024], data[(256 << 10) - 1]),
        (b'x', 0, b'x')
    );
}

#[test]
fn declared_size_counts_before_the_data_arrives() {
    // A header promising 1 GiB, with the stream cut short: refused as too large at once.
    let sb = sandbox();
    let h = Layer::header(tar::EntryType::Regular, "huge", 1 << 30, 0o644);
    let mut tar = h.as_bytes().to_vec();
    tar.extend(std::iter::repeat_n(b'x', 4096));
    assert_limit(unpack_limited(&tar, &sb.root, MIB));
    assert!(!sb.root.join("huge").exists());
}

/// An extension entry of `kind` whose header declares `size` bytes, followed by `data`.
fn extension(kind: tar::EntryType, size: u64, data: &[u8]) -> Vec<u8> {
    let h = Layer::header(kind, "././@LongLink", size, 0o644);
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

fn pax_record(key: &str, value_len: usize) -> Vec<u8> {
    pax_line(&format!("{key}={}", "v".repeat(value_len)))
}

/// `"<len> key=value\n"`, where len counts the whole line, itself included.
fn pax_line(key_value: &str) -> Vec<u8> {
    let body = format!("{key_value}\n");
    let mut n = body.len() + 2;
    while (n.to_string().len() + 1 + body.len()) != n {
        n = n.to_string().len() + 1 + body.len();
    }
    format!("{n} {body}").into_bytes()
}

fn padded(mut v: Vec<u8>) -> Vec<u8> {
    v.extend(std::iter::repeat_n(0u8, (512 - v.len() % 512) % 512));
    v
}

#[test]
fn header_extensions_are_bounded_before_they_are_read() {
    let file = {
        let h = Layer::header(tar::EntryType::Regular, "f", 1, 0o644);
        padded([h.as_bytes().as_slice(), b"x"].concat())
    };
    // Each declares a gigabyte (and carries only a little of it): refused at the header,
    // so nothing near that size is ever allocated.
    for kind in [
        tar::EntryType::GNULongName,
        tar::EntryType::GNULongLink,
        tar::EntryType::XHeader,
        tar::EntryType::XGlobalHeader,
    ] {
        let sb = sandbox();
        let tar = layer_of(&[extension(kind, 1 << 30, &[b'a'; 4096]), file.clone()]);
        assert_limit(unpack_limited(&tar, &sb.root, 1 << 40));
    }
    // Just over each bound, with all the data there.
    let long_name = padded(extension(tar::EntryType::GNULongName, 5000, &[b'a'; 5000]));
    let records: [(&str, usize); 3] = [
        ("SCHILY.xattr.user.x", (64 << 10) + 1),
        ("path", 5000),
        ("linkpath", 5000),
    ];
    let mut cases = vec![long_name];
    for (key, len) in records {
        let rec = pax_record(key, len);
        cases.push(padded(extension(
            tar::EntryType::XHeader,
            rec.len() as u64,
            &rec,
        )));
    }
    for case in cases {
        let sb = sandbox();
        assert_limit(unpack_limited(
            &layer_of(&[case, file.clone()]),
            &sb.root,
            1 << 40,
        ));
    }
    // Within the bounds: applied.
    let sb = sandbox();
    let name = "d/".repeat(100) + "leaf";
    let ln = padded(extension(
        tar::EntryType::GNULongName,
        name.len() as u64 + 1,
        format!("{name}\0").as_bytes(),
    ));
    let rec = pax_record("SCHILY.xattr.user.ok", 1000);
    let pax = padded(extension(tar::EntryType::XHeader, rec.len() as u64, &rec));
    let tar = layer_of(&[ln, file.clone(), pax, file]);
    unpack_limited(&tar, &sb.root, 1 << 40).unwrap();
    assert_eq!(fs::read(sb.root.join(&name)).unwrap(), b"x");
}

#[test]
fn pax_size_override_is_followed() {
    // A PAX `size` record makes the next entry's data longer than its header says; inside
    // that data sits what looks like an oversized long-name header. The guard must frame the
    // stream as the parser does, and the parser reads it as file data.
    let hidden = extension(tar::EntryType::GNULongName, 1 << 30, b"");
    let data = padded(hidden.clone());
    let rec = pax_line(&format!("size={}", data.len()));
    let pax = padded(extension(tar::EntryType::XHeader, rec.len() as u64, &rec));
    let h = Layer::header(tar::EntryType::Regular, "f", 0, 0o644);
    let sb = sandbox();
    let tar = layer_of(&[pax, h.as_bytes().to_vec(), data.clone()]);
    unpack_limited(&tar, &sb.root, 1 << 40).unwrap();
    assert_eq!(fs::read(sb.root.join("f")).unwrap(), data);
}

#[test]
fn a_pax_size_near_the_top_of_u64_is_refused_without_a_panic() {
    // Found by the fuzzer: the guard's block padding of such a size overflowed.
    for size in [u64::MAX, u64::MAX - 100] {
        let rec = pax_line(&format!("size={size}"));
        let pax = padded(extension(tar::EntryType::XHeader, rec.len() as u64, &rec));
        let h = Layer::header(tar::EntryType::Regular, "f", 0, 0o644);
        let sb = sandbox();
        let tar = layer_of(&[pax, h.as_bytes().to_vec()]);
        assert!(unpack_limited(&tar, &sb.root, 1 << 40).is_err());
    }
}

#[test]
fn layers_of_one_image_share_a_budget() {
    let limits = UnpackLimits {
        max_image_bytes: MIB,
        ..UnpackLimits::default()
    };
    let budget = ImageBudget::new(&limits);
    let opts = UnpackOptions {
        limits,
        devices: DevicePolicy::Skip,
    };
    let layer = layer_of(&[sparse("f", &[(600 << 10) - 512])]);
    let unpack = |root: &Path| {
        apply_layer(
            &layer[..],
            Compression::None,
            root,
            Whiteouts::Overlay,
            &opts,
            &budget,
        )
    };
    // Each layer is within every per-layer limit; the second passes the image's.
    let (first, second) = (sandbox(), sandbox());
    unpack(&first.root).unwrap();
    assert_limit(unpack(&second.root));
    assert!(!second.root.join("f").exists());
}
