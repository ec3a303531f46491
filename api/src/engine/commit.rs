//! `commit`: a container's copy-on-write upper directory (`containers/ID/rootfs/upper`, where
//! its VMM's overlay writes) becomes a new image on top of the container's image.
//!
//! Running containers are committed as they are: skiff has no pause, so `pause` (Docker's
//! default) cannot be honoured, and writes the guest has not handed to its VMM yet (its page
//! cache) are not in the layer. Stop the container first for a consistent snapshot. A container
//! with `--storage-opt size=` keeps its upper inside an ext4 image only its VMM mounts: refused.

use skiff_images::{Change, CommitOptions as ImageCommit, Reference};

use super::{internal, Inner, Result};
use crate::daemon::options::CommitOptions;
use crate::daemon::timefmt::rfc3339;
use crate::daemon::BackendError;

pub async fn commit(inner: &Inner, opts: CommitOptions) -> Result<String> {
    let id = inner.resolve(&opts.container)?;
    let invalid = BackendError::InvalidArgument;
    let reference = match &opts.repo {
        None if opts.tag.is_some() => {
            return Err(invalid("a tag needs a repository to go with it".into()))
        }
        None => None,
        Some(repo) => {
            let full = match &opts.tag {
                Some(t) => format!("{repo}:{t}"),
                None => repo.clone(),
            };
            Some(
                Reference::parse(&full)
                    .map_err(|e| invalid(format!("invalid reference {full}: {e}")))?,
            )
        }
    };
    let changes = Change::parse_all(&opts.changes).map_err(|e| invalid(e.to_string()))?;
    // No start, stop or removal meanwhile.
    let op = inner.op_lock(&id);
    let _op = op.lock().await;
    let record = inner.record(&id)?;
    if record.request.storage_size.is_some() {
        return Err(BackendError::NotImplemented(
            "commit of a container created with --storage-opt size (its writable layer lives in \
             an ext4 image that only its VMM mounts)",
        ));
    }
    if record.running() {
        tracing::info!(
            id,
            pause = opts.pause,
            "committing a running container as it is: skiff cannot pause a VM"
        );
    }
    let upper_dir = inner.paths(&id).upper().join("upper");
    // A container that never started has changed nothing: an empty directory stands in.
    let empty = tempfile::tempdir_in(inner.images.store().tmp_dir()).map_err(internal)?;
    let upper = if upper_dir.is_dir() {
        upper_dir
    } else {
        empty.path().to_path_buf()
    };
    let image_opts = ImageCommit {
        reference,
        author: opts.author.clone(),
        comment: opts.comment.clone(),
        changes,
        created: rfc3339(std::time::SystemTime::now()),
        created_by: record.process.args.join(" "),
        config: None,
    };
    let image = inner
        .images
        .commit(&record.image_id, &upper, image_opts)
        .await
        .map_err(|e| match e {
            skiff_images::Error::ImageNotFound(_) => BackendError::NoSuchImage(format!(
                "{} (the image container {} was created from)",
                record.image_id,
                &id[..12]
            )),
            e => internal(e),
        })?;
    let image_id = image.config_digest.to_string();
    let mut extra = vec![("imageID", image_id.clone())];
    if let Some(c) = &opts.comment {
        extra.push(("comment", c.clone()));
    }
    inner.event("commit", &record, &extra);
    Ok(image_id)
}
