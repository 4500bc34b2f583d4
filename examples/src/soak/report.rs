//! The report of a run: the samples as a table, the verdict, markdown.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use resilience_discovery::EndpointState;

use super::{
    CLASSES, DRAIN_SLACK, DRAIN_WITHIN, Growth, Level, Metric, Sample, SoakSettings, Windows,
    drained_ok,
};

/// A whole run: its samples and its verdict.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// The settings it ran with.
    pub settings: SoakSettings,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// The windows compared.
    pub windows: Windows,
    /// Each metric's growth between the windows.
    pub growth: Vec<(Metric, Growth)>,
    /// The resources before the load started.
    pub idle: Level,
    /// The resources once the load had drained (or at [`DRAIN_WITHIN`]).
    pub drained: Level,
    /// How long draining took.
    pub drain_took: Duration,
    /// Requests still queued and in service, all instances, once the load
    /// had drained: both must be 0.
    pub drained_queues: (usize, usize),
    /// Requests per priority and outcome over the whole run.
    pub totals: [[u64; 4]; 3],
    /// Arrivals the generator skipped because it ran more than 250 ms
    /// behind its schedule (a starved machine).
    pub skipped: u64,
    /// Instance deaths (each followed by a revival).
    pub deaths: u32,
    /// When the load started and ended, Unix seconds.
    pub wall: (u64, u64),
    /// `/proc/loadavg`'s three load averages at the start and at the end.
    pub loadavg: (String, String),
}

// === impl SoakReport ===

