//! The `fleet` example against a real Redis and a real etcd: the three
//! instances admit the shared limit, each its share of it, the rolling
//! restart goes one at a time and fails no request; the binary refuses to
//! run without both URLs.

use std::time::Duration;

use resilience_examples::fleet::{FleetSettings, run};
use resilience_test_support::EtcdServer;
use resilience_test_support::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_limit_through_a_rolling_restart() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let report = run(FleetSettings {
        redis: redis.url().to_owned(),
        etcd: etcd.url().to_owned(),
        limit: 100,
        duration: Duration::from_secs(5),
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.failed, 0, "no request failed during the restart");
    let secs = report.elapsed.as_secs_f64();
    let expected = 100.0 * secs;
    let admitted = report.admitted() as f64;
    // The limit over the run, plus at most the first burst (3 x batch 5).
    assert!(
        admitted >= expected * 0.9 && admitted <= expected * 1.05 + 15.0,
        "admitted {admitted} for {expected}"
    );
    assert!(report.offered as f64 >= 2.5 * expected, "3x offered");
    // Saturated and spread evenly by round robin: each instance admits its
    // share of the limit, within 20%, its restart included.
    for (name, off) in report.split() {
        assert!(
            off.abs() <= 0.2,
            "{name} admitted {:+.0}% of its fair share",
            off * 100.0
        );
    }
    assert_eq!(report.lock_timeline.len(), 3);
    for pair in report.lock_timeline.windows(2) {
        assert!(pair[0].2 <= pair[1].1, "one holder at a time: {pair:?}");
    }
}

#[test]
fn the_binary_needs_both_urls() {
    let bin = env!("CARGO_BIN_EXE_fleet");
    for args in [
        &[][..],
        &["--redis", "redis://127.0.0.1:1/"][..],
        &["--etcd", "http://127.0.0.1:1"][..],
        &["--redis", "http://x", "--etcd", "http://127.0.0.1:1"][..],
    ] {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("usage: fleet"), "{err}");
    }
    let out = std::process::Command::new(bin)
        .args([
            "--redis",
            "redis://127.0.0.1:1/",
            "--etcd",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis at redis://127.0.0.1:1/"));
}
