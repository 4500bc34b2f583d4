//! Request priority (criticality), shared by the throttle, the bounded queue
//! and the correlation layers.
//!
//! Four ordered levels, as in Google SRE's criticality: `sheddable` <
//! `sheddable-plus` < `critical` < `critical-plus`. The default is
//! `critical`. On the wire the level travels in the [`PRIORITY_HEADER`]
//! (`x-priority`) header or gRPC metadata key.
//!
//! A server never simply trusts the level a request claims: a
//! [`PriorityPolicy`] caps what an untrusted request may ask for (by default,
//! nothing above `critical`).
//!
//! # Example
//!
//! ```
//! use resilience_core::{Priority, PriorityPolicy};
//!
//! let p: Priority = "sheddable-plus".parse().unwrap();
//! assert!(p < Priority::Critical);
//! assert!("urgent!!".parse::<Priority>().is_err());
//!
//! let policy = PriorityPolicy::new();
//! // An untrusted caller cannot raise itself above `critical`...
//! assert_eq!(policy.resolve(Some(Priority::CriticalPlus), false), Priority::Critical);
//! // ...may lower itself...
//! assert_eq!(policy.resolve(Some(Priority::Sheddable), false), Priority::Sheddable);
//! // ...and a trusted one gets what it asks for.
//! assert_eq!(policy.resolve(Some(Priority::CriticalPlus), true), Priority::CriticalPlus);
//! ```

use std::fmt;
use std::str::FromStr;

use http::{HeaderName, HeaderValue};

/// The header (and gRPC metadata key) that carries a request's priority.
pub const PRIORITY_HEADER: HeaderName = HeaderName::from_static("x-priority");

/// How important a request is; higher is more important.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum Priority {
    /// Best effort: shed first (batch jobs, prefetch).
    Sheddable = 0,
    /// Shed before anything critical.
    SheddablePlus = 1,
    /// The default: a user is waiting.
    #[default]
    Critical = 2,
    /// The most important traffic; only trusted callers may claim it.
    CriticalPlus = 3,
}

/// A priority value that is not one of the four levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsePriorityError(());

/// How far a server lets inbound requests choose their own priority.
///
/// Requests without a (valid) priority get the default level; untrusted
/// requests are capped at the ceiling; trusted ones get what they ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorityPolicy {
    default: Priority,
    untrusted_ceiling: Priority,
}

/// Finds a request's [`Priority`]: how every layer that cares (throttle,
/// bounded queue) reads it.
///
/// Implemented by [`PriorityFromExtensions`] (for `http::Request<B>`, the
/// default), [`FixedPriority`], and closures `Fn(&Req) -> Priority`.
pub trait ReadPriority<Req> {
    /// The request's priority.
    fn read_priority(&self, req: &Req) -> Priority;
}

/// Reads the [`Priority`] from `http::Request` extensions
/// ([`Priority::from_extensions`]: a `Priority` there, else the request
/// context's, where the correlation layer keeps it); a request without one
/// has the default, [`Priority::Critical`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PriorityFromExtensions;

/// Gives every request the same priority.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedPriority(pub Priority);

// === impl Priority ===

impl Priority {
    /// Every level, lowest first.
    pub const ALL: [Priority; 4] = [
        Priority::Sheddable,
        Priority::SheddablePlus,
        Priority::Critical,
        Priority::CriticalPlus,
    ];

    /// The level's index, `0` (sheddable) to `3` (critical-plus), for
    /// per-level arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The level at `index` (see [`Priority::index`]).
    pub const fn from_index(index: usize) -> Option<Self> {
        if index < 4 {
            Some(Self::ALL[index])
        } else {
            None
        }
    }