impl SoakReport {
    /// What failed, one line each; empty when the run passed.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (metric, g) in &self.growth {
            if g.late_peak > g.peak_limit() {
                out.push(format!(
                    "{} grew: late peak {:.1} > {:.1} (early peak {:.1})",
                    metric.name(),
                    g.late_peak,
                    g.peak_limit(),
                    g.early_peak
                ));
            }
            if g.late_floor > g.floor_limit() {
                out.push(format!(
                    "{} grew: late floor {:.1} > {:.1} (early floor {:.1})",
                    metric.name(),
                    g.late_floor,
                    g.floor_limit(),
                    g.early_floor
                ));
            }
        }
        if self.growth.len() < Metric::ALL.len() {
            out.push("a window of the verdict holds no sample".to_owned());
        }
        if !self.drained_ok() {
            out.push(format!(
                "{} s after the load stopped, live tasks {} and open fds {} were not back to within {DRAIN_SLACK} of {} and {}, or the queues not empty ({} queued, {} in service)",
                DRAIN_WITHIN.as_secs(),
                self.drained.tasks,
                self.drained.fds,
                self.idle.tasks,
                self.idle.fds,
                self.drained_queues.0,
                self.drained_queues.1
            ));
        }
        for s in &self.samples {
            if self.windows.in_late(s.at) && s.counts.iter().all(|row| row[0] == 0) {
                out.push(format!(
                    "nothing served in the interval ending at {} s",
                    s.at.as_secs()
                ));
            }
        }
        out
    }

    /// Whether the run passed.
    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// Whether tasks and descriptors came back after the load, and the
    /// queues emptied.
    pub fn drained_ok(&self) -> bool {
        drained_ok(&self.idle, &self.drained, self.drained_queues)
    }

    /// The settings in a few lines.
    pub fn describe(&self) -> String {
        describe(&self.settings)
    }

    /// The samples as an aligned text table (with [`header`]).
    pub fn table(&self) -> String {
        let mut out = header();
        out.push('\n');
        for s in &self.samples {
            out.push_str(&row(s));
            out.push('\n');
        }
        out
    }

    /// The verdict in text: each metric's windows and limits, the drain,
    /// the totals, and `PASS` or `FAIL` with what failed.
    pub fn verdict(&self) -> String {
        let w = &self.windows;
        let mut out = format!(
            "verdict: early window {}-{} s, late window {}-{} s; a figure grows when its late peak > early peak x (1 + rel) + abs, or its late floor > early floor x (1 + rel) + abs\n",
            secs(w.early.0),
            secs(w.early.1),
            secs(w.late.0),
            secs(w.late.1)
        );
        for (metric, g) in &self.growth {
            let _ = writeln!(
                out,
                "  {:<11} slack {:>4.0}% + {:<4} early peak {:>7.1} floor {:>7.1} | late peak {:>7.1} (limit {:>7.1}) floor {:>7.1} (limit {:>7.1})  {}",
                metric.name(),
                g.slack.rel * 100.0,
                g.slack.abs,
                g.early_peak,
                g.early_floor,
                g.late_peak,
                g.peak_limit(),
                g.late_floor,
                g.floor_limit(),
                if g.grows() { "GROWS" } else { "ok" }
            );
        }
        let _ = writeln!(
            out,
            "  drain: {:.1} s after the load stopped, live tasks {} (before the load {}), open fds {} (before {}), {} queued and {} in service, RSS {:.1} MiB (before {:.1}): {}",
            self.drain_took.as_secs_f64(),
            self.drained.tasks,
            self.idle.tasks,
            self.drained.fds,
            self.idle.fds,
            self.drained_queues.0,
            self.drained_queues.1,
            self.drained.rss_kib as f64 / 1024.0,
            self.idle.rss_kib as f64 / 1024.0,
            if self.drained_ok() { "ok" } else { "NOT BACK" }
        );
        for line in self.totals() {
            let _ = writeln!(out, "  {line}");
        }
        match self.failures().as_slice() {
            [] => out.push_str("PASS: nothing grew after the warm-up\n"),
            failures => {
                out.push_str("FAIL:\n");
                for f in failures {
                    let _ = writeln!(out, "  {f}");
                }
            }
        }
        out
    }

    /// The totals: requests, deaths and skipped arrivals, then one line
    /// per priority.
    fn totals(&self) -> Vec<String> {
        let sent: u64 = self.totals.iter().flatten().sum();
        let mut out = vec![format!(
            "requests: {sent} sent ({:.0}/s), {} deaths, {} arrivals skipped by a stalled generator",
            sent as f64 / self.settings.duration.as_secs_f64(),
            self.deaths,
            self.skipped
        )];
        for (c, row) in self.totals.iter().enumerate() {
            let n: u64 = row.iter().sum();
            let pct = |v: u64| 100.0 * v as f64 / n.max(1) as f64;
            out.push(format!(
                "{}: {n} sent, {:.1}% served, {:.1}% refused, {:.1}% dropped at the deadline, {:.1}% failed",
                CLASSES[c].as_str(),
                pct(row[0]),
                pct(row[1]),
                pct(row[2]),
                pct(row[3])
            ));
        }
        out
    }

    /// The run as markdown, for `benches/REPORT.md`: how it ran
    /// (`command`), the samples, the verdict.
    pub fn markdown(&self, command: &str) -> String {
        let mut out = String::from("## Soak run\n\n");
        let _ = writeln!(
            out,
            "Written by `{command}`: {} to {}; machine: {} CPUs; load average (1, 5, 15 min) {} at the start, {} at the end.\n",
            utc(self.wall.0),
            utc(self.wall.1),
            std::thread::available_parallelism().map_or(0, usize::from),
            self.loadavg.0,
            self.loadavg.1
        );
        for line in self.describe().lines() {
            let _ = writeln!(out, "- {line}");
        }
        out.push_str(
            "\nEach row is one sample: resident memory, open file descriptors and live tokio tasks of the process (servers and client together); requests queued and in service in each instance; each instance's state in the client's balancer (`h`ealthy, `u`nhealthy, `e`jected, `p`ending; `!` while it is dead); and the requests of the interval that ended with the sample, per priority (`c`ritical / `s+` sheddable-plus / `s`heddable): served, refused (by an instance or the client's own layers), dropped by the client at their deadline, failed (all priorities).\n\n",
        );
        out.push_str(
            "| t (s) | RSS (MiB) | open fds | live tasks | queued | in service | instances | served c/s+/s | refused c/s+/s | dropped c/s+/s | failed |\n",
        );
        out.push_str("|---:|---:|---:|---:|---|---|---|---|---|---|---:|\n");
        for s in &self.samples {
            let [
                t,
                rss,
                fds,
                tasks,
                queued,
                busy,
                inst,
                served,
                refused,
                dropped,
                failed,
            ] = cells(s);
            let _ = writeln!(
                out,
                "| {t} | {rss} | {fds} | {tasks} | {queued} | {busy} | `{inst}` | {served} | {refused} | {dropped} | {failed} |"
            );
        }
        out.push_str("\n### Verdict\n\n");
        let w = &self.windows;
        let _ = writeln!(
            out,
            "Early window {}-{} s, late window {}-{} s. A figure grows when its late peak is above early peak x (1 + rel) + abs, or its late floor above early floor x (1 + rel) + abs.\n",
            secs(w.early.0),
            secs(w.early.1),
            secs(w.late.0),
            secs(w.late.1)
        );
        out.push_str("| figure | slack | early peak | early floor | late peak (limit) | late floor (limit) | |\n|---|---|---:|---:|---:|---:|---|\n");
        for (metric, g) in &self.growth {
            let _ = writeln!(
                out,
                "| {} | {:.0}% + {} | {:.1} | {:.1} | {:.1} ({:.1}) | {:.1} ({:.1}) | {} |",
                metric.name(),
                g.slack.rel * 100.0,
                g.slack.abs,
                g.early_peak,
                g.early_floor,
                g.late_peak,
                g.peak_limit(),
                g.late_floor,
                g.floor_limit(),
                if g.grows() { "**grows**" } else { "ok" }
            );
        }
        let _ = writeln!(
            out,
            "\nAfter the load stopped ({:.1} s to drain): live tasks {} (before the load: {}), open fds {} (before: {}), {} queued and {} in service, RSS {:.1} MiB (before: {:.1}); allowed: tasks and fds {DRAIN_SLACK} above the level before the load, empty queues: {}.\n",
            self.drain_took.as_secs_f64(),
            self.drained.tasks,
            self.idle.tasks,
            self.drained.fds,
            self.idle.fds,
            self.drained_queues.0,
            self.drained_queues.1,
            self.drained.rss_kib as f64 / 1024.0,
            self.idle.rss_kib as f64 / 1024.0,
            if self.drained_ok() {
                "ok"
            } else {
                "**not back**"
            }
        );
        for line in self.totals() {
            let _ = writeln!(out, "- {line}");
        }
        match self.failures().as_slice() {
            [] => out.push_str("\n**PASS**: nothing grew after the warm-up.\n"),
            failures => {
                out.push_str("\n**FAIL**:\n\n");
                for f in failures {
                    let _ = writeln!(out, "- {f}");
                }
            }
        }
        out
    }
}

