//! The reference deployment under a chaos scenario: every reference service
//! at once on loopback, mixed-priority traffic, an instance killed, latency
//! injected, a service overloaded, and recovery; a live dashboard while it
//! runs, then a table per phase, a sample request traced across every hop,
//! an SVG chart and the time series as JSON.
//!
//! Run: `cargo run -p resilience-examples --bin demo` (add `-- --help` for
//! the options).

use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use metrics_exporter_prometheus::PrometheusBuilder;
use resilience_core::BoxError;
use resilience_examples::demo::{DemoSettings, Deployment, Scenario, StartOptions};

const USAGE: &str = "\
usage: demo [--quick] [--out DIR] [--admin-port PORT] [--seed N] [--etcd URL] [--hold]

Runs the reference services together through a chaos scenario:
steady -> kill an inventory instance -> latency monkey on publications
-> ingest overloaded 2.5x -> recovery.

options:
  --quick            3 s per phase instead of 15 s, 5 s of recovery (17 s)
  --out DIR          where the chart, the time series and the log go
                     (default: target/demo)
  --admin-port PORT  the dashboard's port on 127.0.0.1 (default: any free)
  --seed N           seeds the arrivals and the faults (default: 7)
  --etcd URL         take discovery and flags from etcd (e.g.
                     http://127.0.0.1:2379): the inventory instances register
                     there with a lease, the shop watches them, and a killed
                     instance leaves the registry when its lease expires
                     (default: static discovery, nothing to install)
  --hold             keep serving after the run, until Ctrl-C
  -h, --help         this text";

#[derive(Debug)]
struct Args {
    quick: bool,
    out: PathBuf,
    admin_port: u16,
    seed: Option<u64>,
    etcd: Option<String>,
    hold: bool,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        quick: false,
        out: PathBuf::from("target/demo"),
        admin_port: 0,
        seed: None,
        etcd: None,
        hold: false,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .filter(|v| !v.starts_with("--"))
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--quick" => parsed.quick = true,
            "--hold" => parsed.hold = true,
            "--out" => parsed.out = PathBuf::from(value("--out")?),
            "--etcd" => {
                let v = value("--etcd")?;
                if !(v.starts_with("http://") || v.starts_with("https://")) {
                    return Err(format!("--etcd: {v:?} is not an http:// URL"));
                }
                parsed.etcd = Some(v);
            }
            "--admin-port" => {
                let v = value("--admin-port")?;
                parsed.admin_port = v
                    .parse()
                    .map_err(|_| format!("--admin-port: {v:?} is not a port number"))?;
            }
            "--seed" => {
                let v = value("--seed")?;
                parsed.seed = Some(
                    v.parse()
                        .map_err(|_| format!("--seed: {v:?} is not a whole number"))?,
                );
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(parsed))
}

#[tokio::main]
async fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(why) => {
            eprintln!("demo: {why}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(error) = run(args).await {
        eprintln!("demo: {error}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let log_path = args.out.join("demo.log");
    let log = File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    resilience_examples::init_logging_to("demo", tracing::Level::INFO, Mutex::new(log));
    // Before the layers are built: they bind their metrics to the recorder
    // present then.
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;

    let mut settings = if args.quick {
        DemoSettings::quick()
    } else {
        DemoSettings::full()
    };
    if let Some(seed) = args.seed {
        settings.seed = seed;
    }
    let options = StartOptions {
        metrics: Some(metrics),
        admin_port: args.admin_port,
        etcd: args.etcd.clone(),
    };
    let deployment = Deployment::start(&settings, &options).await?;
    match &args.etcd {
        None => println!("reference deployment on 127.0.0.1 (static discovery):"),
        Some(url) => println!(
            "reference deployment on 127.0.0.1 (discovery and flags from etcd at {url}, under {} and {}):",
            resilience_examples::demo::ETCD_INVENTORY_PREFIX,
            resilience_examples::demo::ETCD_FLAGS_PREFIX
        ),
    }
    for s in &deployment.services {
        println!("  {:<13} {:<9} {}", s.name, s.role, s.url);
    }
    println!(
        "each serves /health, /resilience and /metrics\n\ndashboard: {}/\nlog:       {}\n",
        deployment.admin_url,
        log_path.display()
    );

    let total = settings.total();
    let bar = ProgressBar::new(total.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {elapsed:>3}/{duration} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = Scenario::new(&deployment, settings)
        .run(|phase, at, sent, served| {
            bar.set_position(at.as_millis() as u64);
            bar.set_message(format!(
                "{:<8} {:<48} sent {sent:>6}  served {served:>6}",
                phase.as_str(),
                phase.describe()
            ));
        })
        .await;
    bar.finish_and_clear();

    println!("{}", report.table());
    let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
    for (id, lines) in report.trace(&log_text) {
        println!("sample request {id}, one log line per hop:");
        for line in lines {
            println!("  {line}");
        }
    }
    let chart = args.out.join("demo.svg");
    std::fs::write(&chart, report.svg()?)?;
    let series = args.out.join("timeseries.json");
    std::fs::write(&series, serde_json::to_string_pretty(&report.to_json())?)?;
    println!(
        "\nchart:       {}\ntime series: {}",
        chart.display(),
        series.display()
    );

    if args.hold {
        println!(
            "\nstill serving (dashboard {}/); Ctrl-C to stop",
            deployment.admin_url
        );
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