    /// The canonical wire form, also a bounded label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Sheddable => "sheddable",
            Priority::SheddablePlus => "sheddable-plus",
            Priority::Critical => "critical",
            Priority::CriticalPlus => "critical-plus",
        }
    }

    /// The wire form as a header value (no allocation, no check at run
    /// time).
    pub const fn to_header_value(self) -> HeaderValue {
        // `from_static` checks every byte when called at run time: check
        // them once, at compile time.
        match self {
            Priority::Sheddable => const { HeaderValue::from_static(Priority::Sheddable.as_str()) },
            Priority::SheddablePlus => {
                const { HeaderValue::from_static(Priority::SheddablePlus.as_str()) }
            }
            Priority::Critical => const { HeaderValue::from_static(Priority::Critical.as_str()) },
            Priority::CriticalPlus => {
                const { HeaderValue::from_static(Priority::CriticalPlus.as_str()) }
            }
        }
    }

    /// Reads a request's priority: a [`Priority`] in its extensions, else
    /// its request context's (in the extensions, else in scope; see
    /// [`carried`](crate::carried)); `None` if neither says.
    pub fn from_extensions(ext: &http::Extensions) -> Option<Priority> {
        ext.get::<Priority>()
            .copied()
            .or_else(|| crate::carried::find(ext).map(|c| c.priority))
    }

    /// Parses a header value. Accepts the canonical forms and the
    /// `CRITICAL_PLUS` style, in any ASCII case; rejects anything else.
    ///
    /// # Errors
    /// - the value is not one of the four levels
    pub fn from_bytes(b: &[u8]) -> Result<Self, ParsePriorityError> {
        if b.len() > 14 {
            return Err(ParsePriorityError(()));
        }
        let mut buf = [0u8; 14];
        for (dst, src) in buf.iter_mut().zip(b) {
            *dst = match src.to_ascii_lowercase() {
                b'_' => b'-',
                c => c,
            };
        }
        match &buf[..b.len()] {
            b"sheddable" => Ok(Priority::Sheddable),
            b"sheddable-plus" => Ok(Priority::SheddablePlus),
            b"critical" => Ok(Priority::Critical),
            b"critical-plus" => Ok(Priority::CriticalPlus),
            _ => Err(ParsePriorityError(())),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = ParsePriorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(s.as_bytes())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(de)?;
        s.parse().map_err(|_| {
            serde::de::Error::custom(
                "priority must be one of sheddable, sheddable-plus, critical, critical-plus",
            )
        })
    }
}

// === impl PriorityFromExtensions ===

impl<B> ReadPriority<http::Request<B>> for PriorityFromExtensions {
    #[inline]
    fn read_priority(&self, req: &http::Request<B>) -> Priority {
        Priority::from_extensions(req.extensions()).unwrap_or_default()
    }
}

// === impl FixedPriority ===

impl<Req> ReadPriority<Req> for FixedPriority {
    #[inline]
    fn read_priority(&self, _: &Req) -> Priority {
        self.0
    }
}

impl<F, Req> ReadPriority<Req> for F
where
    F: Fn(&Req) -> Priority,
{
    #[inline]
    fn read_priority(&self, req: &Req) -> Priority {
        self(req)
    }
}

// === impl ParsePriorityError ===

impl fmt::Display for ParsePriorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "invalid priority: expected sheddable, sheddable-plus, critical or critical-plus",
        )
    }
}

impl std::error::Error for ParsePriorityError {}

// === impl PriorityPolicy ===

impl PriorityPolicy {
    /// Default level for requests that name none: `critical`.
    pub const DEFAULT_PRIORITY: Priority = Priority::Critical;
    /// Highest level an untrusted request may claim: `critical`.
    pub const DEFAULT_UNTRUSTED_CEILING: Priority = Priority::Critical;

    /// The defaults: missing means `critical`, untrusted requests are capped
    /// at `critical`.
    pub const fn new() -> Self {
        Self {
            default: Self::DEFAULT_PRIORITY,
            untrusted_ceiling: Self::DEFAULT_UNTRUSTED_CEILING,
        }
    }

    /// Sets the level of requests that name none (or an invalid one).
    #[must_use]
    pub const fn default_priority(mut self, p: Priority) -> Self {
        self.default = p;
        self
    }

