//! `skiff top` and `skiff stats`: what runs in a container's VM and what the VM costs the host,
//! as docker's tables show them.

use std::io::{IsTerminal, Write};

use futures_util::future::join_all;

use super::ps::{columns, short};
use crate::client::Client;
use crate::daemon::model::ContainerStats;
use crate::daemon::options::ListOptions;

/// `skiff top CONTAINER`: the processes guest-init lists, in `ps -ef`'s columns.
pub async fn top(client: &Client, id: &str) -> anyhow::Result<i32> {
    let top = client.top(id).await?;
    let lines: Vec<Vec<String>> = std::iter::once(top.titles).chain(top.processes).collect();
    print!("{}", columns(&lines));
    Ok(0)
}

/// `skiff stats [--no-stream] [CONTAINER...]`: the named containers, or every running one; a
/// new table each second until interrupted (the screen redrawn on a terminal).
pub async fn stats(
    client: &Client,
    containers: Vec<String>,
    no_stream: bool,
) -> anyhow::Result<i32> {
    let ids = if containers.is_empty() {
        client
            .list(&ListOptions::default())
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect()
    } else {
        containers
    };
    let redraw = !no_stream && std::io::stdout().is_terminal();
    loop {
        // Each report takes the daemon a second (two samples): ask for all at once.
        let reports = join_all(ids.iter().map(|id| client.stats(id))).await;
        let mut lines = vec![[
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
        ]
        .map(String::from)
        .to_vec()];
        let mut failed = false;
        for (id, report) in ids.iter().zip(reports) {
            match report {
                Ok(s) => lines.push(row(&s)),
                Err(e) => {
                    eprintln!("{id}: {e}");
                    failed = true;
                }
            }
        }
        let mut out = std::io::stdout().lock();
        if redraw {
            write!(out, "\x1b[2J\x1b[H")?;
        }
        write!(out, "{}", columns(&lines))?;
        out.flush()?;
        if no_stream || failed {
            return Ok(i32::from(failed));
        }
    }
}

fn row(s: &ContainerStats) -> Vec<String> {
    let percent = |part: f64, whole: f64| {
        if whole > 0.0 {
            part / whole * 100.0
        } else {
            0.0
        }
    };
    let cpu_delta = s
        .cpu_stats
        .cpu_usage
        .total_usage
        .saturating_sub(s.precpu_stats.cpu_usage.total_usage);
    let system_delta = s
        .cpu_stats
        .system_cpu_usage
        .saturating_sub(s.precpu_stats.system_cpu_usage);
    let cpus = f64::from(s.cpu_stats.online_cpus.max(1));
    let mem = &s.memory_stats;
    vec![
        short(&s.id, 12),
        s.name.trim_start_matches('/').to_string(),
        format!(
            "{:.2}%",
            percent(cpu_delta as f64, system_delta as f64) * cpus
        ),
        format!("{} / {}", bytes_size(mem.usage), bytes_size(mem.limit)),
        format!("{:.2}%", percent(mem.usage as f64, mem.limit as f64)),
    ]
}

/// Docker's binary sizes: four significant digits, `KiB` … `TiB` (`31.25MiB`, `128MiB`).
fn bytes_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let digits = match value {
        v if v >= 1000.0 => 0,
        v if v >= 100.0 => 1,
        v if v >= 10.0 => 2,
        _ => 3,
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::model::{CpuStats, CpuUsage, MemoryStats};

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(128 << 20), "128MiB");
        assert_eq!(bytes_size(32_768_000), "31.25MiB");
        assert_eq!(bytes_size(1536), "1.5KiB");
    }

    #[test]
    fn a_row_has_docker_s_percentages() {
        let cpu = |total, system| CpuStats {
            cpu_usage: CpuUsage {
                total_usage: total,
                ..CpuUsage::default()
            },
            system_cpu_usage: system,
            online_cpus: 2,
        };
        let s = ContainerStats {
            id: "0123456789abcdef".repeat(4),
            name: "/web".into(),
            cpu_stats: cpu(300, 2000),
            precpu_stats: cpu(100, 1000),
            memory_stats: MemoryStats {
                usage: 32 << 20,
                limit: 128 << 20,
            },
            ..ContainerStats::default()
        };
        assert_eq!(
            row(&s),
            ["0123456789ab", "web", "40.00%", "32MiB / 128MiB", "25.00%"]
        );
    }
}
