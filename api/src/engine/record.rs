//! A container as the engine keeps it (one JSON record per row of the state database), and the
//! Docker views of it (`ps` summary, `inspect`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use skiff_protocol::ProcessSpec;

use super::health::HealthStatus;
use super::network::views;
use super::volumes::ResolvedMount;
use crate::daemon::create::mounts::MountKind;
use crate::daemon::create::{CreateRequest, NetworkMode, RestartPolicy};
use crate::daemon::model::{
    ContainerInspect, ContainerState, ContainerSummary, InspectConfig, InspectHostConfig,
    LogConfigJson, MountPoint, RestartPolicyJson, SummaryHostConfig, SummaryNetworkSettings,
};
use crate::daemon::timefmt::ZERO_TIME;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Restarting,
    Exited,
    /// Its VM ended without an exit report (crashed, or killed from outside).
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// Where a running container's VMM is: enough to find it again after a daemon restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmProcess {
    pub pid: i32,
    /// Its start time (field 22 of `/proc/PID/stat`), so a reused PID is not taken for it.
    pub start_ticks: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub status: Status,
    pub vmm: Option<VmmProcess>,
    /// RFC 3339, or Go's zero time.
    pub started_at: String,
    pub finished_at: String,
    pub exit_code: i64,
    pub error: String,
    pub restart_count: i64,
    /// Stopped by a user (`stop`, `kill`): `unless-stopped` and `always` then wait for a start.
    pub stopped_by_user: bool,
    /// Unix seconds of the last start, for `ps`'s "Up …".
    pub started_unix: i64,
    pub finished_unix: i64,
    /// Its places on its networks while it runs, its NetworkMode's first (`eth0`, `eth1`, …).
    /// Records of earlier daemons hold one `endpoint`.
    #[serde(default, alias = "endpoint", deserialize_with = "one_or_many")]
    pub endpoints: Vec<super::network::Endpoint>,
    /// Its VMM was killed by its cgroup's memory limit (Docker's `OOMKilled`).
    #[serde(default)]
    pub oom_killed: bool,
    /// What its healthcheck found in this run (or the last); None without a healthcheck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<super::health::Health>,
}

