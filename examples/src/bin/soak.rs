//! The soak run: proves that nothing leaks over time.
//!
//! Three instances of a service behind the standard server stack
//! (correlation, deadline-aware timeout, a bounded queue with priorities,
//! refusals as `429`) and one client calling them through the standard
//! client stack (context propagation, deadline, adaptive throttle, round
//! robin with health checks and passive ejection, a breaker per instance,
//! an attempt timeout, over a hyper-util client), all on loopback, in this
//! process. Open-loop load at five times the fleet's capacity, with mixed
//! priorities and deadlines; the client drops each request at its deadline.
//! One instance dies (stops accepting, closes its connections) and comes
//! back every minute.
//!
//! Every 10 s it samples the process's resident memory, open file
//! descriptors and live tokio tasks, the queues' depths, the instances'
//! states and the requests served, refused, dropped and failed per
//! priority, and prints them. At the end it prints the table and the
//! verdict, and exits with status 1 if anything grew after the first
//! minute (see `resilience_examples::soak` for how "grows" is decided), or
//! if tasks and descriptors did not come back once the load stopped.
//!
//! Run: `cargo run -p resilience-examples --bin soak` (10 minutes), or
//! `-- --quick` (30 s, what CI runs); `-- --out FILE` writes the samples
//! and the verdict as markdown: the section of `benches/REPORT.md` between
//! its `soak:start` / `soak:end` markers, which the report binary keeps
//! when it rewrites the rest of the report.

use std::path::PathBuf;
use std::time::Duration;

use resilience_core::BoxError;
use resilience_examples::soak::{self, SoakSettings};

const USAGE: &str = "\
usage: soak [--quick] [--duration DURATION] [--out FILE]

Runs the server and client stacks over loopback at 5x the fleet's capacity,
an instance dying and coming back, and fails if resident memory, open file
descriptors, live tasks or queue depths grow after the warm-up.

options:
  --quick              the CI version: 30 s, a death every 10 s, a sample
                       every 2 s, 10 s of warm-up (default: 10 minutes, a
                       death every minute, a sample every 10 s, 1 minute
                       of warm-up)
  --duration DURATION  how long the load runs, e.g. 600s, 20m (default:
                       600s, or 30s with --quick)
  --out FILE           also write the samples and the verdict as markdown
  -h, --help           this text";

#[derive(Debug)]
struct Args {
    quick: bool,
    duration: Option<Duration>,
    out: Option<PathBuf>,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        quick: false,
        duration: None,
        out: None,
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
            "--out" => parsed.out = Some(PathBuf::from(value("--out")?)),
            "--duration" => {
                let v = value("--duration")?;
                // A bare number would be read as milliseconds: ask for a unit.
                if v.trim().chars().all(|c| c.is_ascii_digit()) {
                    return Err(format!("--duration: {v:?} needs a unit, e.g. {v}s or {v}m"));
                }
                let d = resilience_core::config::duration::parse(&v)
                    .map_err(|e| format!("--duration: {e}"))?;
                parsed.duration = Some(d);
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
            eprintln!("soak: {why}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    match run(args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(error) => {
            eprintln!("soak: {error}");
            std::process::exit(2);
        }
    }
}

/// Runs the soak; whether it passed.
async fn run(args: Args) -> Result<bool, BoxError> {
    // The layers' per-request DEBUG lines, and the INFO lines of a queue
    // going in and out of overload, would bury the table.
    resilience_examples::init_logging_at("soak", tracing::Level::WARN);
    let mut settings = if args.quick {
        SoakSettings::quick()
    } else {
        SoakSettings::full()
    };
    if let Some(d) = args.duration {
        settings.duration = d;
    }
    settings
        .validate()
        .map_err(|e| format!("invalid settings: {e}"))?;
    println!(
        "soak: {}\n",
        soak::describe(&settings).replace('\n', "\n      ")
    );
    println!("{}", soak::header());
    let report = soak::run(&settings, |sample| println!("{}", soak::row(sample))).await?;
    println!();
    print!("{}", report.verdict());
    if let Some(path) = &args.out {
        let mut command = String::from("cargo run -p resilience-examples --bin soak --");
        for arg in std::env::args().skip(1) {
            command.push(' ');
            command.push_str(&arg);
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, report.markdown(&command))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if !report.passed() {
        eprintln!("soak: FAIL: {}", report.failures().join("; "));
    }
    Ok(report.passed())
}
