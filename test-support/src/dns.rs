//! A real DNS server for tests (feature `dns`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::process::{START_ATTEMPTS, find_binary, stop};

/// A real DNS server (Debian's `dnsmasq`, package `dnsmasq-base`) answering
/// on a free loopback port, UDP and TCP, with only the records it is given
/// (no `/etc/hosts`, no upstream). Killed on drop.
///
/// ```no_run
/// # async fn run() {
/// use resilience_test_support::DnsServer;
///
/// let records = ["--srv-host=_http._tcp.svc.test,127.0.0.1,8080".to_owned()];
/// // `None` (after saying why) when dnsmasq is not installed.
/// let Some(dns) = DnsServer::start(1, &records).await else { return };
/// println!("ask {}", dns.addr());
/// # }
/// ```
pub struct DnsServer {
    addr: SocketAddr,
    bin: PathBuf,
    child: Option<Child>,
}

// === impl DnsServer ===

impl DnsServer {
    /// Starts dnsmasq with `records` (dnsmasq options such as
    /// `--srv-host=...` or `--host-record=...`), answering with a TTL of
    /// `ttl` seconds, and waits until it answers.
    ///
    /// Returns `None`, after printing why, when no `dnsmasq` binary is
    /// found, unless [`REQUIRE_SERVERS`](crate::REQUIRE_SERVERS) is `1`: then
    /// a missing binary panics.
    ///
    /// # Panics
    ///
    /// When dnsmasq cannot be spawned or does not answer within 10 seconds,
    /// or when the binary is missing and servers are required.
    pub async fn start(ttl: u32, records: &[String]) -> Option<Self> {
        let bin = find_binary("dnsmasq")?;
        let mut dns = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            bin,
            child: None,
        };
        // A port free when checked can be taken before dnsmasq binds it:
        // then dnsmasq exits at once and another port is tried.
        for _ in 0..START_ATTEMPTS {
            dns.addr.set_port(free_dns_port());
            if dns.spawn(ttl, records).await {
                return Some(dns);
            }
        }
        panic!("dnsmasq exited at start {START_ATTEMPTS} times");
    }

    /// The address it answers on (`127.0.0.1:PORT`, UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the server (SIGKILL); [`restart`](Self::restart) starts it
    /// again on the same port.
    pub fn stop(&mut self) {
        stop(&mut self.child);
    }

    /// Starts the server again on the same port with other records.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub async fn restart(&mut self, ttl: u32, records: &[String]) {
        self.stop();
        for _ in 0..START_ATTEMPTS {
            if self.spawn(ttl, records).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "dnsmasq could not listen on {} again ({START_ATTEMPTS} attempts)",
            self.addr
        );
    }

    /// Spawns dnsmasq and waits until it answers; `false` if it exited
    /// first (its port was taken).
    async fn spawn(&mut self, ttl: u32, records: &[String]) -> bool {
        let child = Command::new(&self.bin)
            .arg("--no-daemon")
            .arg("--conf-file=/dev/null")
            .arg(format!("--port={}", self.addr.port()))
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--pid-file=")
            .arg(format!("--local-ttl={ttl}"))
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("dnsmasq does not start: {e}"));
        self.child = Some(child);
        let limit = Duration::from_secs(10);
        let start = SystemTime::now();
        loop {
            if self.answers().await {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().is_ok_and(|s| s.is_some()));
            if exited {
                self.stop();
                return false;
            }
            if start.elapsed().unwrap_or_default() >= limit {
                self.stop();
                panic!("timed out after {limit:?} waiting for dnsmasq to answer");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it answers a query on UDP.
    async fn answers(&self) -> bool {
        let Ok(sock) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
            return false;
        };
        // A query for `. NS` is enough to see an answer.
        let q = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
        if sock.send_to(&q, self.addr).await.is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

/// A loopback port free for both UDP and TCP (a DNS server listens on
/// both): a client connection's local port blocks the TCP listener.
fn free_dns_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free loopback UDP port");
        let port = udp.local_addr().expect("a bound UDP socket").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
