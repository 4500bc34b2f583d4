use super::report::utc;
use super::*;

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The quick run's windows: 10-20 s and 20-30 s.
fn quick() -> Windows {
    Windows::of(s(30), s(10), s(10)).unwrap()
}

fn series(values: &[(u64, f64)]) -> Vec<(Duration, f64)> {
    values.iter().map(|(t, v)| (s(*t), *v)).collect()
}

const SLACK: Slack = Slack {
    abs: 10.0,
    rel: 0.5,
};

#[test]
fn windows_span_whole_periods_after_the_warmup() {
    let w = quick();
    assert_eq!((w.early, w.late), ((s(10), s(20)), (s(20), s(30))));
    assert!(w.in_early(s(10)) && !w.in_early(s(20)));
    assert!(!w.in_late(s(20)) && w.in_late(s(30)));

    // 540 s after the warm-up: 4 whole minutes each.
    let w = Windows::of(s(600), s(60), s(60)).unwrap();
    assert_eq!((w.early, w.late), ((s(60), s(300)), (s(360), s(600))));

    // Not one period twice: halves.
    let w = Windows::of(s(25), s(10), s(10)).unwrap();
    assert_eq!(w.early, (s(10), Duration::from_millis(17_500)));
    assert_eq!(w.late, (Duration::from_millis(17_500), s(25)));

    assert_eq!(Windows::of(s(10), s(10), s(10)), None);
    assert_eq!(Windows::of(s(5), s(10), s(10)), None);
}

#[test]
fn a_noisy_flat_series_does_not_grow() {
    let g = Growth::of(
        &series(&[
            (2, 500.0), // warm-up: not judged
            (10, 100.0),
            (12, 140.0),
            (14, 90.0),
            (16, 130.0),
            (18, 95.0),
            (22, 135.0),
            (24, 92.0),
            (26, 150.0),
            (28, 99.0),
            (30, 120.0),
        ]),
        &quick(),
        SLACK,
    )
    .unwrap();
    assert_eq!((g.early_peak, g.early_floor), (140.0, 90.0));
    assert_eq!((g.late_peak, g.late_floor), (150.0, 92.0));
    assert!(!g.grows(), "{g:?}");
}

#[test]
fn a_rising_series_grows() {
    // 10 more every sample.
    let rising: Vec<(u64, f64)> = (5..=15).map(|i| (2 * i, 10.0 * i as f64)).collect();
    let g = Growth::of(&series(&rising), &quick(), SLACK).unwrap();
    assert_eq!((g.early_peak, g.early_floor), (90.0, 50.0));
    assert_eq!((g.late_peak, g.late_floor), (150.0, 110.0));
    assert!(g.grows(), "{g:?}");
}

#[test]
fn a_rising_floor_grows_under_noisy_peaks() {
    let g = Growth::of(
        &series(&[
            (10, 50.0),
            (12, 90.0),
            (14, 60.0),
            (16, 85.0),
            (18, 70.0),
            (22, 86.0),
            (24, 130.0),
            (26, 90.0),
            (28, 120.0),
            (30, 95.0),
        ]),
        &quick(),
        SLACK,
    )
    .unwrap();
    assert!(
        g.late_peak <= g.peak_limit(),
        "the peaks stay within 1.5x + 10"
    );
    assert!(g.late_floor > g.floor_limit(), "the floor gives it away");
    assert!(g.grows(), "{g:?}");
}

#[test]
fn a_higher_late_peak_grows() {
    let g = Growth::of(
        &series(&[(10, 100.0), (14, 100.0), (22, 100.0), (26, 161.0)]),
        &quick(),
        SLACK,
    )
    .unwrap();
    assert_eq!(g.peak_limit(), 160.0);
    assert!(g.grows());
    let g = Growth::of(
        &series(&[(10, 100.0), (14, 100.0), (22, 100.0), (26, 160.0)]),
        &quick(),
        SLACK,
    )
    .unwrap();
    assert!(!g.grows(), "at the limit is not above it");
}

#[test]
fn a_spike_early_then_flat_does_not_grow() {
    let g = Growth::of(
        &series(&[(10, 400.0), (14, 100.0), (22, 100.0), (26, 110.0)]),
        &quick(),
        Slack { abs: 0.0, rel: 0.0 },
    )
    .unwrap();
    assert!(!g.grows(), "{g:?}");
}

#[test]
fn a_window_without_samples_gives_no_verdict() {
    let only_early = series(&[(10, 1.0), (14, 1.0)]);
    assert_eq!(Growth::of(&only_early, &quick(), SLACK), None);
    assert_eq!(Growth::of(&[], &quick(), SLACK), None);
}

#[test]
fn settings_are_validated() {
    SoakSettings::full().validate().unwrap();
    SoakSettings::quick().validate().unwrap();
    let too_long = SoakSettings {
        duration: resilience_core::config::MAX_DURATION + Duration::from_secs(1),
        ..SoakSettings::quick()
    };
    assert_eq!(too_long.validate().unwrap_err().field(), "duration");
    let short = SoakSettings {
        duration: s(12),
        ..SoakSettings::quick()
    };
    assert_eq!(short.validate().unwrap_err().field(), "duration");
    let no_sampling = SoakSettings {
        sample_every: Duration::ZERO,
        ..SoakSettings::quick()
    };
    assert_eq!(no_sampling.validate().unwrap_err().field(), "sample_every");
    let never_back = SoakSettings {
        down_for: s(10),
        ..SoakSettings::quick()
    };
    assert_eq!(never_back.validate().unwrap_err().field(), "down_for");
    let mix = SoakSettings {
        mix: [0.5, 0.5, 0.5],
        ..SoakSettings::quick()
    };
    assert_eq!(mix.validate().unwrap_err().field(), "mix");
}

#[test]
fn deaths_are_half_way_through_each_period_and_back_before_the_end() {
    let q = SoakSettings::quick();
    assert_eq!(q.death(0), Some((s(5), s(8))));
    assert_eq!(q.death(2), Some((s(25), s(28))));
    assert_eq!(q.death(3), None);
    let f = SoakSettings::full();
    assert_eq!(f.death(9), Some((s(570), s(590))));
    assert_eq!(f.death(10), None);
}

#[test]
fn outcomes_of_answers_and_errors() {
    assert_eq!(Outcome::of_status(StatusCode::OK), Outcome::Served);
    assert_eq!(
        Outcome::of_status(StatusCode::TOO_MANY_REQUESTS),
        Outcome::Refused
    );
    assert_eq!(
        Outcome::of_status(StatusCode::REQUEST_TIMEOUT),
        Outcome::Dropped
    );
    assert_eq!(
        Outcome::of_status(StatusCode::INTERNAL_SERVER_ERROR),
        Outcome::Failed
    );
    let throttled: BoxError = Box::new(Rejected::new(
        resilience_core::RejectionKind::Throttled,
        "throttled",
    ));
    assert_eq!(Outcome::of_error(&throttled), Outcome::Refused);
    let elapsed: BoxError = Box::new(Elapsed::new());
    assert_eq!(Outcome::of_error(&elapsed), Outcome::Dropped);
    let reset: BoxError = "connection reset".into();
    assert_eq!(Outcome::of_error(&reset), Outcome::Failed);
}

#[test]
fn utc_dates() {
    assert_eq!(utc(0), "1970-01-01 00:00 UTC");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
    assert_eq!(utc(1_798_761_599), "2026-12-31 23:59 UTC");
}
