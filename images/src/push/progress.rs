//! What a push tells about each layer, and progress bars drawing it on a terminal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::digest::Digest;

/// Called for every event of every layer (from several tasks at once).
pub type PushProgress = Arc<dyn Fn(PushEvent) + Send + Sync>;

#[derive(Clone, Debug)]
pub struct PushEvent {
    /// The layer blob.
    pub layer: Digest,
    /// How Docker names the layer in its progress: 12 hex digits of its diff_id.
    pub id: String,
    pub kind: PushEventKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushEventKind {
    Preparing {
        size: u64,
    },
    /// The repository has it already.
    Exists,
    /// Mounted from this repository of the same registry.
    Mounted {
        from: String,
    },
    /// Bytes the registry holds so far (back to fewer after a failed chunk).
    Uploading {
        current: u64,
        total: u64,
    },
    Pushed,
}

/// Bars on stderr, one per layer, as `docker push` draws them.
pub fn terminal_bars() -> PushProgress {
    let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let by_layer: Mutex<HashMap<Digest, ProgressBar>> = Mutex::default();
    Arc::new(move |e: PushEvent| {
        let mut by_layer = by_layer.lock().unwrap_or_else(|p| p.into_inner());
        let bar = by_layer.entry(e.layer.clone()).or_insert_with(|| {
            let bar = bars.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template("{prefix} {msg:>22} [{bar:30}] {bytes}/{total_bytes}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(e.id.clone());
            bar
        });
        match e.kind {
            PushEventKind::Preparing { size } => {
                bar.set_length(size);
                bar.set_message("Preparing");
            }
            PushEventKind::Exists => bar.finish_with_message("Layer already exists"),
            PushEventKind::Mounted { from } => {
                bar.finish_with_message(format!("Mounted from {from}"))
            }
            PushEventKind::Uploading { current, total } => {
                bar.set_length(total);
                bar.set_position(current);
                bar.set_message("Pushing");
            }
            PushEventKind::Pushed => bar.finish_with_message("Pushed"),
        }
    })
}
