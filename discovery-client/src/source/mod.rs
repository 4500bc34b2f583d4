//! Endpoint sources: streams of [`Change`]s.
//!
//! - [`StaticSource`]: a fixed list.
//! - [`FileSource`] (feature `file`): a TOML or JSON file, reloaded when it
//!   changes.
//! - [`DnsSource`] (feature `dns`): A/AAAA for `host:port`, or SRV
//!   (`_service._proto.name`, priority and weight honoured), re-resolved at
//!   the record TTL within configured bounds.
//! - [`EtcdSource`] (feature `etcd`): a watched key prefix in etcd v3.
//!
//! Every source that reads a registry survives it failing: on an error
//! (unreachable, slow, garbage) it keeps the last good endpoint set, logs,
//! counts `resilience_discovery_source_errors_total`, and retries with
//! exponential backoff and jitter. [`SourceHealth`] tells how stale the set
//! is. An invalid entry is skipped alone, never the whole update.
//!
//! Any source also works as a [`tower::discover::Discover`] through
//! [`discover`], e.g. for tower's p2c `Balance`.

#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "file")]
mod file;
mod status;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use resilience_core::BoxError;
use tokio::sync::mpsc;

#[cfg(feature = "dns")]
#[cfg_attr(docsrs, doc(cfg(feature = "dns")))]
pub use self::dns::{DnsSource, DnsSourceConfig, DnsSourceConfigBuilder};
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use self::etcd::{EtcdConfig, EtcdConfigBuilder, EtcdSource, Registration};
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub use self::file::{FileSource, FileSourceConfig, FileSourceConfigBuilder};
pub use self::status::SourceHealth;

/// The old name of [`SourceHealth`] (distinct from the flag sources' status
/// snapshot).
#[deprecated(since = "0.1.0", note = "use `SourceHealth`")]
pub type SourceStatus = SourceHealth;

use crate::endpoint::{Change, Endpoint, MakeEndpoint, diff};

/// A fixed list of endpoints, as a source: yields one insert per endpoint,
/// then ends.
#[derive(Debug, Clone)]
pub struct StaticSource {
    endpoints: std::vec::IntoIter<Endpoint>,
}

/// The stream of changes of a registry-backed source, fed by a task.
///
/// Dropping it stops the task.
pub struct SourceStream {
    rx: mpsc::UnboundedReceiver<Change>,
    status: SourceHealth,
}

/// Any source as a [`tower::discover::Discover`]: each inserted endpoint
/// becomes a service made by the maker, keyed by its address.
pub struct Discovered<St, S> {
    source: St,
    maker: Arc<dyn Fn(&Endpoint) -> S + Send + Sync>,
}

/// Turns a source into a [`tower::discover::Discover`] of services made by
/// `maker` (see [`MakeEndpoint`]).
pub fn discover<St, S, M, Args>(source: St, maker: M) -> Discovered<St, S>
where
    St: Stream<Item = Change> + Unpin,
    M: MakeEndpoint<Args, Service = S> + Send + Sync + 'static,
{
    Discovered {
        source,
        maker: Arc::new(move |ep: &Endpoint| maker.make_endpoint(ep)),
    }
}

/// Exponential backoff with jitter between retries of a failing registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

// === impl StaticSource ===

impl StaticSource {
    /// A source of `endpoints`.
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        Self {
            endpoints: endpoints.into_iter().collect::<Vec<_>>().into_iter(),
        }
    }
}

impl Stream for StaticSource {
    type Item = Change;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Change>> {
        Poll::Ready(self.endpoints.next().map(Change::Insert))
    }
}

// === impl SourceStream ===

impl SourceStream {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<Change>, status: SourceHealth) -> Self {
        Self { rx, status }
    }

    /// The source's health: staleness, errors; a live view that follows
    /// the source (cheap to clone).
    pub fn health(&self) -> SourceHealth {
        self.status.clone()
    }

    /// The source's health.
    #[deprecated(since = "0.1.0", note = "use `SourceStream::health`")]
    pub fn status(&self) -> SourceHealth {
        self.health()
    }
}

impl Stream for SourceStream {
    type Item = Change;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Change>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for SourceStream {
    fn drop(&mut self) {
        self.status.stop();
    }
}

impl fmt::Debug for SourceStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceStream")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

// === impl Discovered ===

impl<St, S> Stream for Discovered<St, S>
where
    St: Stream<Item = Change> + Unpin,
{
    type Item = Result<tower::discover::Change<SocketAddr, S>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        Pin::new(&mut this.source).poll_next(cx).map(|c| {
            c.map(|c| {
                Ok(match c {
                    Change::Insert(ep) => {
                        tower::discover::Change::Insert(ep.addr(), (this.maker)(&ep))
                    }
                    Change::Remove(addr) => tower::discover::Change::Remove(addr),
                })
            })
        })
    }
}

impl<St, S> fmt::Debug for Discovered<St, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovered").finish_non_exhaustive()
    }
}

// === impl Backoff ===

impl Backoff {
    /// The first retry delay: `500ms`.
    pub const DEFAULT_INITIAL: Duration = Duration::from_millis(500);
    /// The longest retry delay: `30s`.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(30);

    /// Delays from `initial`, doubling up to `max`, each with full jitter in
    /// its upper half (a delay of `d` sleeps between `d/2` and `d`).
    ///
    /// # Errors
    /// - `initial` is zero or `max` is shorter than `initial`
    /// - `max` is longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days)
    pub fn new(initial: Duration, max: Duration) -> Result<Self, resilience_core::ConfigError> {
        if initial.is_zero() {
            return Err(resilience_core::ConfigError::new(
                "backoff",
                "initial delay must be greater than zero",
            ));
        }
        if max < initial {
            return Err(resilience_core::ConfigError::new(
                "backoff",
                "max delay must be at least the initial delay",
            ));
        }
        resilience_core::config::validate_duration("backoff", max)?;
        Ok(Self { initial, max })
    }

