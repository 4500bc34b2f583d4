//! The report's "Retry storm" section: runs the `retry_storm` harness
//! (deterministic: tokio's paused clock, a fixed seed, so quick mode runs
//! it whole), reads its `RETRY_STORM_*` JSON lines, draws goodput over time
//! per configuration (`retry_storm.svg`, one panel per server) and writes
//! the tables and the targets.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::{Error, Target, cargo_bench, not_measured};

/// The file the chart is written to, beside the report.
const CHART: &str = "retry_storm.svg";
/// The configuration that is ours.
const OURS: &str = "ours";
/// The configuration without retries.
const NO_RETRY: &str = "no retry";
/// The server of the issue's "for scale" figures: no deadline, no limit.
const FIFO: &str = "unbounded FIFO";
/// Ours must be back within this long after the trigger's end.
const RECOVERY_GOAL_S: f64 = 1.0;
/// The seed of the main tables and the chart.
const MAIN_SEED: u64 = 42;
/// Other seeds, for ours only (a run takes seconds).
const OTHER_SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

/// What one run of the harness printed.
#[derive(Debug, Default)]
pub(crate) struct Storm {
    /// `RETRY_STORM_SETUP`: the model's parameters.
    setup: Value,
    /// `RETRY_STORM_ROW`: one per server and configuration.
    rows: Vec<Value>,
    /// `RETRY_STORM_BINS`: goodput per bin, one per server and
    /// configuration.
    bins: Vec<Value>,
    /// The chart's file name, once written.
    chart: Option<&'static str>,
}

impl Storm {
    /// The servers, in the harness's order.
    fn servers(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for v in &self.rows {
            if let Some(s) = v["server"].as_str().filter(|s| !out.contains(s)) {
                out.push(s);
            }
        }
        out
    }

    /// The main seed's rows of `server`.
    fn rows_of<'a>(&'a self, server: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.rows
            .iter()
            .filter(move |v| v["server"] == server && v["seed"] == MAIN_SEED)
    }

    /// The main seed's row of `config` on `server`.
    fn row<'a>(&'a self, server: &'a str, config: &str) -> Option<&'a Value> {
        self.rows_of(server).find(|v| v["config"] == config)
    }

    fn setup(&self, key: &str) -> f64 {
        self.setup[key].as_f64().unwrap_or(f64::NAN)
    }

    /// The amplification goal: 1 + the default budget ratio.
    fn amplification_goal() -> f64 {
        1.0 + 0.2
    }
}

/// Runs the harness on the main seed and on the others, and reads its
/// lines.
pub(crate) fn run(root: &Path, criterion_home: &Path) -> Result<Storm, Error> {
    let mut out = cargo_bench(root, criterion_home, "retry_storm", &[])?;
    for seed in OTHER_SEEDS {
        let seed = seed.to_string();
        let stdout = cargo_bench(root, criterion_home, "retry_storm", &["--seed", &seed])?;
        // Only the rows: the bins and the setup are the main seed's.
        for line in stdout.lines().filter(|l| l.starts_with("RETRY_STORM_ROW ")) {
            out.push('\n');
            out.push_str(line);
        }
    }
    parse(&out)
}

fn parse(stdout: &str) -> Result<Storm, Error> {
    let mut storm = Storm::default();
    for line in stdout.lines() {
        let json = |prefix: &str| {
            line.strip_prefix(prefix)
                .map(|j| {
                    serde_json::from_str::<Value>(j)
                        .map_err(|e| Error::Parse(format!("retry storm line `{line}`: {e}")))
                })
                .transpose()
        };
        if let Some(v) = json("RETRY_STORM_SETUP ")? {
            storm.setup = v;
        } else if let Some(v) = json("RETRY_STORM_ROW ")? {
            storm.rows.push(v);
        } else if let Some(v) = json("RETRY_STORM_BINS ")?.filter(|v| v["seed"] == MAIN_SEED) {
            storm.bins.push(v);
        }
    }
    if storm.rows.is_empty() || storm.setup.is_null() {
        return Err(Error::Parse(
            "the retry_storm bench printed no RETRY_STORM_SETUP / RETRY_STORM_ROW lines".into(),
        ));
    }
    Ok(storm)
}

