//! A create request's mounts, from Docker's three ways of asking (`Binds`, `Mounts`, `Tmpfs`,
//! plus the anonymous volumes of `Volumes`) to one list. Every option skiff cannot honour is
//! refused by name; a mount point asked for twice is Docker's "Duplicate mount point".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::decode::{parse_size, CreateError};

/// One mount of a container, as the engine honours it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    pub kind: MountKind,
    /// Absolute path in the container.
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A host directory. `create`: made when missing (`-v` does so, `--mount` refuses).
    Bind { source: String, create: bool },
    /// A volume of the engine's: named (created when missing) or, None, anonymous. `no_copy`:
    /// the image's files at the target are not copied into it when it is empty.
    Volume {
        name: Option<String>,
        #[serde(default)]
        no_copy: bool,
    },
    /// A tmpfs, with options tmpfs takes (`size=…,mode=…`).
    Tmpfs { options: String },
}

/// The mounts of `binds` (`HostConfig.Binds`), `mounts` (`HostConfig.Mounts`), `tmpfs`
/// (`HostConfig.Tmpfs`) and `volumes` (`Config.Volumes`: anonymous volumes), in that order.
pub fn decode_mounts(
    binds: &[String],
    mounts: &[Value],
    tmpfs: &BTreeMap<String, String>,
    volumes: &[String],
    refused: &mut Vec<String>,
) -> Result<Vec<MountRequest>, CreateError> {
    let mut out = Vec::new();
    for (i, bind) in binds.iter().enumerate() {
        out.push(decode_bind(
            &format!("HostConfig.Binds[{i}]"),
            bind,
            refused,
        )?);
    }
    for (i, m) in mounts.iter().enumerate() {
        if let Some(m) = decode_mount(&format!("HostConfig.Mounts[{i}]"), m, refused)? {
            out.push(m);
        }
    }
    for (target, options) in tmpfs {
        let path = format!("HostConfig.Tmpfs[{target}]");
        let (options, read_only) = tmpfs_options(&path, options, refused)?;
        out.push(MountRequest {
            kind: MountKind::Tmpfs { options },
            target: target.clone(),
            read_only,
        });
    }
    for target in volumes {
        // Docker: a mount asked for explicitly wins over the anonymous volume at its path.
        if !out.iter().any(|m| m.target == *target) {
            out.push(MountRequest {
                kind: MountKind::Volume {
                    name: None,
                    no_copy: false,
                },
                target: target.clone(),
                read_only: false,
            });
        }
    }
    let mut seen = Vec::new();
    for m in &out {
        check_target(&m.target)?;
        if seen.contains(&m.target.as_str()) {
            return Err(CreateError::Invalid(format!(
                "Duplicate mount point: {}",
                m.target
            )));
        }
        seen.push(&m.target);
    }
    Ok(out)
}

pub fn check_target(target: &str) -> Result<(), CreateError> {
    if !target.starts_with('/') {
        return Err(CreateError::Invalid(format!(
            "invalid mount config: mount path must be absolute: {target:?}"
        )));
    }
    if target.trim_end_matches('/').is_empty() || target.contains('\0') {
        return Err(CreateError::Invalid(format!(
            "invalid mount config: invalid mount path {target:?}"
        )));
    }
    Ok(())
}

/// Docker's volume and named-volume name rule.
pub fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `SRC:DST[:MODE]`: an absolute SRC is a host directory, anything else a volume's name.
fn decode_bind(
    path: &str,
    bind: &str,
    refused: &mut Vec<String>,
) -> Result<MountRequest, CreateError> {
    let parts: Vec<&str> = bind.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [source, target] => (*source, *target, ""),
        [source, target, mode] => (*source, *target, *mode),
        _ => {
            return Err(CreateError::Invalid(format!(
                "invalid volume specification: '{bind}'"
            )))
        }
    };
    let mut read_only = false;
    let mut no_copy = false;
    for option in mode.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            "rw" | "rprivate" => {}
            "nocopy" if !source.starts_with('/') => no_copy = true,
            other => refused.push(format!(
                "{path}: the mode {other:?} is not supported by skiff (ro and rw are, and \
                 nocopy for volumes)"
            )),
        }
    }
    let kind = if source.starts_with('/') {
        MountKind::Bind {
            source: source.to_string(),
            create: true,
        }
    } else if valid_volume_name(source) {
        MountKind::Volume {
            name: Some(source.to_string()),
            no_copy,
        }
    } else {
        return Err(CreateError::Invalid(format!(
            "create {source}: \"{source}\" includes invalid characters for a local volume \
             name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a \
             host directory, use absolute path"
        )));
    };
    Ok(MountRequest {
        kind,
        target: target.to_string(),
        read_only,
    })
}

