//! Healthchecks: the image's `HEALTHCHECK` or `--health-*`, probed the way Docker's daemon does
//! it: on the container's schedule, as an exec in its VM, the results kept in its record
//! (`State.Health` of `inspect`, `(healthy)` in `ps`) and a `health_status: …` event on each
//! change of status.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use skiff_images::HealthConfig;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;

use super::{create, exec, internal, Inner, Result};
use crate::daemon::options::ExecConfig;
use crate::daemon::timefmt::rfc3339;
use crate::run::session::{self, Control, Input, Outcome};

/// Docker's defaults for what a healthcheck leaves at 0.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: i64 = 3;
/// Docker keeps the last 5 results, each with the first 4 KiB of output.
const MAX_LOG_ENTRIES: usize = 5;
const MAX_OUTPUT: usize = 4096;
/// How long a probe the timeout killed may take to report its end.
const KILL_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// `State.Health`, as `inspect` shows it and the record keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: i64,
    pub log: Vec<ProbeResult>,
}

/// One probe: RFC 3339 times, its exit code (-1: it could not run or timed out), its output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProbeResult {
    pub start: String,
    pub end: String,
    pub exit_code: i64,
    pub output: String,
}

/// A healthcheck ready to run: the command and the schedule, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: i64,
}

/// Docker's merge: what the container leaves empty or at 0 comes from its image.
pub fn merge(own: Option<HealthConfig>, image: Option<&HealthConfig>) -> Option<HealthConfig> {
    let Some(mut own) = own else {
        return image.cloned();
    };
    let Some(image) = image else {
        return Some(own);
    };
    if own.test.is_empty() {
        own.test = image.test.clone();
    }
    let inherit = |mine: &mut i64, theirs: i64| {
        if *mine == 0 {
            *mine = theirs;
        }
    };
    inherit(&mut own.interval, image.interval);
    inherit(&mut own.timeout, image.timeout);
    inherit(&mut own.start_period, image.start_period);
    inherit(&mut own.start_interval, image.start_interval);
    inherit(&mut own.retries, image.retries);
    Some(own)
}

impl Plan {
    /// The plan of a (merged) healthcheck; None when there is none to run.
    pub fn of(hc: &HealthConfig) -> Option<Plan> {
        let command = match hc.test.as_slice() {
            [kind, args @ ..] if kind == "CMD" && !args.is_empty() => args.to_vec(),
            [kind, args @ ..] if kind == "CMD-SHELL" && !args.is_empty() => {
                vec!["/bin/sh".into(), "-c".into(), args.join(" ")]
            }
            _ => return None,
        };
        let duration = |ns: i64, default: Duration| match ns {
            ns if ns > 0 => Duration::from_nanos(ns.unsigned_abs()),
            _ => default,
        };
        Some(Plan {
            command,
            interval: duration(hc.interval, DEFAULT_INTERVAL),
            timeout: duration(hc.timeout, DEFAULT_TIMEOUT),
            start_period: duration(hc.start_period, Duration::ZERO),
            start_interval: duration(hc.start_interval, DEFAULT_START_INTERVAL),
            retries: if hc.retries > 0 {
                hc.retries
            } else {
                DEFAULT_RETRIES
            },
        })
    }

    /// How long until the next probe: the start interval while a starting container is in its
    /// start period, else the interval.
    pub fn next_wait(&self, health: &Health, since_start: Duration) -> Duration {
        if health.status == HealthStatus::Starting && since_start < self.start_period {
            self.start_interval
        } else {
            self.interval
        }
    }
}

