//! What a run recorded: the table per phase, the time series, the chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use plotters::prelude::*;
use resilience_core::Priority;

use super::load::{CLASSES, Front, Outcome, Reason, Record};
use super::{Deployment, Phase};
use crate::ingest::Kind;

/// A breaker's or an endpoint's change of state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Transition {
    /// When, in seconds since the run started.
    pub at_s: f64,
    /// `breaker` or `endpoint`.
    pub what: &'static str,
    /// The breaker's or the instance's name.
    pub name: String,
    /// The state before.
    pub from: String,
    /// The state after.
    pub to: String,
}

/// The live state at one moment of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimeSample {
    /// Seconds since the run started.
    pub at_s: f64,
    /// The phase.
    pub phase: Phase,
    /// Each breaker's state (`closed`, `open`, `half_open`, ...).
    pub breakers: BTreeMap<String, String>,
    /// Each inventory instance's state in the shop's balancer.
    pub instances: BTreeMap<String, String>,
    /// Healthy inventory instances.
    pub healthy_instances: usize,
    /// Requests waiting in each ingest queue.
    pub queued: BTreeMap<String, usize>,
    /// The shop's retries of inventory calls so far (a running count).
    pub retries: u64,
}

/// What one service's callers saw during one phase.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ServiceStats {
    /// The service (`profile`, `shop`, `ingest`, `ingest bulk`, or `all`).
    pub service: String,
    /// Requests sent.
    pub offered: u64,
    /// Full answers.
    pub ok: u64,
    /// Answers with a fallback part (served, degraded).
    pub degraded: u64,
    /// Per priority class ([`CLASSES`] order): sent and served.
    pub by_class: [(u64, u64); 3],
    /// Median latency of served requests, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of served requests, ms.
    pub p99_ms: Option<f64>,
    /// Requests not served, by reason.
    pub rejected: BTreeMap<Reason, u64>,
    /// Refusals (`429`/`503`) without `Retry-After`.
    pub refusals_without_retry_after: u64,
    /// Refusals (`429`/`503`) in all.
    pub refusals: u64,
}

/// One phase of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhaseStats {
    /// The phase.
    pub phase: Phase,
    /// When it started, s.
    pub from_s: f64,
    /// When it ended, s.
    pub to_s: f64,
    /// Per front service.
    pub services: Vec<ServiceStats>,
    /// All front services together.
    pub all: ServiceStats,
    /// Breaker transitions during the phase, per breaker and counted
    /// (`publications: closed -> open, open -> half_open x6, ...`).
    pub breaker_moves: Vec<String>,
    /// Instances taken out of rotation (ejected, or failing checks).
    pub ejections: u64,
    /// Instances back in rotation.
    pub readmissions: u64,
    /// The shop's retries of inventory calls during the phase (the retry
    /// layer's counter).
    pub retries: u64,
}

/// Everything a run recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The phases, with their stats.
    pub phases: Vec<PhaseStats>,
    /// Every request.
    #[serde(skip)]
    pub records: Vec<Record>,
    /// The live state over time.
    pub samples: Vec<TimeSample>,
    /// Breaker and endpoint transitions.
    pub transitions: Vec<Transition>,
    /// The correlation ids of the sample requests.
    pub sample_ids: Vec<String>,
    /// Throughput and latency per time bucket.
    pub buckets: Vec<Bucket>,
}

/// Served requests per second and latency over one time bucket.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Bucket {
    /// The bucket's start, s.
    pub at_s: f64,
    /// Served per second, per class ([`CLASSES`] order).
    pub served_per_s: [f64; 3],
    /// Refused or failed per second.
    pub failed_per_s: f64,
    /// p99 of served requests, ms.
    pub p99_ms: Option<f64>,
    /// p99 of the requests `ingest` served (events, searches and bulk
    /// batches), ms.
    pub ingest_p99_ms: Option<f64>,
}

// === impl TimeSample ===

