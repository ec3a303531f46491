//! `docker history`: the config's history entries, each paired with the layer it made.

use crate::error::Result;
use crate::manifest::{HistoryEntry, ImageConfigFile, MAX_CONFIG_BYTES};
use crate::store::{ImageRecord, LayerRecord, Store};

/// One step of an image's making, oldest first in what `history` returns.
#[derive(Clone, Debug)]
pub struct HistoryRow {
    pub entry: HistoryEntry,
    /// The layer this step made; None for steps that changed only the config.
    pub layer: Option<LayerRecord>,
}

/// The steps of `image`: its config's history, non-empty entries matched to the layers in
/// order. Layers the history does not account for (images built without one) get a row of
/// their own with nothing known about them.
pub fn history(store: &Store, image: &ImageRecord) -> Result<Vec<HistoryRow>> {
    let bytes = store.read_blob(&image.config_digest, MAX_CONFIG_BYTES, "image config")?;
    let config = ImageConfigFile::parse(&bytes)?;
    Ok(pair(config.history, &image.layers))
}

fn pair(entries: Vec<HistoryEntry>, layers: &[LayerRecord]) -> Vec<HistoryRow> {
    let mut layers = layers.iter();
    let mut rows: Vec<HistoryRow> = entries
        .into_iter()
        .map(|entry| {
            let layer = if entry.empty_layer {
                None
            } else {
                layers.next().cloned()
            };
            HistoryRow { entry, layer }
        })
        .collect();
    rows.extend(layers.map(|l| HistoryRow {
        entry: HistoryEntry::default(),
        layer: Some(l.clone()),
    }));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn layer(n: u8) -> LayerRecord {
        LayerRecord {
            blob: Digest::of(&[n]),
            diff_id: Digest::of(&[n, n]),
            media_type: String::new(),
            size: n.into(),
        }
    }

    fn entry(by: &str, empty: bool) -> HistoryEntry {
        HistoryEntry {
            created_by: Some(by.into()),
            empty_layer: empty,
            ..HistoryEntry::default()
        }
    }

    #[test]
    fn empty_entries_take_no_layer_and_unaccounted_layers_get_rows() {
        let rows = pair(
            vec![
                entry("base", false),
                entry("ENV x", true),
                entry("RUN y", false),
            ],
            &[layer(1), layer(2)],
        );
        let sizes: Vec<_> = rows
            .iter()
            .map(|r| r.layer.as_ref().map(|l| l.size))
            .collect();
        assert_eq!(sizes, [Some(1), None, Some(2)]);
        let rows = pair(Vec::new(), &[layer(1), layer(2)]);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.entry.created_by.is_none()));
    }
}
