//! Attempts: which try of a request this is, and which endpoints the earlier
//! tries went to.
//!
//! A retry (or a hedge) sends the same request more than once. The layer
//! that retries and the balancer that picks an endpoint must agree on two
//! things without depending on each other: the attempt number (`1` for the
//! first try) and the endpoints the request already tried, so that a retry
//! goes to another instance when there is one (Envoy's "previous hosts"
//! rule). An [`Attempt`] carries both in request extensions:
//!
//! - a retry layer puts [`Attempt::next`] in each retry's extensions; each
//!   is a copy of the request (the balancer takes the request it is given),
//!   so
//! - the record of tried endpoints is shared: every [`Attempt`] made from
//!   the same first one by [`next`](Attempt::next) or `clone` reads and
//!   writes the same record, and draws its number from one counter, so
//!   that no two tries of a request carry the same number (a retry layer
//!   and a hedge layer below it included);
//! - the balancer reads the record to avoid those endpoints, and records the
//!   endpoint it picked ([`Attempt::record`]), so the next try knows it.
//!
//! # The first try
//!
//! Most requests succeed at once, and a record made for them would be
//! thrown away: the first try of a request need not carry one. Instead, a
//! layer that may send a request again calls the layer below inside
//! [`observe_first_try`]; a balancer that gets a request without an
//! [`Attempt`] reports its pick with [`report_first_pick`], and a layer
//! below that makes a record for the first try (a hedge layer) reports it
//! with [`report_first_attempt`]. Both land in a per-thread slot that the
//! observer reads when the call returns: no allocation, no lock. The retry
//! then starts its record from what was reported (the first try's
//! endpoint, or the record made below), so the second try avoids the first
//! endpoint and takes the next number.
//!
//! The slot only sees what happens during the synchronous `call`: a layer
//! between the two that calls the balancer later (tower's `Buffer`, a
//! spawned task, a throttle that holds a call back) hides the pick, and
//! [`observe_first_try`] reports nothing. The first endpoint is then
//! unknown to the second try (a round robin's turn still moves it on, but
//! it may land on the endpoint that failed). A layer that finds this out
//! (a retry whose later try was recorded by a balancer although its first
//! try reported nothing) should put an [`Attempt::first`] on its first
//! tries from then on, as `resilience-retry`'s layers do.
//!
//! The record keeps the [`Attempt::MAX_TRIED`] most recent endpoints (the
//! oldest is dropped first). Endpoints are named by their address.
//!
//! On the wire the number travels in [`ATTEMPT_HEADER`] (`x-attempt`, the
//! attempt number) and, over gRPC, in [`GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER`]
//! (`grpc-previous-rpc-attempts`, the number of earlier attempts, sent on
//! retries only, as gRPC's A6 retry design says). The record of endpoints
//! never leaves the process.
//!
//! # Example
//!
//! ```
//! use resilience_core::attempt::{self, Attempt, ATTEMPT_HEADER};
//!
//! let a: std::net::SocketAddr = "10.0.0.1:8080".parse().unwrap();
//!
//! // The retry layer: the first try carries no attempt; the layer watches
//! // the call...
//! let req = http::Request::new(());
//! let ((), seen) = attempt::observe_first_try(|| {
//!     // ...the balancer below: no attempt on the request, so it reports
//!     // its pick.
//!     assert!(Attempt::from_extensions(req.extensions()).is_none());
//!     attempt::report_first_pick(a);
//! });
//! assert_eq!(seen.endpoint(), Some(a));
//!
//! // The retry layer again: the second try starts the record and sees
//! // where the first went.
//! let second = seen.into_second();
//! assert_eq!(second.number(), 2);
//! assert!(second.tried().contains(a));
//!
//! let mut headers = http::HeaderMap::new();
//! second.write_headers(&mut headers, true);
//! assert_eq!(headers[ATTEMPT_HEADER], "2");
//! assert_eq!(headers["grpc-previous-rpc-attempts"], "1");
//! assert_eq!(Attempt::number_from_headers(&headers), Some(2));
//!
//! // Every try after that takes the next number of the same record.
//! assert_eq!(second.next().number(), 3);
//! assert_eq!(second.next().number(), 4);
//! ```
//!
//! # Costs
//!
//! - [`observe_first_try`]: two accesses to a per-thread cell around the
//!   call; [`report_first_pick`]: one. No allocation, no lock.
//! - [`Attempt::first`]: one allocation (the shared record, about 300
//!   bytes). [`Attempt::next`] and `clone`: a reference count increment
//!   (and an atomic add for `next`), no allocation. (Putting it in request
//!   extensions is `http`'s insert: a box for the value, and the map
//!   itself if the request had none.)
//! - Reading: [`Attempt::from_extensions`] is one extension lookup
//!   (a null check when the request has no extensions at all).
//! - [`Attempt::record`], [`Attempt::record_if_new`], [`Attempt::tried`]:
//!   one short, uncontended lock each (hedged tries of one request may
//!   share it; nothing else does), no allocation; [`Attempt::tried`]
//!   copies at most [`Attempt::MAX_TRIED`] addresses out.
//! - [`Attempt::write_headers`]: no allocation of a value for attempts 1
//!   to 10 (static header values), one above.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The HTTP header (and gRPC metadata key) that carries the attempt number:
/// `1` for the first try, `2` for the first retry, ...
pub const ATTEMPT_HEADER: HeaderName = HeaderName::from_static("x-attempt");
/// The gRPC header that carries the number of earlier attempts (gRPC's A6
/// retry design): `1` on the first retry; absent on the first try.
pub const GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER: HeaderName =
    HeaderName::from_static("grpc-previous-rpc-attempts");

