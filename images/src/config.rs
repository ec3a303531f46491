//! The store's tunables: caps against hostile images, archives and registries, and the network
//! timeouts. A binary reads them at its edge (`StoreConfig::from_env` with its own environment
//! lookup) and passes them down: nothing in this crate reads the process environment.

use std::ffi::OsString;
use std::time::Duration;

use crate::unpack::{DevicePolicy, UnpackOptions};

/// Caps on what a registry or an archive may make the store download or keep, and timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Unpack caps (uncompressed bytes per layer and per image, entries per layer) and the
    /// device node policy.
    pub unpack: UnpackOptions,
    /// The largest compressed layer (or other blob) accepted: a descriptor declaring more is
    /// refused before anything is downloaded, and no download or import writes more.
    pub max_blob_bytes: u64,
    /// The largest image to download or import: the sum of its layers' declared
    /// (compressed) sizes.
    pub max_image_bytes: u64,
    pub timeouts: RegistryTimeouts,
}

/// How long a registry may keep us waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryTimeouts {
    /// TCP (and TLS) connection set-up.
    pub connect: Duration,
    /// Silence while a response (headers or body) is awaited: a stalled registry fails the
    /// pull after this long instead of hanging it.
    pub read: Duration,
}

impl Default for RegistryTimeouts {
    fn default() -> Self {
        RegistryTimeouts {
            connect: Duration::from_secs(30),
            read: Duration::from_secs(60),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            unpack: UnpackOptions::default(),
            max_blob_bytes: 16 << 30,
            max_image_bytes: 64 << 30,
            timeouts: RegistryTimeouts::default(),
        }
    }
}

impl StoreConfig {
    /// Defaults overridden by the environment `env` gives (a binary passes
    /// `std::env::var_os`): `SKIFF_UNPACK_MAX_BYTES`, `SKIFF_UNPACK_MAX_ENTRIES`,
    /// `SKIFF_UNPACK_MAX_IMAGE_BYTES`, `SKIFF_UNPACK_DEVICES=create`,
    /// `SKIFF_IMAGE_MAX_BLOB_BYTES`, `SKIFF_IMAGE_MAX_BYTES`,
    /// `SKIFF_REGISTRY_CONNECT_TIMEOUT` and `SKIFF_REGISTRY_READ_TIMEOUT` (seconds).
    /// Unparsable values keep the default.
    pub fn from_env(env: &dyn Fn(&str) -> Option<OsString>) -> StoreConfig {
        let num = |k: &str| env(k).and_then(|v| v.to_str()?.trim().parse::<u64>().ok());
        let mut c = StoreConfig::default();
        if let Some(v) = num("SKIFF_UNPACK_MAX_BYTES") {
            c.unpack.limits.max_bytes = v;
        }
        if let Some(v) = num("SKIFF_UNPACK_MAX_ENTRIES") {
            c.unpack.limits.max_entries = v;
        }
        if let Some(v) = num("SKIFF_UNPACK_MAX_IMAGE_BYTES") {
            c.unpack.limits.max_image_bytes = v;
        }
        if env("SKIFF_UNPACK_DEVICES").is_some_and(|v| v == "create") {
            c.unpack.devices = DevicePolicy::Create;
        }
        if let Some(v) = num("SKIFF_IMAGE_MAX_BLOB_BYTES") {
            c.max_blob_bytes = v;
        }
        if let Some(v) = num("SKIFF_IMAGE_MAX_BYTES") {
            c.max_image_bytes = v;
        }
        if let Some(v) = num("SKIFF_REGISTRY_CONNECT_TIMEOUT") {
            c.timeouts.connect = Duration::from_secs(v);
        }
        if let Some(v) = num("SKIFF_REGISTRY_READ_TIMEOUT") {
            c.timeouts.read = Duration::from_secs(v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let vars = [
            ("SKIFF_UNPACK_MAX_BYTES", "1048576"),
            ("SKIFF_UNPACK_DEVICES", "create"),
            ("SKIFF_IMAGE_MAX_BLOB_BYTES", "5"),
            ("SKIFF_IMAGE_MAX_BYTES", " 7 "),
            ("SKIFF_REGISTRY_READ_TIMEOUT", "3"),
            ("SKIFF_REGISTRY_CONNECT_TIMEOUT", "soon"),
        ];
        let env = |k: &str| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| OsString::from(v))
        };
        let c = StoreConfig::from_env(&env);
        assert_eq!(c.unpack.limits.max_bytes, 1 << 20);
        assert_eq!(c.unpack.devices, DevicePolicy::Create);
        assert_eq!((c.max_blob_bytes, c.max_image_bytes), (5, 7));
        assert_eq!(c.timeouts.read, Duration::from_secs(3));
        assert_eq!(c.timeouts.connect, RegistryTimeouts::default().connect);
        let d = StoreConfig::from_env(&|_| None);
        assert_eq!(
            d.unpack.limits.max_bytes,
            UnpackOptions::default().limits.max_bytes
        );
    }
}