/// Draws the chart beside the report at `out` and remembers its name.
pub(crate) fn write_chart(out: &Path, storm: Option<&mut Storm>) -> Result<(), Error> {
    let Some(storm) = storm else {
        return Ok(());
    };
    let path = out.with_file_name(CHART);
    let svg = chart(storm)?;
    std::fs::write(&path, svg).map_err(|e| Error::Io(path.clone(), e))?;
    eprintln!("report: wrote {}", path.display());
    storm.chart = Some(CHART);
    Ok(())
}

/// Recovery and amplification of ours on each deadline-aware server.
pub(crate) fn targets(storm: Option<&Storm>) -> Vec<Target> {
    let goal_amp = Storm::amplification_goal();
    let Some(storm) = storm else {
        return vec![
            not_measured(
                "Retry storm: ours recovers (deadline-aware server)".into(),
                format!("<= {RECOVERY_GOAL_S} s after the trigger"),
            ),
            not_measured(
                "Retry storm: ours' amplification during the trigger (deadline-aware server)"
                    .into(),
                format!("<= {goal_amp:.1} attempts per request"),
            ),
        ];
    };
    let mut t = Vec::new();
    for server in storm.servers().into_iter().filter(|s| *s != FIFO) {
        let row = storm.row(server, OURS);
        let what = format!("Retry storm, server `{server}`: ours recovers");
        let goal = format!("<= {RECOVERY_GOAL_S} s after the trigger");
        t.push(match row {
            Some(v) => {
                let rec = v["recovery_s"].as_f64();
                let met = rec.is_some_and(|r| r <= RECOVERY_GOAL_S);
                Target {
                    what,
                    goal,
                    figure: rec.map_or("never (within the run)".into(), |r| format!("{r:.1} s")),
                    met: Some(met),
                    gap: match rec {
                        _ if met => String::new(),
                        Some(r) => format!("{:.1} s late", r - RECOVERY_GOAL_S),
                        None => "does not recover".into(),
                    },
                }
            }
            None => not_measured(what, goal),
        });
        let what =
            format!("Retry storm, server `{server}`: ours' amplification during the trigger");
        let goal = format!("<= {goal_amp:.1} attempts per request (1 + budget ratio)");
        t.push(match row.and_then(|v| v["amplification_during"].as_f64()) {
            Some(a) => Target {
                what,
                goal,
                figure: format!("{a:.3}"),
                met: Some(a <= goal_amp),
                gap: if a <= goal_amp {
                    String::new()
                } else {
                    format!("{:.3} over", a - goal_amp)
                },
            },
            None => not_measured(what, goal),
        });
    }
    t
}

