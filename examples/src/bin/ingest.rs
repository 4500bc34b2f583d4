//! Reference service 3 on loopback: event ingestion with one bounded queue
//! per kind of operation. A scripted scenario, searches running throughout:
//! normal load; a bulk flood at five times bulk's capacity from a backfill
//! job that ignores `Retry-After`; the flood stops and everything drains; a
//! telemetry burst from devices that honour `Retry-After`. Each phase
//! prints, per kind, the requests served and refused and the peak queue
//! depth against capacity, the searches' p50/p99 latency, and a sample
//! refusal with its `Retry-After`.
//!
//! Run: `cargo run -p resilience-examples --bin ingest`

use std::time::Duration;

use resilience_core::BoxError;
use resilience_examples::ingest::{
    Demo, IngestSettings, Kind, QueueWatch, Reply, Source, SourceReport, SourceSettings,
};
use tokio::time::Instant;

/// Telemetry of the normal load, events/s.
const TELEMETRY_RATE: u32 = 100;
/// Searches, per second, in every phase.
const SEARCH_RATE: u32 = 50;
/// Gets, per second, in every phase.
const GET_RATE: u32 = 20;
/// Events per bulk request.
const BATCH: usize = 10;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The resilience crates at INFO: the queues' per-request DEBUG lines
    // would bury a flood's output; their INFO lines say when a queue
    // starts and stops standing.
    resilience_examples::init_logging_at("demo", tracing::Level::INFO);
    let settings = IngestSettings::DEMO;
    let demo = Demo::start(&settings).await?;
    println!("ingest on {}; one queue per kind:", demo.url);
    for kind in Kind::ALL {
        let k = settings.kind(kind);
        println!(
            "   {kind:<6} {} in service x {:>2} ms, {:>2} may wait: {:>3.0}/s at most, waits at most {} ms",
            k.concurrency,
            k.service_time.as_millis(),
            k.capacity,
            k.throughput(),
            settings.longest_wait(kind).as_millis()
        );
    }
    println!(
        "   latency goal {} ms: a kind waits at most the goal minus its service time; a request that would wait\n   longer, or finds the queue full, is answered 429 with Retry-After: {} s\n",
        settings.latency_goal.as_millis(),
        settings.retry_after.as_secs()
    );
    let watch = demo.ingest.watch(Duration::from_millis(1));
    let bulk_rate = settings.bulk.throughput() as u32;
    let index_rate = settings.index.throughput() as u32;
    // Searches and gets go on in every phase.
    let readers = || {
        [
            (
                "searches",
                demo.source(SourceSettings::searches(SEARCH_RATE)),
            ),
            ("gets", demo.source(SourceSettings::gets(GET_RATE))),
        ]
    };

    let phase = Phase::begin(
        &demo,
        &watch,
        &format!(
            "1. normal load, 1 s: telemetry {TELEMETRY_RATE} events/s, bulk {} batches/s of {BATCH}, searches {SEARCH_RATE}/s, gets {GET_RATE}/s",
            bulk_rate / 5
        ),
    );
    let writers = [
        (
            "telemetry",
            demo.source(SourceSettings::telemetry(TELEMETRY_RATE)),
        ),
        (
            "bulk",
            demo.source(SourceSettings::bulk(bulk_rate / 5, BATCH)),
        ),
    ];
    let readers_1 = readers();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut reports = stop_all(writers).await;
    reports.extend(stop_all(readers_1).await);
    phase.end(reports);

    let flood_rate = bulk_rate * 5;
    let phase = Phase::begin(
        &demo,
        &watch,
        &format!(
            "2. bulk flood, 1.5 s: a backfill job sends {flood_rate} batches/s (5x bulk's {bulk_rate}/s) and ignores Retry-After; the rest goes on"
        ),
    );
    let flood = demo.source(SourceSettings::bulk(flood_rate, BATCH).ignoring_retry_after());
    let telemetry = demo.source(SourceSettings::telemetry(TELEMETRY_RATE));
    let readers_2 = readers();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut reports = vec![("telemetry", telemetry.stop().await)];
    reports.extend(stop_all(readers_2).await);
    println!(
        "   the queues as the flood stops:\n{}",
        indent(&demo.ingest.queue_states())
    );
    let stopped = Instant::now();
    reports.insert(0, ("bulk flood", flood.stop().await));
    let drained = demo.ingest.wait_idle(Duration::from_secs(5)).await;
    let drain_time = stopped.elapsed();
    phase.end(reports);

    println!(
        "   searches keep their own slots and queue; what they share with the flood is the CPU\n   (client and server share this machine), which is what can move their p99\n"
    );
    println!("== 3. the flood stopped: everything drains");
    match drained {
        Some(_) => println!(
            "   idle {} ms after the flood stopped (the last batches waited at most {} ms for a slot)",
            drain_time.as_millis(),
            settings.longest_wait(Kind::Bulk).as_millis()
        ),
        None => println!("   not idle 5 s after the flood stopped"),
    }
    println!("{}", indent(&demo.ingest.queue_states()));

    let burst = index_rate * 3;
    let length = Duration::from_millis(1500);
    let phase = Phase::begin(
        &demo,
        &watch,
        &format!(
            "4. telemetry burst, 1.5 s: 40 devices send {burst} events/s (3x index's {index_rate}/s); a refused device waits out Retry-After"
        ),
    );
    let telemetry = demo.source(SourceSettings::telemetry(burst));
    let readers_4 = readers();
    tokio::time::sleep(length).await;
    let mut reports = vec![("telemetry", telemetry.stop().await)];
    reports.extend(stop_all(readers_4).await);
    let c = reports[0].1.counts;
    phase.end(reports);
    println!(
        "   the devices sent {} of {} events ({:.0}/s): backing off brought their load down to index's {index_rate}/s",
        c.sent,
        c.sent + c.deferred,
        c.sent as f64 / length.as_secs_f64()
    );
    Ok(())
}

