//! `docker system df` and `ps -s`: what images and containers take on disk. A container's own
//! layer is the upper directory its VMM writes (or, capped, the disk image holding it); the guest
//! fills it, so the walk never follows links and stops counting at the files it cannot read.

use std::collections::HashMap;
use std::path::Path;

use super::record::ContainerRecord;
use super::{images, internal, now_unix, volumes, Inner, Result};
use crate::daemon::model::{ContainerSummary, DiskUsage, Volume, VolumeUsage};
use crate::daemon::options::ImageListOptions;

/// Bytes of the regular files under `dir` (each hard link counted once), without following links.
pub fn tree_size(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut seen = std::collections::HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() && (meta.nlink() == 1 || seen.insert(meta.ino())) {
                total += meta.len();
            }
        }
    }
    total
}

/// A container's summary with `SizeRw` and `SizeRootFs`; `image_sizes` by image ID.
pub fn sized_summary(
    inner: &Inner,
    record: &ContainerRecord,
    image_sizes: &HashMap<String, i64>,
    now: i64,
) -> ContainerSummary {
    let paths = inner.paths(&record.id);
    let rw = match record.request.storage_size {
        // What the image takes on the host (it is sparse); its files are out of the host's sight.
        Some(_) => std::fs::metadata(paths.upper_disk()).map_or(0, |m| {
            use std::os::unix::fs::MetadataExt;
            m.blocks() * 512
        }),
        None => tree_size(&paths.upper()),
    } as i64;
    let image = image_sizes.get(&record.image_id).copied().unwrap_or(0);
    ContainerSummary {
        size_rw: Some(rw),
        size_root_fs: Some(rw + image),
        ..record.summary(now)
    }
}

/// Image ID → size, as `images` lists them.
pub fn image_sizes(inner: &Inner) -> Result<HashMap<String, i64>> {
    Ok(images::list(inner, ImageListOptions::default())?
        .into_iter()
        .map(|i| (i.id, i.size))
        .collect())
}

pub fn system_df(inner: &Inner) -> Result<DiskUsage> {
    let containers = inner.store.all().map_err(internal)?;
    let mut images = images::list(inner, ImageListOptions::default())?;
    // Each layer blob once, and which images use it.
    let mut layer_users: HashMap<String, (i64, Vec<String>)> = HashMap::new();
    for record in inner.images.list().map_err(internal)? {
        let image = record.config_digest.to_string();
        for layer in &record.layers {
            let (_, users) = layer_users
                .entry(layer.diff_id.to_string())
                .or_insert((layer.size as i64, Vec::new()));
            if !users.contains(&image) {
                users.push(image.clone());
            }
        }
    }
    for summary in &mut images {
        summary.containers = containers
            .iter()
            .filter(|c| c.image_id == summary.id)
            .count() as i64;
        summary.shared_size = layer_users
            .values()
            .filter(|(_, users)| users.len() > 1 && users.contains(&summary.id))
            .map(|(size, _)| size)
            .sum();
    }
    let sizes: HashMap<String, i64> = images.iter().map(|i| (i.id.clone(), i.size)).collect();
    let now = now_unix();
    Ok(DiskUsage {
        layers_size: layer_users.values().map(|(size, _)| size).sum(),
        containers: containers
            .iter()
            .map(|c| sized_summary(inner, c, &sizes, now))
            .collect(),
        images,
        volumes: volume_usage(inner, &containers)?,
        build_cache: Vec::new(),
    })
}

/// Every volume with its size and how many containers mount it.
fn volume_usage(inner: &Inner, containers: &[ContainerRecord]) -> Result<Vec<Volume>> {
    let mut out = Vec::new();
    for v in inner.store.volumes().map_err(internal)? {
        let refs = containers
            .iter()
            .filter(|c| {
                c.mounts
                    .iter()
                    .any(|m| m.volume.as_deref() == Some(&v.name))
            })
            .count();
        let mut volume = volumes::api_volume(inner, &v);
        volume.usage_data = Some(VolumeUsage {
            size: tree_size(&inner.volume_data(&v.name)) as i64,
            ref_count: refs as i64,
        });
        out.push(volume);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_size_counts_files_once_and_follows_no_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), vec![0u8; 1000]).unwrap();
        std::fs::write(root.join("g"), b"12345").unwrap();
        std::fs::hard_link(root.join("g"), root.join("a/g2")).unwrap();
        std::os::unix::fs::symlink("/usr", root.join("a/usr")).unwrap();
        assert_eq!(tree_size(root), 1005);
        assert_eq!(tree_size(&root.join("missing")), 0);
    }
}
