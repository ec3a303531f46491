//! `skiff ps`: the container list as docker prints it, a table or one JSON object per line.

use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::daemon::model::ContainerSummary;
use crate::daemon::timefmt::rfc3339;

/// Docker's short IDs.
pub const SHORT_ID: usize = 12;
/// Docker truncates the command column to this many characters.
const COMMAND_WIDTH: usize = 20;
/// docker's tabwriter: cells padded by 3 spaces, columns at least 10 wide.
const PADDING: usize = 3;
const MIN_WIDTH: usize = 10;

/// A row as `docker ps --format json` prints it: every value a string, keys in Go's sorted order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PsRow {
    pub command: String,
    pub created_at: String,
    #[serde(rename = "ID")]
    pub id: String,
    pub image: String,
    pub labels: String,
    pub local_volumes: String,
    pub mounts: String,
    pub names: String,
    pub networks: String,
    /// docker takes it from the image manifest descriptor (API 1.46), which skiffd does not
    /// report: always null, as docker shows it then.
    pub platform: Option<serde_json::Value>,
    pub ports: String,
    pub running_for: String,
    pub size: String,
    pub state: String,
    pub status: String,
}

/// The first `n` characters.
pub fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Go's `stringutils.Ellipsis`: at most `max` characters, the last one `…` when cut.
fn ellipsis(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out = short(s, max.saturating_sub(1));
    out.push('…');
    out
}

