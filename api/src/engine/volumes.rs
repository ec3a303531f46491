//! Volumes: directories under `$ROOT/volumes/NAME/_data` that outlive containers (Docker's
//! `local` driver), recorded in the state database; and a container's mounts resolved to what
//! its VM gets: one virtio-fs share per host directory, tmpfs mounts made by guest-init.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use skiff_protocol::{GuestMount, MountSource};
use skiff_vmm::spec::ShareSpec;

use super::record::ContainerRecord;
use super::{create, internal, Inner, Result};
use crate::daemon::create::mounts::{valid_volume_name, MountKind, MountRequest};
use crate::daemon::model::{Volume, VolumeCreateBody, VolumeList, VolumePruneReport};
use crate::daemon::options::Filters;
use crate::daemon::timefmt::rfc3339;
use crate::daemon::BackendError;

/// Shares and network interfaces a VM can take in all: the interrupt lines left after the root,
/// the vsock and the entropy devices.
pub const DEVICE_LINES: usize =
    (skiff_vmm::layout::IOAPIC_PINS - skiff_vmm::layout::VIRTIO_FIRST_IRQ) as usize - 3;

/// Refuses a container whose `shares` (binds and volumes) and `nics` (networks) need more
/// devices than its VM has interrupt lines for.
pub(super) fn check_device_lines(shares: usize, nics: usize) -> Result<()> {
    if shares + nics > DEVICE_LINES {
        return Err(BackendError::InvalidArgument(format!(
            "{shares} bind mounts and volumes and {nics} networks asked for; a skiff container \
             takes at most {DEVICE_LINES} in all (each is a virtio device of its VM)"
        )));
    }
    Ok(())
}

/// How many of `mounts` are shares (not tmpfs).
pub(super) fn shares_of<'a>(mounts: impl IntoIterator<Item = &'a MountRequest>) -> usize {
    mounts
        .into_iter()
        .filter(|m| !matches!(m.kind, MountKind::Tmpfs { .. }))
        .count()
}

/// A volume as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Made for one container (`-v /path`, `Config.Volumes`): removed with it by `rm -v`/`--rm`.
    #[serde(default)]
    pub anonymous: bool,
}

/// A container's mount, resolved: the host directory (binds, volumes) or the tmpfs options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedMount {
    pub request: MountRequest,
    /// The host directory served to the guest (None for a tmpfs).
    pub source: Option<PathBuf>,
    /// The volume's name, for a volume.
    pub volume: Option<String>,
}

impl Inner {
    fn volumes_dir(&self) -> PathBuf {
        self.config.root.join("volumes")
    }

    /// Where a volume's data lives.
    pub(super) fn volume_data(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name).join("_data")
    }
}

/// Creates `name` unless it exists (Docker's `volume create` of an existing name is a no-op).
pub(super) fn ensure(
    inner: &Inner,
    name: &str,
    labels: std::collections::BTreeMap<String, String>,
    anonymous: bool,
) -> Result<VolumeRecord> {
    if !valid_volume_name(name) {
        return Err(BackendError::InvalidArgument(format!(
            "create {name}: \"{name}\" includes invalid characters for a local volume name, \
             only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed"
        )));
    }
    if let Some(existing) = inner.store.volume(name).map_err(internal)? {
        return Ok(existing);
    }
    let data = inner.volume_data(name);
    // The volumes directory is the daemon's alone, as Docker keeps /var/lib/docker/volumes.
    let volumes = inner.volumes_dir();
    std::fs::create_dir_all(&volumes).map_err(internal)?;
    set_mode(&volumes, 0o701)?;
    std::fs::create_dir_all(&data).map_err(|e| internal(format!("{}: {e}", data.display())))?;
    let record = VolumeRecord {
        name: name.to_string(),
        created_at: rfc3339(std::time::SystemTime::now()),
        labels,
        anonymous,
    };
    if !inner.store.insert_volume(&record).map_err(internal)? {
        // Created meanwhile by another request: that one stands.
        return inner
            .store
            .volume(name)
            .map_err(internal)?
            .ok_or_else(|| internal("volume vanished while being created"));
    }
    Ok(record)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| internal(format!("{}: {e}", path.display())))
}

/// The containers (names) that mount `volume`.
pub(super) fn users(inner: &Inner, volume: &str) -> Result<Vec<String>> {
    Ok(inner
        .store
        .all()
        .map_err(internal)?
        .into_iter()
        .filter(|c| c.mounts.iter().any(|m| m.volume.as_deref() == Some(volume)))
        .map(|c| c.name)
        .collect())
}

/// Removes a volume and its data; refused (409) while a container uses it, even stopped, as
/// Docker does (`force` only ignores a missing volume).
pub(super) fn remove(inner: &Inner, name: &str, force: bool) -> Result<()> {
    if inner.store.volume(name).map_err(internal)?.is_none() {
        return if force {
            Ok(())
        } else {
            Err(BackendError::NoSuchVolume(name.to_string()))
        };
    }
    let users = users(inner, name)?;
    if !users.is_empty() {
        return Err(BackendError::Conflict(format!(
            "remove {name}: volume is in use - [{}]",
            users.join(", ")
        )));
    }
    let dir = inner.volumes_dir().join(name);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(internal(format!("removing {}: {e}", dir.display())));
        }
    }
    inner.store.delete_volume(name).map_err(internal)
}

