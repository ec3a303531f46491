//! `HostConfig.Ulimits` (`--ulimit nofile=1024:2048`): resource limits of the container's
//! processes, applied by guest-init inside the VM (exec'd processes get them too, as in Docker).

use serde::Deserialize;
use serde_json::Value;
use skiff_protocol::Rlimit;

use super::decode::CreateError;

/// Docker's names, as `setrlimit(2)` resources.
const NAMES: [&str; 16] = [
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct Ulimit {
    name: String,
    soft: i64,
    hard: i64,
}

/// The limits as guest-init takes them; -1 (or any negative value) is unlimited.
pub fn decode_ulimits(ulimits: &[Value]) -> Result<Vec<Rlimit>, CreateError> {
    let mut out: Vec<Rlimit> = Vec::new();
    for (i, value) in ulimits.iter().enumerate() {
        let u: Ulimit = serde_json::from_value(value.clone()).map_err(|e| CreateError::Field {
            path: format!("HostConfig.Ulimits[{i}]"),
            message: e.to_string(),
        })?;
        if !NAMES.contains(&u.name.as_str()) {
            return Err(CreateError::Invalid(format!(
                "invalid ulimit type: {}",
                u.name
            )));
        }
        let limit = |v: i64| u64::try_from(v).unwrap_or(u64::MAX);
        let (soft, hard) = (limit(u.soft), limit(u.hard));
        if soft > hard {
            return Err(CreateError::Invalid(format!(
                "ulimit soft limit must be less than or equal to hard limit: {} > {} for {}",
                u.soft, u.hard, u.name
            )));
        }
        let kind = format!("RLIMIT_{}", u.name.to_ascii_uppercase());
        out.retain(|r| r.kind != kind);
        out.push(Rlimit { kind, soft, hard });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ulimits_become_rlimits_and_bad_ones_are_refused() {
        let r = decode_ulimits(&[
            json!({"Name": "nofile", "Soft": 1024, "Hard": 2048}),
            json!({"Name": "core", "Soft": -1, "Hard": -1}),
        ])
        .unwrap();
        assert_eq!(
            r,
            [
                Rlimit {
                    kind: "RLIMIT_NOFILE".into(),
                    soft: 1024,
                    hard: 2048
                },
                Rlimit {
                    kind: "RLIMIT_CORE".into(),
                    soft: u64::MAX,
                    hard: u64::MAX
                },
            ]
        );
        for (bad, want) in [
            (
                json!({"Name": "bogus", "Soft": 1, "Hard": 1}),
                "invalid ulimit type: bogus",
            ),
            (
                json!({"Name": "nofile", "Soft": 9, "Hard": 1}),
                "soft limit must be",
            ),
            (
                json!({"Name": "nofile", "Soft": "x", "Hard": 1}),
                "HostConfig.Ulimits[0]",
            ),
        ] {
            let e = decode_ulimits(&[bad]).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
