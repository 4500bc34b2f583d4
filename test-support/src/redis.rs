//! A real Redis for tests and benches (feature `redis`).
//!
//! Like `EtcdServer`, [`RedisServer`] runs the real server
//! binary (`redis-server`, Debian's package of the same name) on a free
//! loopback port, without persistence, and kills it on drop.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{START_ATTEMPTS, find_binary, free_port, spawn_until_ready, stop, temp_dir};

/// A real Redis server (the `redis-server` binary) on a free loopback port,
/// with persistence off (`--save '' --appendonly no`) and its own temporary
/// directory. Killed, and its directory removed, on drop.
///
/// ```no_run
/// # async fn run() {
/// use resilience_test_support::RedisServer;
///
/// // `None` (after saying why) when redis-server is not installed.
/// let Some(redis) = RedisServer::start().await else { return };
/// println!("connect to {}", redis.url());
/// # }
/// ```
pub struct RedisServer {
    port: u16,
    url: String,
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

// === impl RedisServer ===

impl RedisServer {
    /// Starts Redis and waits until it answers `PING`.
    ///
    /// Returns `None`, after printing why, when no `redis-server` binary is
    /// found, unless [`REQUIRE_SERVERS`](crate::REQUIRE_SERVERS) is `1`: then a missing binary
    /// panics.
    ///
    /// # Panics
    ///
    /// When Redis cannot be spawned or does not answer within 20 seconds, or
    /// when the binary is missing and servers are required.
    pub async fn start() -> Option<Self> {
        let bin = find_binary("redis-server")?;
        let mut server = Self {
            port: 0,
            url: String::new(),
            bin,
            dir: temp_dir("redis"),
            child: None,
        };
        // A port free when checked can be taken before Redis binds it: then
        // Redis exits at once and another port is tried.
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            server.url = format!("redis://127.0.0.1:{}/", server.port);
            if server.spawn().await {
                return Some(server);
            }
        }
        panic!(
            "redis-server exited at start {START_ATTEMPTS} times (log: {})",
            server.dir.join("redis.log").display()
        );
    }

    /// The URL to connect to, `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port Redis listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL); [`restart`](Self::restart) starts it on
    /// the same port (empty: nothing is persisted).
    pub fn stop(&mut self) {
        stop(&mut self.child);
    }

    /// Freezes the server (SIGSTOP): it keeps its port and connections but
    /// answers nothing, as a hung or overloaded Redis would, until
    /// [`resume`](Self::resume).
    ///
    /// # Panics
    ///
    /// When the signal cannot be sent (no `kill` command).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a [`pause`](Self::pause)d server answer again (SIGCONT).
    ///
    /// # Panics
    ///
    /// When the signal cannot be sent (no `kill` command).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(sig)
                .arg(child.id().to_string())
                .status()
                .expect("kill runs");
            assert!(status.success(), "kill {sig} failed");
        }
    }

    /// Starts the server again on the same port and waits until it answers.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub async fn restart(&mut self) {
        self.stop();
        for _ in 0..START_ATTEMPTS {
            if self.spawn().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "redis-server could not listen on port {} again ({START_ATTEMPTS} attempts; log: {})",
            self.port,
            self.dir.join("redis.log").display()
        );
    }

    /// Spawns Redis and waits until it answers `PING`; `false` if it exited
    /// first (the port was taken).
    async fn spawn(&mut self) -> bool {
        let args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([self.dir.display().to_string()])
        .collect();
        let port = self.port;
        self.child = spawn_until_ready(
            "redis",
            &self.bin,
            &args,
            &self.dir,
            Duration::from_millis(20),
            || ping(port),
        )
        .await;
        self.child.is_some()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("url", &self.url)
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether Redis on `port` answers `PING` with `+PONG`.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(&buf == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}
