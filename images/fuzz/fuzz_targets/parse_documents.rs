//! Any byte string as the documents a registry or an archive sends: manifests and indexes
//! (under each transport type), image configs, references, digests, platforms and auth
//! challenges. Parsing must end in Ok or an error, never panic; what parses must survive
//! being printed and parsed again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use skiff_images::manifest::{ImageConfigFile, ManifestDoc};
use skiff_images::registry::parse_challenge;
use skiff_images::{Digest, Platform, Reference};

const TRANSPORT_TYPES: [Option<&str>; 4] = [
    None,
    Some("application/json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    for t in TRANSPORT_TYPES {
        if let Ok(ManifestDoc::Index(index)) = ManifestDoc::parse(data, t) {
            let _ = index.choose(&Platform::host());
        }
    }
    if let Ok(config) = ImageConfigFile::parse(data) {
        let _ = config.platform().to_string();
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Reference::parse(text) {
        let again = Reference::parse(&r.to_string()).expect("a printed reference parses");
        assert_eq!(again.to_string(), r.to_string());
    }
    if let Ok(d) = text.parse::<Digest>() {
        assert_eq!(d.to_string(), text);
    }
    if let Ok(p) = text.parse::<Platform>() {
        let _ = p.to_string().parse::<Platform>();
    }
    let _ = parse_challenge(text);
    let _ = skiff_images::text::escape_untrusted(text);
});
