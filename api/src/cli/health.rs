//! `--health-*` and `--no-healthcheck` of `skiff run`/`create`, as the docker CLI reads them and
//! sends them (`Config.Healthcheck`): options without `--health-cmd` adjust the image's check.

use std::time::Duration;

use clap::Args;
use skiff_images::HealthConfig;

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
    pub(crate) fn healthcheck(&self) -> anyhow::Result<Option<HealthConfig>> {
        let ns =
            |d: Option<Duration>| d.map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let adjusted = HealthConfig {
            test: self
                .cmd
                .as_ref()
                .map(|c| vec!["CMD-SHELL".to_string(), c.clone()])
                .unwrap_or_default(),
            interval: ns(self.interval),
            timeout: ns(self.timeout),
            start_period: ns(self.start_period),
            start_interval: ns(self.start_interval),
            retries: self.retries.map_or(0, i64::from),
        };
        let adjusts = adjusted != HealthConfig::default();
        match (self.none, adjusts) {
            (true, true) => anyhow::bail!("--no-healthcheck conflicts with --health-* options"),
            (true, false) => Ok(Some(HealthConfig {
                test: vec!["NONE".to_string()],
                ..HealthConfig::default()
            })),
            (false, true) => Ok(Some(adjusted)),
            (false, false) => Ok(None),
        }
    }
}

/// A duration as the docker CLI reads one (Go's `time.ParseDuration`): `30s`, `1m30s`, `500ms`.
pub(crate) fn go_duration(text: &str) -> Result<Duration, String> {
    let ns = skiff_dockerfile::parse_duration(text)?;
    u64::try_from(ns)
        .map(Duration::from_nanos)
        .map_err(|_| format!("invalid duration {text:?}: negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_does_and_are_not_negative() {
        assert_eq!(go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(go_duration("-1s").is_err());
        assert!(go_duration("5").is_err());
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
        assert_eq!(sent.test, ["CMD-SHELL", "test -e /ok"]);
        assert_eq!((sent.interval, sent.retries), (1_000_000_000, 2));
        let only_retries = HealthArgs {
            retries: Some(5),
            ..HealthArgs::default()
        };
        let adjusted = only_retries.healthcheck().expect("ok").expect("some");
        assert!(adjusted.test.is_empty(), "the image's test is kept");
        let off = HealthArgs {
            none: true,
            ..HealthArgs::default()
        };
        assert_eq!(off.healthcheck().expect("ok").expect("some").test, ["NONE"]);
        let both = HealthArgs { none: true, ..cmd };
        assert!(both.healthcheck().is_err());
    }
}