/// The settings in a few lines: the fleet, the load, the deaths, the
/// samples.
pub fn describe(s: &SoakSettings) -> String {
    let instances = s.instances;
    format!(
        "fleet: {instances} instances x {} in service x {} ms of work ({:.0} requests/s together), {} may wait per instance (at most {} ms)\n\
         load: {:.0} requests/s open loop ({}x capacity), {:.0}% critical / {:.0}% sheddable-plus / {:.0}% sheddable, deadlines {}-{} ms (dropped by the client at the deadline)\n\
         deaths: one instance every {} s (each in turn), down {} s, back on its port\n\
         samples: every {} s for {} s, the first {} s not judged",
        s.concurrency,
        s.service_time.as_millis(),
        s.capacity(),
        s.queue_capacity,
        s.max_wait.as_millis(),
        s.rate(),
        s.overload,
        s.mix[0] * 100.0,
        s.mix[1] * 100.0,
        s.mix[2] * 100.0,
        s.deadline_min.as_millis(),
        s.deadline_max.as_millis(),
        secs(s.death_every),
        secs(s.down_for),
        secs(s.sample_every),
        secs(s.duration),
        secs(s.warmup),
    )
}

/// The text table's header, aligned with [`row`].
pub fn header() -> String {
    line(&[
        "t (s)",
        "RSS MiB",
        "fds",
        "tasks",
        "queued",
        "in svc",
        "instances",
        "served c/s+/s",
        "refused c/s+/s",
        "dropped c/s+/s",
        "failed",
    ])
}

/// One sample as a text table row: the instances' states are `h`ealthy,
/// `u`nhealthy, `e`jected or `p`ending in the balancer, with `!` on the
/// dead one; the counts are per priority (`c`ritical, `s+`
/// sheddable-plus, `s`heddable), for the interval.
pub fn row(sample: &Sample) -> String {
    let cells = cells(sample);
    line(&cells.each_ref().map(String::as_str))
}

fn line(cells: &[&str; 11]) -> String {
    format!(
        "{:>5} {:>7} {:>5} {:>6} {:>9} {:>9} {:>10} {:>15} {:>15} {:>15} {:>6}",
        cells[0],
        cells[1],
        cells[2],
        cells[3],
        cells[4],
        cells[5],
        cells[6],
        cells[7],
        cells[8],
        cells[9],
        cells[10]
    )
}

fn cells(s: &Sample) -> [String; 11] {
    let join = |v: &[usize]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("/")
    };
    let per_class = |o: usize| {
        s.counts
            .iter()
            .map(|row| row[o].to_string())
            .collect::<Vec<_>>()
            .join("/")
    };
    let instances = s
        .instances
        .iter()
        .map(|i| {
            let state = match i.state {
                Some(EndpointState::Healthy) => "h",
                Some(EndpointState::Unhealthy) => "u",
                Some(EndpointState::Ejected) => "e",
                Some(EndpointState::Pending) => "p",
                _ => "?",
            };
            if i.down {
                format!("{state}!")
            } else {
                state.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    [
        secs(s.at),
        format!("{:.1}", s.level.rss_kib as f64 / 1024.0),
        s.level.fds.to_string(),
        s.level.tasks.to_string(),
        join(&s.queued),
        join(&s.in_service),
        instances,
        per_class(0),
        per_class(1),
        per_class(2),
        s.counts.iter().map(|row| row[3]).sum::<u64>().to_string(),
    ]
}

/// A duration in seconds, without decimals when whole.
fn secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The three load averages of `/proc/loadavg`, or `?`.
pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub(super) fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let (hh, mm) = (unix % 86_400 / 3600, unix % 3600 / 60);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
}