/// The "Retry storm" section.
pub(crate) fn write_section(w: &mut String, storm: Option<&Storm>) {
    let Some(storm) = storm else {
        return;
    };
    let _ = writeln!(w, "## Retry storm\n");
    let start = storm.setup("trigger_start_s");
    let end = start + storm.setup("trigger_s");
    let _ = writeln!(
        w,
        "`cargo bench -p resilience-benches --bench retry_storm` (the harness's doc comment describes the model): a service of {:.0} requests/s (10 workers x 10 ms) under open-loop Poisson arrivals at {}x, tokio's paused clock, seed {}. From {start} s to {end} s the service is {}x slower (the trigger); then it is well again. Every client gives each request a {} ms deadline, each attempt a {} ms timeout and at most {} attempts: `no retry` (tower's `Timeout` alone), `tower Retry` (no budget), `tower Retry+TpsBudget` (`TpsBudget::default()`), `tower-resilience` (0.13's retry, its defaults), `ours` (`RetryLayer`, its defaults and the attempt timeout). Each configuration runs against each server on the same arrivals.\n",
        storm.setup("capacity"),
        storm.setup("load"),
        MAIN_SEED,
        storm.setup("slowdown"),
        storm.setup("deadline_ms"),
        storm.setup("attempt_timeout_ms"),
        storm.setup("attempts"),
    );
    let _ = writeln!(
        w,
        "- **Servers**: `wait budget 15ms` and `deadline only` are our bounded queue (FIFO, 50 places, deadline-aware: an attempt whose expected wait passes its deadline is refused at once, none waits past it, work stops at the deadline), with CoDel and a 15 ms `max_wait`, or with only a 200 ms `max_wait`; `unbounded FIFO` is tower's `ConcurrencyLimit` alone, which queues without limit and works on every attempt it was sent, whether its client still waits or not.\n- **Recovery**: from the trigger's end until goodput (answers `200` within the deadline, per {} ms bin of arrival) is back at or above {:.0}% of offered and stays there to the end of the run ({} s); `never`: not within the run.\n- **Amplification**: attempts sent per request offered, during the trigger and after it. **Wasted**: the share of the server's busy time spent on attempts their client had already given up on.\n",
        storm
            .bins
            .first()
            .and_then(|v| v["bin_ms"].as_u64())
            .unwrap_or(100),
        storm.setup("recovered") * 100.0,
        storm.setup("run_s"),
    );
    if let Some(chart) = storm.chart {
        let _ = writeln!(
            w,
            "![goodput over time per configuration, one panel per server]({chart})\n\nIn the chart ours is drawn last, over any peer whose line it repeats.\n"
        );
    }
    let num = |v: &Value, k: &str, digits: usize| {
        v[k].as_f64()
            .map_or("—".to_owned(), |x| format!("{x:.digits$}"))
    };
    for server in storm.servers() {
        let _ = writeln!(w, "### Server `{server}`\n");
        let _ = writeln!(
            w,
            "| config | goodput % | recovery after trigger (s) | amplification during | amplification after | server work wasted % |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|");
        for v in storm.rows_of(server) {
            let recovery = v["recovery_s"]
                .as_f64()
                .map_or("never".to_owned(), |r| format!("{r:.1}"));
            let _ = writeln!(
                w,
                "| {} | {} | {recovery} | {} | {} | {} |",
                v["config"].as_str().unwrap_or("?"),
                num(v, "goodput", 1),
                num(v, "amplification_during", 2),
                num(v, "amplification_after", 2),
                num(v, "wasted", 1),
            );
        }
        let _ = writeln!(w, "\n{}\n", summary(storm, server));
    }
    let others: Vec<&Value> = storm
        .rows
        .iter()
        .filter(|v| v["seed"] != MAIN_SEED && (v["config"] == OURS || v["config"] == NO_RETRY))
        .collect();
    if !others.is_empty() {
        let _ = writeln!(
            w,
            "Ours and `no retry` on other seeds (other arrivals, the same model; a late recovery on `wait budget 15ms` that `no retry` shows too is a later dip of the server's own, not the trigger's):\n\n| server | seed | config | recovery after trigger (s) | amplification during | amplification after | server work wasted % |\n|---|---:|---|---:|---:|---:|---:|"
        );
        for v in others {
            let recovery = v["recovery_s"]
                .as_f64()
                .map_or("never".to_owned(), |r| format!("{r:.1}"));
            let _ = writeln!(
                w,
                "| {} | {} | {} | {recovery} | {} | {} | {} |",
                v["server"].as_str().unwrap_or("?"),
                v["seed"],
                v["config"].as_str().unwrap_or("?"),
                num(v, "amplification_during", 3),
                num(v, "amplification_after", 2),
                num(v, "wasted", 1),
            );
        }
        let _ = writeln!(w);
    }
}

