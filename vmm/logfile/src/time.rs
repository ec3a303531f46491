//! RFC 3339 timestamps as Docker writes them (UTC, nanoseconds, `Z`), and the parsers the
//! daemon needs for log records and for `since`/`until` query values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Go's zero time: Docker's `FinishedAt` of a container that has not finished.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `2026-11-25T16:12:02.123456789Z`; times before 1970 give the epoch.
///
/// Always nine fraction digits: the fixed width Docker uses for `docker logs -t`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.F{1,9}](Z|+HH:MM|-HH:MM)`, the subset of RFC 3339 that Docker
/// and Go's `time.RFC3339Nano` produce. Out-of-range fields give `None`, never a panic.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let (hour, min, sec) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || min > 59 || sec > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        nanos = u32::try_from(digits(&frac[..n])?).ok()? * 10u32.pow(9 - n as u32);
        rest = &frac[n..];
    }
    let offset: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (oh, om) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = (oh * 3600 + om * 60) as i64;
            if *sign == b'-' {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year as i64, month, day);
    let secs = days * 86_400 + (hour * 3600 + min * 60 + sec) as i64 - offset;
    from_unix(secs, nanos)
}

/// Parses Docker's `since`/`until` query values: a Unix timestamp `SECONDS[.NANOS]` (what the
/// docker CLI sends after resolving `10m` or a date itself) or, for other clients, RFC 3339.
///
/// As in Docker, the fraction is decimal (`1.5` is 1.5 s), with 1 to 9 digits.
pub fn parse_since(s: &str) -> Option<SystemTime> {
    let (secs, frac) = match s.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (s, None),
    };
    let all_digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
    if !all_digits(secs) || frac.is_some_and(|f| !all_digits(f)) {
        return parse_rfc3339(s);
    }
    let secs: i64 = secs.parse().ok()?;
    let nanos = match frac {
        None => 0,
        Some(f) if f.len() <= 9 => f.parse::<u32>().ok()? * 10u32.pow(9 - f.len() as u32),
        Some(_) => return None,
    };
    from_unix(secs, nanos)
}

/// `secs` since the epoch (negative before it) plus `nanos`; `None` if `SystemTime` can't hold it.
fn from_unix(secs: i64, nanos: u32) -> Option<SystemTime> {
    let base = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    base.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// ASCII digits to a number; `None` on anything else (the caller bounds the length).
fn digits(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |acc, c| acc * 10 + u64::from(c - b'0')))
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's days-to-civil algorithm for days since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The inverse (Hinnant's days-from-civil): days since 1970-01-01, negative before it.
fn days_from_civil(y: i64, m: u64, d: u64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_251_199, 5);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.000000005Z");
    }

    #[test]
    fn rfc3339_round_trips() {
        for (secs, nanos) in [(0, 0), (1_709_251_199, 5), (1_795_623_122, 123_456_789)] {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        // Every day of a few years, through leap days and century rules.
        for day in (0..(200 * 366)).step_by(7) {
            let t = UNIX_EPOCH + Duration::from_secs(day * 86_400 + 3661);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
    }

    #[test]
    fn rfc3339_variants() {
        let t = UNIX_EPOCH + Duration::new(1_795_623_122, 120_000_000);
        // Go's RFC3339Nano trims trailing zeros; offsets name the same instant.
        assert_eq!(parse_rfc3339("2026-11-25T16:12:02.12Z"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-25T17:42:02.12+01:30"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-25T11:12:02.120-05:00"), Some(t));
        let whole = UNIX_EPOCH + Duration::from_secs(1_795_623_122);
        assert_eq!(parse_rfc3339("2026-11-25T16:12:02Z"), Some(whole));
        assert_eq!(parse_rfc3339("2026-11-25t16:12:02z"), Some(whole));
        // Before the epoch and Go's zero time are representable.
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(before));
        assert!(parse_rfc3339(ZERO_TIME).is_some_and(|z| z < before));
    }

    #[test]
    fn rfc3339_rejections() {
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25 16:12:02Z",
            "2026-11-25T16:12:02",
            "2026-11-25T16:12:02.Z",
            "2026-11-25T16:12:02.1234567891Z",
            "2026-13-25T16:12:02Z",
            "2026-02-29T16:12:02Z",
            "2026-11-31T16:12:02Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T16:60:02Z",
            "2026-11-25T16:12:60Z",
            "2026-11-25T16:12:02+0100",
            "2026-11-25T16:12:02+24:00",
            "2026-11-25T16:12:02Zjunk",
            "+026-11-25T16:12:02Z",
            "2026-11-25T16:12:02é",
            "２026-11-25T16:12:02Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("2000-02-29T00:00:00Z").is_some());
        assert!(parse_rfc3339("1900-02-29T00:00:00Z").is_none());
    }

    #[test]
    fn since_values() {
        let t = UNIX_EPOCH + Duration::new(1_795_623_122, 123_456_789);
        assert_eq!(parse_since("1795623122.123456789"), Some(t));
        assert_eq!(parse_since("2026-11-25T16:12:02.123456789Z"), Some(t));
        assert_eq!(
            parse_since("1795623122.5"),
            Some(UNIX_EPOCH + Duration::from_millis(1_795_623_122_500))
        );
        assert_eq!(parse_since("0"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_since("1795623122.000000000"),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_623_122))
        );
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "-1",
            "1.2.3",
            "1.1234567890",
            "10m",
            "1e9",
            " 1",
            "99999999999999999999",
        ] {
            assert_eq!(parse_since(bad), None, "{bad:?}");
        }
    }
}
