use std::fmt;
use std::time::Duration;

use crate::config::{ConfigError, MAX_DURATION, validate_duration};
use crate::priority::Priority;

/// What the [chaos layer](super) does to the requests it affects: added
/// latency, injected errors, or no answer at all.
///
/// Build one with [`Fault::latency`], [`Fault::latency_between`],
/// [`Fault::errors`] or [`Fault::abort`], narrow it with
/// [`fraction`](Fault::fraction) and [`only`](Fault::only), combine with
/// [`and_latency`](Fault::and_latency) / [`and_errors`](Fault::and_errors),
/// and switch it on with [`ChaosHandle::set`](super::ChaosHandle::set).
///
/// # What a request gets
///
/// A request is *affected* when its priority matches [`only`](Fault::only)
/// (if set) and it falls in the [`fraction`](Fault::fraction) (default: all).
/// An affected request then:
///
/// 1. with [`abort`](Fault::abort), never gets an answer (its future stays
///    pending; the caller's timeout decides) and nothing else applies;
/// 2. else waits the latency, if any;
/// 3. then fails with [`ChaosError`](super::ChaosError) with probability
///    [`error_rate`](Fault::error_rate), without calling the inner service,
///    or else goes on to the inner service.
///
/// # Validation
///
/// The infallible constructors never panic: [`Fault::errors`] and
/// [`Fault::fraction`] clamp to `0.0..=1.0` and read NaN as `0.0`;
/// [`Fault::latency_between`] swaps bounds given in the wrong order; a
/// latency longer than [`MAX_DURATION`](crate::config::MAX_DURATION) (365
/// days, the family's longest configured duration) is cut to it. The
/// `try_*` versions reject such input with a [`ConfigError`] instead, for
/// values that come from an operator.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_core::Priority;
/// use resilience_core::chaos::Fault;
///
/// let f = Fault::latency(Duration::from_millis(300))
///     .fraction(0.2)
///     .only(Priority::Sheddable);
/// assert_eq!(f.to_string(), "latency 300ms, fraction 0.2, only sheddable");
///
/// assert_eq!(Fault::errors(1.7).error_rate(), 1.0);
/// assert_eq!(Fault::errors(f64::NAN).error_rate(), 0.0);
/// assert!(Fault::try_errors(1.7).is_err());
/// assert!(Fault::try_latency_between(Duration::from_secs(2), Duration::from_secs(1)).is_err());
/// assert!(Fault::try_latency(Duration::from_secs(400 * 24 * 3600)).is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    latency: Option<(Duration, Duration)>,
    error_rate: f64,
    abort: bool,
    fraction: f64,
    only: Option<Priority>,
}

// === impl Fault ===

impl Fault {
    /// Adds a fixed `delay` to every affected request (at most
    /// [`MAX_DURATION`]; see [`Fault::try_latency`]).
    pub const fn latency(delay: Duration) -> Self {
        Self::none().and_latency(delay)
    }

    /// [`Fault::latency`], rejecting a delay longer than [`MAX_DURATION`].
    ///
    /// # Errors
    /// - `delay` is longer than [`MAX_DURATION`] (365 days)
    pub fn try_latency(delay: Duration) -> Result<Self, ConfigError> {
        validate_duration("latency", delay)?;
        Ok(Self::latency(delay))
    }

    /// Adds a delay drawn uniformly from `min..max` to every affected
    /// request (exactly `min` when they are equal). Bounds in the wrong
    /// order are swapped; see [`Fault::try_latency_between`].
    pub fn latency_between(min: Duration, max: Duration) -> Self {
        Self::none().and_latency_between(min, max)
    }

    /// [`Fault::latency_between`], rejecting bounds in the wrong order or
    /// too long.
    ///
    /// # Errors
    /// - `min` is greater than `max`
    /// - `max` is longer than [`MAX_DURATION`] (365 days)
    pub fn try_latency_between(min: Duration, max: Duration) -> Result<Self, ConfigError> {
        check_latency(min, max)?;
        Ok(Self::latency_between(min, max))
    }

    /// Fails each affected request with probability `rate`, without calling
    /// the inner service. `rate` is clamped to `0.0..=1.0`; NaN reads as
    /// `0.0`. See [`Fault::try_errors`].
    pub fn errors(rate: f64) -> Self {
        Self::none().and_errors(rate)
    }

