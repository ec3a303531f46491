//! `POST /images/{name}/push` and `GET /images/{name}/history` on the engine's image store:
//! the push's progress as Docker writes it (per layer `Preparing`, `Pushing` with byte
//! counts, `Pushed`, `Layer already exists`, `Mounted from …`; then `TAG: digest: … size: …`
//! and the `aux` result), and the config's history as `docker history` reads it.

use crate::daemon::registry_auth::RegistryAuth;
use futures_util::stream::{self, BoxStream, StreamExt};
use skiff_images::text::human_size;
use skiff_images::{PushEvent, PushEventKind, Reference};
use tokio::sync::mpsc;

use super::images::{familiar, no_such_image, repo_tags};
use super::{internal, Inner, Result};
use crate::daemon::model::{HistoryItem, ProgressDetail, ProgressMessage};
use crate::daemon::options::PushOptions;
use crate::daemon::timefmt::parse_rfc3339;
use crate::daemon::BackendError;

fn status(text: String, id: Option<&str>) -> ProgressMessage {
    ProgressMessage {
        status: Some(text),
        id: id.map(str::to_string),
        progress_detail: id.map(|_| ProgressDetail::default()),
        ..ProgressMessage::default()
    }
}

/// A layer's event as Docker's JSON message.
pub fn layer_message(e: PushEvent) -> ProgressMessage {
    let mut msg = status(e.kind.status(), Some(&e.id));
    if let PushEventKind::Uploading { current, total } = e.kind {
        msg.progress_detail = Some(ProgressDetail { current, total });
        msg.progress = Some(progress_bar(current, total));
    }
    msg
}

/// Docker's `[=====>     ]  1.2MB/3.4MB`.
fn progress_bar(current: u64, total: u64) -> String {
    const WIDTH: u64 = 50;
    let done = (current.saturating_mul(WIDTH) / total.max(1)).min(WIDTH);
    let arrow = if done < WIDTH { ">" } else { "" };
    let bar = format!(
        "{}{arrow}{}",
        "=".repeat(done as usize),
        " ".repeat((WIDTH - done).saturating_sub(arrow.len() as u64) as usize)
    );
    format!(
        "[{bar}] {}/{}",
        human_size(current, 3),
        human_size(total, 3)
    )
}

/// The local names a push of `name` (with `tag`, or every tag of it) sends.
fn names_to_push(inner: &Inner, name: &str, tag: Option<&str>) -> Result<(Reference, Vec<String>)> {
    let repo = Reference::parse(name)
        .map_err(|e| BackendError::InvalidArgument(format!("invalid reference {name}: {e}")))?;
    let missing = || {
        BackendError::NoSuchImage(format!(
            "An image does not exist locally with the tag: {}",
            repo.familiar_name()
        ))
    };
    let names = match tag {
        Some(t) => {
            let one = format!("{}:{t}", repo.name());
            inner.images.resolve(&one).map_err(|_| missing())?;
            vec![one]
        }
        None => inner.images.tags_of(&repo).map_err(internal)?,
    };
    if names.is_empty() {
        return Err(missing());
    }
    Ok((repo, names))
}

/// Ends the push task when the client goes away (its stream is dropped).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn push(inner: &Inner, opts: PushOptions) -> Result<BoxStream<'static, ProgressMessage>> {
    let (repo, names) = names_to_push(inner, &opts.name, opts.tag.as_deref())?;
    let credentials = opts.auth.as_ref().map(RegistryAuth::credentials);
    let (tx, rx) = mpsc::unbounded_channel::<ProgressMessage>();
    let _ = tx.send(status(
        format!("The push refers to repository [{}]", repo.name()),
        None,
    ));
    let images = inner.images.clone();
    let task = tokio::spawn(async move {
        for name in names {
            let events = tx.clone();
            let push_opts = skiff_images::PushOptions {
                credentials: credentials.clone(),
                progress: Some(std::sync::Arc::new(move |e: PushEvent| {
                    let _ = events.send(layer_message(e));
                })),
                ..skiff_images::PushOptions::default()
            };
            match images.push(&name, &name, &push_opts).await {
                Ok(r) => {
                    let line = format!("{}: digest: {} size: {}", r.tag, r.digest, r.size);
                    let _ = tx.send(status(line, None));
                    let _ = tx.send(ProgressMessage {
                        progress_detail: Some(ProgressDetail::default()),
                        aux: Some(serde_json::json!({
                            "Tag": r.tag, "Digest": r.digest.to_string(), "Size": r.size,
                        })),
                        ..ProgressMessage::default()
                    });
                }
                Err(e) => {
                    let _ = tx.send(ProgressMessage::failure(format!("{e:#}")));
                    return;
                }
            }
        }
    });
    let guard = AbortOnDrop(task);
    Ok(stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|m| (m, (rx, guard)))
    })
    .boxed())
}

pub fn history(inner: &Inner, name: &str) -> Result<Vec<HistoryItem>> {
    let (image, rows) = inner.images.history(name).map_err(|e| match e {
        skiff_images::Error::ImageNotFound(_) | skiff_images::Error::InvalidReference { .. } => {
            no_such_image(name)
        }
        other => internal(other),
    })?;
    let tags: Vec<String> = inner
        .images
        .list()
        .map_err(internal)?
        .iter()
        .filter(|r| r.config_digest == image.config_digest)
        .flat_map(|r| repo_tags(&r.name))
        .collect();
    let mut items: Vec<HistoryItem> = rows
        .into_iter()
        .rev()
        .map(|row| HistoryItem {
            id: "<missing>".into(),
            created: row
                .entry
                .created
                .as_deref()
                .and_then(parse_rfc3339)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64),
            created_by: row.entry.created_by.unwrap_or_default(),
            tags: None,
            size: row.layer.map_or(0, |l| l.size as i64),
            comment: row.entry.comment.unwrap_or_default(),
        })
        .collect();
    if let Some(top) = items.first_mut() {
        top.id = image.config_digest.to_string();
        top.tags = Some(tags.iter().map(|t| familiar(t)).collect());
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_messages_read_as_dockers() {
        let d = skiff_images::Digest::of(b"x");
        let msg = |kind| {
            serde_json::to_value(layer_message(PushEvent {
                layer: d.clone(),
                id: "abcdef012345".into(),
                kind,
            }))
            .unwrap()
        };
        assert_eq!(
            msg(PushEventKind::Exists),
            serde_json::json!({"status": "Layer already exists", "id": "abcdef012345",
                               "progressDetail": {"current": 0, "total": 0}})
        );
        let m = msg(PushEventKind::Mounted {
            from: "team/one".into(),
        });
        assert_eq!(m["status"], "Mounted from team/one");
        let m = msg(PushEventKind::Uploading {
            current: 512,
            total: 1024,
        });
        assert_eq!(m["status"], "Pushing");
        assert_eq!(m["progressDetail"]["current"], 512);
        let bar = m["progress"].as_str().unwrap();
        assert!(bar.starts_with("[=========================>"), "{bar}");
        assert!(bar.ends_with("] 512B/1.024kB"), "{bar}");
    }
}