/// Counters at the start of a phase.
struct Phase<'a> {
    demo: &'a Demo,
    watch: &'a QueueWatch,
    served: [u64; 4],
    refused: [u64; 4],
}

impl<'a> Phase<'a> {
    /// Prints the title and starts counting.
    fn begin(demo: &'a Demo, watch: &'a QueueWatch, title: &str) -> Self {
        println!("== {title}");
        watch.reset();
        Self {
            demo,
            watch,
            served: Kind::ALL.map(|k| demo.ingest.served(k)),
            refused: Kind::ALL.map(|k| demo.ingest.refused(k)),
        }
    }

    /// Prints what happened: per kind, then per source.
    fn end(self, reports: Vec<(&str, SourceReport)>) {
        let ingest = &self.demo.ingest;
        println!("   kind     served  refused  peak queued  peak in service");
        let peaks = self.watch.peaks();
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            let s = ingest.queue(kind).snapshot();
            println!(
                "   {kind:<6} {:>8} {:>8} {:>8}/{:<3} {:>12}/{}",
                ingest.served(kind) - self.served[i],
                ingest.refused(kind) - self.refused[i],
                peaks[i].queued,
                s.capacity,
                peaks[i].in_service,
                s.limit
            );
        }
        let mut sample: Option<Reply> = None;
        for (name, report) in &reports {
            let c = report.counts;
            println!(
                "   {name}: {} sent, {} accepted, {} refused, {} deferred (backing off), {} errors",
                c.sent, c.accepted, c.rejected, c.deferred, c.errors
            );
            if *name == "searches" {
                println!("      search latency: {}", report.accepted);
            } else if !report.rejected.is_empty() {
                println!("      refusals answered in: {}", report.rejected);
            }
            if sample.is_none() {
                sample.clone_from(&report.first_rejection);
            }
        }
        if let Some(r) = sample {
            println!(
                "   sample refusal: {} {}, Retry-After: {} s, x-correlation-id: {}, {:?}, in {:.1} ms",
                r.status.as_u16(),
                r.status.canonical_reason().unwrap_or(""),
                r.retry_after.map_or(0, |d| d.as_secs()),
                r.correlation_id.as_deref().unwrap_or("-"),
                r.body.trim_end(),
                r.elapsed.as_secs_f64() * 1e3
            );
        }
        println!();
    }
}

/// Stops every source (each waits for its requests in flight).
async fn stop_all<const N: usize>(
    sources: [(&'static str, Source); N],
) -> Vec<(&'static str, SourceReport)> {
    let mut reports = Vec::with_capacity(N);
    for (name, source) in sources {
        reports.push((name, source.stop().await));
    }
    reports
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   | {l}\n")).collect()
}