/// Why a retry-storm target is missed, from the figures; `None` for
/// another target.
pub(crate) fn why_missed(what: &str, storm: Option<&Storm>) -> Option<String> {
    let storm = storm?;
    if !what.starts_with("Retry storm") {
        return None;
    }
    if what.contains("amplification") {
        let seeds: Vec<String> = storm
            .rows
            .iter()
            .filter(|v| {
                v["seed"] != MAIN_SEED
                    && v["config"] == OURS
                    && what.contains(&format!("`{}`", v["server"].as_str().unwrap_or("?")))
            })
            .filter_map(|v| Some(format!("{:.3}", v["amplification_during"].as_f64()?)))
            .collect();
        return Some(format!(
            "The budget holds every stretch of its burst window that ends at a retry and starts on one of its tenths (100 ms) to 20% of that stretch's own requests, or the floor (`resilience-retry`'s tests `retries_from_a_boundary_on_stay_within_the_ratio_of_its_requests`, `a_burst_after_a_quiet_period_gets_only_its_own_share` and the property test `never_above_ratio_plus_floor`), so over an interval that starts on such a tenth, as the trigger does here, retries add at most 20% of its requests. What can still tip the figure over: requests move into the budget up to 31 at a time (a batch that came before the trigger may be counted in it), a retry paid for just before the trigger is sent after its backoff, within it, and a trigger that starts inside a tenth lets the requests of that tenth before it count. On other seeds: {}.",
            if seeds.is_empty() {
                "not run".to_owned()
            } else {
                seeds.join(", ")
            }
        ));
    }
    Some("See the section \"Retry storm\" below: the chart and the server's table show where goodput stays down.".to_owned())
}

/// What each configuration does on `server`, in words, from the figures.
fn summary(storm: &Storm, server: &str) -> String {
    let recovered: Vec<String> = storm
        .rows_of(server)
        .map(|v| {
            let name = v["config"].as_str().unwrap_or("?");
            let amp = v["amplification_during"].as_f64().unwrap_or(f64::NAN);
            match v["recovery_s"].as_f64() {
                Some(r) => format!("`{name}` is back after {r:.1} s ({amp:.2} attempts per request during the trigger)"),
                None => format!(
                    "`{name}` does not recover within the run ({:.2} attempts per request after the trigger, {:.0}% of the server's work wasted)",
                    v["amplification_after"].as_f64().unwrap_or(f64::NAN),
                    v["wasted"].as_f64().unwrap_or(f64::NAN),
                ),
            }
        })
        .collect();
    let mut out = format!("On this server, {}.", recovered.join("; "));
    if server == FIFO {
        let no_retry = storm
            .row(server, NO_RETRY)
            .and_then(|v| v["recovery_s"].as_f64());
        let ours = storm.row(server, OURS);
        let ours_rec = ours.and_then(|v| v["recovery_s"].as_f64());
        let better = match (ours_rec, no_retry) {
            (Some(o), Some(n)) => o <= n,
            (Some(_), None) => true,
            _ => false,
        };
        if !better {
            let after = ours
                .and_then(|v| v["amplification_after"].as_f64())
                .unwrap_or(f64::NAN);
            let _ = write!(
                out,
                " Ours does no better than no retry here: behind a queue without limit that works on abandoned attempts, the backlog the trigger leaves makes every attempt time out, so every request fails and ours keeps retrying within its budget, {after:.2} attempts per request: the server, at {:.0}% of its capacity, drains its backlog too slowly to recover within the run. A budget bounds the extra load; it cannot make a server drop work its clients have given up on. That half is the server's (the bounded queue's deadline-aware admission, the tables above).",
                storm.setup("load") * after * 100.0,
            );
        }
    }
    out
}