/// One `HostConfig.Mounts` entry; its options beyond type, source, target and read-only must
/// hold their defaults.
fn decode_mount(
    path: &str,
    m: &Value,
    refused: &mut Vec<String>,
) -> Result<Option<MountRequest>, CreateError> {
    let Value::Object(fields) = m else {
        return Err(CreateError::Field {
            path: path.to_string(),
            message: "expected an object".to_string(),
        });
    };
    let text = |key: &str| -> Result<String, CreateError> {
        match fields.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(CreateError::Field {
                path: format!("{path}.{key}"),
                message: "expected a string".to_string(),
            }),
        }
    };
    let kind = text("Type")?;
    let source = text("Source")?;
    let target = text("Target")?;
    let read_only = match fields.get("ReadOnly") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(CreateError::Field {
                path: format!("{path}.ReadOnly"),
                message: "expected a boolean".to_string(),
            })
        }
    };
    let before = refused.len();
    for (key, value) in fields {
        let allowed = match key.as_str() {
            "Type" | "Source" | "Target" | "ReadOnly" | "Consistency" => true,
            "TmpfsOptions" => kind == "tmpfs",
            "VolumeOptions" => kind == "volume" && volume_options_default(value),
            _ => false,
        };
        if !allowed && !super::decode::is_default(value) {
            refused.push(format!("{path}.{key} is not supported by skiff yet"));
        }
    }
    let kind = match kind.as_str() {
        "bind" => {
            if !source.starts_with('/') {
                return Err(CreateError::Invalid(format!(
                    "invalid mount config for type \"bind\": invalid mount path: '{source}' \
                     mount path must be absolute"
                )));
            }
            MountKind::Bind {
                source,
                create: false,
            }
        }
        "volume" => {
            if !source.is_empty() && !valid_volume_name(&source) {
                return Err(CreateError::Invalid(format!(
                    "invalid mount config for type \"volume\": invalid volume name {source:?}"
                )));
            }
            let no_copy = fields
                .get("VolumeOptions")
                .and_then(|o| o.get("NoCopy"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            MountKind::Volume {
                name: (!source.is_empty()).then_some(source),
                no_copy,
            }
        }
        "tmpfs" => {
            if !source.is_empty() {
                return Err(CreateError::Invalid(
                    "invalid mount config for type \"tmpfs\": Source must not be specified"
                        .to_string(),
                ));
            }
            let options = tmpfs_mount_options(path, fields.get("TmpfsOptions"), refused)?;
            MountKind::Tmpfs { options }
        }
        other => {
            refused.push(format!(
                "{path}.Type {other:?} is not supported by skiff (bind, volume and tmpfs are)"
            ));
            return Ok(None);
        }
    };
    if refused.len() > before {
        return Ok(None);
    }
    Ok(Some(MountRequest {
        kind,
        target,
        read_only,
    }))
}

/// `VolumeOptions` skiff honours: none set, or only `NoCopy` (the image's files are not copied
/// into the new volume).
fn volume_options_default(value: &Value) -> bool {
    match value {
        Value::Object(o) => o
            .iter()
            .all(|(k, v)| k == "NoCopy" || super::decode::is_default(v)),
        other => super::decode::is_default(other),
    }
}

/// `TmpfsOptions {SizeBytes, Mode}` as tmpfs mount data.
fn tmpfs_mount_options(
    path: &str,
    options: Option<&Value>,
    refused: &mut Vec<String>,
) -> Result<String, CreateError> {
    let mut out = Vec::new();
    for (key, value) in options.and_then(Value::as_object).into_iter().flatten() {
        match (key.as_str(), value.as_u64()) {
            (_, _) if super::decode::is_default(value) => {}
            ("SizeBytes", Some(n)) => out.push(format!("size={n}")),
            ("Mode", Some(n)) if n <= 0o7777 => out.push(format!("mode={n:o}")),
            ("SizeBytes" | "Mode", _) => {
                return Err(CreateError::Field {
                    path: format!("{path}.TmpfsOptions.{key}"),
                    message: "expected a non-negative integer (a mode up to 07777)".to_string(),
                })
            }
            _ => refused.push(format!(
                "{path}.TmpfsOptions.{key} is not supported by skiff yet"
            )),
        }
    }
    Ok(out.join(","))
}

/// `--tmpfs PATH:OPTIONS`: tmpfs' own options pass (checked), `ro`/`rw` become the mount's mode;
/// `nosuid` and `nodev` are always on; other mount flags are refused by name.
fn tmpfs_options(
    path: &str,
    options: &str,
    refused: &mut Vec<String>,
) -> Result<(String, bool), CreateError> {
    let mut data = Vec::new();
    let mut read_only = false;
    for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (key, value) = option.split_once('=').unwrap_or((option, ""));
        match key {
            "ro" => read_only = true,
            "rw" | "nosuid" | "nodev" => {}
            "size" => {
                let ok = value.strip_suffix('%').map_or_else(
                    || parse_size(value).is_some(),
                    |p| p.parse::<u8>().is_ok_and(|p| p <= 100),
                );
                if !ok {
                    return Err(CreateError::Field {
                        path: path.to_string(),
                        message: format!("invalid size {value:?}"),
                    });
                }
                data.push(option.to_string());
            }
            "mode" | "uid" | "gid" | "nr_inodes" | "nr_blocks" => {
                let radix = if key == "mode" { 8 } else { 10 };
                let digits = value.trim_end_matches(['k', 'm', 'g']);
                if u64::from_str_radix(digits, radix).is_err() {
                    return Err(CreateError::Field {
                        path: path.to_string(),
                        message: format!("invalid {key} {value:?}"),
                    });
                }
                data.push(option.to_string());
            }
            other => refused.push(format!(
                "{path}: the tmpfs option {other:?} is not supported by skiff"
            )),
        }
    }
    Ok((data.join(","), read_only))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(
        binds: &[&str],
        mounts: Value,
        tmpfs: &[(&str, &str)],
        volumes: &[&str],
    ) -> (Result<Vec<MountRequest>, CreateError>, Vec<String>) {
        let mut refused = Vec::new();
        let binds: Vec<String> = binds.iter().map(|s| s.to_string()).collect();
        let mounts = mounts.as_array().cloned().unwrap_or_default();
        let tmpfs = tmpfs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let volumes: Vec<String> = volumes.iter().map(|s| s.to_string()).collect();
        let out = decode_mounts(&binds, &mounts, &tmpfs, &volumes, &mut refused);
        (out, refused)
    }

    fn bind(source: &str, create: bool, target: &str, read_only: bool) -> MountRequest {
        MountRequest {
            kind: MountKind::Bind {
                source: source.into(),
                create,
            },
            target: target.into(),
            read_only,
        }
    }

    #[test]
    fn the_docker_cli_s_three_forms_and_anonymous_volumes() {
        let (out, refused) = decode(
            &[
                "/srv/data:/data",
                "cache:/cache:ro",
                "/srv/x:/x:rw,rprivate",
            ],
            json!([
                {"Type": "bind", "Source": "/etc", "Target": "/host-etc", "ReadOnly": true},
                {"Type": "volume", "Target": "/anon", "VolumeOptions": {"NoCopy": true}},
                {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 448}}
            ]),
            &[("/run/a", "size=64m,mode=1777,noexec")],
            &["/data", "/declared"],
        );
        assert_eq!(
            refused,
            ["HostConfig.Tmpfs[/run/a]: the tmpfs option \"noexec\" is not supported by skiff"]
        );
        let out = out.unwrap();
        assert_eq!(out[0], bind("/srv/data", true, "/data", false));
        assert_eq!(
            out[1],
            MountRequest {
                kind: MountKind::Volume {
                    name: Some("cache".into()),
                    no_copy: false,
                },
                target: "/cache".into(),
                read_only: true,
            }
        );
        assert_eq!(out[2], bind("/srv/x", true, "/x", false));
        assert_eq!(out[3], bind("/etc", false, "/host-etc", true));
        assert_eq!(
            out[4].kind,
            MountKind::Volume {
                name: None,
                no_copy: true
            }
        );
        assert_eq!(
            out[5].kind,
            MountKind::Tmpfs {
                options: "mode=700,size=1048576".into()
            }
        );
        assert_eq!(
            out[6].kind,
            MountKind::Tmpfs {
                options: "size=64m,mode=1777".into()
            }
        );
        // Config.Volumes: /data is bound already; /declared becomes an anonymous volume.
        assert_eq!(out.len(), 8);
        assert_eq!(out[7].target, "/declared");
        assert_eq!(
            out[7].kind,
            MountKind::Volume {
                name: None,
                no_copy: false
            }
        );
    }

    #[test]
    fn bad_mounts_get_docker_s_errors_or_are_refused_by_name() {
        let err = |binds: &[&str], mounts: Value| decode(binds, mounts, &[], &[]).0.unwrap_err();
        assert_eq!(
            err(&["/a:/x", "/b:/x"], json!([])).to_string(),
            "Duplicate mount point: /x"
        );
        assert!(err(&["/a"], json!([]))
            .to_string()
            .contains("invalid volume specification"));
        assert!(err(&["/a:rel"], json!([]))
            .to_string()
            .contains("must be absolute"));
        assert!(err(&["bad name!:/x"], json!([]))
            .to_string()
            .contains("invalid characters"));
        assert!(err(
            &[],
            json!([{"Type": "bind", "Source": "rel", "Target": "/x"}])
        )
        .to_string()
        .contains("must be absolute"));
        let (_, refused) = decode(
            &["/a:/x:z", "/b:/z:nocopy"],
            json!([
                {"Type": "npipe", "Source": "x", "Target": "/p"},
                {"Type": "bind", "Source": "/a", "Target": "/y", "BindOptions": {"Propagation": "shared"}},
                {"Type": "volume", "Target": "/v", "VolumeOptions": {"Labels": {"a": "b"}}}
            ]),
            &[],
            &[],
        );
        assert_eq!(
            refused,
            [
                "HostConfig.Binds[0]: the mode \"z\" is not supported by skiff (ro and rw are, and nocopy for volumes)",
                "HostConfig.Binds[1]: the mode \"nocopy\" is not supported by skiff (ro and rw are, and nocopy for volumes)",
                "HostConfig.Mounts[0].Type \"npipe\" is not supported by skiff (bind, volume and tmpfs are)",
                "HostConfig.Mounts[1].BindOptions is not supported by skiff yet",
                "HostConfig.Mounts[2].VolumeOptions is not supported by skiff yet",
            ]
        );
    }
}
