//! HEALTHCHECK options: Go's `time.ParseDuration` for `--interval`, `--timeout`,
//! `--start-period` and `--start-interval`, Go's `strconv.ParseInt` for `--retries`.

use crate::instructions::CommandLine;
use skiff_images::manifest::HealthConfig;

/// `[interval, timeout, start_period, start_interval]` as given, and `--retries`.
pub(crate) fn parse_healthcheck(
    command: CommandLine,
    durations: [Option<String>; 4],
    retries: Option<String>,
) -> Result<HealthConfig, String> {
    let names = ["interval", "timeout", "start-period", "start-interval"];
    let mut ns = [0i64; 4];
    for ((slot, value), name) in ns.iter_mut().zip(&durations).zip(names) {
        *slot = interval(name, value.as_deref())?;
    }
    let test = match command {
        CommandLine::Exec(args) if args.is_empty() => Vec::new(),
        CommandLine::Shell(s) if s.is_empty() => Vec::new(),
        CommandLine::Exec(args) => std::iter::once("CMD".to_string()).chain(args).collect(),
        CommandLine::Shell(s) => vec!["CMD-SHELL".to_string(), s],
    };
    if test.is_empty() {
        return Err("Missing command after HEALTHCHECK CMD".into());
    }
    let retries = match retries.as_deref() {
        None | Some("") => 0,
        Some(r) => {
            let n = r
                .parse::<i32>()
                .map_err(|_| format!("strconv.ParseInt: parsing {r:?}: invalid syntax"))?;
            if n < 0 {
                return Err(format!("--retries cannot be negative ({n})"));
            }
            i64::from(n)
        }
    };
    Ok(HealthConfig {
        test,
        interval: ns[0],
        timeout: ns[1],
        start_period: ns[2],
        start_interval: ns[3],
        retries,
    })
}

/// A duration flag: empty or zero means "the default"; else at least 1ms.
fn interval(name: &str, value: Option<&str>) -> Result<i64, String> {
    let Some(v) = value.filter(|v| !v.is_empty()) else {
        return Ok(0);
    };
    let d = parse_duration(v)?;
    if d != 0 && d < 1_000_000 {
        return Err(format!("Interval {name:?} cannot be less than 1ms"));
    }
    Ok(d)
}

/// Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` or `0`, in nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {s:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.');
        let (num, after) = rest.split_at(digits.unwrap_or(rest.len()));
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "" => return Err(format!("time: missing unit in duration {s:?}")),
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {s:?}")),
        };
        let n: f64 = num.parse().map_err(|_| invalid())?;
        total += n * scale;
        rest = next;
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let ns = total.round() as i64;
    Ok(if neg { -ns } else { ns })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_does() {
        for (s, ns) in [
            ("0", 0),
            ("5s", 5_000_000_000),
            ("1m30s", 90_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("300ms", 300_000_000),
            ("10us", 10_000),
            ("10µs", 10_000),
            ("-2s", -2_000_000_000),
            (".5s", 500_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
        ] {
            assert_eq!(parse_duration(s), Ok(ns), "{s}");
        }
        for (s, says) in [
            ("5", "missing unit"),
            ("5x", "unknown unit \"x\""),
            ("", "invalid duration"),
            ("s", "invalid duration"),
            ("1..2s", "invalid duration"),
            ("99999999999999h", "invalid duration"),
        ] {
            let err = parse_duration(s).unwrap_err();
            assert!(err.contains(says), "{s}: {err}");
        }
    }

    #[test]
    fn options_become_a_health_config() {
        let some = |s: &str| Some(s.to_string());
        let h = parse_healthcheck(
            CommandLine::Shell("curl -f localhost".into()),
            [some("30s"), some("3s"), None, some("0")],
            some("3"),
        )
        .unwrap();
        assert_eq!(h.test, ["CMD-SHELL", "curl -f localhost"]);
        assert_eq!(
            (h.interval, h.timeout, h.start_period),
            (30_000_000_000, 3_000_000_000, 0)
        );
        assert_eq!(h.retries, 3);
        let exec = parse_healthcheck(
            CommandLine::Exec(vec!["true".into()]),
            Default::default(),
            None,
        );
        assert_eq!(exec.unwrap().test, ["CMD", "true"]);
        let err = |d: [Option<String>; 4], r: Option<String>| {
            parse_healthcheck(CommandLine::Shell("x".into()), d, r).unwrap_err()
        };
        assert!(err([some("1ns"), None, None, None], None).contains("less than 1ms"));
        assert!(err(Default::default(), some("-1")).contains("cannot be negative"));
        assert!(err(Default::default(), some("x")).contains("invalid syntax"));
        let empty = parse_healthcheck(CommandLine::Exec(vec![]), Default::default(), None);
        assert!(empty.unwrap_err().contains("Missing command"));
    }
}
