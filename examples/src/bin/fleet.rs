//! Three instances sharing one Redis-backed rate limit, restarted one at a
//! time through an etcd lock; prints what each admitted against its fair
//! share of the limit and who held the lock when.
//!
//! Run: `cargo run -p resilience-examples --bin fleet -- --redis
//! redis://127.0.0.1:6379/ --etcd http://127.0.0.1:2379`

use std::time::Duration;

use resilience_examples::fleet::{FleetSettings, run};

const USAGE: &str = "\
usage: fleet --redis URL --etcd URL [--limit N] [--seconds S]
  --redis URL    the Redis every instance shares (e.g. redis://127.0.0.1:6379/)
  --etcd URL     the etcd of the registry and the restart lock (e.g. http://127.0.0.1:2379)
  --limit N      the fleet's limit, requests per second (default 100)
  --seconds S    how long the client offers 3x the limit (default 8)";

fn parse(args: impl Iterator<Item = String>) -> Result<FleetSettings, String> {
    let (mut redis, mut etcd, mut limit, mut seconds) = (None, None, 100u64, 8u64);
    let mut args = args;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--redis" => {
                let v = value("--redis")?;
                if !v.starts_with("redis://") {
                    return Err(format!("--redis: {v:?} is not a redis:// URL"));
                }
                redis = Some(v);
            }
            "--etcd" => {
                let v = value("--etcd")?;
                if !v.starts_with("http://") {
                    return Err(format!("--etcd: {v:?} is not an http:// URL"));
                }
                etcd = Some(v);
            }
            "--limit" => {
                limit = value("--limit")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or("--limit: a number from 1 to 100000")?;
            }
            "--seconds" => {
                seconds = value("--seconds")?
                    .parse()
                    .ok()
                    .filter(|n| (3..=600).contains(n))
                    .ok_or("--seconds: a number from 3 to 600")?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(FleetSettings {
        redis: redis.ok_or("missing --redis URL (a Redis all instances share)")?,
        etcd: etcd.ok_or("missing --etcd URL (the registry and the restart lock)")?,
        limit,
        duration: Duration::from_secs(seconds),
    })
}

#[tokio::main]
async fn main() {
    let settings = match parse(std::env::args().skip(1)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fleet: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    resilience_examples::init_logging_at("fleet", tracing::Level::INFO);
    match run(settings).await {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("fleet: {e}");
            std::process::exit(1);
        }
    }
}
