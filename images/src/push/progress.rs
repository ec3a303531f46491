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

impl PushEventKind {
    /// Docker's status text for it (`docker push` shows these beside each layer).
    pub fn status(&self) -> String {
        match self {
            PushEventKind::Preparing { .. } => "Preparing".into(),
            PushEventKind::Exists => "Layer already exists".into(),
            PushEventKind::Mounted { from } => format!("Mounted from {from}"),
            PushEventKind::Uploading { .. } => "Pushing".into(),
            PushEventKind::Pushed => "Pushed".into(),
        }
    }

    /// Read back from Docker's status text and byte counts (a push through a daemon).
    pub fn from_status(status: &str, current: u64, total: u64) -> Option<PushEventKind> {
        Some(match status {
            "Preparing" => PushEventKind::Preparing { size: total },
            "Layer already exists" => PushEventKind::Exists,
            "Pushing" => PushEventKind::Uploading { current, total },
            "Pushed" => PushEventKind::Pushed,
            s => PushEventKind::Mounted {
                from: s.strip_prefix("Mounted from ")?.to_string(),
            },
        })
    }

    /// Whether the layer is done.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            PushEventKind::Exists | PushEventKind::Mounted { .. } | PushEventKind::Pushed
        )
    }
}

/// Bars on stderr, one per layer (by its ID), as `docker push` draws them.
pub struct PushBars {
    bars: MultiProgress,
    by_layer: Mutex<HashMap<String, ProgressBar>>,
}

impl Default for PushBars {
    fn default() -> Self {
        PushBars {
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            by_layer: Mutex::default(),
        }
    }
}

impl PushBars {
    pub fn show(&self, id: &str, kind: &PushEventKind) {
        let mut by_layer = self.by_layer.lock().unwrap_or_else(|p| p.into_inner());
        let bar = by_layer.entry(id.to_string()).or_insert_with(|| {
            let bar = self.bars.add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template("{prefix} {msg:>22} [{bar:30}] {bytes}/{total_bytes}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(id.to_string());
            bar
        });
        match kind {
            PushEventKind::Preparing { size } => bar.set_length(*size),
            PushEventKind::Uploading { current, total } => {
                bar.set_length(*total);
                bar.set_position(*current);
            }
            _ => {}
        }
        if kind.is_final() {
            bar.finish_with_message(kind.status());
        } else {
            bar.set_message(kind.status());
        }
    }
}

/// A push's progress as bars on stderr.
pub fn terminal_bars() -> PushProgress {
    let bars = PushBars::default();
    Arc::new(move |e: PushEvent| bars.show(&e.id, &e.kind))
}
