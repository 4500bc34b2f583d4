//! Instructions per call under `valgrind --tool=callgrind`: steadier than
//! nanoseconds on a shared machine, and what the report uses to say where
//! a missed target's time goes. Each variant runs a bench binary's profile
//! loop (`CB_PROFILE`, `CORRELATION_PROFILE`, `STACK_PROFILE`,
//! `BOUNDED_QUEUE_LOOP`) twice, with N and 2N calls: the difference over N
//! is the cost of one call without the process's start-up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// (bench target, variable naming the variant, variable with the number of
/// calls, variant, label in the report).
const PROFILES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "circuit_breaker",
        "CB_PROFILE",
        "CB_CALLS",
        "baseline",
        "breaker: baseline",
    ),
    (
        "circuit_breaker",
        "CB_PROFILE",
        "CB_CALLS",
        "ours",
        "breaker: ours (count window)",
    ),
    (
        "circuit_breaker",
        "CB_PROFILE",
        "CB_CALLS",
        "recloser",
        "breaker: recloser",
    ),
    (
        "circuit_breaker",
        "CB_PROFILE",
        "CB_CALLS",
        "recloser_as_service",
        "breaker: recloser as a Service",
    ),
    (
        "bounded_queue",
        "BOUNDED_QUEUE_LOOP",
        "BOUNDED_QUEUE_CALLS",
        "baseline",
        "queue: baseline",
    ),
    (
        "bounded_queue",
        "BOUNDED_QUEUE_LOOP",
        "BOUNDED_QUEUE_CALLS",
        "ours",
        "queue: ours",
    ),
    (
        "bounded_queue",
        "BOUNDED_QUEUE_LOOP",
        "BOUNDED_QUEUE_CALLS",
        "tower_concurrency_limit",
        "queue: tower ConcurrencyLimit",
    ),
    (
        "correlation",
        "CORRELATION_PROFILE",
        "CORRELATION_CALLS",
        "baseline_with_id",
        "correlation: baseline (id + traceparent)",
    ),
    (
        "correlation",
        "CORRELATION_PROFILE",
        "CORRELATION_CALLS",
        "ours/with_id",
        "correlation: ours",
    ),
    (
        "correlation",
        "CORRELATION_PROFILE",
        "CORRELATION_CALLS",
        "tower_http/with_id",
        "correlation: tower-http pair",
    ),
    (
        "correlation",
        "CORRELATION_PROFILE",
        "CORRELATION_CALLS",
        "axum/baseline_with_context",
        "correlation axum: baseline (id + traceparent + deadline)",
    ),
    (
        "correlation",
        "CORRELATION_PROFILE",
        "CORRELATION_CALLS",
        "axum/ours/with_context",
        "correlation axum: ours",
    ),
    (
        "correlation",
        "CORRELATION_PROFILE",
        "CORRELATION_CALLS",
        "axum/tower_http/with_context",
        "correlation axum: tower-http pair",
    ),
    (
        "correlation",
        "CORRELATION_PROFILE",
        "CORRELATION_CALLS",
        "client/deadline/baseline",
        "correlation client: baseline (deadline + priority)",
    ),
    (
        "correlation",
        "CORRELATION_PROFILE",
        "CORRELATION_CALLS",
        "client/deadline/ours",
        "correlation client: ours",
    ),
    (
        "correlation",
        "CORRELATION_PROFILE",
        "CORRELATION_CALLS",
        "client/deadline/tower_http",
        "correlation client: tower-http + headers by hand",
    ),
    (
        "stack",
        "STACK_PROFILE",
        "STACK_CALLS",
        "server/baseline",
        "stack: server baseline",
    ),
    (
        "stack",
        "STACK_PROFILE",
        "STACK_CALLS",
        "server/ours",
        "stack: server side, ours",
    ),
    (
        "stack",
        "STACK_PROFILE",
        "STACK_CALLS",
        "client/baseline",
        "stack: client baseline",
    ),
    (
        "stack",
        "STACK_PROFILE",
        "STACK_CALLS",
        "client/ours",
        "stack: client side, ours",
    ),
    (
        "stack",
        "STACK_PROFILE",
        "STACK_CALLS",
        "whole/baseline",
        "stack: whole, baseline",
    ),
    (
        "stack",
        "STACK_PROFILE",
        "STACK_CALLS",
        "whole/ours",
        "stack: whole, ours",
    ),
    (
        "stack",
        "STACK_PROFILE",
        "STACK_CALLS",
        "whole/tower",
        "stack: whole, tower + tower-http + tower-resilience",
    ),
];

/// Calls in the shorter of the two runs.
const N: u64 = 20_000;

/// The variants whose instructions the report breaks down by function.
const DETAIL: &[&str] = &[
    "breaker: ours (count window)",
    "breaker: recloser as a Service",
    "correlation: ours",
    "correlation: tower-http pair",
    "correlation axum: ours",
    "correlation client: ours",
    "stack: client side, ours",
    "stack: whole, ours",
];

/// One variant's instructions per call.
#[derive(Debug, Clone)]
pub(crate) struct Count {
    pub(crate) label: &'static str,
    pub(crate) instructions: f64,
    /// For the [`DETAIL`] variants: the functions with the most
    /// instructions of their own, per call (function, instructions).
    pub(crate) top: Vec<(String, f64)>,
    /// Instructions per call of the whole profile loop by [`CATEGORIES`]
    /// (same order), from every function's own instructions.
    pub(crate) by_category: Vec<f64>,
}