impl TimeSample {
    /// The state of `d` now.
    pub fn take(d: &Deployment, phase: Phase, at: Duration) -> Self {
        let breakers = d
            .breakers()
            .into_iter()
            .map(|(name, state)| (name, state_name(&state.to_string())))
            .collect();
        let instances: BTreeMap<String, String> = d
            .instance_states()
            .into_iter()
            .map(|(name, state)| (name, state.map_or("removed", |s| s.as_str()).to_owned()))
            .collect();
        let healthy_instances = instances.values().filter(|s| *s == "healthy").count();
        let queued = Kind::ALL
            .iter()
            .map(|k| (k.name().to_owned(), d.ingest.queue(*k).snapshot().queued))
            .collect();
        Self {
            at_s: at.as_secs_f64(),
            phase,
            breakers,
            instances,
            healthy_instances,
            queued,
            retries: d.shop.retry().snapshot().retries_total(),
        }
    }
}

/// `half-open` and `half_open` alike, as one lowercase snake_case name.
fn state_name(s: &str) -> String {
    s.to_ascii_lowercase().replace(['-', ' '], "_")
}

// === impl ServiceStats ===

impl ServiceStats {
    fn of<'a>(service: &str, records: impl Iterator<Item = &'a Record>) -> Self {
        let mut s = ServiceStats {
            service: service.to_owned(),
            ..Default::default()
        };
        let mut latencies = Vec::new();
        for r in records {
            s.offered += 1;
            let class = CLASSES.iter().position(|p| *p == r.priority).unwrap_or(0);
            s.by_class[class].0 += 1;
            match r.outcome {
                Outcome::Ok | Outcome::Degraded => {
                    if r.outcome == Outcome::Ok {
                        s.ok += 1;
                    } else {
                        s.degraded += 1;
                    }
                    s.by_class[class].1 += 1;
                    latencies.push(r.latency_ms);
                }
                Outcome::Rejected(reason) => {
                    *s.rejected.entry(reason).or_default() += 1;
                    if matches!(r.status, 429 | 503) {
                        s.refusals += 1;
                        if !r.retry_after {
                            s.refusals_without_retry_after += 1;
                        }
                    }
                }
            }
        }
        latencies.sort_by(f64::total_cmp);
        s.p50_ms = percentile(&latencies, 0.50);
        s.p99_ms = percentile(&latencies, 0.99);
        s
    }

    /// Served requests (full or degraded).
    pub fn served(&self) -> u64 {
        self.ok + self.degraded
    }

    /// The share of `priority`'s requests that were served, if any were
    /// sent.
    pub fn success_rate(&self, priority: Priority) -> Option<f64> {
        let class = CLASSES.iter().position(|p| *p == priority)?;
        let (sent, served) = self.by_class[class];
        (sent > 0).then(|| served as f64 / sent as f64)
    }
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

// === impl Report ===

impl Report {
    /// `phases`: each phase, its start and end, and the shop's retries
    /// during it.
    pub(super) fn new(
        phases: Vec<(Phase, Duration, Duration, u64)>,
        records: Vec<Record>,
        samples: Vec<TimeSample>,
        transitions: Vec<Transition>,
        sample_ids: Vec<String>,
    ) -> Self {
        let fronts = [
            ("profile", Front::Profile),
            ("shop", Front::Shop),
            ("ingest", Front::Ingest),
            ("ingest bulk", Front::IngestBulk),
        ];
        let phase_stats = phases
            .iter()
            .map(|(phase, from, to, retries)| {
                let (from_ms, to_ms) = (from.as_millis() as u64, to.as_millis() as u64);
                let within = || {
                    records
                        .iter()
                        .filter(move |r| r.at_ms >= from_ms && r.at_ms < to_ms)
                };
                let services = fronts
                    .iter()
                    .map(|(name, front)| {
                        ServiceStats::of(name, within().filter(|r| r.front == *front))
                    })
                    .collect();
                let (from_s, to_s) = (from.as_secs_f64(), to.as_secs_f64());
                let moves: Vec<&Transition> = transitions
                    .iter()
                    .filter(|t| t.at_s >= from_s && t.at_s < to_s)
                    .collect();
                let out = ["ejected", "unhealthy", "removed"];
                PhaseStats {
                    phase: *phase,
                    from_s,
                    to_s,
                    services,
                    all: ServiceStats::of("all", within()),
                    breaker_moves: breaker_moves(&moves),
                    ejections: moves
                        .iter()
                        .filter(|t| {
                            t.what == "endpoint"
                                && out.contains(&t.to.as_str())
                                && !out.contains(&t.from.as_str())
                        })
                        .count() as u64,
                    readmissions: moves
                        .iter()
                        .filter(|t| {
                            t.what == "endpoint" && t.to == "healthy" && t.from != "healthy"
                        })
                        .count() as u64,
                    retries: *retries,
                }
            })
            .collect();
        let total_s = phases.last().map_or(0.0, |p| p.2.as_secs_f64());
        let buckets = buckets(&records, total_s);
        Self {
            phases: phase_stats,
            records,
            samples,
            transitions,
            sample_ids,
            buckets,
        }
    }

