use super::*;

fn hc(test: &[&str]) -> HealthConfig {
    HealthConfig {
        test: test.iter().map(|s| s.to_string()).collect(),
        ..HealthConfig::default()
    }
}

fn result(exit_code: i64) -> ProbeResult {
    ProbeResult {
        exit_code,
        ..ProbeResult::default()
    }
}

const SEC: i64 = 1_000_000_000;

#[test]
fn the_container_overrides_what_it_sets_and_inherits_the_rest() {
    let image = HealthConfig {
        interval: 7 * SEC,
        retries: 9,
        ..hc(&["CMD", "probe"])
    };
    assert_eq!(merge(None, Some(&image)), Some(image.clone()));
    assert_eq!(merge(Some(hc(&["NONE"])), None), Some(hc(&["NONE"])));
    let own = HealthConfig {
        timeout: 2 * SEC,
        ..hc(&[])
    };
    let merged = merge(Some(own), Some(&image)).expect("merged");
    assert_eq!(merged.test, image.test);
    assert_eq!(merged.interval, 7 * SEC);
    assert_eq!(merged.timeout, 2 * SEC);
    assert_eq!(merged.retries, 9);
    // --no-healthcheck turns the image's off.
    let off = merge(Some(hc(&["NONE"])), Some(&image)).expect("merged");
    assert_eq!(Plan::of(&off), None);
}

#[test]
fn plans_run_the_command_or_a_shell_with_docker_defaults() {
    let plan = Plan::of(&hc(&["CMD-SHELL", "test -e /ok"])).expect("plan");
    assert_eq!(plan.command, ["/bin/sh", "-c", "test -e /ok"]);
    assert_eq!(plan.interval, Duration::from_secs(30));
    assert_eq!(plan.timeout, Duration::from_secs(30));
    assert_eq!(plan.start_period, Duration::ZERO);
    assert_eq!(plan.start_interval, Duration::from_secs(5));
    assert_eq!(plan.retries, 3);
    let exec = HealthConfig {
        interval: SEC / 2,
        retries: 1,
        ..hc(&["CMD", "/bin/probe", "--quick"])
    };
    let plan = Plan::of(&exec).expect("plan");
    assert_eq!(plan.command, ["/bin/probe", "--quick"]);
    assert_eq!(plan.interval, Duration::from_millis(500));
    assert_eq!(plan.retries, 1);
    for none in [
        hc(&[]),
        hc(&["NONE"]),
        hc(&["CMD"]),
        HealthConfig::default(),
    ] {
        assert_eq!(Plan::of(&none), None, "{none:?}");
    }
}

#[test]
fn failures_count_after_the_start_period_and_retries_make_it_unhealthy() {
    let plan = Plan {
        start_period: Duration::from_secs(10),
        retries: 2,
        ..Plan::of(&hc(&["CMD", "x"])).expect("plan")
    };
    let early = Duration::from_secs(1);
    let late = Duration::from_secs(11);
    let mut health = Health::default();
    // Within the start period a starting container's failures do not count.
    assert!(!health.record(result(1), &plan, early));
    assert_eq!(
        (health.status, health.failing_streak),
        (HealthStatus::Starting, 0)
    );
    assert_eq!(plan.next_wait(&health, early), Duration::from_secs(5));
    assert_eq!(plan.next_wait(&health, late), Duration::from_secs(30));
    assert!(!health.record(result(1), &plan, late));
    assert_eq!(health.failing_streak, 1);
    assert!(health.record(result(2), &plan, late));
    assert_eq!(
        (health.status, health.failing_streak),
        (HealthStatus::Unhealthy, 2)
    );
    assert!(health.record(result(0), &plan, late));
    assert_eq!(
        (health.status, health.failing_streak),
        (HealthStatus::Healthy, 0)
    );
    // Once healthy, failures count even within the start period.
    assert!(!health.record(result(1), &plan, early));
    assert_eq!(health.failing_streak, 1);
    for _ in 0..10 {
        health.record(result(1), &plan, late);
    }
    assert_eq!(health.log.len(), 5, "only the last 5 results are kept");
}

#[test]
fn timeouts_read_like_go_durations() {
    assert_eq!(go_duration(Duration::from_secs(30)), "30s");
    assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
    assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
    assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
}

#[tokio::test]
async fn probe_output_keeps_its_first_4_kib() {
    use tokio::io::AsyncWriteExt;
    let out = CappedOutput::default();
    let (mut a, mut b) = (out.clone(), out.clone());
    a.write_all(b"first ").await.expect("write");
    b.write_all(&[b'x'; 5000]).await.expect("write");
    a.write_all(b"dropped").await.expect("write");
    let text = out.text();
    assert_eq!(text.len(), MAX_OUTPUT);
    assert!(text.starts_with("first xxx"));
}
