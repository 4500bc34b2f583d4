//! The configuration pattern every crate follows, and its error type.
//!
//! Every layer is configured through `FooConfig::builder()…build()`, which
//! validates and returns a [`ConfigError`] naming the offending field. After
//! that, `FooLayer::new(config)` cannot fail: invalid configuration fails when
//! it is built, never at the first request.
//!
//! With the `serde` feature, configurations also deserialize from TOML, YAML
//! or JSON. Deserialization goes through the very same `build()`, so a file
//! can never produce a configuration the builder would have rejected.
//! Durations are written as strings with a unit (`"250ms"`, `"5s"`, `"2m"`,
//! `"1h"`) or as a plain number of milliseconds; see [`duration`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience_core::timeout::TimeoutConfig;
//!
//! let err = TimeoutConfig::builder().timeout(Duration::ZERO).build().unwrap_err();
//! assert_eq!(err.field(), "timeout");
//! assert_eq!(err.to_string(), "invalid configuration: timeout: must be greater than zero");
//! ```

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// A configuration was rejected when it was built or deserialized.
///
/// It names the field and says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: Cow<'static, str>,
}

// === impl ConfigError ===

impl ConfigError {
    /// Creates an error for `field`, with a short lowercase `reason`.
    pub fn new(field: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The name of the offending field, as spelt in the builder and in files.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Validates a name used as a metric label: 1 to 64 characters of
/// `[A-Za-z0-9_.-]`.
///
/// Names are chosen by the user in code or configuration, never taken from
/// requests, so label cardinality stays bounded.
///
/// # Errors
/// - the name is empty, longer than 64 characters, or has another character
pub fn validate_name(field: &'static str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 64 {
        return Err(ConfigError::new(field, "must be 1 to 64 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(ConfigError::new(field, "may only contain [A-Za-z0-9_.-]"));
    }
    Ok(())
}

/// The longest duration any configuration of the family accepts: 365 days.
///
/// Layers add configured durations to the current instant on the request
/// path (a deadline, a lease's expiry, a store's timeout); a bound checked at
/// build time keeps that arithmetic from ever overflowing, and no sensible
/// setting comes near it.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Validates a configured duration: at most [`MAX_DURATION`].
///
/// Every builder of the family checks every duration it takes with this
/// function or [`validate_positive_duration`], so one rule holds everywhere.
///
/// # Errors
/// - `value` is longer than [`MAX_DURATION`]
///
/// ```
/// use std::time::Duration;
/// use resilience_core::config::{MAX_DURATION, validate_duration};
///
/// assert!(validate_duration("wait", Duration::ZERO).is_ok());
/// let err = validate_duration("wait", MAX_DURATION + Duration::from_secs(1)).unwrap_err();
/// assert_eq!(err.to_string(), "invalid configuration: wait: must be at most 365 days");
/// ```
pub fn validate_duration(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value > MAX_DURATION {
        return Err(ConfigError::new(field, "must be at most 365 days"));
    }
    Ok(())
}

/// Validates a configured duration that must be greater than zero and at
/// most [`MAX_DURATION`].
///
/// # Errors
/// - `value` is zero
/// - `value` is longer than [`MAX_DURATION`]
///
/// ```
/// use std::time::Duration;
/// use resilience_core::config::validate_positive_duration;
///
/// assert!(validate_positive_duration("timeout", Duration::from_millis(5)).is_ok());
/// let err = validate_positive_duration("timeout", Duration::ZERO).unwrap_err();
/// assert_eq!(err.reason(), "must be greater than zero");
/// assert!(validate_positive_duration("timeout", Duration::MAX).is_err());
/// ```
pub fn validate_positive_duration(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(field, "must be greater than zero"));
    }
    validate_duration(field, value)
}

pub mod duration {
    //! Durations in configuration files.
    //!
    //! Accepted forms: a string made of an integer and a unit, `ns`, `us`,
    //! `ms`, `s`, `m` or `h` (`"250ms"`, `"5s"`), or a bare non-negative
    //! integer, read as milliseconds. Anything else is a typed error.

    use std::time::Duration;

    /// Parses a duration written as `<integer><unit>`.
    ///
    /// # Errors
    /// - no digits, an unknown unit, or a value that overflows
    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        if digits.is_empty() {
            return Err(format!("invalid duration {s:?}: expected e.g. \"250ms\""));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("invalid duration {s:?}: too large"))?;
        let d = match unit.trim() {
            "ns" => Some(Duration::from_nanos(n)),
            "us" | "µs" => Some(Duration::from_micros(n)),
            "" | "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            other => return Err(format!("invalid duration {s:?}: unknown unit {other:?}")),
        };
        d.ok_or_else(|| format!("invalid duration {s:?}: too large"))
    }

    /// Deserializes a duration in the accepted forms (for `#[serde(with)]`).
    ///
    /// # Errors
    /// - the value is neither a duration string nor a non-negative integer
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub fn deserialize<'de, D>(de: D) -> Result<Duration, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"250ms\" or a number of milliseconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_millis(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_millis)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).map_err(E::custom)
            }
        }
        de.deserialize_any(V)
    }

    /// Like [`deserialize`], for `Option<Duration>` fields.
    ///
    /// # Errors
    /// - as [`deserialize`]
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub fn deserialize_option<'de, D>(de: D) -> Result<Option<Duration>, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        deserialize(de).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_durations() {
        assert_eq!(duration::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration::parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(duration::parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration::parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration::parse("7"), Ok(Duration::from_millis(7)));
        assert_eq!(duration::parse("3us"), Ok(Duration::from_micros(3)));
        assert!(duration::parse("").is_err());
        assert!(duration::parse("ms").is_err());
        assert!(duration::parse("-5s").is_err());
        assert!(duration::parse("5 parsecs").is_err());
        assert!(duration::parse("99999999999999999999s").is_err());
        assert!(duration::parse(&format!("{}h", u64::MAX)).is_err());
    }

    #[test]
    fn validates_names() {
        assert!(validate_name("name", "inventory-v2.eu_1").is_ok());
        assert_eq!(validate_name("name", "").unwrap_err().field(), "name");
        assert!(validate_name("name", &"a".repeat(65)).is_err());
        assert!(validate_name("name", "a b").is_err());
        assert!(validate_name("name", "é").is_err());
    }

    #[test]
    fn validates_durations() {
        assert!(validate_duration("d", MAX_DURATION).is_ok());
        assert_eq!(
            validate_duration("d", MAX_DURATION + Duration::from_nanos(1))
                .unwrap_err()
                .field(),
            "d"
        );
        assert!(validate_duration("d", Duration::MAX).is_err());
        assert!(validate_positive_duration("d", Duration::from_nanos(1)).is_ok());
        assert!(validate_positive_duration("d", Duration::ZERO).is_err());
        assert!(validate_positive_duration("d", Duration::MAX).is_err());
        // The bound is safe to add to any instant on the request path.
        let now = tokio::time::Instant::now();
        assert!(now.checked_add(MAX_DURATION).is_some());
    }
}
