//! What the real-server test harnesses share (features `etcd-server`,
//! `redis-server`): finding a binary, free ports, temporary directories.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

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

/// A free loopback TCP port (free when asked; tests take that chance).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

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
