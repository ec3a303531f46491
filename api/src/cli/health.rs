//! `--health-*` and `--no-healthcheck` of `skiff run`/`create`, as the docker CLI reads them and
//! sends them (`Config.Healthcheck`): options without `--health-cmd` adjust the image's check.

use std::time::Duration;

use clap::Args;
use skiff_images::Healthcheck;

#[derive(Debug, Default, Args)]
pub struct HealthArgs {
    /// Command that tells whether the container is healthy, run in its VM by skiffd (exit 0:
    /// healthy) (through skiffd only).
    #[arg(long = "health-cmd", value_name = "CMD")]
    pub(crate) cmd: Option<String>,
    /// Time between probes, e.g. 30s, 1m30s [default: 30s].
    #[arg(long = "health-interval", value_name = "DURATION", value_parser = go_duration)]
    pub(crate) interval: Option<Duration>,
    /// Longest a probe may run [default: 30s].
    #[arg(long = "health-timeout", value_name = "DURATION", value_parser = go_duration)]
    pub(crate) timeout: Option<Duration>,
    /// Time to start in, during which failures do not count [default: 0s].
    #[arg(long = "health-start-period", value_name = "DURATION", value_parser = go_duration)]
    pub(crate) start_period: Option<Duration>,
    /// Time between probes during the start period [default: 5s].
    #[arg(long = "health-start-interval", value_name = "DURATION", value_parser = go_duration)]
    pub(crate) start_interval: Option<Duration>,
    /// Failures in a row that make it unhealthy [default: 3].
    #[arg(long = "health-retries", value_name = "N")]
    pub(crate) retries: Option<u32>,
    /// Turn off the image's healthcheck.
    #[arg(long = "no-healthcheck")]
    pub(crate) none: bool,
}

impl HealthArgs {
    pub(crate) fn any(&self) -> bool {
        self.healthcheck().is_ok_and(|h| h.is_some())
    }

    /// What the create request carries; None when no option was given.
    pub(crate) fn healthcheck(&self) -> anyhow::Result<Option<Healthcheck>> {
        let ns = |d: Option<Duration>| d.map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let adjusted = Healthcheck {
            test: self
                .cmd
                .as_ref()
                .map(|c| vec!["CMD-SHELL".to_string(), c.clone()]),
            interval: ns(self.interval),
            timeout: ns(self.timeout),
            start_period: ns(self.start_period),
            start_interval: ns(self.start_interval),
            retries: self.retries.map(i64::from),
        };
        let adjusts = adjusted != Healthcheck::default();
        match (self.none, adjusts) {
            (true, true) => anyhow::bail!("--no-healthcheck conflicts with --health-* options"),
            (true, false) => Ok(Some(Healthcheck {
                test: Some(vec!["NONE".to_string()]),
                ..Healthcheck::default()
            })),
            (false, true) => Ok(Some(adjusted)),
            (false, false) => Ok(None),
        }
    }
}

/// Go's `time.ParseDuration` for what healthchecks take: a sequence of decimal numbers, each
/// with a unit among ns, us (µs), ms, s, m, h, e.g. `1m30s`, `1.5s`, `250ms`.
pub(crate) fn go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} (e.g. 30s, 1m30s, 500ms)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_end].parse().map_err(|_| invalid())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_does() {
        assert_eq!(go_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(go_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(go_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "1x", "-1s", "1..2s"] {
            assert!(go_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_adjust_the_images_check_or_turn_it_off() {
        assert_eq!(HealthArgs::default().healthcheck().expect("ok"), None);
        let cmd = HealthArgs {
            cmd: Some("test -e /ok".into()),
            interval: Some(Duration::from_secs(1)),
            retries: Some(2),
            ..HealthArgs::default()
        };
        let sent = cmd.healthcheck().expect("ok").expect("some");
        assert_eq!(
            sent.test,
            Some(vec!["CMD-SHELL".to_string(), "test -e /ok".to_string()])
        );
        assert_eq!(
            (sent.interval, sent.retries),
            (Some(1_000_000_000), Some(2))
        );
        let only_retries = HealthArgs {
            retries: Some(5),
            ..HealthArgs::default()
        };
        assert_eq!(
            only_retries.healthcheck().expect("ok").expect("some").test,
            None
        );
        let off = HealthArgs {
            none: true,
            ..HealthArgs::default()
        };
        assert_eq!(
            off.healthcheck().expect("ok").expect("some").test,
            Some(vec!["NONE".to_string()])
        );
        let both = HealthArgs { none: true, ..cmd };
        assert!(both.healthcheck().is_err());
    }
}
