//! A real etcd for tests (feature `etcd`).

use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use resilience_core::etcd::EtcdClient;

use crate::process::{START_ATTEMPTS, find_binary, free_port, spawn_until_ready, stop, temp_dir};

/// A real etcd server (the `etcd` binary, 3.4 or later) on free loopback
/// ports with its own temporary data directory, for testing code that reads
/// or writes etcd. Killed, and its directory removed, on drop.
///
/// ```no_run
/// # async fn run() {
/// use resilience_test_support::EtcdServer;
///
/// // `None` (after saying why) when etcd is not installed.
/// let Some(etcd) = EtcdServer::start().await else { return };
/// etcd.client().put("/flags/a", b"{}", 0).await.unwrap();
/// let (_, kvs) = etcd.client().range_prefix("/flags/").await.unwrap();
/// assert_eq!(kvs.len(), 1);
/// # }
/// ```
pub struct EtcdServer {
    url: String,
    bin: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
    client: EtcdClient,
}

impl EtcdServer {
    /// Starts etcd and waits until it serves.
    ///
    /// Returns `None`, after printing why, when no `etcd` binary is found
    /// on `PATH` (or in `/usr/bin`, `/usr/sbin`), unless [`REQUIRE_SERVERS`](crate::REQUIRE_SERVERS)
    /// is `1`: then a missing binary panics, so that a test against a real
    /// server cannot pass without running.
    ///
    /// # Panics
    ///
    /// When etcd cannot be spawned or does not serve within 20 seconds, or
    /// when the binary is missing and servers are required.
    pub async fn start() -> Option<Self> {
        let bin = find_binary("etcd")?;
        let dir = temp_dir("etcd");
        let mut server = Self {
            url: String::new(),
            bin,
            args: Vec::new(),
            dir,
            child: None,
            client: EtcdClient::new(vec![], Duration::from_secs(2)),
        };
        // A port free when checked can be taken before etcd binds it: then
        // etcd exits at once, and another pair of ports is tried.
        for _ in 0..START_ATTEMPTS {
            server.choose_ports();
            if server.spawn().await {
                return Some(server);
            }
        }
        panic!(
            "etcd exited at start {START_ATTEMPTS} times (log: {})",
            server.dir.join("etcd.log").display()
        );
    }

    /// Picks free client and peer ports and the arguments that use them.
    fn choose_ports(&mut self) {
        let (client_port, peer_port) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        self.args = vec![
            "--name=test".to_owned(),
            // A fresh data directory per pair: etcd remembers its peer URL.
            format!(
                "--data-dir={}",
                self.dir.join(format!("data-{client_port}")).display()
            ),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=test={peer_url}"),
        ];
        self.client = EtcdClient::new(vec![url.clone()], Duration::from_secs(2));
        self.url = url;
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client of this server.
    pub fn client(&self) -> &EtcdClient {
        &self.client
    }

    /// Kills the server (SIGKILL), keeping its data and ports for
    /// [`restart`](Self::restart).
    pub fn stop(&mut self) {
        stop(&mut self.child);
    }

    /// Starts the server again on the same ports and data, and waits until
    /// it serves.
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
            "etcd could not listen on {} again ({START_ATTEMPTS} attempts; log: {})",
            self.url,
            self.dir.join("etcd.log").display()
        );
    }

    /// Spawns etcd and waits until it serves; `false` if it exited first
    /// (a port was taken).
    async fn spawn(&mut self) -> bool {
        let client = self.client.clone();
        self.child = spawn_until_ready(
            "etcd",
            &self.bin,
            &self.args,
            &self.dir,
            Duration::from_millis(50),
            || {
                let client = client.clone();
                async move { client.range_prefix("/").await.is_ok() }
            },
        )
        .await;
        self.child.is_some()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl std::fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdServer")
            .field("url", &self.url)
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}