/// The API's view of a volume.
pub(super) fn api_volume(inner: &Inner, v: &VolumeRecord) -> Volume {
    Volume {
        name: v.name.clone(),
        driver: "local".into(),
        mountpoint: inner.volume_data(&v.name).display().to_string(),
        created_at: v.created_at.clone(),
        labels: v.labels.clone(),
        scope: "local".into(),
        ..Volume::default()
    }
}

/// `volume ls`, with Docker's filters `name` (substring), `label` (`k` or `k=v`) and `dangling`.
pub(super) fn list(inner: &Inner, filters: &Filters) -> Result<VolumeList> {
    for key in filters.keys() {
        if !matches!(key.as_str(), "name" | "label" | "dangling") {
            return Err(BackendError::InvalidArgument(format!(
                "invalid filter '{key}'"
            )));
        }
    }
    let mut volumes = Vec::new();
    for v in inner.store.volumes().map_err(internal)? {
        let named = filters
            .get("name")
            .is_none_or(|names| names.iter().any(|n| v.name.contains(n.as_str())));
        let labelled = labels_match(filters, &v.labels);
        let dangling_ok = match filters.get("dangling").and_then(|d| d.first()) {
            None => true,
            Some(d) => (d == "true" || d == "1") == users(inner, &v.name)?.is_empty(),
        };
        if named && labelled && dangling_ok {
            volumes.push(api_volume(inner, &v));
        }
    }
    Ok(VolumeList {
        volumes,
        warnings: Vec::new(),
    })
}

/// Docker's `label` filter: every `KEY` or `KEY=VALUE` given is among `labels`.
pub(super) fn labels_match(filters: &Filters, labels: &BTreeMap<String, String>) -> bool {
    filters.get("label").is_none_or(|wanted| {
        wanted.iter().all(|l| match l.split_once('=') {
            Some((k, val)) => labels.get(k).is_some_and(|x| x == val),
            None => labels.contains_key(l.as_str()),
        })
    })
}

/// `volume create`: the `local` driver without options; an empty name gets a fresh one.
pub(super) fn create_api(inner: &Inner, body: VolumeCreateBody) -> Result<Volume> {
    let mut refused = Vec::new();
    if !matches!(body.driver.as_str(), "" | "local") {
        refused.push(format!(
            "Driver {:?} is not supported by skiff (only local)",
            body.driver
        ));
    }
    if !body.driver_opts.is_empty() {
        let keys: Vec<&str> = body.driver_opts.keys().map(String::as_str).collect();
        refused.push(format!(
            "DriverOpts ({}) are not supported by skiff yet",
            keys.join(", ")
        ));
    }
    if !refused.is_empty() {
        return Err(BackendError::InvalidArgument(refused.join("; ")));
    }
    let name = if body.name.is_empty() {
        create::new_id()?
    } else {
        body.name
    };
    let record = ensure(inner, &name, body.labels, false)?;
    Ok(api_volume(inner, &record))
}

pub(super) fn inspect(inner: &Inner, name: &str) -> Result<Volume> {
    let record = inner
        .store
        .volume(name)
        .map_err(internal)?
        .ok_or_else(|| BackendError::NoSuchVolume(name.to_string()))?;
    Ok(api_volume(inner, &record))
}

/// `volume prune`: the unused anonymous volumes, or every unused one with `all=true` (Docker's
/// behaviour since API 1.42).
pub(super) fn prune(inner: &Inner, filters: &Filters) -> Result<VolumePruneReport> {
    let all = filters
        .get("all")
        .is_some_and(|v| v.iter().any(|x| x == "true" || x == "1"));
    let mut report = VolumePruneReport::default();
    for v in inner.store.volumes().map_err(internal)? {
        if (v.anonymous || all) && users(inner, &v.name)?.is_empty() {
            let size = super::disk_usage::tree_size(&inner.volume_data(&v.name));
            remove(inner, &v.name, false)?;
            report.volumes_deleted.push(v.name);
            report.space_reclaimed += size;
        }
    }
    Ok(report)
}