/// Goodput over time per configuration, one panel per server, the trigger
/// shaded; ours in a thick solid line, each peer with its own colour and
/// dash.
fn chart(storm: &Storm) -> Result<String, Error> {
    use plotters::prelude::*;

    const PEERS: [RGBColor; 4] = [
        RGBColor(110, 110, 110),
        RGBColor(200, 30, 45),
        RGBColor(230, 110, 0),
        RGBColor(120, 60, 170),
    ];
    const OURS_COLOR: RGBColor = RGBColor(0, 83, 214);

    let servers = storm.servers();
    let mut configs: Vec<&str> = Vec::new();
    for v in &storm.rows {
        if let Some(c) = v["config"].as_str().filter(|c| !configs.contains(c)) {
            configs.push(c);
        }
    }
    // (color, width, dashed) per configuration, peers first.
    let style = |config: &str| -> (RGBColor, u32, bool) {
        if config == OURS {
            return (OURS_COLOR, 3, false);
        }
        let i = configs
            .iter()
            .filter(|c| **c != OURS)
            .position(|c| *c == config)
            .unwrap_or(0);
        (PEERS[i % PEERS.len()], 2, i % 2 == 1)
    };
    let run_s = storm.setup("run_s");
    let start = storm.setup("trigger_start_s");
    let end = start + storm.setup("trigger_s");
    let chart_err = |e: &dyn std::fmt::Display| Error::Chart(e.to_string());

    let panel_h = 300;
    let legend_h = 70;
    let mut svg = String::new();
    {
        let height = panel_h * servers.len() as u32 + legend_h;
        let root = SVGBackend::with_string(&mut svg, (1100, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| chart_err(&e))?;
        let (plots, legend) = root.split_vertically(panel_h * servers.len() as u32);
        let panels = plots.split_evenly((servers.len(), 1));
        for (panel, server) in panels.iter().zip(&servers) {
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    format!(
                        "server `{server}`: goodput (% of offered), service {}x slower from {start} s to {end} s (shaded)",
                        storm.setup("slowdown")
                    ),
                    ("sans-serif", 15),
                )
                .margin(8)
                .x_label_area_size(30)
                .y_label_area_size(44)
                .build_cartesian_2d(0f64..run_s, 0f64..105f64)
                .map_err(|e| chart_err(&e))?;
            chart
                .configure_mesh()
                .x_desc("time (s)")
                .y_desc("goodput %")
                .x_labels(16)
                .y_labels(6)
                .light_line_style(RGBColor(240, 240, 240))
                .draw()
                .map_err(|e| chart_err(&e))?;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(start, 0.0), (end, 105.0)],
                    RGBColor(225, 225, 225).filled(),
                )))
                .map_err(|e| chart_err(&e))?;
            // Peers first, so ours is drawn on top.
            let order = configs
                .iter()
                .filter(|c| **c != OURS)
                .chain(configs.iter().filter(|c| **c == OURS));
            for config in order {
                let Some(bins) = storm
                    .bins
                    .iter()
                    .find(|v| v["server"] == *server && v["config"] == *config)
                else {
                    continue;
                };
                let bin_s = bins["bin_ms"].as_f64().unwrap_or(100.0) / 1000.0;
                let pts: Vec<(f64, f64)> = bins["goodput"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .filter_map(|(i, g)| {
                        Some(((i as f64 + 0.5) * bin_s, g.as_f64()?.clamp(0.0, 100.0)))
                    })
                    .collect();
                let (color, width, dashed) = style(config);
                let line = color.stroke_width(width);
                if dashed {
                    chart
                        .draw_series(DashedLineSeries::new(pts, 6, 4, line))
                        .map_err(|e| chart_err(&e))?;
                } else {
                    chart
                        .draw_series(LineSeries::new(pts, line))
                        .map_err(|e| chart_err(&e))?;
                }
            }
        }
        // The shared legend, under the panels.
        let font = ("sans-serif", 14).into_font();
        for (i, config) in configs.iter().enumerate() {
            let (color, width, dashed) = style(config);
            let (col, row) = (i % 3, i / 3);
            let (x, y) = (60 + 340 * col as i32, 18 + 24 * row as i32);
            let line = color.stroke_width(width);
            if dashed {
                for dash in (0..40).step_by(10) {
                    legend
                        .draw(&PathElement::new(
                            vec![(x + dash, y), (x + dash + 6, y)],
                            line,
                        ))
                        .map_err(|e| chart_err(&e))?;
                }
            } else {
                legend
                    .draw(&PathElement::new(vec![(x, y), (x + 40, y)], line))
                    .map_err(|e| chart_err(&e))?;
            }
            legend
                .draw(&Text::new(
                    config.to_string(),
                    (x + 48, y - 8),
                    font.clone(),
                ))
                .map_err(|e| chart_err(&e))?;
        }
        root.present().map_err(|e| chart_err(&e))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = r#"retry storm: K=10 ...
