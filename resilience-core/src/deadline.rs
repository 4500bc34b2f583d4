//! Deadlines: an absolute point in time by which a request must be answered.
//!
//! A [`Deadline`] travels in request extensions inside a process and on the
//! wire between processes as the time remaining: gRPC's `grpc-timeout`
//! (e.g. `250m`) or, for HTTP, the [`DEADLINE_HEADER`] (`x-deadline-ms`)
//! holding whole milliseconds. Each hop turns the remaining time back into an
//! absolute deadline on its own clock, so the budget shrinks across hops.
//!
//! Values from the network are never trusted blindly: a malformed, negative,
//! overflowing or absurdly large value (above [`DeadlinePolicy::max`]) is
//! ignored with a `debug!` log, never a panic.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::HeaderMap;
//! use resilience_core::deadline::{Deadline, DeadlinePolicy};
//! use tokio::time::Instant;
//!
//! let now = Instant::now();
//! let mut headers = HeaderMap::new();
//! headers.insert("grpc-timeout", "250m".parse().unwrap());
//! let deadline = DeadlinePolicy::new().from_headers(&headers, now).unwrap();
//! assert_eq!(deadline.remaining_at(now), Duration::from_millis(250));
//!
//! headers.insert("grpc-timeout", "999999999H".parse().unwrap()); // malformed: 9 digits
//! assert!(DeadlinePolicy::new().from_headers(&headers, now).is_none());
//! ```

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

/// The HTTP header that carries the remaining time in whole milliseconds.
pub const DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-deadline-ms");
/// The gRPC header that carries the remaining time.
pub const GRPC_TIMEOUT_HEADER: HeaderName = HeaderName::from_static("grpc-timeout");

/// The absolute time by which a request must be answered.
///
/// Put it in a request's extensions; the [`Timeout`](crate::timeout::Timeout)
/// layer honours it, and the correlation crate forwards it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

/// A wire deadline that could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadlineParseError {
    /// Not in the header's format.
    Malformed,
    /// Larger than the configured maximum (or than a `Duration` holds).
    TooLarge,
}

/// How inbound deadlines are read: which headers, and the largest value
/// accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePolicy {
    max: Duration,
}

// === impl Deadline ===

impl Deadline {
    /// A deadline at `instant`.
    pub const fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// A deadline `timeout` from now (reads the clock). Saturates far in the
    /// future instead of overflowing.
    pub fn after(timeout: Duration) -> Self {
        Self::after_at(Instant::now(), timeout)
    }

    /// A deadline `timeout` after `now`.
    pub fn after_at(now: Instant, timeout: Duration) -> Self {
        Self(
            now.checked_add(timeout)
                .unwrap_or_else(|| now + Duration::from_secs(86400 * 365 * 30)),
        )
    }

    /// The point in time.
    pub const fn instant(self) -> Instant {
        self.0
    }

    /// Time left at `now`, zero once passed.
    pub fn remaining_at(self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }

    /// Time left now (reads the clock).
    pub fn remaining(self) -> Duration {
        self.remaining_at(Instant::now())
    }

    /// Whether the deadline has passed at `now`.
    pub fn is_expired_at(self, now: Instant) -> bool {
        self.0 <= now
    }

    /// The earlier of two deadlines.
    #[must_use]
    pub fn min(self, other: Deadline) -> Deadline {
        if other.0 < self.0 { other } else { self }
    }

    /// Reads the request's deadline: the earlier of a [`Deadline`] in its
    /// extensions and the deadline of its request context (in the
    /// extensions, else in scope; see [`carried`](crate::carried)).
    pub fn from_extensions(ext: &http::Extensions) -> Option<Deadline> {
        let own = ext.get::<Deadline>().copied();
        match (own, crate::carried::find(ext).and_then(|c| c.deadline)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Writes the remaining time at `now` into `headers`: `x-deadline-ms`
    /// always, and `grpc-timeout` too when `grpc` is set.
    pub fn write_headers(self, headers: &mut HeaderMap, now: Instant, grpc: bool) {
        let left = self.remaining_at(now);
        headers.insert(DEADLINE_HEADER, format_millis(left));
        if grpc {
            headers.insert(GRPC_TIMEOUT_HEADER, format_grpc_timeout(left));
        }
    }
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Deadline").field(&self.0).finish()
    }
}

// === impl DeadlineParseError ===

impl fmt::Display for DeadlineParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeadlineParseError::Malformed => "malformed deadline",
            DeadlineParseError::TooLarge => "deadline too large",
        })
    }
}