    /// [`Fault::errors`], rejecting a rate outside `0.0..=1.0` or NaN.
    ///
    /// # Errors
    /// - `rate` is NaN, negative or greater than 1
    pub fn try_errors(rate: f64) -> Result<Self, ConfigError> {
        check_unit("error_rate", rate)?;
        Ok(Self::errors(rate))
    }

    /// Never answers affected requests: their futures stay pending until the
    /// caller gives up (a [`TimeoutLayer`](crate::TimeoutLayer) above, or a
    /// dropped future). The inner service is not called.
    pub const fn abort() -> Self {
        let mut f = Self::none();
        f.abort = true;
        f
    }

    const fn none() -> Self {
        Self {
            latency: None,
            error_rate: 0.0,
            abort: false,
            fraction: 1.0,
            only: None,
        }
    }

    /// Affects only this share of requests (default `1.0`, all), clamped to
    /// `0.0..=1.0`, NaN read as `0.0`. See [`Fault::try_fraction`].
    #[must_use]
    pub fn fraction(mut self, fraction: f64) -> Self {
        self.fraction = clamp_unit(fraction);
        self
    }

    /// [`Fault::fraction`], rejecting a share outside `0.0..=1.0` or NaN.
    ///
    /// # Errors
    /// - `fraction` is NaN, negative or greater than 1
    pub fn try_fraction(self, fraction: f64) -> Result<Self, ConfigError> {
        check_unit("fraction", fraction)?;
        Ok(self.fraction(fraction))
    }

    /// Affects only requests of priority `priority` (exactly that level),
    /// as the layer's priority reader finds it; replaces an earlier `only`.
    #[must_use]
    pub const fn only(mut self, priority: Priority) -> Self {
        self.only = Some(priority);
        self
    }

    /// Adds (or replaces) a fixed latency, cut to [`MAX_DURATION`].
    #[must_use]
    pub const fn and_latency(mut self, delay: Duration) -> Self {
        let delay = at_most_max(delay);
        self.latency = Some((delay, delay));
        self
    }

    /// Adds (or replaces) a latency drawn uniformly from `min..max`; bounds
    /// in the wrong order are swapped, bounds over [`MAX_DURATION`] cut to
    /// it.
    #[must_use]
    pub fn and_latency_between(mut self, min: Duration, max: Duration) -> Self {
        let (min, max) = (at_most_max(min), at_most_max(max));
        self.latency = Some(if min <= max { (min, max) } else { (max, min) });
        self
    }

    /// Adds (or replaces) an error rate, clamped as in [`Fault::errors`].
    #[must_use]
    pub fn and_errors(mut self, rate: f64) -> Self {
        self.error_rate = clamp_unit(rate);
        self
    }

    /// The added latency's bounds `(min, max)`, equal for a fixed latency.
    pub const fn latency_range(&self) -> Option<(Duration, Duration)> {
        self.latency
    }

    /// The probability that an affected request fails, `0.0..=1.0`.
    pub const fn error_rate(&self) -> f64 {
        self.error_rate
    }

    /// Whether affected requests never get an answer.
    pub const fn is_abort(&self) -> bool {
        self.abort
    }

    /// The share of requests affected, `0.0..=1.0`.
    pub const fn affected_fraction(&self) -> f64 {
        self.fraction
    }

    /// The only priority affected, if the fault is limited to one.
    pub const fn only_priority(&self) -> Option<Priority> {
        self.only
    }

    /// The delay for a draw `unit` in `0.0..1.0`.
    pub(super) fn delay(&self, unit: f64) -> Option<Duration> {
        let (min, max) = self.latency?;
        if min == max {
            return Some(min);
        }
        let span = max - min;
        // `try_from`: the product may round just above `Duration::MAX`.
        let offset = Duration::try_from_secs_f64(span.as_secs_f64() * unit).unwrap_or(span);
        Some(min.saturating_add(offset.min(span)))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.abort {
            parts.push("abort".into());
        }
        match self.latency {
            Some((min, max)) if min == max => parts.push(format!("latency {min:?}")),
            Some((min, max)) => parts.push(format!("latency {min:?}..{max:?}")),
            None => {}
        }
        if self.error_rate > 0.0 {
            parts.push(format!("errors {}", self.error_rate));
        }
        if parts.is_empty() {
            parts.push("nothing".into());
        }
        if self.fraction < 1.0 {
            parts.push(format!("fraction {}", self.fraction));
        }
        if let Some(p) = self.only {
            parts.push(format!("only {p}"));
        }
        f.write_str(&parts.join(", "))
    }
}