impl Health {
    /// Records one probe's result, as Docker counts it: a success makes the container healthy, a
    /// failure adds to the streak (except while it is starting within its start period) and
    /// `retries` of them in a row make it unhealthy. True when the status changed.
    pub fn record(&mut self, result: ProbeResult, plan: &Plan, since_start: Duration) -> bool {
        let before = self.status;
        if result.exit_code == 0 {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if self.status != HealthStatus::Starting || since_start >= plan.start_period {
            self.failing_streak += 1;
            if self.failing_streak >= plan.retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.log.push(result);
        let extra = self.log.len().saturating_sub(MAX_LOG_ENTRIES);
        self.log.drain(..extra);
        before != self.status
    }
}

/// Probes the container on its schedule for as long as this run of it lasts (a restart starts
/// another monitor). Nothing to do for a container without a healthcheck.
pub(super) fn monitor(inner: Arc<Inner>, id: String) {
    let Ok(record) = inner.record(&id) else {
        return;
    };
    let Some(plan) = record.request.healthcheck.as_ref().and_then(Plan::of) else {
        return;
    };
    let mut phase = inner.phase(&id).subscribe();
    let starts = phase.borrow().starts;
    let started_at = record.state.started_at.clone();
    // Counted from the VM's start, which a monitor resumed by a restarted daemon comes after.
    let up = u64::try_from(super::now_unix() - record.state.started_unix).unwrap_or(0);
    let started = Instant::now()
        .checked_sub(Duration::from_secs(up))
        .unwrap_or_else(Instant::now);
    tokio::spawn(async move {
        loop {
            let health = match inner.record(&id) {
                Ok(r) if r.running() && r.state.started_at == started_at => {
                    r.state.health.unwrap_or_default()
                }
                _ => return,
            };
            let since_start = started.elapsed();
            let wait = plan.next_wait(&health, since_start);
            let this_run_ended = phase.wait_for(|p| p.starts != starts || !p.running);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = this_run_ended => return,
            }
            let result = probe(&inner, &id, &plan).await;
            let since_start = started.elapsed();
            if let Err(e) = keep(&inner, &id, &started_at, result, &plan, since_start).await {
                tracing::warn!(id, "recording a health probe: {e}");
                return;
            }
        }
    });
}

/// Adds a probe's result to the record of the run it was made in (if that run still is).
async fn keep(
    inner: &Inner,
    id: &str,
    started_at: &str,
    result: ProbeResult,
    plan: &Plan,
    since_start: Duration,
) -> Result<()> {
    let lock = inner.op_lock(id);
    let _guard = lock.lock().await;
    let mut record = inner.record(id)?;
    if !record.running() || record.state.started_at != started_at {
        return Ok(());
    }
    let health = record.state.health.get_or_insert_default();
    let changed = health.record(result, plan, since_start);
    let status = health.status;
    inner.save(&record)?;
    if changed {
        inner.event(&format!("health_status: {}", status.as_str()), &record, &[]);
    }
    Ok(())
}

/// Runs the probe once in the container's VM.
async fn probe(inner: &Inner, id: &str, plan: &Plan) -> ProbeResult {
    let start = SystemTime::now();
    let (exit_code, output) = match run_probe(inner, id, plan).await {
        Ok(done) => done,
        Err(e) => (-1, e.to_string()),
    };
    ProbeResult {
        start: rfc3339(start),
        end: rfc3339(SystemTime::now()),
        exit_code,
        output,
    }
}

async fn run_probe(inner: &Inner, id: &str, plan: &Plan) -> Result<(i64, String)> {
    let deadline = tokio::time::Instant::now() + plan.timeout;
    let timed_out = || {
        Ok((
            -1,
            format!(
                "Health check exceeded timeout ({})",
                go_duration(plan.timeout)
            ),
        ))
    };
    let record = inner.record(id)?;
    let config = ExecConfig {
        cmd: plan.command.clone(),
        attach_stdout: true,
        attach_stderr: true,
        ..ExecConfig::default()
    };
    let spec = create::exec_spec(&record, &config)?;
    let connect = async {
        let stream = exec::connect_exec_when_up(inner, id).await?;
        let (reader, writer) = stream.into_split();
        session::start(reader, writer, &spec)
            .await
            .map_err(internal)
    };
    let Ok(started) = tokio::time::timeout_at(deadline, connect).await else {
        return timed_out();
    };
    let output = CappedOutput::default();
    let (controls, controls_rx) = mpsc::channel(1);
    let drive = started?.drive(output.clone(), output.clone(), Input::Empty, controls_rx);
    tokio::pin!(drive);
    let outcome = tokio::select! {
        outcome = &mut drive => outcome,
        () = tokio::time::sleep_until(deadline) => {
            let _ = controls.send(Control::Signal(libc::SIGKILL)).await;
            let _ = tokio::time::timeout(KILL_GRACE, drive).await;
            return timed_out();
        }
    };
    let mut text = output.text();
    let code = match outcome {
        Outcome::Exited(status) => i64::from(status.shell_code()),
        Outcome::Failed(report) => {
            text.push_str(&report.message);
            i64::from(report.exit_code)
        }
        Outcome::Lost(why) => {
            text.push_str(&why);
            -1
        }
    };
    Ok((code, text))
}

/// Go's `time.Duration` text, as Docker's timeout message shows it: `30s`, `1m30s`, `500ms`.
fn go_duration(d: Duration) -> String {
    skiff_dockerfile::history::go_duration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Keeps the first [`MAX_OUTPUT`] bytes written through any of its clones.
#[derive(Clone, Default)]
struct CappedOutput(Arc<Mutex<Vec<u8>>>);

impl CappedOutput {
    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl AsyncWrite for CappedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..buf.len().min(room)]);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests;