    /// Sets the highest level an untrusted request may claim.
    #[must_use]
    pub const fn untrusted_ceiling(mut self, p: Priority) -> Self {
        self.untrusted_ceiling = p;
        self
    }

    /// The priority a request gets, from what it asked for and whether it is
    /// trusted. A missing request gets the default, capped like any other
    /// untrusted claim.
    pub fn resolve(&self, requested: Option<Priority>, trusted: bool) -> Priority {
        let p = requested.unwrap_or(self.default);
        if trusted {
            p
        } else {
            p.min(self.untrusted_ceiling)
        }
    }
}

impl Default for PriorityPolicy {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ordered_lowest_first() {
        assert!(Priority::Sheddable < Priority::SheddablePlus);
        assert!(Priority::SheddablePlus < Priority::Critical);
        assert!(Priority::Critical < Priority::CriticalPlus);
        assert_eq!(Priority::default(), Priority::Critical);
        for (i, p) in Priority::ALL.into_iter().enumerate() {
            assert_eq!(p.index(), i);
            assert_eq!(Priority::from_index(i), Some(p));
        }
        assert_eq!(Priority::from_index(4), None);
    }

    #[test]
    fn parses_and_writes() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>(), Ok(p));
            assert_eq!(Priority::from_bytes(p.to_header_value().as_bytes()), Ok(p));
        }
        assert_eq!("CRITICAL_PLUS".parse(), Ok(Priority::CriticalPlus));
        assert_eq!("Sheddable".parse(), Ok(Priority::Sheddable));
        for bad in [
            "",
            "high",
            "critical ",
            " critical",
            "critical-plus-plus",
            "critical\0",
            "0",
            "cri tical",
        ] {
            assert!(bad.parse::<Priority>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn policy_caps_untrusted() {
        let policy = PriorityPolicy::new();
        assert_eq!(policy.resolve(None, false), Priority::Critical);
        assert_eq!(policy.resolve(None, true), Priority::Critical);
        let strict = PriorityPolicy::new()
            .untrusted_ceiling(Priority::SheddablePlus)
            .default_priority(Priority::Critical);
        // the default is capped too for untrusted callers
        assert_eq!(strict.resolve(None, false), Priority::SheddablePlus);
        assert_eq!(
            strict.resolve(Some(Priority::Critical), false),
            Priority::SheddablePlus
        );
        assert_eq!(
            strict.resolve(Some(Priority::Sheddable), false),
            Priority::Sheddable
        );
        assert_eq!(
            strict.resolve(Some(Priority::CriticalPlus), true),
            Priority::CriticalPlus
        );
    }

    #[test]
    fn readers() {
        let mut req = http::Request::new(());
        assert_eq!(
            PriorityFromExtensions.read_priority(&req),
            Priority::Critical
        );
        req.extensions_mut().insert(Priority::Sheddable);
        assert_eq!(
            PriorityFromExtensions.read_priority(&req),
            Priority::Sheddable
        );
        assert_eq!(
            FixedPriority(Priority::CriticalPlus).read_priority(&req),
            Priority::CriticalPlus
        );
        let by_len = |r: &&str| {
            if r.len() > 3 {
                Priority::Sheddable
            } else {
                Priority::Critical
            }
        };
        assert_eq!(by_len.read_priority(&"long"), Priority::Sheddable);
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_roundtrips(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(p) = Priority::from_bytes(&bytes) {
                prop_assert_eq!(Priority::from_bytes(p.as_str().as_bytes()), Ok(p));
            }
        }

        #[test]
        fn untrusted_never_above_ceiling(req in 0usize..4, ceil in 0usize..4, def in 0usize..4, some in any::<bool>()) {
            let policy = PriorityPolicy::new()
                .untrusted_ceiling(Priority::from_index(ceil).unwrap())
                .default_priority(Priority::from_index(def).unwrap());
            let requested = some.then(|| Priority::from_index(req).unwrap());
            prop_assert!(policy.resolve(requested, false) <= Priority::from_index(ceil).unwrap());
        }
    }
}
