//! `docker stats` for a microVM: what the container costs the host is its VMM process — CPU
//! time of all its threads (vCPUs included), its memory (guest pages touched plus the VMM's own)
//! and its threads. With a cgroup per VM these are the cgroup's counters and limits (what the
//! kernel holds the VMM to); without one, the process's from /proc against the guest's memory
//! size.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};

use super::record::{ContainerRecord, VmmProcess};
use crate::cgroup;
use crate::daemon::model::{ContainerStats, CpuStats, CpuUsage, MemoryStats, PidsStats};
use crate::daemon::options::StatsOptions;
use crate::daemon::timefmt::rfc3339;

/// Docker samples once a second.
const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    cpu_ns: u64,
    user_ns: u64,
    system_cpu_ns: u64,
    memory_bytes: u64,
    threads: u64,
    /// The cgroup's limits, when the VMM has one.
    limits: Option<(u64, u64)>,
}

fn ticks_to_ns(ticks: u64) -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks.saturating_mul(1_000_000_000 / hz)
}

/// The VMM's counters from its cgroup (under `cgroups`) or /proc, or zeros once it is gone.
fn sample(process: Option<&VmmProcess>, cgroups: Option<&Path>) -> Sample {
    let mut s = Sample::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        let total: u64 = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum();
        s.system_cpu_ns = ticks_to_ns(total);
    }
    let Some(p) = process.filter(|p| super::vmm_process::alive(p)) else {
        return s;
    };
    let cgroup = cgroups.and_then(|root| cgroup::of_pid(p.pid, root));
    if let Some(c) = cgroup.as_deref().and_then(cgroup::stats) {
        s.cpu_ns = c.cpu_usage_ns;
        s.user_ns = c.cpu_user_ns;
        s.memory_bytes = c.memory_usage;
        s.threads = c.pids_current;
        s.limits = Some((c.memory_limit, c.pids_limit));
        return s;
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", p.pid)) {
        // Fields after the command name: utime is the 12th, stime the 13th, threads the 18th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let field = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        s.user_ns = ticks_to_ns(field(11));
        s.cpu_ns = ticks_to_ns(field(11) + field(12));
        s.threads = field(17);
    }
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", p.pid)) {
        s.memory_bytes = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
    }
    s
}

fn cpu(s: &Sample) -> CpuStats {
    CpuStats {
        cpu_usage: CpuUsage {
            total_usage: s.cpu_ns,
            usage_in_usermode: s.user_ns,
            usage_in_kernelmode: s.cpu_ns.saturating_sub(s.user_ns),
        },
        system_cpu_usage: s.system_cpu_ns,
        online_cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
    }
}

fn report(record: &ContainerRecord, pre: &Sample, now: &Sample, limit: u64) -> ContainerStats {
    let time = rfc3339(std::time::SystemTime::now());
    ContainerStats {
        read: time.clone(),
        preread: time,
        name: format!("/{}", record.name),
        id: record.id.clone(),
        pids_stats: PidsStats {
            current: now.threads,
            limit: now.limits.map(|(_, pids)| pids),
        },
        cpu_stats: cpu(now),
        precpu_stats: cpu(pre),
        memory_stats: MemoryStats {
            usage: now.memory_bytes,
            limit: now.limits.map_or(limit, |(memory, _)| memory),
        },
    }
}

/// One report (two samples a second apart, unless `one_shot`), or one a second while streaming.
/// `cgroups`: the parent of the VMs' cgroups, when skiff makes them.
pub fn stream(
    record: ContainerRecord,
    opts: StatsOptions,
    cgroups: Option<PathBuf>,
) -> BoxStream<'static, ContainerStats> {
    let limit = record.memory_mib << 20;
    let process = record.state.vmm.clone();
    let streaming = opts.stream && !opts.one_shot;
    let first = sample(process.as_ref(), cgroups.as_deref());
    let state = (record, first, process, true);
    stream::unfold(state, move |(record, pre, process, first_round)| {
        let cgroups = cgroups.clone();
        async move {
            if !first_round && !streaming {
                return None;
            }
            if !opts.one_shot {
                tokio::time::sleep(INTERVAL).await;
            }
            let now = sample(process.as_ref(), cgroups.as_deref());
            let out = report(&record, &pre, &now, limit);
            Some((out, (record, now, process, false)))
        }
    })
    .boxed()
}
