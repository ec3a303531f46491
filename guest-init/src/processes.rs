//! The container's processes for `docker top`, read from `/proc`.
//!
//! guest-init itself (PID 1) and kernel threads are left out: the list shows what runs in the
//! container, as Docker's does. Works on any Linux `/proc`, so it is tested on the host.

use crate::protocol::{ProcessInfo, ProcessList, MAX_PAYLOAD};
use std::collections::HashMap;
use std::fs;
use std::path::Path;

/// The longest command line reported; `ps` cuts long ones too.
const CMD_LIMIT: usize = 4096;
/// Room kept free in the `Processes` frame for JSON overhead and the other fields.
const FRAME_BUDGET: usize = MAX_PAYLOAD - 64 * 1024;
/// Bytes of JSON one process costs besides its command line and user name (a bound).
const ENTRY_OVERHEAD: usize = 160;

/// The processes under `proc_root`; `passwd` names the users.
pub fn list(proc_root: &Path, passwd: &Path) -> ProcessList {
    let ticks = clock_ticks_per_second();
    let names = fs::read_to_string(passwd)
        .map(|text| user_names(&text))
        .unwrap_or_default();
    let uptime_ms = fs::read_to_string(proc_root.join("uptime"))
        .ok()
        .and_then(|text| parse_uptime_ms(&text))
        .unwrap_or(0);
    let mut pids: Vec<i32> = fs::read_dir(proc_root)
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    let mut out = ProcessList {
        uptime_ms,
        ..ProcessList::default()
    };
    let mut size = 0;
    for pid in pids.into_iter().filter(|&pid| pid != 1) {
        // A process may exit while we look: skip what cannot be read.
        let Some(info) = read_process(&proc_root.join(pid.to_string()), pid, ticks, &names) else {
            continue;
        };
        size += ENTRY_OVERHEAD + info.cmd.len() + info.user.len();
        if size > FRAME_BUDGET {
            out.truncated = true;
            break;
        }
        out.processes.push(info);
    }
    out
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// `/proc/PID`'s entry, or None for a kernel thread or a process that is gone.
fn read_process(
    dir: &Path,
    pid: i32,
    ticks: u64,
    names: &HashMap<u32, String>,
) -> Option<ProcessInfo> {
    let stat = parse_stat(&fs::read_to_string(dir.join("stat")).ok()?)?;
    // Kernel threads: kthreadd (2) and its children.
    if pid == 2 || stat.ppid == 2 {
        return None;
    }
    let uid = fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|text| parse_uid(&text))?;
    let cmdline = fs::read(dir.join("cmdline")).unwrap_or_default();
    Some(ProcessInfo {
        pid,
        ppid: stat.ppid,
        uid,
        user: names.get(&uid).cloned().unwrap_or_else(|| uid.to_string()),
        tty: tty_name(stat.tty_nr),
        started_ms: stat.start_ticks.saturating_mul(1000) / ticks,
        cpu_ms: stat.cpu_ticks.saturating_mul(1000) / ticks,
        cmd: command(&cmdline, &stat.comm),
    })
}

#[derive(Debug, PartialEq, Eq)]
struct Stat {
    comm: String,
    ppid: i32,
    tty_nr: u32,
    cpu_ticks: u64,
    start_ticks: u64,
}

/// `/proc/PID/stat`: the name sits in parentheses and may itself hold spaces and `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields after the name, from 3 (state) on: ppid is 4, tty_nr 7, utime 14, stime 15,
    // starttime 22 (proc(5)).
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).copied();
    Some(Stat {
        comm,
        ppid: field(4)?.parse().ok()?,
        tty_nr: field(7)?.parse().ok()?,
        cpu_ticks: field(14)?.parse::<u64>().ok()? + field(15)?.parse::<u64>().ok()?,
        start_ticks: field(22)?.parse().ok()?,
    })
}

/// The real UID from `/proc/PID/status`.
fn parse_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse_uptime_ms(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// UID → name from an `/etc/passwd` text; the first entry of a UID wins, as in getpwuid.
fn user_names(passwd: &str) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for line in passwd.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse() {
            names.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    names
}

/// The device name of a `tty_nr` (major in bits 8–15, minor in 0–7 and 20–31).
fn tty_name(tty_nr: u32) -> String {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        0 => "?".to_string(),
        4 => format!("tty{minor}"),
        5 if minor == 1 => "console".to_string(),
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        _ => format!("{major}:{minor}"),
    }
}

/// Arguments joined by spaces, cut at [`CMD_LIMIT`]; `[comm]` when there are none.
fn command(cmdline: &[u8], comm: &str) -> String {
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.is_empty() {
        return format!("[{comm}]");
    }
    let mut cmd = args.join(" ");
    if cmd.len() > CMD_LIMIT {
        let mut end = CMD_LIMIT;
        while !cmd.is_char_boundary(end) {
            end -= 1;
        }
        cmd.truncate(end);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_name_parses() {
        let text = "42 (a) b (c) S 7 42 42 34816 42 4194304 100 0 0 0 12 3 0 0 20 0 1 0 \
                    5150 1000 10 18446744073709551615";
        let stat = parse_stat(text).unwrap();
        assert_eq!(
            stat,
            Stat {
                comm: "a) b (c".into(),
                ppid: 7,
                tty_nr: 34816,
                cpu_ticks: 15,
                start_ticks: 5150,
            }
        );
        assert_eq!(parse_stat("42 (unterminated S 1"), None);
        assert_eq!(parse_stat("42 (x) S 1 2"), None);
    }

    #[test]
    fn ttys_users_and_commands() {
        assert_eq!(tty_name(0), "?");
        assert_eq!(tty_name(34816), "pts/0");
        assert_eq!(tty_name((136 << 8) | 3), "pts/3");
        assert_eq!(tty_name((4 << 8) | 1), "tty1");
        let names = user_names("root:x:0:0::/root:/bin/sh\nbad\nnobody:x:65534:65534::/:\n");
        assert_eq!(names.get(&0).map(String::as_str), Some("root"));
        assert_eq!(names.get(&65534).map(String::as_str), Some("nobody"));
        assert_eq!(
            parse_uid("Name:\tsh\nUid:\t1000\t1000\t1000\t1000\n"),
            Some(1000)
        );
        assert_eq!(command(b"sleep\x00300\x00", "sleep"), "sleep 300");
        assert_eq!(command(b"", "kworker"), "[kworker]");
        assert_eq!(command(&vec![b'a'; 10_000], "a").len(), CMD_LIMIT);
        assert_eq!(parse_uptime_ms("12.34 5.0\n"), Some(12_340));
    }

    #[test]
    fn this_process_is_listed_with_its_command_line() {
        let me = std::process::id() as i32;
        let list = list(Path::new("/proc"), Path::new("/etc/passwd"));
        assert!(list.uptime_ms > 0);
        assert!(!list.processes.iter().any(|p| p.pid == 1 || p.pid == 2));
        let mine = list.processes.iter().find(|p| p.pid == me).expect("listed");
        let exe = std::env::args().next().unwrap();
        assert!(mine.cmd.starts_with(&exe), "{} vs {exe}", mine.cmd);
        assert!(mine.started_ms <= list.uptime_ms);
        // SAFETY: getuid has no preconditions.
        assert_eq!(mine.uid, unsafe { libc::getuid() });
    }
}
