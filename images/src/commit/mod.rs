//! `commit`: a container's copy-on-write upper directory becomes one gzip layer on top of its
//! image's layers, with a history entry and the configuration changes asked for; the new image
//! is recorded in the store (named, or by digest) and its layer unpacked, ready to run.

use std::io::{self, Write};
use std::path::Path;

use flate2::GzBuilder;
use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{
    media, Compression, Descriptor, ImageConfigFile, ImageManifest, ManifestDoc, RuntimeConfig,
    MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES,
};
use crate::reference::Reference;
use crate::service::record;
use crate::store::{BlobWriter, ImageRecord, Store};
use crate::unpack::ImageBudget;

mod changes;
pub mod layer;
#[cfg(test)]
mod tests;

pub use changes::{clean, expose, Change};

/// What the new image says about itself.
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    /// The name to record it under (`REPO[:TAG]`); untagged (named by digest) without one.
    pub reference: Option<Reference>,
    pub author: Option<String>,
    /// The history entry's comment (`commit --message`).
    pub comment: Option<String>,
    pub changes: Vec<Change>,
    /// RFC 3339: the config's `created` and the history entry's.
    pub created: String,
    /// The history entry's `created_by` (Docker: the container's command).
    pub created_by: String,
    /// The whole runtime config of the new image (a Dockerfile build's evaluator holds it),
    /// replacing the base's; `changes` still apply on top.
    pub config: Option<RuntimeConfig>,
}

/// Commits `upper` (an overlay upper directory) on top of `base` (`None`: `scratch`, an image
/// without layers for this host's platform). An upper without changes adds no layer: the
/// history entry is then marked `empty_layer`, as Docker does.
pub fn commit(
    store: &Store,
    base: Option<&ImageRecord>,
    upper: &Path,
    opts: &CommitOptions,
) -> Result<ImageRecord> {
    let _gc = store.gc_lock(false)?;
    let what = format!("layer committed from {}", upper.display());
    let blob = store.blob_writer(store.config.max_blob_bytes, &what)?;
    // No name, no time in the gzip header: the same tree gives the same blob.
    let gz = GzBuilder::new().write(BlobSink(blob), flate2::Compression::default());
    let (gz, summary) = layer::write_layer(upper, gz)?;
    let BlobSink(blob) = gz.finish().map_err(|e| Error::Uncommittable {
        path: upper.to_path_buf(),
        reason: format!("cannot compress the layer: {e}"),
    })?;
    let new_layer = if summary.entries == 0 {
        None
    } else {
        let size = blob.written();
        let digest = blob.commit(None, &what)?;
        let budget = ImageBudget::new(&store.config.unpack.limits);
        // Unpacked by the same code as pulled layers: what runs is what the blob says.
        store.ensure_layer(&summary.diff_id, &digest, Compression::Gzip, &budget)?;
        Some(Descriptor {
            media_type: media::OCI_LAYER_GZIP.to_string(),
            digest,
            size,
            platform: None,
            annotations: Default::default(),
        })
    };

    let base_config = match base {
        Some(b) => store.read_blob(&b.config_digest, MAX_CONFIG_BYTES, "image config")?,
        None => scratch_config(),
    };
    let config = new_config(
        &base_config,
        new_layer.as_ref().map(|_| &summary.diff_id),
        opts,
    )?;
    let config_digest = store.put_blob(&config, None, "image config")?;

    let base_layers = match base {
        Some(b) => base_layers(store, b)?,
        None => Vec::new(),
    };
    let mut layers = Vec::with_capacity(base_layers.len() + 1);
    for l in base_layers {
        // An OCI manifest names its layers with OCI types (a Docker base's are renamed).
        let media_type = Compression::of_media_type(&l.media_type)?
            .oci_media_type()
            .to_string();
        layers.push(Descriptor { media_type, ..l });
    }
    layers.extend(new_layer);
    let manifest = ImageManifest::oci(config_digest, config.len() as u64, layers).to_bytes()?;
    let manifest_digest = store.put_blob(&manifest, None, "manifest")?;
    let name = opts
        .reference
        .as_ref()
        .map_or_else(|| manifest_digest.to_string(), Reference::to_string);
    record(store, name, &manifest_digest, None)
}

/// The config `FROM scratch` starts from: no layers, this host's platform.
fn scratch_config() -> Vec<u8> {
    let host = crate::platform::Platform::host();
    let mut doc = serde_json::json!({
        "architecture": host.architecture,
        "os": host.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    if let (Some(v), Value::Object(m)) = (host.variant, &mut doc) {
        m.insert("variant".into(), Value::from(v));
    }
    doc.to_string().into_bytes()
}

fn base_layers(store: &Store, base: &ImageRecord) -> Result<Vec<Descriptor>> {
    let bytes = store.read_blob(&base.manifest_digest, MAX_MANIFEST_BYTES, "manifest")?;
    match ManifestDoc::parse(&bytes, None)? {
        ManifestDoc::Image(m) => Ok(m.layers),
        _ => Err(Error::Malformed {
            what: format!("manifest {}", base.manifest_digest),
            reason: "an index, not an image manifest".into(),
        }),
    }
}

/// The base image's config (every field kept, known to skiff or not) with the new layer's
/// diff_id, a history entry, the author, the creation time and the changes.
fn new_config(base: &[u8], diff_id: Option<&Digest>, opts: &CommitOptions) -> Result<Vec<u8>> {
    let malformed = |reason: String| Error::Malformed {
        what: "image config".into(),
        reason,
    };
    let Value::Object(mut doc) =
        serde_json::from_slice(base).map_err(|e| malformed(e.to_string()))?
    else {
        return Err(malformed("not a JSON object".into()));
    };
    if let Some(d) = diff_id {
        let diff_ids = doc
            .get_mut("rootfs")
            .and_then(|r| r.get_mut("diff_ids"))
            .and_then(Value::as_array_mut)
            .ok_or_else(|| malformed("no rootfs.diff_ids".into()))?;
        diff_ids.push(Value::from(d.to_string()));
    }
    let mut entry = Map::new();
    entry.insert("created".into(), Value::from(opts.created.clone()));
    entry.insert("created_by".into(), Value::from(opts.created_by.clone()));
    if let Some(a) = &opts.author {
        entry.insert("author".into(), Value::from(a.clone()));
        doc.insert("author".into(), Value::from(a.clone()));
    }
    if let Some(c) = &opts.comment {
        entry.insert("comment".into(), Value::from(c.clone()));
    }
    if diff_id.is_none() {
        entry.insert("empty_layer".into(), Value::Bool(true));
    }
    match doc.get_mut("history").and_then(Value::as_array_mut) {
        Some(h) => h.push(Value::Object(entry)),
        None => {
            doc.insert("history".into(), Value::Array(vec![Value::Object(entry)]));
        }
    }
    doc.insert("created".into(), Value::from(opts.created.clone()));
    let config = doc
        .entry("config")
        .or_insert_with(|| Value::Object(Map::new()));
    if !config.is_object() {
        *config = Value::Object(Map::new());
    }
    if let Some(whole) = &opts.config {
        *config = serde_json::to_value(whole).map_err(|e| malformed(e.to_string()))?;
    }
    if let Value::Object(c) = config {
        Change::apply_all(&opts.changes, c);
    }
    let bytes = serde_json::to_vec(&doc).map_err(|e| malformed(e.to_string()))?;
    ImageConfigFile::parse(&bytes)?;
    Ok(bytes)
}

/// The compressed layer on its way into the store.
struct BlobSink(BlobWriter);

impl Write for BlobSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