/// What kind of work a function does, by the start of its name (the first
/// category that matches; the last catches the rest).
pub(crate) const CATEGORIES: &[(&str, &[&str])] = &[
    (
        "heap: malloc and free",
        &["./malloc/", "<resilience_benches::CountingAlloc", "__rust_"],
    ),
    (
        "header maps: insert, look up, drop",
        &[
            "http::header::map",
            "core::ptr::drop_in_place<http::header::map",
            "http::header::name",
        ],
    ),
    (
        "header values: validate, share, drop",
        &["http::header::value", "bytes::"],
    ),
    (
        "request extensions (a boxed type map)",
        &["http::extensions", "hashbrown::", "<hashbrown::"],
    ),
    ("moving futures and requests (memcpy)", &["./string/"]),
    (
        "ids and trace context: parse, generate, format",
        &[
            "resilience_correlation::trace",
            "resilience_correlation::id",
            "resilience_correlation::value",
            "resilience_correlation::rng",
            "uuid::",
            "std::thread::local",
        ],
    ),
    ("tracing", &["tracing::", "<tracing::", "tracing_core::"]),
    (
        "our layers' own code",
        &[
            "resilience_",
            "<resilience_",
            "core::ptr::drop_in_place<resilience_",
        ],
    ),
    (
        "peers' own code",
        &[
            "tower_http",
            "<tower_http",
            "tower_resilience",
            "<tower_resilience",
            "recloser",
            "<recloser",
            "crossbeam",
            "failsafe",
            "<tower::",
            "tower::",
        ],
    ),
    ("the rest: bench loop, no-op services, requests", &[""]),
];

/// The index in [`CATEGORIES`] of a function.
pub(crate) fn category(function: &str) -> usize {
    CATEGORIES
        .iter()
        .position(|(_, prefixes)| prefixes.iter().any(|p| function.starts_with(p)))
        .unwrap_or(CATEGORIES.len() - 1)
}

/// Every function's own instructions in a callgrind output file, per call
/// of a `calls`-call run, most first.
fn functions(file: &Path, calls: u64) -> Vec<(String, f64)> {
    let Ok(o) = Command::new("callgrind_annotate")
        .arg("--threshold=100")
        .arg(file)
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.contains("PROGRAM TOTALS"))
        .filter_map(|l| {
            let (count, rest) = l.trim().split_once(' ')?;
            let count: f64 = count.replace(',', "").parse().ok()?;
            let (_, function) = rest.split_once(")  ")?;
            let function = function.split(" [").next()?.trim_start_matches("???:");
            Some((function.to_owned(), count / calls as f64))
        })
        .collect()
}

/// Per call, by category.
fn by_category(functions: &[(String, f64)]) -> Vec<f64> {
    let mut out = vec![0.0; CATEGORIES.len()];
    for (f, n) in functions {
        out[category(f)] += n;
    }
    out
}

/// Instructions per call of every variant; `Err` when valgrind or the
/// bench binaries are missing.
pub(crate) fn run(root: &Path, work: &Path) -> Result<Vec<Count>, String> {
    if Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return Err("valgrind is not installed (`apt-get install valgrind`)".into());
    }
    let exes = bench_executables(root)?;
    let mut out = Vec::new();
    for (bench, var, calls_var, variant, label) in PROFILES {
        let exe = exes
            .iter()
            .find(|(name, _)| name == bench)
            .map(|(_, p)| p)
            .ok_or_else(|| format!("no executable for bench `{bench}`"))?;
        eprintln!("report: callgrind {bench} {variant}");
        let outfile = |n: u64| work.join(format!("callgrind.{n}.out"));
        let ir = |n: u64| -> Result<f64, String> {
            let outfile = outfile(n);
            let o = Command::new("valgrind")
                .arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", outfile.display()))
                .arg(exe)
                .arg("--bench")
                .env(var, variant)
                .env(calls_var, n.to_string())
                .stdout(Stdio::null())
                .output()
                .map_err(|e| format!("valgrind: {e}"))?;
            let stderr = String::from_utf8_lossy(&o.stderr);
            // The largest count: a child the binary forks (criterion asks
            // cargo for the target directory) reports its own, small one.
            stderr
                .lines()
                .filter_map(|l| {
                    l.split_once("Collected :")
                        .map(|(_, n)| n.trim().to_owned())
                })
                .filter_map(|n| n.parse::<f64>().ok())
                .reduce(f64::max)
                .ok_or_else(|| {
                    format!(
                        "no instruction count from callgrind for {bench} {variant}: {}",
                        stderr.lines().last().unwrap_or("")
                    )
                })
        };
        let one = ir(N)?;
        let two = ir(2 * N)?;
        // Each function's own instructions in the 2N run less the N run,
        // over N: one call, without the start-up.
        let shorter = functions(&outfile(N), 1);
        let mut all: Vec<(String, f64)> = functions(&outfile(2 * N), 1)
            .into_iter()
            .map(|(f, two)| {
                let one = shorter
                    .iter()
                    .find(|(g, _)| *g == f)
                    .map_or(0.0, |(_, n)| *n);
                (f, (two - one) / N as f64)
            })
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top = if DETAIL.contains(label) {
            all.iter()
                .filter(|(_, per_call)| *per_call >= 1.0)
                .take(12)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        out.push(Count {
            label,
            instructions: (two - one) / N as f64,
            top,
            by_category: by_category(&all),
        });
    }
    Ok(out)
}

/// (bench target name, executable) from `cargo bench --no-run`.
fn bench_executables(root: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let o = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "bench",
            "-q",
            "-p",
            "resilience-benches",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo bench --no-run: {e}"))?;
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_bench = v["reason"] == "compiler-artifact"
            && v["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|x| x == "bench"));
        if !is_bench {
            continue;
        }
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            out.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    Ok(out)
}