/// Which try of a request this is, and the endpoints its earlier tries (or
/// concurrent hedges) went to.
///
/// Put it in a request's extensions; see the [module documentation](self)
/// for who writes and reads it, and what it costs.
///
/// Cloning shares the record of tried endpoints (and keeps the number).
#[derive(Clone)]
pub struct Attempt {
    number: u32,
    record: Arc<Record>,
}

/// A copy of the endpoints an [`Attempt`]'s request tried, oldest first;
/// from [`Attempt::tried`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TriedEndpoints {
    addrs: [SocketAddr; Attempt::MAX_TRIED],
    len: u8,
}

/// Finds a request's [`Attempt`]: how a balancer reads it.
///
/// Implemented by [`AttemptFromExtensions`] (for `http::Request<B>`) and
/// [`IgnoreAttempt`] (any request: none). Implement it for a request type
/// of your own that carries an attempt.
pub trait ReadAttempt<Req> {
    /// The request's attempt, if it carries one.
    fn read_attempt<'r>(&self, req: &'r Req) -> Option<&'r Attempt>;

    /// Whether the balancer should report its pick for a request without
    /// an attempt ([`report_first_pick`]), so that a retry of it avoids
    /// that endpoint: `true` but for [`IgnoreAttempt`].
    #[inline]
    fn reports_first_pick(&self) -> bool {
        true
    }
}

/// Reads the [`Attempt`] from `http::Request` extensions, where a retry
/// layer puts it; one extension lookup per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptFromExtensions;

/// Reads no [`Attempt`], from any request: costs nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreAttempt;

/// What the layers below reported about a first try during
/// [`observe_first_try`]: the endpoint a balancer picked for it, or the
/// [`Attempt`] a layer below made for it, or nothing.
#[derive(Debug, Clone, Default)]
pub struct FirstTryReport {
    endpoint: Option<SocketAddr>,
    attempt: Option<Attempt>,
}

/// The record shared by every [`Attempt`] of one request.
struct Record {
    tried: Mutex<TriedEndpoints>,
    /// The highest attempt number given out.
    issued: AtomicU32,
}

/// The per-thread slot of [`observe_first_try`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// Nobody is watching: reports are dropped.
    Off,
    /// Watching, nothing reported yet.
    On,
    /// A balancer reported this pick.
    Picked(SocketAddr),
    /// A layer reported an attempt (in [`REPORTED`]).
    Attempt,
}

thread_local! {
    static WATCH: Cell<Watch> = const { Cell::new(Watch::Off) };
    static REPORTED: RefCell<Option<Attempt>> = const { RefCell::new(None) };
}

// === impl Attempt ===

impl Attempt {
    /// How many tried endpoints the record keeps: `8`. When a ninth is
    /// recorded, the oldest is dropped.
    pub const MAX_TRIED: usize = 8;
    /// The largest attempt number accepted from the network: `1000`.
    /// Larger values are ignored by [`Attempt::number_from_headers`].
    pub const MAX_NUMBER_FROM_HEADERS: u32 = 1000;

