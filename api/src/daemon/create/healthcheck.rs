//! `Config.Healthcheck` of a create request: checked as Docker's daemon checks it (the engine
//! merges it with the image's and runs it, see `engine::health`).

use skiff_images::HealthConfig;

/// Checks a healthcheck as a create request sent it, with Docker's rules and words.
pub fn validate(hc: &HealthConfig) -> std::result::Result<(), String> {
    match hc.test.as_slice() {
        [] => {}
        [kind] if kind == "NONE" => {}
        [kind, ..] if kind == "NONE" => {
            return Err("Healthcheck NONE takes no arguments".to_string())
        }
        [kind] if kind == "CMD" || kind == "CMD-SHELL" => {
            return Err(format!("HealthConfig {kind} needs a command"))
        }
        [kind, ..] if kind == "CMD" || kind == "CMD-SHELL" => {}
        [kind, ..] => {
            return Err(format!(
                "unknown Healthcheck type {kind:?} (expected NONE, CMD or CMD-SHELL)"
            ))
        }
    }
    let durations = [
        ("Interval", hc.interval),
        ("Timeout", hc.timeout),
        ("StartPeriod", hc.start_period),
        ("StartInterval", hc.start_interval),
    ];
    for (name, value) in durations {
        if value != 0 && value < 1_000_000 {
            return Err(format!("{name} in Healthcheck cannot be less than 1ms"));
        }
    }
    if hc.retries < 0 {
        return Err("Retries in Healthcheck cannot be negative".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hc(test: &[&str]) -> HealthConfig {
        HealthConfig {
            test: test.iter().map(|s| s.to_string()).collect(),
            ..HealthConfig::default()
        }
    }

    #[test]
    fn docker_rules_for_tests_durations_and_retries() {
        for ok in [&[][..], &["NONE"], &["CMD", "x"], &["CMD-SHELL", "x y"]] {
            assert_eq!(validate(&hc(ok)), Ok(()), "{ok:?}");
        }
        let refused = |h: HealthConfig| validate(&h).expect_err("refused");
        assert!(refused(hc(&["CMD"])).contains("needs a command"));
        assert!(refused(hc(&["NONE", "x"])).contains("takes no arguments"));
        assert!(refused(hc(&["SHELL", "x"])).contains("unknown Healthcheck type \"SHELL\""));
        let short = HealthConfig {
            interval: 999_999,
            ..hc(&["CMD", "x"])
        };
        assert_eq!(
            refused(short),
            "Interval in Healthcheck cannot be less than 1ms"
        );
        let negative = HealthConfig {
            retries: -1,
            ..hc(&["CMD", "x"])
        };
        assert_eq!(
            refused(negative),
            "Retries in Healthcheck cannot be negative"
        );
        let zero = HealthConfig {
            timeout: 0,
            ..hc(&["CMD", "x"])
        };
        assert_eq!(validate(&zero), Ok(()), "0 means the default");
    }
}