fn clamp_unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

fn check_unit(field: &'static str, x: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&x) {
        Ok(())
    } else {
        Err(ConfigError::new(field, "must be a number from 0 to 1"))
    }
}

fn check_latency(min: Duration, max: Duration) -> Result<(), ConfigError> {
    if min > max {
        return Err(ConfigError::new(
            "latency",
            "the minimum must not exceed the maximum",
        ));
    }
    validate_duration("latency", max)
}

/// `d`, or [`MAX_DURATION`] if it is longer.
const fn at_most_max(d: Duration) -> Duration {
    if d.as_nanos() > MAX_DURATION.as_nanos() {
        MAX_DURATION
    } else {
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn clamps_and_rejects() {
        for (rate, clamped) in [
            (-0.1, 0.0),
            (1.5, 1.0),
            (f64::NAN, 0.0),
            (f64::INFINITY, 1.0),
            (f64::NEG_INFINITY, 0.0),
            (0.25, 0.25),
        ] {
            assert_eq!(Fault::errors(rate).error_rate(), clamped, "{rate}");
            assert_eq!(
                Fault::abort().fraction(rate).affected_fraction(),
                clamped,
                "{rate}"
            );
            let valid = (0.0..=1.0).contains(&rate);
            assert_eq!(Fault::try_errors(rate).is_ok(), valid, "{rate}");
            assert_eq!(Fault::abort().try_fraction(rate).is_ok(), valid, "{rate}");
        }
        let err = Fault::try_errors(2.0).unwrap_err();
        assert_eq!(err.field(), "error_rate");
        let err = Fault::abort().try_fraction(f64::NAN).unwrap_err();
        assert_eq!(err.field(), "fraction");
        let err = Fault::try_latency_between(2 * MS, MS).unwrap_err();
        assert_eq!(err.field(), "latency");
        assert_eq!(
            Fault::latency_between(2 * MS, MS).latency_range(),
            Some((MS, 2 * MS))
        );
        assert!(Fault::try_latency_between(MS, MS).is_ok());
    }

    #[test]
    fn latency_is_at_most_the_familys_longest_duration() {
        let long = MAX_DURATION + MS;
        let err = Fault::try_latency(long).unwrap_err();
        assert_eq!(
            (err.field(), err.reason()),
            ("latency", "must be at most 365 days")
        );
        assert!(Fault::try_latency(MAX_DURATION).is_ok());
        let err = Fault::try_latency_between(MS, long).unwrap_err();
        assert_eq!(err.field(), "latency");
        assert!(Fault::try_latency_between(MS, Duration::MAX).is_err());
        assert!(Fault::try_latency_between(MS, MAX_DURATION).is_ok());
        // The infallible ones cut it.
        assert_eq!(
            Fault::latency(Duration::MAX).latency_range(),
            Some((MAX_DURATION, MAX_DURATION))
        );
        assert_eq!(
            Fault::latency_between(long, MS).latency_range(),
            Some((MS, MAX_DURATION))
        );
        assert_eq!(
            Fault::errors(1.0).and_latency(long).latency_range(),
            Some((MAX_DURATION, MAX_DURATION))
        );
    }

    #[test]
    fn delay_stays_in_range() {
        let f = Fault::latency_between(100 * MS, 500 * MS);
        assert_eq!(f.delay(0.0), Some(100 * MS));
        assert_eq!(f.delay(0.5), Some(300 * MS));
        assert!(f.delay(0.999_999_9).unwrap() < 500 * MS);
        assert_eq!(Fault::latency(7 * MS).delay(0.9), Some(7 * MS));
        assert_eq!(Fault::errors(1.0).delay(0.5), None);
        // Extreme bounds neither panic nor leave the range.
        let huge = Fault::latency_between(Duration::ZERO, Duration::MAX);
        for unit in [0.0, 0.5, 0.999_999_999_999] {
            let d = huge.delay(unit).unwrap();
            assert!(d <= Duration::MAX);
        }
    }

    #[test]
    fn display() {
        assert_eq!(Fault::abort().to_string(), "abort");
        assert_eq!(
            Fault::errors(0.5).and_latency(MS).to_string(),
            "latency 1ms, errors 0.5"
        );
        assert_eq!(
            Fault::latency_between(MS, 2 * MS).to_string(),
            "latency 1ms..2ms"
        );
        assert_eq!(Fault::errors(0.0).to_string(), "nothing");
    }
}
