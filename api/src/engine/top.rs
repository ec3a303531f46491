//! `docker top`: guest-init lists the VM's processes (PIDs are the guest's), and the engine lays
//! them out as `ps -ef` does. Everything in the list comes from the guest: control characters are
//! escaped before any of it reaches a terminal.

use std::time::{SystemTime, UNIX_EPOCH};

use skiff_protocol::ProcessList;

use crate::daemon::model::TopResponse;
use crate::daemon::BackendError;

const TITLES: [&str; 8] = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];

/// The `ps_args` skiff can honour: the `ps -ef` layout is the only one guest-init reports.
pub fn check_ps_args(ps_args: Option<&str>) -> Result<(), BackendError> {
    match ps_args.map(str::trim) {
        None | Some("") | Some("-ef") | Some("-e -f") | Some("-f -e") => Ok(()),
        Some(other) => Err(BackendError::InvalidArgument(format!(
            "ps_args {other:?} is not supported: skiff lists a VM's processes through its \
             guest-init, in the columns of ps -ef"
        ))),
    }
}

/// The table for `list`, taken when the host clock read `now_unix_ms`.
pub fn table(list: &ProcessList, now_unix_ms: u64) -> TopResponse {
    let processes = list
        .processes
        .iter()
        .map(|p| {
            let age_ms = list.uptime_ms.saturating_sub(p.started_ms);
            let started_unix = now_unix_ms.saturating_sub(age_ms) / 1000;
            // ps's C: CPU time over lifetime, in percent.
            let c = (p.cpu_ms * 100).checked_div(age_ms).unwrap_or(0);
            vec![
                escape(&p.user),
                p.pid.to_string(),
                p.ppid.to_string(),
                c.to_string(),
                hour_minute(started_unix),
                escape(&p.tty),
                cpu_time(p.cpu_ms / 1000),
                escape(&p.cmd),
            ]
        })
        .collect();
    TopResponse {
        titles: TITLES.iter().map(|t| t.to_string()).collect(),
        processes,
    }
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `HH:MM` (UTC), as ps shows a start time of the same day.
fn hour_minute(unix: u64) -> String {
    format!("{:02}:{:02}", unix / 3600 % 24, unix / 60 % 60)
}

/// ps's TIME: `[DD-]HH:MM:SS`.
fn cpu_time(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let hms = format!("{:02}:{:02}:{:02}", rest / 3600, rest / 60 % 60, rest % 60);
    if days > 0 {
        format!("{days}-{hms}")
    } else {
        hms
    }
}

/// Control characters escaped (`\u{1b}`), so a process name cannot drive the reader's terminal.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_protocol::ProcessInfo;

    #[test]
    fn a_list_becomes_ps_ef_rows() {
        let list = ProcessList {
            uptime_ms: 100_000,
            processes: vec![ProcessInfo {
                pid: 7,
                ppid: 1,
                uid: 0,
                user: "root".into(),
                tty: "?".into(),
                started_ms: 40_000,
                cpu_ms: 3_000,
                cmd: "sleep 300\x1b[2J".into(),
            }],
            truncated: false,
        };
        // 1970-01-02 10:31:00 UTC, 60 s after the process started.
        let now = (86_400 + 10 * 3600 + 31 * 60) * 1000;
        let top = table(&list, now);
        assert_eq!(top.titles, TITLES);
        assert_eq!(
            top.processes,
            vec![vec![
                "root",
                "7",
                "1",
                "5",
                "10:30",
                "?",
                "00:00:03",
                "sleep 300\\u{1b}[2J"
            ]]
        );
    }

    #[test]
    fn cpu_times_and_ps_args() {
        assert_eq!(cpu_time(0), "00:00:00");
        assert_eq!(cpu_time(90_061), "1-01:01:01");
        assert!(check_ps_args(None).is_ok());
        assert!(check_ps_args(Some("-ef")).is_ok());
        let err = check_ps_args(Some("aux")).unwrap_err();
        assert_eq!(err.status(), hyper::StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("\"aux\""), "{err}");
    }
}
