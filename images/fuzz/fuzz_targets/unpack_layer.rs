//! Any byte string as a layer: unpacking must end in Ok or an error, never panic, and never
//! touch anything outside its root. The first byte picks the compression and whiteout mode.

#![no_main]

use std::fs;

use libfuzzer_sys::fuzz_target;
use skiff_images::manifest::Compression;
use skiff_images::unpack::{
    apply_layer, DevicePolicy, ImageBudget, UnpackLimits, UnpackOptions, Whiteouts,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, layer)) = data.split_first() else {
        return;
    };
    let compression = match mode & 3 {
        0 | 3 => Compression::None,
        1 => Compression::Gzip,
        _ => Compression::Zstd,
    };
    let whiteouts = if mode & 4 == 0 {
        Whiteouts::Apply
    } else {
        Whiteouts::Overlay
    };
    // Small caps: a bomb is stopped quickly, and the run stays within its memory.
    let limits = UnpackLimits {
        max_bytes: 8 << 20,
        max_entries: 10_000,
        max_image_bytes: 8 << 20,
    };
    let opts = UnpackOptions {
        limits,
        devices: DevicePolicy::Skip,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir(&root).expect("root");
    fs::create_dir(&outside).expect("outside");
    fs::write(outside.join("secret"), b"untouched").expect("secret");
    let _ = apply_layer(
        layer,
        compression,
        &root,
        whiteouts,
        &opts,
        &ImageBudget::new(&limits),
    );
    assert_eq!(
        fs::read(outside.join("secret")).expect("secret"),
        b"untouched"
    );
    assert_eq!(fs::read_dir(&outside).expect("outside").count(), 1);
    assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 2);
});