RETRY_STORM_SETUP {"trigger_start_s":5,"trigger_s":2,"run_s":30,"load":0.8,"slowdown":4,"capacity":1000,"deadline_ms":300,"attempt_timeout_ms":100,"attempts":3,"recovered":0.95}
| config | goodput % |
RETRY_STORM_ROW {"server":"deadline only","config":"no retry","seed":42,"goodput":93.4,"recovery_s":0,"amplification_during":1,"amplification_after":1,"wasted":7.8}
RETRY_STORM_BINS {"server":"deadline only","config":"no retry","seed":42,"bin_ms":100,"goodput":[100,90]}
RETRY_STORM_ROW {"server":"deadline only","config":"ours","seed":42,"goodput":93.4,"recovery_s":0.1,"amplification_during":1.25,"amplification_after":1,"wasted":7.8}
RETRY_STORM_BINS {"server":"deadline only","config":"ours","seed":42,"bin_ms":100,"goodput":[100,95]}
RETRY_STORM_ROW {"server":"unbounded FIFO","config":"no retry","seed":42,"goodput":75,"recovery_s":5.5,"amplification_during":1,"amplification_after":1,"wasted":29}
RETRY_STORM_ROW {"server":"unbounded FIFO","config":"ours","seed":42,"goodput":17,"recovery_s":null,"amplification_during":1.2,"amplification_after":1.19,"wasted":85.6}
RETRY_STORM_ROW {"server":"deadline only","config":"ours","seed":1,"goodput":93.6,"recovery_s":0.1,"amplification_during":1.201,"amplification_after":1,"wasted":7.8}
RETRY_STORM_BINS {"server":"deadline only","config":"ours","seed":1,"bin_ms":100,"goodput":[100,95]}
"#;

    #[test]
    fn reads_the_lines_and_judges_ours() {
        let mut storm = parse(OUT).unwrap();
        assert_eq!(storm.servers(), ["deadline only", "unbounded FIFO"]);
        assert_eq!(storm.bins.len(), 2);
        let t = targets(Some(&storm));
        // two targets for the deadline-aware server, none for the FIFO one
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].met, Some(true));
        assert_eq!(t[1].met, Some(false), "1.25 is over 1.2");
        assert!(t[1].gap.contains("0.050"));
        let mut w = String::new();
        write_section(&mut w, Some(&storm));
        assert!(w.contains("### Server `unbounded FIFO`"));
        assert!(w.contains("| ours | 17.0 | never | 1.20 | 1.19 | 85.6 |"));
        assert!(w.contains("Ours does no better than no retry here"));
        // the other seed: in its own table, not in the main ones
        assert!(w.contains("| deadline only | 1 | ours | 0.1 | 1.201 | 1.00 | 7.8 |"));
        assert_eq!(w.matches("| ours |").count(), 3);
        let why = why_missed(&t[1].what, Some(&storm)).unwrap();
        assert!(why.contains("On other seeds: 1.201."), "{why}");
        assert!(why_missed("Overload 2x", Some(&storm)).is_none());
        let svg = chart(&storm).unwrap();
        assert!(svg.starts_with("<svg"));
        storm.chart = Some(CHART);
        let mut w = String::new();
        write_section(&mut w, Some(&storm));
        assert!(w.contains("(retry_storm.svg)"));
    }

    #[test]
    fn no_lines_is_an_error() {
        assert!(parse("nothing here\n").is_err());
        assert!(parse("RETRY_STORM_ROW {not json\n").is_err());
        assert_eq!(targets(None).iter().filter(|t| t.met.is_none()).count(), 2);
    }
}
