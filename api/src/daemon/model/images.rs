//! Docker's JSON answers about images, events, progress and disk usage (API 1.47 shapes).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::containers::ContainerSummary;

/// One row of `GET /images/json` (`docker images`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    /// `sha256:` and 64 hex digits.
    pub id: String,
    pub parent_id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Unix seconds.
    pub created: i64,
    pub size: i64,
    /// -1 when not computed.
    pub shared_size: i64,
    pub labels: BTreeMap<String, String>,
    /// -1 when not computed.
    pub containers: i64,
}

/// `GET /images/{name}/json`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub parent: String,
    pub comment: String,
    /// RFC 3339.
    pub created: String,
    pub author: String,
    pub config: ImageConfig,
    pub architecture: String,
    pub os: String,
    pub size: i64,
    pub graph_driver: super::containers::GraphDriver,
    #[serde(rename = "RootFS")]
    pub root_fs: RootFs,
}

/// The runnable defaults an image carries.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    pub user: String,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: Option<BTreeMap<String, serde_json::Map<String, serde_json::Value>>>,
    pub volumes: Option<BTreeMap<String, serde_json::Map<String, serde_json::Value>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootFs {
    #[serde(rename = "Type")]
    pub kind: String,
    pub layers: Vec<String>,
}

/// One row of `GET /images/{name}/history` (`docker history`), newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryItem {
    /// The image ID on the top row, `<missing>` below it (as Docker has no IDs for those).
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    pub created_by: String,
    /// The image's names on the top row; null elsewhere.
    pub tags: Option<Vec<String>>,
    pub size: i64,
    pub comment: String,
}

/// One entry of `DELETE /images/{name}`'s answer.
#[derive(Debug, Clone, Serialize)]
pub enum ImageDeleteItem {
    Untagged(String),
    Deleted(String),
}

/// One line of a JSON-lines progress stream (pull, load, push).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ProgressMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    /// `docker load` prints this ("Loaded image: busybox:latest\n").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Set on failure: the client stops and shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<ErrorDetail>,
    /// A result beside the text: a push's `{"Tag", "Digest", "Size"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
}

impl ProgressMessage {
    /// A failure line: both `error` and `errorDetail.message`, as Docker writes them.
    pub fn failure(message: impl Into<String>) -> ProgressMessage {
        let message = message.into();
        ProgressMessage {
            error: Some(message.clone()),
            error_detail: Some(ErrorDetail { message }),
            ..ProgressMessage::default()
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ProgressDetail {
    pub current: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorDetail {
    pub message: String,
}

/// One line of `GET /events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Event {
    /// container, image, network, volume, daemon.
    #[serde(rename = "Type")]
    pub kind: String,
    /// create, start, die, destroy, exec_start, pull, …
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    pub scope: String,
    /// Unix seconds.
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventActor {
    /// A full 64-hex container ID: `docker stats` slices `[:12]`.
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// `GET /system/df`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DiskUsage {
    pub layers_size: i64,
    pub images: Vec<ImageSummary>,
    pub containers: Vec<ContainerSummary>,
    pub volumes: Vec<super::Volume>,
    pub build_cache: Vec<serde_json::Value>,
}
