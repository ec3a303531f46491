//! Manifests, indexes and image configs (OCI and Docker v2), as far as skiff reads them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::platform::Platform;

pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// The Accept header of every manifest request: registries answer 404 for OCI content or
    /// down-convert Docker manifests to schema 1 when a type is missing.
    pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
        application/vnd.oci.image.index.v1+json, \
        application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.docker.distribution.manifest.list.v2+json";
}

/// Upper bounds for documents read into memory (a hostile registry could send gigabytes).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ImageManifest {
    /// An OCI image manifest of `layers` over the config blob `config_digest` (`config_size`
    /// bytes), as the store writes for images it makes itself (commit, load).
    pub fn oci(config_digest: Digest, config_size: u64, layers: Vec<Descriptor>) -> ImageManifest {
        ImageManifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.to_string()),
            config: Descriptor {
                media_type: media::OCI_CONFIG.to_string(),
                digest: config_digest,
                size: config_size,
                platform: None,
                annotations: Default::default(),
            },
            layers,
            annotations: Default::default(),
        }
    }

    /// Its JSON bytes, as stored and pushed.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::Malformed {
            what: "manifest".into(),
            reason: e.to_string(),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

pub enum ManifestDoc {
    Image(ImageManifest),
    Index(ImageIndex),
}

impl ManifestDoc {
    /// Parses a manifest or index. The type comes from the document's own `mediaType`, else
    /// from the transport's (Content-Type, descriptor), else from its shape.
    pub fn parse(bytes: &[u8], transport_type: Option<&str>) -> Result<ManifestDoc> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Probe {
            schema_version: Option<u32>,
            media_type: Option<String>,
            manifests: Option<serde_json::Value>,
            layers: Option<serde_json::Value>,
        }
        let malformed = |reason: String| Error::Malformed {
            what: "manifest".into(),
            reason,
        };
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if probe.schema_version == Some(1) {
            return Err(Error::UnsupportedMediaType {
                what: "manifest".into(),
                media_type: "Docker schema 1 manifest (deprecated)".into(),
            });
        }
        let media_type = probe.media_type.clone().or_else(|| {
            transport_type.map(|t| t.split(';').next().unwrap_or(t).trim().to_string())
        });
        let is_index = match media_type.as_deref() {
            Some(media::OCI_INDEX | media::DOCKER_LIST) => true,
            Some(media::OCI_MANIFEST | media::DOCKER_MANIFEST) => false,
            // Servers often label everything application/json: fall back to the shape.
            Some("application/json" | "application/octet-stream" | "") | None => {
                probe.manifests.is_some() && probe.layers.is_none()
            }
            Some(other) => {
                return Err(Error::UnsupportedMediaType {
                    what: "manifest".into(),
                    media_type: other.into(),
                })
            }
        };
        if is_index {
            let idx: ImageIndex =
                serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
            Ok(ManifestDoc::Index(idx))
        } else {
            let m: ImageManifest =
                serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
            match m.config.media_type.as_str() {
                media::OCI_CONFIG | media::DOCKER_CONFIG => {}
                other => {
                    return Err(Error::UnsupportedMediaType {
                        what: "image config (not a container image)".into(),
                        media_type: other.into(),
                    })
                }
            }
            for l in &m.layers {
                Compression::of_media_type(&l.media_type)?;
            }
            Ok(ManifestDoc::Image(m))
        }
    }
}

impl ImageIndex {
    /// The manifest for `wanted`; entries without a platform are attestations or the like.
    pub fn choose(&self, wanted: &Platform) -> Result<&Descriptor> {
        self.manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| wanted.accepts(p)))
            .ok_or_else(|| Error::NoMatchingPlatform {
                wanted: wanted.to_string(),
                available: self
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref().map(Platform::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn of_media_type(mt: &str) -> Result<Compression> {
        Ok(match mt {
            media::OCI_LAYER_TAR
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            media::OCI_LAYER_GZIP
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            media::OCI_LAYER_ZSTD
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
            other => {
                return Err(Error::UnsupportedMediaType {
                    what: "layer".into(),
                    media_type: other.into(),
                })
            }
        })
    }

    /// Recognizes a blob by its magic bytes (for `docker save` archives, which name no type).
    pub fn sniff(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }

    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => media::OCI_LAYER_TAR,
            Compression::Gzip => media::OCI_LAYER_GZIP,
            Compression::Zstd => media::OCI_LAYER_ZSTD,
        }
    }
}

/// The image configuration blob (only what skiff uses; the blob itself stays in the store).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImageConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<RuntimeConfig>,
    pub rootfs: RootFs,
    /// How each layer was made, oldest first; `empty_layer` entries have no layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// One entry of the config's `history` (`docker history` shows them).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HistoryEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default)]
    pub empty_layer: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// How to run the image: what the run path hands to guest-init.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// `80/tcp`, … (the values are empty objects).
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    /// `/data`, … (the values are empty objects): each becomes an anonymous volume.
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<HealthConfig>,
    /// ONBUILD triggers (`RUN make`, …): run by builds that start FROM this image.
    #[serde(rename = "OnBuild", default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// The shell of shell-form commands (SHELL); `/bin/sh -c` when unset.
    #[serde(rename = "Shell", default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

/// Docker's `HealthConfig`: durations in nanoseconds, 0 meaning the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`.
    #[serde(rename = "Test", default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(rename = "StartInterval", default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl ImageConfigFile {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfigFile> {
        let cfg: ImageConfigFile = serde_json::from_slice(bytes).map_err(|e| Error::Malformed {
            what: "image config".into(),
            reason: e.to_string(),
        })?;
        if cfg.rootfs.kind != "layers" {
            return Err(Error::Malformed {
                what: "image config".into(),
                reason: format!("rootfs.type is {:?}, not \"layers\"", cfg.rootfs.kind),
            });
        }
        Ok(cfg)
    }

    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_schema1_and_unknown_types() {
        let s1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
        assert!(matches!(
            ManifestDoc::parse(s1, None),
            Err(Error::UnsupportedMediaType { .. })
        ));
        let helm = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{}","size":1}},"layers":[]}}"#,
            media::OCI_MANIFEST,
            Digest::of(b"x")
        );
        let err = ManifestDoc::parse(helm.as_bytes(), None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("helm"), "{err}");
        assert!(ManifestDoc::parse(b"{not json", None).is_err());
        let weird = br#"{"schemaVersion":2,"mediaType":"text/html"}"#;
        assert!(ManifestDoc::parse(weird, None).is_err());
    }

    #[test]
    fn index_by_shape() {
        let idx = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{}","size":3,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            media::OCI_MANIFEST,
            Digest::of(b"m")
        );
        let ManifestDoc::Index(i) =
            ManifestDoc::parse(idx.as_bytes(), Some("application/json")).unwrap()
        else {
            panic!("not an index")
        };
        assert!(i.choose(&"linux/arm64".parse().unwrap()).is_ok());
        let err = i
            .choose(&"linux/amd64".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("linux/arm64/v8"), "{err}");
    }
}