/// `null`, one endpoint or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<super::network::Endpoint>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Many(Vec<super::network::Endpoint>),
        One(Option<super::network::Endpoint>),
    }
    Ok(match Stored::deserialize(d)? {
        Stored::Many(list) => list,
        Stored::One(one) => one.into_iter().collect(),
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub name: String,
    pub created: String,
    pub created_unix: i64,
    /// What the request asked for, as decoded.
    pub request: CreateRequest,
    /// `sha256:` of the image's config.
    pub image_id: String,
    /// The image's unpacked layers, top-most first.
    pub layers: Vec<PathBuf>,
    /// The process guest-init starts (image config merged in).
    pub process: ProcessSpec,
    pub cpus: u8,
    pub memory_mib: u64,
    pub state: RunState,
    /// Binds, volumes and tmpfs mounts, resolved at create.
    #[serde(default)]
    pub mounts: Vec<ResolvedMount>,
}

impl ContainerRecord {
    pub fn running(&self) -> bool {
        matches!(self.state.status, Status::Running | Status::Restarting)
    }

    /// `ps`'s STATUS column.
    pub fn status_text(&self, now_unix: i64) -> String {
        match self.state.status {
            Status::Created => "Created".into(),
            Status::Running => {
                let up = format!("Up {}", human(now_unix - self.state.started_unix));
                match &self.state.health {
                    Some(h) if h.status == HealthStatus::Starting => {
                        format!("{up} (health: starting)")
                    }
                    Some(h) => format!("{up} ({})", h.status.as_str()),
                    None => up,
                }
            }
            Status::Restarting => format!(
                "Restarting ({}) {} ago",
                self.state.exit_code,
                human(now_unix - self.state.finished_unix)
            ),
            Status::Exited => format!(
                "Exited ({}) {} ago",
                self.state.exit_code,
                human(now_unix - self.state.finished_unix)
            ),
            Status::Dead => "Dead".into(),
        }
    }

    fn network_mode(&self) -> &str {
        match &self.request.network {
            NetworkMode::Default => "bridge",
            NetworkMode::None => "none",
            NetworkMode::Named(name) => name,
        }
    }

    /// The ID's first 12 characters, as Docker shows it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    pub fn summary(&self, now_unix: i64) -> ContainerSummary {
        ContainerSummary {
            id: self.id.clone(),
            names: vec![format!("/{}", self.name)],
            image: self.request.image.clone(),
            image_id: self.image_id.clone(),
            command: self.process.args.join(" "),
            created: self.created_unix,
            labels: self.request.labels.clone(),
            state: self.state.status.as_str().into(),
            status: self.status_text(now_unix),
            host_config: SummaryHostConfig {
                network_mode: self.network_mode().into(),
            },
            mounts: self.mount_points(),
            ports: views::summary_ports(&self.state.endpoints),
            network_settings: SummaryNetworkSettings {
                networks: views::networks(
                    &super::networks::joins(&self.request),
                    &self.state.endpoints,
                    self.short_id(),
                ),
            },
            ..ContainerSummary::default()
        }
    }

    pub fn inspect(&self, log_path: String) -> ContainerInspect {
        let req = &self.request;
        let (name, max) = restart_policy_json(req.restart_policy);
        let mut log_config = BTreeMap::new();
        if let Some(size) = req.log.max_size {
            log_config.insert("max-size".to_string(), size.to_string());
        }
        if let Some(files) = req.log.max_file {
            log_config.insert("max-file".to_string(), files.to_string());
        }
        ContainerInspect {
            id: self.id.clone(),
            created: self.created.clone(),
            path: self.process.args.first().cloned().unwrap_or_default(),
            args: self.process.args.iter().skip(1).cloned().collect(),
            state: ContainerState {
                status: self.state.status.as_str().into(),
                running: self.running(),
                restarting: self.state.status == Status::Restarting,
                dead: self.state.status == Status::Dead,
                pid: self.state.vmm.as_ref().map_or(0, |v| i64::from(v.pid)),
                exit_code: self.state.exit_code,
                error: self.state.error.clone(),
                oom_killed: self.state.oom_killed,
                started_at: or_zero(&self.state.started_at),
                finished_at: or_zero(&self.state.finished_at),
                health: self.state.health.clone(),
                ..ContainerState::default()
            },
            image: self.image_id.clone(),
            log_path,
            name: format!("/{}", self.name),
            restart_count: self.state.restart_count,
            driver: "skiff-overlay".into(),
            platform: "linux".into(),
            host_config: InspectHostConfig {
                log_config: LogConfigJson {
                    kind: "json-file".into(),
                    config: log_config,
                },
                network_mode: self.network_mode().into(),
                restart_policy: RestartPolicyJson {
                    name: name.into(),
                    maximum_retry_count: max,
                },
                auto_remove: req.auto_remove,
                runtime: "skiff".into(),
                memory: req.memory_bytes.map_or(0, |m| m as i64),
                nano_cpus: req.nano_cpus.map_or(0, |n| n as i64),
                pids_limit: req.pids_limit.map(|n| n as i64),
                init: req.init.then_some(true),
                storage_opt: req
                    .storage_size
                    .map(|bytes| [("size".to_string(), bytes.to_string())].into()),
                ..InspectHostConfig::default()
            },
            config: InspectConfig {
                hostname: self.process.hostname.clone().unwrap_or_default(),
                domainname: req.domainname.clone().unwrap_or_default(),
                user: req.user.clone().unwrap_or_default(),
                attach_stdin: req.stdio.attach_stdin,
                attach_stdout: req.stdio.attach_stdout,
                attach_stderr: req.stdio.attach_stderr,
                tty: req.stdio.tty,
                open_stdin: req.stdio.open_stdin,
                stdin_once: req.stdio.stdin_once,
                env: self.process.env.clone(),
                cmd: req.cmd.clone(),
                image: req.image.clone(),
                working_dir: self.process.cwd.clone(),
                entrypoint: req.entrypoint.clone(),
                labels: req.labels.clone(),
                stop_signal: req.stop_signal.clone(),
                stop_timeout: req.stop_timeout,
                healthcheck: req.healthcheck.clone(),
                ..InspectConfig::default()
            },
            mounts: self.mount_points(),
            network_settings: views::inspect_settings(
                &super::networks::joins(req),
                &self.state.endpoints,
                self.short_id(),
                &req.exposed_ports,
                &req.ports,
            ),
            ..ContainerInspect::default()
        }
    }

    /// `Mounts` of inspect and ps, as Docker shows them.
    pub fn mount_points(&self) -> Vec<MountPoint> {
        self.mounts
            .iter()
            .map(|m| {
                let (kind, driver, propagation) = match m.request.kind {
                    MountKind::Bind { .. } => ("bind", "", "rprivate"),
                    MountKind::Volume { .. } => ("volume", "local", ""),
                    MountKind::Tmpfs { .. } => ("tmpfs", "", ""),
                };
                MountPoint {
                    kind: kind.into(),
                    name: m.volume.clone().unwrap_or_default(),
                    source: m
                        .source
                        .as_ref()
                        .map(|s| s.display().to_string())
                        .unwrap_or_default(),
                    destination: m.request.target.clone(),
                    driver: driver.into(),
                    mode: if m.request.read_only { "ro" } else { "" }.into(),
                    rw: !m.request.read_only,
                    propagation: propagation.into(),
                }
            })
            .collect()
    }
}

fn or_zero(time: &str) -> String {
    if time.is_empty() {
        ZERO_TIME.into()
    } else {
        time.into()
    }
}

fn restart_policy_json(policy: RestartPolicy) -> (&'static str, i64) {
    match policy {
        RestartPolicy::No => ("no", 0),
        RestartPolicy::OnFailure { max_retries } => {
            ("on-failure", max_retries.map_or(0, i64::from))
        }
        RestartPolicy::Always => ("always", 0),
        RestartPolicy::UnlessStopped => ("unless-stopped", 0),
    }
}

/// Docker's coarse durations: "Less than a second", "5 seconds", "3 minutes", "2 hours", …
fn human(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_texts_read_like_docker() {
        let mut r = ContainerRecord::default();
        assert_eq!(r.status_text(100), "Created");
        r.state.status = Status::Running;
        r.state.started_unix = 90;
        assert_eq!(r.status_text(100), "Up 10 seconds");
        r.state.health = Some(Default::default());
        assert_eq!(r.status_text(100), "Up 10 seconds (health: starting)");
        r.state.health = Some(super::super::health::Health {
            status: HealthStatus::Unhealthy,
            ..Default::default()
        });
        assert_eq!(r.status_text(100), "Up 10 seconds (unhealthy)");
        r.state.status = Status::Exited;
        r.state.exit_code = 3;
        r.state.finished_unix = 100 - 7200;
        assert_eq!(r.status_text(100), "Exited (3) 2 hours ago");
        assert_eq!(human(0), "Less than a second");
        assert_eq!(human(90), "About a minute");
    }
}