/// go-units' `HumanDuration`, which `docker ps` shows as "… ago".
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    match () {
        _ if seconds < 1 => "Less than a second".to_string(),
        _ if seconds == 1 => "1 second".to_string(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// Go's `strconv.Quote`, as docker shows the command.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// docker's PORTS cell, without its grouping of consecutive ports into ranges.
fn ports(c: &ContainerSummary) -> String {
    let shown: Vec<String> = c
        .ports
        .iter()
        .map(|p| match (&p.ip, p.public_port) {
            (Some(ip), Some(public)) => format!("{ip}:{public}->{}/{}", p.private_port, p.kind),
            _ => format!("{}/{}", p.private_port, p.kind),
        })
        .collect();
    shown.join(", ")
}

/// The row of `c` at time `now`; `trunc` shortens IDs, the command, names and mounts as docker
/// does by default (`docker/cli`'s `ContainerContext`).
pub fn row(c: &ContainerSummary, now: SystemTime, trunc: bool) -> PsRow {
    let created = UNIX_EPOCH + Duration::from_secs(u64::try_from(c.created).unwrap_or(0));
    let age = now.duration_since(created).unwrap_or_default();
    // `2024-05-01T10:20:30.…Z` → Go's `2024-05-01 10:20:30 +0000 UTC`.
    let created_at = format!(
        "{} +0000 UTC",
        short(&rfc3339(created), 19).replace('T', " ")
    );
    let image = match c.image.strip_prefix("sha256:") {
        _ if c.image.is_empty() => "<no image>".to_string(),
        Some(hex) if trunc => short(hex, SHORT_ID),
        _ => c.image.clone(),
    };
    let command = if trunc {
        ellipsis(&c.command, COMMAND_WIDTH)
    } else {
        c.command.clone()
    };
    let mut names: Vec<&str> = c
        .names
        .iter()
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .collect();
    // Names with a slash are links (`other/alias`); truncated, only the container's own shows.
    if trunc {
        names = names
            .into_iter()
            .filter(|n| !n.contains('/'))
            .take(1)
            .collect();
    }
    let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mounts: Vec<String> = c
        .mounts
        .iter()
        .map(|m| {
            if m.name.is_empty() {
                &m.source
            } else {
                &m.name
            }
        })
        .map(|name| {
            if trunc {
                ellipsis(name, 15)
            } else {
                name.clone()
            }
        })
        .collect();
    let local_volumes = c.mounts.iter().filter(|m| m.driver == "local").count();
    let networks: Vec<&str> = c
        .network_settings
        .networks
        .keys()
        .map(String::as_str)
        .collect();
    PsRow {
        command: quote(&command),
        created_at,
        id: if trunc {
            short(&c.id, SHORT_ID)
        } else {
            c.id.clone()
        },
        image,
        labels: labels.join(","),
        local_volumes: local_volumes.to_string(),
        mounts: mounts.join(","),
        names: names.join(","),
        networks: networks.join(","),
        platform: None,
        ports: ports(c),
        running_for: format!("{} ago", human_duration(age)),
        size: "0B".to_string(),
        state: c.state.clone(),
        status: c.status.clone(),
    }
}

/// docker's table: `CONTAINER ID`, IMAGE, COMMAND, CREATED, STATUS, PORTS, NAMES.
pub fn table(rows: &[PsRow]) -> String {
    let header = [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]
    .map(String::from)
    .to_vec();
    let cells: Vec<Vec<String>> = std::iter::once(header)
        .chain(rows.iter().map(|r| {
            vec![
                r.id.clone(),
                r.image.clone(),
                r.command.clone(),
                r.running_for.clone(),
                r.status.clone(),
                r.ports.clone(),
                r.names.clone(),
            ]
        }))
        .collect();
    columns(&cells)
}

/// Lines of cells in docker's table layout: every column but the last padded to its widest
/// cell plus three spaces (at least the minimum width).
pub fn columns(lines: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for line in lines {
        for (i, cell) in line.iter().enumerate() {
            let w = (cell.chars().count() + PADDING).max(MIN_WIDTH);
            match widths.get_mut(i) {
                Some(old) => *old = (*old).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for line in lines {
        if let Some((last, rest)) = line.split_last() {
            for (cell, w) in rest.iter().zip(&widths) {
                out.push_str(cell);
                out.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
            out.push_str(last);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::model::SummaryNetworkSettings;

    fn summary() -> ContainerSummary {
        ContainerSummary {
            id: format!("{:0<64}", "0123456789abcdef"),
            names: vec!["/web".into(), "/db/web".into()],
            image: "busybox".into(),
            command: "sh -c 'while true; do sleep 1; done'".into(),
            created: 1_700_000_000,
            state: "running".into(),
            status: "Up 5 minutes".into(),
            labels: [("a".to_string(), "1".to_string())].into(),
            network_settings: SummaryNetworkSettings {
                networks: [("bridge".to_string(), Default::default())].into(),
            },
            ports: vec![crate::daemon::model::PortSummary {
                ip: Some("0.0.0.0".into()),
                private_port: 80,
                public_port: Some(8080),
                kind: "tcp".into(),
            }],
            ..ContainerSummary::default()
        }
    }

    #[test]
    fn durations_read_like_docker() {
        let d = |s| human_duration(Duration::from_secs(s));
        assert_eq!(d(0), "Less than a second");
        assert_eq!(d(1), "1 second");
        assert_eq!(d(59), "59 seconds");
        assert_eq!(d(90), "About a minute");
        assert_eq!(d(59 * 60), "59 minutes");
        assert_eq!(d(3600), "About an hour");
        assert_eq!(d(5 * 3600), "5 hours");
        assert_eq!(d(3 * 86400), "3 days");
        assert_eq!(d(20 * 86400), "2 weeks");
        assert_eq!(d(90 * 86400), "3 months");
        assert_eq!(d(3 * 365 * 86400), "3 years");
    }

    #[test]
    fn rows_are_truncated_and_formatted() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 300);
        let r = row(&summary(), now, true);
        assert_eq!(r.id, "0123456789ab");
        assert_eq!(r.command, "\"sh -c 'while true; …\"");
        assert_eq!(r.names, "web");
        assert_eq!(r.running_for, "5 minutes ago");
        assert_eq!(r.created_at, "2023-11-14 22:13:20 +0000 UTC");
        assert_eq!(r.labels, "a=1");
        assert_eq!(r.networks, "bridge");
        let full = row(&summary(), now, false);
        assert_eq!(full.id.len(), 64);
        assert_eq!(full.command, "\"sh -c 'while true; do sleep 1; done'\"");
        assert_eq!(full.names, "web,db/web");
        assert_eq!(quote("say \"hi\"\n"), r#""say \"hi\"\n""#);
    }

    #[test]
    fn table_columns_are_padded_like_docker() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 300);
        let t = table(&[row(&summary(), now, true)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "CONTAINER ID   IMAGE     COMMAND                  CREATED         STATUS         PORTS                  NAMES"
        );
        assert_eq!(
            lines[1],
            "0123456789ab   busybox   \"sh -c 'while true; …\"   5 minutes ago   Up 5 minutes   0.0.0.0:8080->80/tcp   web"
        );
    }
}