    /// The delay before retry number `attempt` (0-based), jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        use rand::Rng;
        let d = self
            .initial
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        let half = d / 2;
        half + half.mul_f64(rand::rng().random::<f64>())
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Self::DEFAULT_INITIAL,
            max: Self::DEFAULT_MAX,
        }
    }
}

/// Keeps the last set emitted and turns new full sets into changes.
#[derive(Debug, Default)]
pub(crate) struct Emitter {
    current: BTreeMap<SocketAddr, Endpoint>,
}

impl Emitter {
    /// Sends the changes from the last set to `set`; `false` once nobody
    /// listens.
    pub(crate) fn emit(
        &mut self,
        tx: &mpsc::UnboundedSender<Change>,
        set: impl IntoIterator<Item = Endpoint>,
    ) -> bool {
        let new: BTreeMap<_, _> = set.into_iter().map(|e| (e.addr(), e)).collect();
        for change in diff(&self.current, &new) {
            if tx.send(change).is_err() {
                return false;
            }
        }
        self.current = new;
        !tx.is_closed()
    }
}

/// A source that reads the whole set each time (file, DNS).
#[cfg_attr(not(any(feature = "file", feature = "dns")), allow(dead_code))]
pub(crate) trait FetchSet: Send + 'static {
    /// Reads the set: the endpoints and when to read again.
    fn fetch(
        &mut self,
        status: &SourceHealth,
    ) -> impl std::future::Future<Output = Result<(Vec<Endpoint>, Duration), BoxError>> + Send;
}

/// Spawns the loop of a polling source.
#[cfg_attr(not(any(feature = "file", feature = "dns")), allow(dead_code))]
pub(crate) fn spawn_polling<P: FetchSet>(
    mut poller: P,
    status: SourceHealth,
    backoff: Backoff,
) -> SourceStream {
    let (tx, rx) = mpsc::unbounded_channel();
    let st = status.clone();
    let task = tokio::spawn(async move {
        let mut emitter = Emitter::default();
        let mut attempt = 0u32;
        loop {
            let delay = match poller.fetch(&st).await {
                Ok((endpoints, next)) => {
                    attempt = 0;
                    st.good();
                    if !emitter.emit(&tx, endpoints) {
                        return;
                    }
                    next
                }
                Err(err) => {
                    st.error(&*err);
                    let d = backoff.delay(attempt);
                    attempt = attempt.saturating_add(1);
                    d
                }
            };
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(delay).await;
        }
    });
    status.set_task(task.abort_handle());
    SourceStream::new(rx, status)
}

/// Reads one endpoint entry: `{"address": "ip:port", "weight": 2,
/// "metadata": {"zone": "a"}}` (weight and metadata optional; metadata
/// values that are not strings are kept as JSON text).
#[cfg(any(feature = "file", feature = "etcd"))]
pub(crate) fn parse_entry(value: &serde_json::Value) -> Result<Endpoint, String> {
    let obj = value.as_object().ok_or("entry is not an object")?;
    let address = obj
        .get("address")
        .and_then(|a| a.as_str())
        .ok_or("entry has no \"address\" string")?;
    let addr: SocketAddr = address
        .trim()
        .parse()
        .map_err(|e| format!("invalid address {address:?}: {e}"))?;
    let mut ep = Endpoint::new(addr);
    match obj.get("weight") {
        None | Some(serde_json::Value::Null) => {}
        Some(w) => {
            let w = w
                .as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .ok_or("\"weight\" is not a non-negative integer")?;
            ep = ep.with_weight(w);
        }
    }
    match obj.get("metadata") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(m)) => {
            for (k, v) in m {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                ep = ep.with_metadata(k.clone(), v);
            }
        }
        Some(_) => return Err("\"metadata\" is not an object".into()),
    }
    Ok(ep)
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn backoff_validates_its_delays() {
        let s = Duration::from_secs;
        assert!(Backoff::new(s(1), s(30)).is_ok());
        assert!(Backoff::new(Duration::ZERO, s(30)).is_err());
        assert!(Backoff::new(s(2), s(1)).is_err());
        let max = resilience_core::config::MAX_DURATION;
        assert!(Backoff::new(s(1), max).is_ok());
        let err = Backoff::new(
            s(1),
            resilience_core::config::MAX_DURATION + Duration::from_nanos(1),
        )
        .unwrap_err();
        assert_eq!(err.field(), "backoff");
        assert!(Backoff::new(Duration::MAX, Duration::MAX).is_err());
    }
}

#[cfg(all(test, any(feature = "file", feature = "etcd")))]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_and_rejects_bad_ones() {
        let ok = serde_json::json!({"address": "127.0.0.1:80", "weight": 3, "metadata": {"zone": "a", "n": 1}});
        let ep = parse_entry(&ok).unwrap();
        assert_eq!(ep.addr(), "127.0.0.1:80".parse().unwrap());
        assert_eq!(ep.weight(), 3);
        assert_eq!(ep.metadata()["zone"], "a");
        assert_eq!(ep.metadata()["n"], "1");
        for bad in [
            serde_json::json!("127.0.0.1:80"),
            serde_json::json!({}),
            serde_json::json!({"address": "not an address"}),
            serde_json::json!({"address": "example.com:80"}),
            serde_json::json!({"address": "127.0.0.1:80", "weight": -1}),
            serde_json::json!({"address": "127.0.0.1:80", "metadata": []}),
        ] {
            assert!(parse_entry(&bad).is_err(), "{bad}");
        }
    }
}