impl std::error::Error for DeadlineParseError {}

// === impl DeadlinePolicy ===

impl DeadlinePolicy {
    /// Largest remaining time accepted from the network: `300s`.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(300);

    /// The default policy (maximum [`Self::DEFAULT_MAX`]).
    pub const fn new() -> Self {
        Self {
            max: Self::DEFAULT_MAX,
        }
    }

    /// Sets the largest remaining time accepted; larger values are ignored.
    #[must_use]
    pub const fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The largest remaining time accepted.
    pub const fn max_value(&self) -> Duration {
        self.max
    }

    /// Reads an inbound deadline: `grpc-timeout` if present, else
    /// `x-deadline-ms`. Invalid values are ignored (logged at debug).
    pub fn from_headers(&self, headers: &HeaderMap, now: Instant) -> Option<Deadline> {
        self.from_values(
            headers.get(GRPC_TIMEOUT_HEADER),
            headers.get(DEADLINE_HEADER),
            now,
        )
    }

    /// [`from_headers`](Self::from_headers) for a caller that already found
    /// the values (one pass over the headers instead of two lookups): the
    /// `grpc-timeout` value if any, else the `x-deadline-ms` one.
    pub fn from_values(
        &self,
        grpc_timeout: Option<&HeaderValue>,
        deadline_ms: Option<&HeaderValue>,
        now: Instant,
    ) -> Option<Deadline> {
        let (name, parsed) = if let Some(v) = grpc_timeout {
            ("grpc-timeout", parse_grpc_timeout(v.as_bytes()))
        } else if let Some(v) = deadline_ms {
            ("x-deadline-ms", parse_millis(v.as_bytes()))
        } else {
            return None;
        };
        match parsed.and_then(|d| self.check(d)) {
            Ok(d) => Some(Deadline::after_at(now, d)),
            Err(error) => {
                tracing::debug!(header = name, %error, "ignoring inbound deadline");
                None
            }
        }
    }

    fn check(&self, d: Duration) -> Result<Duration, DeadlineParseError> {
        if d > self.max {
            Err(DeadlineParseError::TooLarge)
        } else {
            Ok(d)
        }
    }
}

