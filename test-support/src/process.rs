//! What the server harnesses share: finding a binary, free ports, temporary
//! directories, spawning a process until it serves.

use std::path::PathBuf;
#[cfg(any(feature = "etcd", feature = "redis", feature = "dns"))]
use std::process::Child;
#[cfg(any(feature = "etcd", feature = "redis"))]
use std::{
    future::Future,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, SystemTime},
};

/// How long a server may take to start before the test fails.
#[cfg(any(feature = "etcd", feature = "redis"))]
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a start is tried before a test fails.
#[cfg(any(feature = "etcd", feature = "redis", feature = "dns"))]
pub(crate) const START_ATTEMPTS: usize = 5;

/// The environment variable that turns a missing server binary into a test
/// failure instead of a skipped test (CI sets it to `1`).
pub const REQUIRE_SERVERS: &str = "RESILIENCE_REQUIRE_SERVERS";

/// Whether tests against real servers must run (see [`REQUIRE_SERVERS`]).
pub fn servers_required() -> bool {
    std::env::var(REQUIRE_SERVERS).is_ok_and(|v| v == "1")
}

/// Finds a server binary on `PATH` (or in `/usr/bin`, `/usr/sbin`,
/// `/sbin`); when it is missing, says why the test will not run, or panics
/// if servers are required.
///
/// # Panics
///
/// When the binary is missing and [`servers_required`].
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/bin".into(), "/usr/sbin".into(), "/sbin".into()])
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let package = match name {
            "etcd" => "etcd-server",
            "dnsmasq" => "dnsmasq-base",
            other => other,
        };
        assert!(
            !servers_required(),
            "{name} not found and {REQUIRE_SERVERS}=1 (on Debian: apt-get install {package})"
        );
        eprintln!("SKIPPED: {name} not found on PATH; install it to run this test");
    }
    found
}

#[cfg(any(feature = "etcd", feature = "redis"))]
/// A free loopback TCP port (free when asked; tests take that chance).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

#[cfg(any(feature = "etcd", feature = "redis"))]
/// A fresh directory under the system's temporary directory.
pub(crate) fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "resilience-{what}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

#[cfg(any(feature = "etcd", feature = "redis"))]
/// Starts `bin` with `args`, its output in `dir/<name>.log`, and polls
/// `ready` every `every` until it says yes: the child when it does, `None`
/// when the process exited first (a port was taken; try another). Real
/// time: the server is a real process, whatever the test's clock.
///
/// # Panics
///
/// When the process cannot be started, or is not ready within
/// [`START_TIMEOUT`].
pub(crate) async fn spawn_until_ready<F, Fut>(
    name: &str,
    bin: &Path,
    args: &[String],
    dir: &Path,
    every: Duration,
    mut ready: F,
) -> Option<Child>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).expect("a server log file");
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("a server log file"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
    let deadline = SystemTime::now() + START_TIMEOUT;
    while !ready().await {
        if child.try_wait().is_ok_and(|status| status.is_some()) {
            let _ = child.wait();
            return None;
        }
        if SystemTime::now() >= deadline {
            stop(&mut Some(child));
            panic!(
                "{name} was not ready within {START_TIMEOUT:?} (log: {})",
                log_path.display()
            );
        }
        tokio::time::sleep(every).await;
    }
    Some(child)
}

/// Kills and reaps the process, if any.
#[cfg(any(feature = "etcd", feature = "redis", feature = "dns"))]
pub(crate) fn stop(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
