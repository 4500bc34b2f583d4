//! The verdict: does a figure grow between the early and the late window?

use std::time::Duration;

use super::{Sample, SoakSettings};

/// The first and the last part of a run after its warm-up: what the
/// verdict compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// The early window, from its start (included) to its end (excluded).
    pub early: (Duration, Duration),
    /// The late window, from its start (excluded) to its end (included).
    pub late: (Duration, Duration),
}

/// How much a figure may grow between the windows before it counts as
/// growing: `base x (1 + rel) + abs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slack {
    /// The absolute part, in the figure's unit.
    pub abs: f64,
    /// The relative part, a fraction of the early figure.
    pub rel: f64,
}

/// One figure's peaks and floors in both windows, and whether it grew.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// The largest value in the early window.
    pub early_peak: f64,
    /// The smallest value in the early window.
    pub early_floor: f64,
    /// The largest value in the late window.
    pub late_peak: f64,
    /// The smallest value in the late window.
    pub late_floor: f64,
    /// The slack it was judged with.
    pub slack: Slack,
}

/// A figure the verdict watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Resident memory, MiB.
    Rss,
    /// Open file descriptors.
    Fds,
    /// Live tokio tasks.
    Tasks,
    /// Requests waiting in the queues, all instances.
    Queued,
}

// === impl Windows ===

impl Windows {
    /// The windows of a run of `duration` with `warmup`, instances dying
    /// once per `period`: the early window starts at the end of the
    /// warm-up, the late one ends with the run, and each spans as many
    /// whole periods as fit twice in what follows the warm-up (so both
    /// hold the same deaths and revivals), or half of it when not even
    /// one period fits twice. `None` when nothing follows the warm-up.
    pub fn of(duration: Duration, warmup: Duration, period: Duration) -> Option<Windows> {
        let rest = duration.checked_sub(warmup).filter(|r| !r.is_zero())?;
        let periods = if period.is_zero() {
            0
        } else {
            rest.as_nanos() / (2 * period.as_nanos())
        };
        let span = if periods >= 1 {
            period * u32::try_from(periods).unwrap_or(u32::MAX)
        } else {
            rest / 2
        };
        Some(Windows {
            early: (warmup, warmup + span),
            late: (duration - span, duration),
        })
    }

    /// Whether `at` falls in the early window.
    pub fn in_early(&self, at: Duration) -> bool {
        at >= self.early.0 && at < self.early.1
    }

    /// Whether `at` falls in the late window.
    pub fn in_late(&self, at: Duration) -> bool {
        at > self.late.0 && at <= self.late.1
    }
}

// === impl Slack ===

impl Slack {
    /// The most a late figure may be when the early one was `base`.
    pub fn limit(self, base: f64) -> f64 {
        base * (1.0 + self.rel) + self.abs
    }
}

// === impl Growth ===

impl Growth {
    /// Compares a figure's `series` (due time, value) between the
    /// `windows`; `None` when a window holds no sample.
    pub fn of(series: &[(Duration, f64)], windows: &Windows, slack: Slack) -> Option<Growth> {
        let range = |keep: &dyn Fn(Duration) -> bool| {
            series.iter().filter(|(at, _)| keep(*at)).fold(
                None,
                |acc: Option<(f64, f64)>, (_, v)| match acc {
                    None => Some((*v, *v)),
                    Some((lo, hi)) => Some((lo.min(*v), hi.max(*v))),
                },
            )
        };
        let (early_floor, early_peak) = range(&|at| windows.in_early(at))?;
        let (late_floor, late_peak) = range(&|at| windows.in_late(at))?;
        Some(Growth {
            early_peak,
            early_floor,
            late_peak,
            late_floor,
            slack,
        })
    }

    /// The most the late peak may be.
    pub fn peak_limit(&self) -> f64 {
        self.slack.limit(self.early_peak)
    }

    /// The most the late floor may be.
    pub fn floor_limit(&self) -> f64 {
        self.slack.limit(self.early_floor)
    }

    /// Whether the figure grew: its late peak or its late floor is above
    /// its limit.
    pub fn grows(&self) -> bool {
        self.late_peak > self.peak_limit() || self.late_floor > self.floor_limit()
    }
}

// === impl Metric ===

impl Metric {
    /// Every metric, in table order.
    pub const ALL: [Metric; 4] = [Metric::Rss, Metric::Fds, Metric::Tasks, Metric::Queued];

    /// Its name in the verdict.
    pub const fn name(self) -> &'static str {
        match self {
            Metric::Rss => "RSS (MiB)",
            Metric::Fds => "open fds",
            Metric::Tasks => "live tasks",
            Metric::Queued => "queued",
        }
    }

    /// Its value in `sample`.
    pub fn value(self, sample: &Sample) -> f64 {
        match self {
            Metric::Rss => sample.level.rss_kib as f64 / 1024.0,
            Metric::Fds => sample.level.fds as f64,
            Metric::Tasks => sample.level.tasks as f64,
            Metric::Queued => sample.queued.iter().sum::<usize>() as f64,
        }
    }

    /// How much it may grow, for a run with `settings`:
    ///
    /// - memory: 10% + 4 MiB (what a burst of requests after a stall took
    ///   and the allocator keeps; a 10-minute run held within 1 MiB);
    /// - descriptors and tasks: 50% + 32. Most of them belong to requests
    ///   in flight, whose number a stall of a busy machine can double for
    ///   a sample; a leak shows in the floors first, and exactly in the
    ///   drain after the load ([`DRAIN_SLACK`](super::DRAIN_SLACK));
    /// - queued requests: 50% + one queue's capacity. At five times the
    ///   capacity every queue swings between empty and full; a queue that
    ///   lost count of its waiters shows exactly in the drain (every queue
    ///   must end empty, nothing in service).
    pub fn slack(self, settings: &SoakSettings) -> Slack {
        match self {
            Metric::Rss => Slack { abs: 4.0, rel: 0.1 },
            Metric::Fds | Metric::Tasks => Slack {
                abs: 32.0,
                rel: 0.5,
            },
            Metric::Queued => Slack {
                abs: settings.queue_capacity as f64,
                rel: 0.5,
            },
        }
    }
}