impl Default for DeadlinePolicy {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses a gRPC `grpc-timeout` value: 1 to 8 ASCII digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`).
///
/// # Errors
/// - anything else ([`DeadlineParseError::Malformed`])
pub fn parse_grpc_timeout(b: &[u8]) -> Result<Duration, DeadlineParseError> {
    let Some((&unit, digits)) = b.split_last() else {
        return Err(DeadlineParseError::Malformed);
    };
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(DeadlineParseError::Malformed);
    }
    let n = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(DeadlineParseError::Malformed),
    })
}

/// Formats a `grpc-timeout` value, in the finest unit that fits 8 digits
/// (rounded down, so the budget never grows in transit).
pub fn format_grpc_timeout(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let (n, unit) = if d.as_micros() <= MAX {
        (d.as_micros(), 'u')
    } else if d.as_millis() <= MAX {
        (d.as_millis(), 'm')
    } else if u128::from(d.as_secs()) <= MAX {
        (u128::from(d.as_secs()), 'S')
    } else if u128::from(d.as_secs() / 60) <= MAX {
        (u128::from(d.as_secs() / 60), 'M')
    } else {
        (u128::from(d.as_secs() / 3600).min(MAX), 'H')
    };
    HeaderValue::try_from(format!("{n}{unit}"))
        .expect("digits and a letter are a valid header value")
}

/// Parses `x-deadline-ms`: 1 to 12 ASCII digits, whole milliseconds.
///
/// # Errors
/// - empty, a sign, a fraction, any other character, or more than 12 digits
pub fn parse_millis(b: &[u8]) -> Result<Duration, DeadlineParseError> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return Err(DeadlineParseError::Malformed);
    }
    if b.len() > 12 {
        return Err(DeadlineParseError::TooLarge);
    }
    let n = b.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Ok(Duration::from_millis(n))
}

/// Formats `x-deadline-ms` (whole milliseconds, rounded down).
pub fn format_millis(d: Duration) -> HeaderValue {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    HeaderValue::from(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grpc_timeout_units() {
        let ok = [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("99999999n", Duration::from_nanos(99_999_999)),
            ("0m", Duration::ZERO),
        ];
        for (s, d) in ok {
            assert_eq!(parse_grpc_timeout(s.as_bytes()), Ok(d), "{s}");
        }
        for bad in [
            "",
            "m",
            "123",
            "123x",
            "-5m",
            "123456789m",
            "1.5S",
            " 5m",
            "5m ",
            "５m",
        ] {
            assert_eq!(
                parse_grpc_timeout(bad.as_bytes()),
                Err(DeadlineParseError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn grpc_timeout_format_roundtrips_rounding_down() {
        for d in [
            Duration::ZERO,
            Duration::from_micros(1),
            Duration::from_millis(250),
            Duration::from_secs(99),
            Duration::from_secs(100),
            Duration::from_secs(86400 * 3),
            Duration::from_secs(86400 * 365 * 1000),
        ] {
            let v = format_grpc_timeout(d);
            let back = parse_grpc_timeout(v.as_bytes()).unwrap();
            assert!(back <= d, "{d:?} -> {v:?} -> {back:?}");
        }
        assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(format_grpc_timeout(Duration::from_secs(1000)), "1000000m");
        // never more than 8 digits, even for absurd durations
        assert_eq!(format_grpc_timeout(Duration::MAX).len(), 9);
    }

    #[test]
    fn millis() {
        assert_eq!(parse_millis(b"1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_millis(b"0"), Ok(Duration::ZERO));
        for bad in [&b""[..], b"-1", b"1.5", b"1e3", b" 1", b"abc"] {
            assert_eq!(
                parse_millis(bad),
                Err(DeadlineParseError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_millis(b"99999999999999999999999"),
            Err(DeadlineParseError::TooLarge)
        );
        assert_eq!(format_millis(Duration::from_micros(1999)), "1");
    }

    #[tokio::test(start_paused = true)]
    async fn policy_reads_and_caps() {
        let now = Instant::now();
        let mut h = HeaderMap::new();
        assert_eq!(DeadlinePolicy::new().from_headers(&h, now), None);

        h.insert(DEADLINE_HEADER, HeaderValue::from_static("800"));
        let d = DeadlinePolicy::new().from_headers(&h, now).unwrap();
        assert_eq!(d.remaining_at(now), Duration::from_millis(800));

        // grpc-timeout wins when both are present
        h.insert(GRPC_TIMEOUT_HEADER, HeaderValue::from_static("2S"));
        let d = DeadlinePolicy::new().from_headers(&h, now).unwrap();
        assert_eq!(d.remaining_at(now), Duration::from_secs(2));

        // above the maximum: ignored
        let tight = DeadlinePolicy::new().max(Duration::from_secs(1));
        assert_eq!(tight.from_headers(&h, now), None);

        // malformed: ignored
        let mut bad = HeaderMap::new();
        bad.insert(DEADLINE_HEADER, HeaderValue::from_static("-5"));
        assert_eq!(DeadlinePolicy::new().from_headers(&bad, now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_arithmetic() {
        let now = Instant::now();
        let d = Deadline::after_at(now, Duration::from_millis(100));
        assert!(!d.is_expired_at(now));
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(d.is_expired_at(Instant::now()));
        assert_eq!(d.remaining(), Duration::ZERO);
        let e = Deadline::after_at(now, Duration::from_millis(50));
        assert_eq!(d.min(e), e);
        assert_eq!(e.min(d), e);
        // saturates instead of overflowing
        let far = Deadline::after_at(now, Duration::MAX);
        assert!(far.instant() > now);

        let mut h = HeaderMap::new();
        let d2 = Deadline::after_at(Instant::now(), Duration::from_millis(1234));
        d2.write_headers(&mut h, Instant::now(), true);
        assert_eq!(h[DEADLINE_HEADER], "1234");
        assert_eq!(h[GRPC_TIMEOUT_HEADER], "1234000u");
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            let _ = parse_grpc_timeout(&bytes);
            let _ = parse_millis(&bytes);
        }

        #[test]
        fn millis_roundtrip(ms in 0u64..10_000_000_000) {
            let v = format_millis(Duration::from_millis(ms));
            prop_assert_eq!(parse_millis(v.as_bytes()), Ok(Duration::from_millis(ms)));
        }
    }
}