    /// The first try of a request: number `1`, nothing tried yet. One
    /// allocation (the shared record).
    pub fn first() -> Self {
        Self {
            number: 1,
            record: Arc::new(Record {
                tried: Mutex::new(TriedEndpoints::EMPTY),
                issued: AtomicU32::new(1),
            }),
        }
    }

    /// The attempt number: `1` for the first try.
    pub const fn number(&self) -> u32 {
        self.number
    }

    /// How many attempts came before this one: `0` for the first try (the
    /// value of `grpc-previous-rpc-attempts`).
    pub const fn previous_attempts(&self) -> u32 {
        self.number.saturating_sub(1)
    }

    /// Whether this is a retry or a hedge (number above `1`).
    pub const fn is_retry(&self) -> bool {
        self.number > 1
    }

    /// Another try of the same request: the next number not yet given to
    /// any try sharing this record (the first retry after
    /// [`Attempt::first`] is `2`; a retry layer and a hedge layer drawing
    /// on one record never give two tries the same number; saturates at
    /// `u32::MAX`), the same record of tried endpoints. No allocation.
    #[must_use]
    pub fn next(&self) -> Self {
        let issued = self
            .record
            .issued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(1))
            })
            .unwrap_or_else(|n| n);
        Self {
            number: issued.saturating_add(1),
            record: self.record.clone(),
        }
    }

    /// Records that this request went to `endpoint`. An endpoint already in
    /// the record becomes its most recent; when the record is full, the
    /// oldest endpoint is dropped.
    pub fn record(&self, endpoint: SocketAddr) {
        self.lock().push(endpoint);
    }

    /// Records `endpoint` unless the request already tried it, in one lock;
    /// returns whether it was new. A balancer calls this with its pick and,
    /// on `false`, looks for another endpoint.
    pub fn record_if_new(&self, endpoint: SocketAddr) -> bool {
        let mut tried = self.lock();
        if tried.contains(endpoint) {
            return false;
        }
        tried.push(endpoint);
        true
    }

    /// The endpoints tried so far (by every attempt sharing the record),
    /// oldest first.
    pub fn tried(&self) -> TriedEndpoints {
        *self.lock()
    }

    /// Whether `self` and `other` share one record of tried endpoints: they
    /// are tries of one request.
    pub fn same_request(&self, other: &Attempt) -> bool {
        Arc::ptr_eq(&self.record, &other.record)
    }

    /// Reads the attempt from request extensions.
    pub fn from_extensions(ext: &http::Extensions) -> Option<&Attempt> {
        ext.get::<Attempt>()
    }

    /// Writes the attempt number into `headers`: [`ATTEMPT_HEADER`] always;
    /// when `grpc` is set, [`GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER`] too on a
    /// retry, and none on the first try (any such header already there is
    /// removed).
    pub fn write_headers(&self, headers: &mut HeaderMap, grpc: bool) {
        headers.insert(ATTEMPT_HEADER, number_value(self.number));
        if grpc {
            if self.is_retry() {
                headers.insert(
                    GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER,
                    number_value(self.previous_attempts()),
                );
            } else {
                headers.remove(GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER);
            }
        }
    }

    /// Reads an inbound attempt number (for logs and spans: a server has no
    /// use for a caller's tried endpoints): `grpc-previous-rpc-attempts`
    /// plus one if present, else `x-attempt`.
    ///
    /// Values from the network are checked: anything but ASCII digits, an
    /// `x-attempt` of `0`, or a number above
    /// [`Attempt::MAX_NUMBER_FROM_HEADERS`] is ignored (`None`, logged at
    /// debug), never a panic.
    pub fn number_from_headers(headers: &HeaderMap) -> Option<u32> {
        let (name, number) = if let Some(v) = headers.get(GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER) {
            (
                "grpc-previous-rpc-attempts",
                parse_number(v.as_bytes()).map(|n| n.saturating_add(1)),
            )
        } else if let Some(v) = headers.get(ATTEMPT_HEADER) {
            ("x-attempt", parse_number(v.as_bytes()).filter(|n| *n >= 1))
        } else {
            return None;
        };
        let number = number.filter(|n| *n <= Self::MAX_NUMBER_FROM_HEADERS);
        if number.is_none() {
            tracing::debug!(header = name, "ignoring inbound attempt number");
        }
        number
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TriedEndpoints> {
        // Nothing under the lock can panic halfway: a poisoned record is
        // still consistent.
        self.record
            .tried
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Calls `f` (a `call` down the stack with the first try of a request that
/// carries no [`Attempt`]) and returns what the layers below reported
/// about that try while `f` ran: [`report_first_pick`] from a balancer,
/// [`report_first_attempt`] from a layer that made a record for it. See
/// the [module documentation](self) for when nothing is reported.
///
/// Calls nest: what is reported inside an inner call is seen by the inner
/// observer and passed on to the outer one. If `f` panics, the slot is
/// restored.
#[inline]
pub fn observe_first_try<R>(f: impl FnOnce() -> R) -> (R, FirstTryReport) {
    struct Restore(Watch);
    impl Drop for Restore {
        #[inline]
        fn drop(&mut self) {
            let seen = WATCH.replace(self.0);
            if self.0 != Watch::Off && seen != Watch::On {
                // An outer observer sees what this call saw.
                WATCH.set(seen);
            } else if seen == Watch::Attempt {
                REPORTED.with_borrow_mut(Option::take);
            }
        }
    }
    let restore = Restore(WATCH.replace(Watch::On));
    let out = f();
    let report = match WATCH.get() {
        Watch::Off | Watch::On => FirstTryReport::default(),
        Watch::Picked(endpoint) => FirstTryReport {
            endpoint: Some(endpoint),
            attempt: None,
        },
        Watch::Attempt => FirstTryReport {
            endpoint: None,
            attempt: REPORTED.with_borrow(Clone::clone),
        },
    };
    drop(restore);
    (out, report)
}

/// Reports, from a balancer, the endpoint it picked for a request that
/// carries no [`Attempt`], to a layer above watching the call with
/// [`observe_first_try`]; does nothing when none is (one per-thread cell
/// access).
#[inline]
pub fn report_first_pick(endpoint: SocketAddr) {
    WATCH.with(|w| {
        if w.get() != Watch::Off {
            w.set(Watch::Picked(endpoint));
        }
    });
}

/// Reports, from a layer that made an [`Attempt`] for the first try of a
/// request that carried none (a hedge layer), that attempt to a layer
/// above watching the call with [`observe_first_try`], so that both share
/// one record (and one counter of numbers); does nothing when none is.
pub fn report_first_attempt(attempt: &Attempt) {
    if WATCH.get() != Watch::Off {
        REPORTED.set(Some(attempt.clone()));
        WATCH.set(Watch::Attempt);
    }
}

/// Whether a layer above is watching the current call with
/// [`observe_first_try`]: a layer that would make an [`Attempt`] for a
/// first try only to report it may skip the work when nobody watches.
#[inline]
pub fn first_try_observed() -> bool {
    WATCH.get() != Watch::Off
}

// === impl FirstTryReport ===

impl FirstTryReport {
    /// The endpoint a balancer picked for the first try, if it reported
    /// one (or the most recent endpoint of a reported attempt's record).
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
            .or_else(|| self.attempt.as_ref().and_then(|a| a.tried().last()))
    }

    /// The attempt a layer below made for the first try, if one reported
    /// it.
    pub fn attempt(&self) -> Option<&Attempt> {
        self.attempt.as_ref()
    }

    /// Whether anything was reported.
    pub fn is_empty(&self) -> bool {
        self.endpoint.is_none() && self.attempt.is_none()
    }

    /// The first try's attempt: the reported one, or a new record (one
    /// allocation) holding the reported endpoint, if any.
    pub fn into_first(self) -> Attempt {
        match self.attempt {
            Some(attempt) => attempt,
            None => {
                let first = Attempt::first();
                if let Some(endpoint) = self.endpoint {
                    first.record(endpoint);
                }
                first
            }
        }
    }

    /// The second try's attempt ([`into_first`](Self::into_first), then
    /// [`Attempt::next`]).
    pub fn into_second(self) -> Attempt {
        self.into_first().next()
    }
}

impl Default for Attempt {
    /// [`Attempt::first`].
    fn default() -> Self {
        Self::first()
    }
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt")
            .field("number", &self.number)
            .field("tried", &self.tried())
            .finish()
    }
}

/// The number as a header value; static (no allocation) up to 10.
fn number_value(n: u32) -> HeaderValue {
    static SMALL: [HeaderValue; 11] = [
        HeaderValue::from_static("0"),
        HeaderValue::from_static("1"),
        HeaderValue::from_static("2"),
        HeaderValue::from_static("3"),
        HeaderValue::from_static("4"),
        HeaderValue::from_static("5"),
        HeaderValue::from_static("6"),
        HeaderValue::from_static("7"),
        HeaderValue::from_static("8"),
        HeaderValue::from_static("9"),
        HeaderValue::from_static("10"),
    ];
    match usize::try_from(n) {
        Ok(i) if i < SMALL.len() => SMALL[i].clone(),
        _ => HeaderValue::from(n),
    }
}

/// 1 to 10 ASCII digits that fit a `u32`.
fn parse_number(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u32, |acc, d| {
        acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

// === impl TriedEndpoints ===

impl TriedEndpoints {
    const EMPTY: Self = Self {
        addrs: [SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
            Attempt::MAX_TRIED],
        len: 0,
    };

    /// Whether `endpoint` was tried.
    pub fn contains(&self, endpoint: SocketAddr) -> bool {
        self.as_slice().contains(&endpoint)
    }

    /// How many endpoints were tried (at most [`Attempt::MAX_TRIED`]).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether no endpoint was tried yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most recent endpoint (the last try's, or the last hedge's).
    pub fn last(&self) -> Option<SocketAddr> {
        self.as_slice().last().copied()
    }

    /// The endpoints, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.as_slice().iter().copied()
    }

    /// The endpoints, oldest first.
    pub fn as_slice(&self) -> &[SocketAddr] {
        &self.addrs[..self.len()]
    }

    /// Adds `endpoint` as the most recent, dropping an earlier entry of it
    /// or, when full, the oldest.
    fn push(&mut self, endpoint: SocketAddr) {
        let len = self.len();
        let from = match self.as_slice().iter().position(|a| *a == endpoint) {
            Some(at) => at,
            None if len < Attempt::MAX_TRIED => {
                self.addrs[len] = endpoint;
                self.len += 1;
                return;
            }
            None => 0,
        };
        self.addrs[from..len].rotate_left(1);
        self.addrs[len - 1] = endpoint;
    }
}

impl fmt::Debug for TriedEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

// === impl AttemptFromExtensions ===

impl<B> ReadAttempt<http::Request<B>> for AttemptFromExtensions {
    #[inline]
    fn read_attempt<'r>(&self, req: &'r http::Request<B>) -> Option<&'r Attempt> {
        req.extensions().get::<Attempt>()
    }
}

