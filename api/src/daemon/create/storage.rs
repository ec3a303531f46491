//! `HostConfig.StorageOpt` (`--storage-opt size=1G`): a cap on the container's writable layer.
//! skiff keeps that layer in an ext4 image of the size asked for, which its VMM mounts (see
//! `skiff_vmm::loop_disk`): the guest gets ENOSPC when it is full, the host's disk is unaffected.

use std::collections::BTreeMap;

use skiff_vmm::loop_disk::MIN_DISK_BYTES;

use super::decode::{parse_size, CreateError};

/// The cap in bytes, if any. Keys other than `size` are refused by name (into `refused`).
pub fn decode_storage_opt(
    options: &BTreeMap<String, String>,
    refused: &mut Vec<String>,
) -> Result<Option<u64>, CreateError> {
    let mut size = None;
    for (key, value) in options {
        if key != "size" {
            refused.push(format!(
                "HostConfig.StorageOpt.{key} is not supported by skiff (only size)"
            ));
            continue;
        }
        let bytes = parse_size(value).ok_or_else(|| CreateError::Field {
            path: "HostConfig.StorageOpt.size".into(),
            message: format!("{value:?}: expected a size such as 1G, 512m or a number of bytes"),
        })?;
        if bytes < MIN_DISK_BYTES {
            return Err(CreateError::Invalid(format!(
                "--storage-opt size={value} is too small: a container's writable layer needs \
                 at least 16MiB (the file system's own journal and tables take a few)"
            )));
        }
        size = Some(bytes);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pairs: &[(&str, &str)]) -> (Result<Option<u64>, CreateError>, Vec<String>) {
        let options = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut refused = Vec::new();
        (decode_storage_opt(&options, &mut refused), refused)
    }

    #[test]
    fn sizes_are_read_as_docker_reads_them() {
        for (text, bytes) in [
            ("1G", 1 << 30),
            ("1g", 1 << 30),
            ("512m", 512 << 20),
            ("1.5GB", 3 << 29),
            ("20MiB", 20 << 20),
            ("16777216", 16 << 20),
        ] {
            assert_eq!(
                decode(&[("size", text)]),
                (Ok(Some(bytes)), vec![]),
                "{text}"
            );
        }
        assert_eq!(decode(&[]), (Ok(None), vec![]));
    }

    #[test]
    fn bad_sizes_and_other_keys_are_refused() {
        for bad in ["", "big", "-1g", "1x", "1e400"] {
            let err = decode(&[("size", bad)]).0.unwrap_err().to_string();
            assert!(
                err.starts_with("invalid value for HostConfig.StorageOpt.size"),
                "{bad}: {err}"
            );
        }
        for small in ["0", "1m", "16777215"] {
            let err = decode(&[("size", small)]).0.unwrap_err().to_string();
            assert!(err.contains("is too small"), "{small}: {err}");
        }
        let (result, refused) = decode(&[("dm.basesize", "20G"), ("size", "1G")]);
        assert_eq!(result, Ok(Some(1 << 30)));
        assert_eq!(
            refused,
            ["HostConfig.StorageOpt.dm.basesize is not supported by skiff (only size)"]
        );
    }
}