/// Resolves a create request's mounts: host directories checked (or made, for `-v`), volumes
/// created when missing (anonymous ones with a fresh name); `nics` network interfaces share
/// the VM's interrupt lines with them.
pub(super) fn resolve(
    inner: &Inner,
    requests: &[MountRequest],
    nics: usize,
) -> Result<Vec<ResolvedMount>> {
    check_device_lines(shares_of(requests), nics)?;
    let mut out = Vec::new();
    for m in requests {
        let (source, volume) = match &m.kind {
            MountKind::Bind { source, create } => {
                let path = PathBuf::from(source);
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        return Err(BackendError::InvalidArgument(format!(
                            "bind source {source} is not a directory: skiff shares directories \
                             with a VM, not single files"
                        )))
                    }
                    Err(_) if *create => std::fs::create_dir_all(&path).map_err(|e| {
                        BackendError::InvalidArgument(format!("creating bind source {source}: {e}"))
                    })?,
                    Err(_) => {
                        return Err(BackendError::InvalidArgument(format!(
                            "invalid mount config for type \"bind\": bind source path does not \
                             exist: {source}"
                        )))
                    }
                }
                (Some(path), None)
            }
            MountKind::Volume { name, .. } => {
                let (name, anonymous) = match name {
                    Some(n) => (n.clone(), false),
                    None => (create::new_id()?, true),
                };
                ensure(inner, &name, Default::default(), anonymous)?;
                (Some(inner.volume_data(&name)), Some(name))
            }
            MountKind::Tmpfs { .. } => (None, None),
        };
        out.push(ResolvedMount {
            request: m.clone(),
            source,
            volume,
        });
    }
    Ok(out)
}

/// What the VM gets for `mounts`: its shares (tags `vol0`, `vol1`, … in order) and guest-init's
/// mount list.
pub fn vm_mounts(mounts: &[ResolvedMount]) -> (Vec<ShareSpec>, Vec<GuestMount>) {
    let mut shares = Vec::new();
    let mut guest = Vec::new();
    for m in mounts {
        let source = match (&m.request.kind, &m.source) {
            (MountKind::Tmpfs { options }, _) => MountSource::Tmpfs {
                options: options.clone(),
            },
            (_, Some(dir)) => {
                let tag = format!("vol{}", shares.len());
                shares.push(ShareSpec {
                    tag: tag.clone(),
                    source: dir.clone(),
                    read_only: m.request.read_only,
                });
                MountSource::Share { tag }
            }
            (_, None) => continue,
        };
        // Docker fills an empty volume with the image's files at its path (unless `nocopy`);
        // never a bind or a read-only volume (the VMM refuses writes to those).
        let no_copy = matches!(m.request.kind, MountKind::Volume { no_copy: true, .. });
        let copy_up = m.volume.is_some() && !m.request.read_only && !no_copy;
        guest.push(GuestMount {
            source,
            target: m.request.target.clone(),
            read_only: m.request.read_only,
            copy_up,
        });
    }
    (shares, guest)
}

/// Removes the anonymous volumes `record` made (`rm -v`, `--rm`), unless another container
/// mounts them too.
pub(super) fn remove_anonymous(inner: &Inner, record: &ContainerRecord) {
    for name in record.mounts.iter().filter_map(|m| m.volume.as_deref()) {
        let anonymous = inner
            .store
            .volume(name)
            .ok()
            .flatten()
            .is_some_and(|v| v.anonymous);
        if anonymous {
            if let Err(e) = remove(inner, name, true) {
                tracing::warn!("removing anonymous volume {name}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(
        kind: MountKind,
        target: &str,
        read_only: bool,
        source: Option<&str>,
    ) -> ResolvedMount {
        let volume = matches!(kind, MountKind::Volume { .. }).then(|| "x".to_string());
        ResolvedMount {
            request: MountRequest {
                kind,
                target: target.into(),
                read_only,
            },
            source: source.map(PathBuf::from),
            volume,
        }
    }

    #[test]
    fn shares_get_tags_in_order_and_tmpfs_stays_in_the_guest() {
        let mounts = [
            mount(
                MountKind::Bind {
                    source: "/srv".into(),
                    create: true,
                },
                "/data",
                true,
                Some("/srv"),
            ),
            mount(
                MountKind::Tmpfs {
                    options: "size=1m".into(),
                },
                "/t",
                false,
                None,
            ),
            mount(
                MountKind::Volume {
                    name: None,
                    no_copy: false,
                },
                "/v",
                false,
                Some("/root/volumes/x/_data"),
            ),
            mount(
                MountKind::Volume {
                    name: None,
                    no_copy: true,
                },
                "/w",
                false,
                Some("/root/volumes/y/_data"),
            ),
        ];
        let (shares, guest) = vm_mounts(&mounts);
        assert_eq!(
            shares,
            [
                ShareSpec {
                    tag: "vol0".into(),
                    source: "/srv".into(),
                    read_only: true
                },
                ShareSpec {
                    tag: "vol1".into(),
                    source: "/root/volumes/x/_data".into(),
                    read_only: false
                },
                ShareSpec {
                    tag: "vol2".into(),
                    source: "/root/volumes/y/_data".into(),
                    read_only: false
                },
            ]
        );
        assert_eq!(guest.len(), 4);
        assert_eq!(
            guest[1].source,
            MountSource::Tmpfs {
                options: "size=1m".into()
            }
        );
        assert_eq!(guest[2].source, MountSource::Share { tag: "vol1".into() });
        assert!(guest[0].read_only);
        // Only a volume is filled with the image's files, and not with nocopy.
        let copies: Vec<bool> = guest.iter().map(|g| g.copy_up).collect();
        assert_eq!(copies, [false, false, true, false]);
    }
}