    /// The stats of `phase`.
    pub fn phase(&self, phase: Phase) -> Option<&PhaseStats> {
        self.phases.iter().find(|p| p.phase == phase)
    }

    /// The summary table: one block per phase, one row per front service.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<9} {:<11} {:>7} {:>8} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7}  not served (reason: count)",
            "phase",
            "service",
            "offered",
            "served/s",
            "crit",
            "shed+",
            "shed",
            "degr.",
            "p50",
            "p99",
            "retries",
        );
        let pct = |r: Option<f64>| r.map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}ms"));
        for p in &self.phases {
            let secs = (p.to_s - p.from_s).max(f64::EPSILON);
            for (i, s) in p.services.iter().chain([&p.all]).enumerate() {
                // Only the shop retries (its inventory calls).
                let retries = if matches!(s.service.as_str(), "shop" | "all") {
                    p.retries.to_string()
                } else {
                    "-".to_owned()
                };
                let rejected = if s.rejected.is_empty() {
                    "-".to_owned()
                } else {
                    s.rejected
                        .iter()
                        .map(|(r, n)| format!("{}: {n}", r.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    out,
                    "{:<9} {:<11} {:>7} {:>8.1} {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7}  {}",
                    if i == 0 { p.phase.as_str() } else { "" },
                    s.service,
                    s.offered,
                    s.served() as f64 / secs,
                    pct(s.success_rate(Priority::Critical)),
                    pct(s.success_rate(Priority::SheddablePlus)),
                    pct(s.success_rate(Priority::Sheddable)),
                    s.degraded,
                    ms(s.p50_ms),
                    ms(s.p99_ms),
                    retries,
                    rejected
                );
            }
            let moves = if p.breaker_moves.is_empty() {
                "none".to_owned()
            } else {
                p.breaker_moves.join(", ")
            };
            let _ = writeln!(
                out,
                "{:<9} breakers: {moves}; instances out: {}, back: {}",
                "", p.ejections, p.readmissions
            );
        }
        let _ = writeln!(
            out,
            "crit / shed+ / shed: share served of critical, sheddable-plus and sheddable requests; \
             degr.: served with a fallback part; retries: the shop's inventory calls tried again"
        );
        out
    }

    /// For each sample id, the log lines (from `log`, the run's log text)
    /// that carry it: one per hop it crossed.
    pub fn trace<'a>(&self, log: &'a str) -> Vec<(String, Vec<&'a str>)> {
        self.sample_ids
            .iter()
            .map(|id| {
                let needle = format!("[{id}]");
                let lines = log.lines().filter(|l| l.contains(&needle)).collect();
                (id.clone(), lines)
            })
            .collect()
    }

    /// The run as JSON: phases with their stats, buckets, samples,
    /// transitions.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// The shop's retries per second (of its inventory calls) between
    /// consecutive samples: `(time of the later sample, rate)`, one point
    /// per sample after the first. Samples out of order or at the same
    /// time are skipped.
    pub fn retries_per_s(&self) -> Vec<(f64, f64)> {
        self.samples
            .windows(2)
            .filter(|w| w[1].at_s > w[0].at_s)
            .map(|w| {
                let retries = w[1].retries.saturating_sub(w[0].retries) as f64;
                (w[1].at_s, retries / (w[1].at_s - w[0].at_s))
            })
            .collect()
    }

    /// The chart, as an SVG document: served per second by priority, p99
    /// latency of all front services and of ingest alone ("p99, ingest"),
    /// breaker states, and healthy instances with ingest's queues
    /// and the shop's retries per second ("shop retries per second", see
    /// [`retries_per_s`](Self::retries_per_s)), over the run, with the
    /// phases marked.
    ///
    /// # Errors
    /// - plotters failed to draw
    pub fn svg(&self) -> Result<String, resilience_core::BoxError> {
        let mut svg = String::new();
        self.draw(&mut svg).map_err(|e| e.to_string())?;
        Ok(svg)
    }

    fn draw(&self, svg: &mut String) -> Result<(), Box<dyn std::error::Error>> {
        {
            let root = SVGBackend::with_string(svg, (1100, 980)).into_drawing_area();
            root.fill(&WHITE)?;
            let (title, body) = root.split_vertically(40);
            title.titled(
                "Reference deployment under a chaos scenario",
                ("sans-serif", 22).into_font(),
            )?;
            let panels = body.split_evenly((4, 1));
            let total = self.phases.last().map_or(1.0, |p| p.to_s).max(1.0);
            let colors = [
                RGBColor(31, 119, 180),
                RGBColor(255, 127, 14),
                RGBColor(44, 160, 44),
                RGBColor(214, 39, 40),
            ];

            // 1. Served per second, by priority.
            let max_rate = self
                .buckets
                .iter()
                .map(|b| b.served_per_s.iter().sum::<f64>().max(b.failed_per_s))
                .fold(1.0, f64::max);
            let mut chart = ChartBuilder::on(&panels[0])
                .caption(
                    "served requests per second, by priority (all front services)",
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(50)
                .build_cartesian_2d(0.0..total, 0.0..max_rate * 1.1)?;
            chart
                .configure_mesh()
                .x_desc("time (s)")
                .y_desc("req/s")
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            self.draw_phases(&mut chart, max_rate * 1.1)?;
            for (i, class) in CLASSES.iter().enumerate() {
                let color = colors[i];
                chart
                    .draw_series(LineSeries::new(
                        self.buckets.iter().map(|b| (b.at_s, b.served_per_s[i])),
                        color.stroke_width(2),
                    ))?
                    .label(class.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
            }
            chart
                .draw_series(LineSeries::new(
                    self.buckets.iter().map(|b| (b.at_s, b.failed_per_s)),
                    colors[3].stroke_width(1),
                ))?
                .label("not served")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colors[3].stroke_width(1))
                });
            legend(&mut chart)?;

            // 2. p99 latency of served requests: all, and ingest's.
            let max_p99 = self
                .buckets
                .iter()
                .flat_map(|b| [b.p99_ms, b.ingest_p99_ms])
                .flatten()
                .fold(10.0, f64::max);
            let mut chart = ChartBuilder::on(&panels[1])
                .caption(
                    "p99 latency of served requests (ms): all front services, and ingest",
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(50)
                .build_cartesian_2d(0.0..total, 0.0..max_p99 * 1.1)?;
            chart
                .configure_mesh()
                .x_desc("time (s)")
                .y_desc("ms")
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            self.draw_phases(&mut chart, max_p99 * 1.1)?;
            chart
                .draw_series(LineSeries::new(
                    self.buckets
                        .iter()
                        .filter_map(|b| b.p99_ms.map(|v| (b.at_s, v))),
                    colors[0].stroke_width(2),
                ))?
                .label("p99, all front services")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colors[0].stroke_width(2))
                });
            chart
                .draw_series(LineSeries::new(
                    self.buckets
                        .iter()
                        .filter_map(|b| b.ingest_p99_ms.map(|v| (b.at_s, v))),
                    colors[1].stroke_width(2),
                ))?
                .label("p99, ingest (events, searches, bulk)")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colors[1].stroke_width(2))
                });
            legend(&mut chart)?;

            // 3. Breaker states: 0 closed, 1 half-open, 2 open.
            let mut chart = ChartBuilder::on(&panels[2])
                .caption(
                    "circuit breakers (0 closed, 1 half-open, 2 open)",
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(50)
                .build_cartesian_2d(0.0..total, -0.2..2.6)?;
            chart
                .configure_mesh()
                .x_desc("time (s)")
                .y_labels(3)
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            self.draw_phases(&mut chart, 2.6)?;
            let names: Vec<String> = self
                .samples
                .first()
                .map(|s| s.breakers.keys().cloned().collect())
                .unwrap_or_default();
            for (i, name) in names.iter().enumerate() {
                let color = colors[i % colors.len()];
                let offset = i as f64 * 0.06;
                chart
                    .draw_series(LineSeries::new(
                        self.samples.iter().map(|s| {
                            let level = match s.breakers.get(name).map(String::as_str) {
                                Some("half_open") => 1.0,
                                Some("open" | "forced_open") => 2.0,
                                _ => 0.0,
                            };
                            (s.at_s, level + offset)
                        }),
                        color.stroke_width(2),
                    ))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
            }
            legend(&mut chart)?;

            // 4. Healthy inventory instances, ingest's queued events, and
            // the shop's retries per second (small numbers all three).
            let retries = self.retries_per_s();
            let max_queued = self
                .samples
                .iter()
                .flat_map(|s| s.queued.values().copied())
                .max()
                .unwrap_or(0)
                .max(3) as f64;
            let max_queued = retries.iter().map(|r| r.1).fold(max_queued, f64::max);
            let mut chart = ChartBuilder::on(&panels[3])
                .caption(
                    "healthy inventory instances, requests waiting in ingest's queues, and the shop's retries per second",
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(50)
                .build_cartesian_2d(0.0..total, 0.0..max_queued * 1.15)?;
            chart
                .configure_mesh()
                .x_desc("time (s)")
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            self.draw_phases(&mut chart, max_queued * 1.15)?;
            chart
                .draw_series(LineSeries::new(
                    self.samples
                        .iter()
                        .map(|s| (s.at_s, s.healthy_instances as f64)),
                    colors[2].stroke_width(3),
                ))?
                .label("healthy inventory instances")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colors[2].stroke_width(3))
                });
            for (i, kind) in ["index", "bulk"].into_iter().enumerate() {
                let color = colors[[0, 1][i]];
                chart
                    .draw_series(LineSeries::new(
                        self.samples
                            .iter()
                            .map(|s| (s.at_s, s.queued.get(kind).copied().unwrap_or(0) as f64)),
                        color.stroke_width(1),
                    ))?
                    .label(format!("ingest {kind} queued"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(1))
                    });
            }
            let purple = RGBColor(148, 103, 189);
            chart
                .draw_series(LineSeries::new(retries, purple.stroke_width(2)))?
                .label("shop retries per second")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], purple.stroke_width(2))
                });
            legend(&mut chart)?;
            root.present()?;
        }
        Ok(())
    }

    /// Phase boundaries (dashed) and names along the top of a panel.
    fn draw_phases<'a, DB: DrawingBackend + 'a>(
        &self,
        chart: &mut ChartContext<
            'a,
            DB,
            Cartesian2d<
                plotters::coord::types::RangedCoordf64,
                plotters::coord::types::RangedCoordf64,
            >,
        >,
        top: f64,
    ) -> Result<(), Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static,
    {
        for p in &self.phases {
            chart.draw_series(DashedLineSeries::new(
                [(p.from_s, 0.0), (p.from_s, top)],
                4,
                4,
                BLACK.mix(0.35).stroke_width(1),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                p.phase.as_str().to_owned(),
                (p.from_s + 0.2, top * 0.97),
                ("sans-serif", 12).into_font().color(&BLACK.mix(0.6)),
            )))?;
        }
        Ok(())
    }
}

fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<
        'a,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()?;
    Ok(())
}

/// Each breaker's transitions, in the order they first happened, counted:
/// `publications: closed -> open, open -> half_open x6, half_open -> open x6`.
fn breaker_moves(moves: &[&Transition]) -> Vec<String> {
    let mut counted: Vec<(&str, String, u32)> = Vec::new();
    for t in moves.iter().filter(|t| t.what == "breaker") {
        let step = format!("{} -> {}", t.from, t.to);
        match counted
            .iter_mut()
            .find(|(n, s, _)| *n == t.name && *s == step)
        {
            Some(entry) => entry.2 += 1,
            None => counted.push((&t.name, step, 1)),
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for (name, _, _) in &counted {
        if !names.contains(name) {
            names.push(name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let steps: Vec<String> = counted
                .iter()
                .filter(|(n, _, _)| *n == name)
                .map(|(_, step, count)| match count {
                    1 => step.clone(),
                    n => format!("{step} x{n}"),
                })
                .collect();
            format!("{name}: {}", steps.join(", "))
        })
        .collect()
}

/// Served and failed per second and p99 per bucket of the run.
fn buckets(records: &[Record], total_s: f64) -> Vec<Bucket> {
    let width = (total_s / 60.0).clamp(0.25, 1.0);
    let n = (total_s / width).ceil().max(1.0) as usize;
    let mut served = vec![[0u64; 3]; n];
    let mut failed = vec![0u64; n];
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut ingest: Vec<Vec<f64>> = vec![Vec::new(); n];
    for r in records {
        let i = ((r.at_ms as f64 / 1e3) / width) as usize;
        let Some(i) = (i < n).then_some(i) else {
            continue;
        };
        match r.outcome {
            Outcome::Rejected(_) => failed[i] += 1,
            _ => {
                let class = CLASSES.iter().position(|p| *p == r.priority).unwrap_or(0);
                served[i][class] += 1;
                latencies[i].push(r.latency_ms);
                if matches!(r.front, Front::Ingest | Front::IngestBulk) {
                    ingest[i].push(r.latency_ms);
                }
            }
        }
    }
    (0..n)
        .map(|i| {
            latencies[i].sort_by(f64::total_cmp);
            ingest[i].sort_by(f64::total_cmp);
            Bucket {
                at_s: i as f64 * width,
                served_per_s: served[i].map(|c| c as f64 / width),
                failed_per_s: failed[i] as f64 / width,
                p99_ms: percentile(&latencies[i], 0.99),
                ingest_p99_ms: percentile(&ingest[i], 0.99),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: f64, retries: u64) -> TimeSample {
        TimeSample {
            at_s,
            phase: Phase::Kill,
            breakers: BTreeMap::from([("inventory".to_owned(), "closed".to_owned())]),
            instances: BTreeMap::new(),
            healthy_instances: 3,
            queued: BTreeMap::new(),
            retries,
        }
    }

    #[test]
    fn the_chart_has_a_line_for_the_shops_retries() {
        let samples = vec![
            sample(0.0, 0),
            sample(1.0, 0),
            sample(2.0, 10),
            sample(2.0, 12), // same time: skipped
            sample(2.5, 30),
        ];
        let report = Report::new(
            vec![(Phase::Kill, Duration::ZERO, Duration::from_millis(2500), 30)],
            Vec::new(),
            samples,
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(
            report.retries_per_s(),
            [(1.0, 0.0), (2.0, 10.0), (2.5, 36.0)]
        );
        let svg = report.svg().unwrap();
        assert!(svg.contains("shop retries per second"));
        assert!(
            svg.contains("the shop&apos;s retries per second")
                || svg.contains("the shop's retries per second")
        );
        // no samples: no points, still a chart
        let empty = Report::new(Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        assert!(empty.retries_per_s().is_empty());
        assert!(empty.svg().unwrap().contains("shop retries per second"));
    }

    #[test]
    fn the_chart_has_a_p99_line_for_ingest() {
        let served = |at_ms, front, latency_ms| Record {
            at_ms,
            front,
            priority: Priority::Critical,
            outcome: Outcome::Ok,
            latency_ms,
            retry_after: false,
            status: 200,
        };
        let records = vec![
            served(10, Front::Profile, 300.0),
            served(20, Front::Ingest, 40.0),
            served(30, Front::IngestBulk, 60.0),
            // Refused: not in the p99 of served requests.
            Record {
                outcome: Outcome::Rejected(Reason::QueueTime),
                status: 429,
                retry_after: true,
                ..served(40, Front::Ingest, 500.0)
            },
            served(600, Front::Profile, 20.0),
        ];
        let report = Report::new(
            vec![(Phase::Overload, Duration::ZERO, Duration::from_secs(1), 0)],
            records,
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        // 0.25 s buckets: the first holds the first four requests.
        let first = &report.buckets[0];
        assert_eq!(first.p99_ms, Some(300.0));
        assert_eq!(first.ingest_p99_ms, Some(60.0));
        assert_eq!(first.failed_per_s, 4.0);
        let third = &report.buckets[2];
        assert_eq!((third.p99_ms, third.ingest_p99_ms), (Some(20.0), None));
        assert!(report.svg().unwrap().contains("p99, ingest"));
    }

    #[test]
    fn a_refusal_for_queue_time_is_told_apart_from_a_full_queue() {
        use crate::demo::classify;
        let why = |text: &str| classify(429, None, text);
        assert_eq!(
            why("service overloaded: queue time exceeded\n"),
            Outcome::Rejected(Reason::QueueTime)
        );
        assert_eq!(
            why("service overloaded: queue full\n"),
            Outcome::Rejected(Reason::QueueFull)
        );
        assert_eq!(
            why("service overloaded: shed for higher priority\n"),
            Outcome::Rejected(Reason::Shed)
        );
        assert_eq!(Reason::QueueTime.as_str(), "queue time");
        assert!(Reason::ALL.contains(&Reason::QueueTime));
    }
}