// === impl IgnoreAttempt ===

impl<Req> ReadAttempt<Req> for IgnoreAttempt {
    #[inline]
    fn read_attempt<'r>(&self, _: &'r Req) -> Option<&'r Attempt> {
        None
    }

    #[inline]
    fn reports_first_pick(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn numbers_and_the_shared_record() {
        let first = Attempt::first();
        assert_eq!(first.number(), 1);
        assert_eq!(first.previous_attempts(), 0);
        assert!(!first.is_retry());
        let sent = first.clone(); // the copy that goes down the stack
        sent.record(addr(1));
        let second = first.next();
        assert_eq!((second.number(), second.previous_attempts()), (2, 1));
        assert!(second.is_retry());
        assert!(second.same_request(&first));
        assert!(!second.same_request(&Attempt::first()));
        assert_eq!(second.tried().as_slice(), [addr(1)]);
        assert_eq!(first.number(), 1, "next leaves the number it came from");

        // a fresh attempt shares nothing
        assert!(Attempt::default().tried().is_empty());

        first.record.issued.store(u32::MAX - 1, Ordering::Relaxed);
        assert_eq!(first.next().number(), u32::MAX);
        assert_eq!(first.next().number(), u32::MAX, "saturates");
    }

    #[test]
    fn record_if_new_records_once() {
        let a = Attempt::first();
        assert!(a.record_if_new(addr(1)));
        assert!(!a.record_if_new(addr(1)));
        assert!(a.next().record_if_new(addr(2)));
        assert_eq!(a.tried().as_slice(), [addr(1), addr(2)]);
        assert_eq!(a.tried().last(), Some(addr(2)));
        assert!(a.tried().contains(addr(2)));
        assert!(!a.tried().contains(addr(3)));
    }

    #[test]
    fn keeps_the_most_recent_eight() {
        let a = Attempt::first();
        for port in 1..=10 {
            a.record(addr(port));
        }
        let tried = a.tried();
        assert_eq!(tried.len(), Attempt::MAX_TRIED);
        assert_eq!(
            tried.iter().map(|a| a.port()).collect::<Vec<_>>(),
            (3..=10).collect::<Vec<_>>()
        );
        // tried again: becomes the most recent, so it is dropped last
        a.record(addr(3));
        a.record(addr(11));
        assert_eq!(
            a.tried().iter().map(|a| a.port()).collect::<Vec<_>>(),
            [5, 6, 7, 8, 9, 10, 3, 11]
        );
    }

    #[test]
    fn reads_from_extensions() {
        let mut req = http::Request::new(());
        assert!(Attempt::from_extensions(req.extensions()).is_none());
        assert!(AttemptFromExtensions.read_attempt(&req).is_none());
        let a = Attempt::first().next();
        req.extensions_mut().insert(a.clone());
        let read = AttemptFromExtensions.read_attempt(&req).unwrap();
        assert_eq!(read.number(), 2);
        assert!(read.same_request(&a));
        assert!(Attempt::from_extensions(req.extensions()).is_some());
        assert!(IgnoreAttempt.read_attempt(&req).is_none());
        assert!(IgnoreAttempt.read_attempt(&"any request").is_none());
    }

    #[test]
    fn writes_headers() {
        let mut h = HeaderMap::new();
        let first = Attempt::first();
        h.insert(
            GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER,
            HeaderValue::from_static("4"),
        );
        first.write_headers(&mut h, true);
        assert_eq!(h[ATTEMPT_HEADER], "1");
        assert!(
            h.get(GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER).is_none(),
            "first try: no previous attempts header, a stale one removed"
        );

        let mut third = first.next().next();
        third.write_headers(&mut h, false);
        assert_eq!(h[ATTEMPT_HEADER], "3");
        assert!(h.get(GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER).is_none());
        third.write_headers(&mut h, true);
        assert_eq!(h[GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER], "2");

        third.number = 12; // past the static values
        third.write_headers(&mut h, true);
        assert_eq!(h[ATTEMPT_HEADER], "12");
        assert_eq!(h[GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER], "11");
        for n in 0..=11 {
            assert_eq!(number_value(n), n.to_string().as_str());
        }
    }

    #[test]
    fn reads_inbound_numbers_and_ignores_bad_ones() {
        let mut h = HeaderMap::new();
        assert_eq!(Attempt::number_from_headers(&h), None);
        h.insert(ATTEMPT_HEADER, HeaderValue::from_static("3"));
        assert_eq!(Attempt::number_from_headers(&h), Some(3));
        // gRPC's header wins when both are present
        h.insert(
            GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER,
            HeaderValue::from_static("0"),
        );
        assert_eq!(Attempt::number_from_headers(&h), Some(1));

        let read = |name: HeaderName, v: &'static [u8]| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_bytes(v).unwrap());
            Attempt::number_from_headers(&h)
        };
        assert_eq!(read(ATTEMPT_HEADER, b"1000"), Some(1000));
        assert_eq!(read(GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER, b"999"), Some(1000));
        for bad in [
            &b"0"[..],
            b"1001",
            b"",
            b"-1",
            b"+2",
            b" 2",
            b"2 ",
            b"1.0",
            b"0x2",
            b"99999999999",
            b"4294967296",
            b"\xef\xbc\x92", // a full-width digit
        ] {
            assert_eq!(read(ATTEMPT_HEADER, bad), None, "{bad:?}");
        }
        for bad in [&b"1000"[..], b"4294967295", b"-1", b"", b"a"] {
            assert_eq!(
                read(GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER, bad),
                None,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn numbers_are_unique_across_everything_sharing_a_record() {
        // A retry layer and a hedge layer below it both continue one
        // record: whoever asks next gets the next number.
        let first = Attempt::first();
        let hedge = first.next();
        let retry = first.next();
        let retry_hedge = retry.next();
        let numbers = [
            first.number(),
            hedge.number(),
            retry.number(),
            retry_hedge.number(),
        ];
        assert_eq!(numbers, [1, 2, 3, 4]);
        assert_eq!(first.clone().number(), 1, "a clone keeps its number");
    }

    #[test]
    fn observe_sees_a_pick_or_an_attempt_reported_during_the_call() {
        let (n, seen) = observe_first_try(|| 7);
        assert_eq!(n, 7);
        assert!(seen.is_empty());
        assert_eq!(seen.endpoint(), None);
        assert_eq!(seen.clone().into_second().number(), 2);

        let ((), seen) = observe_first_try(|| report_first_pick(addr(1)));
        assert_eq!(seen.endpoint(), Some(addr(1)));
        assert!(seen.attempt().is_none());
        let second = seen.into_second();
        assert_eq!(
            (second.number(), second.tried().as_slice()),
            (2, &[addr(1)][..])
        );

        let made = Attempt::first();
        let ((), seen) = observe_first_try(|| {
            assert!(first_try_observed());
            report_first_attempt(&made);
            made.record(addr(2)); // the balancer below the layer that made it
        });
        assert!(seen.attempt().unwrap().same_request(&made));
        assert_eq!(seen.endpoint(), Some(addr(2)));
        assert_eq!(seen.into_second().number(), 2);
        assert_eq!(made.next().number(), 3, "one counter for both");

        // Nothing is watching any more: reports are dropped, nothing kept.
        assert!(!first_try_observed());
        report_first_pick(addr(3));
        report_first_attempt(&made);
        assert!(observe_first_try(|| ()).1.is_empty());
        assert!(
            REPORTED.with_borrow(Option::is_none),
            "no record kept alive"
        );
    }

    #[test]
    fn observers_nest_and_survive_a_panic() {
        let ((), outer) = observe_first_try(|| {
            let ((), inner) = observe_first_try(|| report_first_pick(addr(4)));
            assert_eq!(inner.endpoint(), Some(addr(4)));
        });
        assert_eq!(
            outer.endpoint(),
            Some(addr(4)),
            "passed on to the outer observer"
        );
        let ((), outer) = observe_first_try(|| {
            let ((), inner) = observe_first_try(|| ());
            assert!(inner.is_empty());
        });
        assert!(outer.is_empty());

        let panicked =
            std::panic::catch_unwind(|| observe_first_try(|| -> () { panic!("in the call") }));
        assert!(panicked.is_err());
        assert!(!first_try_observed(), "the slot was restored");
    }

    #[test]
    fn only_ignore_attempt_skips_reporting_picks() {
        let req = http::Request::new(());
        assert!(ReadAttempt::<http::Request<()>>::reports_first_pick(
            &AttemptFromExtensions
        ));
        assert!(!ReadAttempt::<http::Request<()>>::reports_first_pick(
            &IgnoreAttempt
        ));
        assert!(AttemptFromExtensions.read_attempt(&req).is_none());
    }

    #[test]
    fn debug_shows_number_and_tried() {
        let a = Attempt::first();
        a.record(addr(7));
        assert_eq!(
            format!("{a:?}"),
            "Attempt { number: 1, tried: [10.0.0.1:7] }"
        );
    }

    proptest! {
        /// Whatever is recorded, the record holds the most recent distinct
        /// endpoints, each once, newest last, at most `MAX_TRIED`.
        #[test]
        fn record_is_the_most_recent_distinct(ports in proptest::collection::vec(1u16..16, 0..40)) {
            let a = Attempt::first();
            let mut model: Vec<u16> = Vec::new();
            for p in &ports {
                a.record(addr(*p));
                model.retain(|m| m != p);
                model.push(*p);
                if model.len() > Attempt::MAX_TRIED {
                    model.remove(0);
                }
            }
            let got: Vec<u16> = a.tried().iter().map(|a| a.port()).collect();
            prop_assert_eq!(got, model);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = parse_number(&bytes);
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                let mut h = HeaderMap::new();
                h.insert(ATTEMPT_HEADER, v);
                if let Some(n) = Attempt::number_from_headers(&h) {
                    prop_assert!((1..=Attempt::MAX_NUMBER_FROM_HEADERS).contains(&n));
                }
            }
        }
    }
}
