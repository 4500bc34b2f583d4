//! The hedge delay: fixed, or a percentile of recent latencies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::config::HedgeConfig;

/// The percentile is taken again every this many samples.
const RELEARN_EVERY: u64 = 8;
/// The shortest learned delay: `1ms` (a service that answers at once
/// would otherwise be hedged at once).
const MIN_LEARNED: Duration = Duration::from_millis(1);

/// A ring of recent latencies and the delay learned from it, without a
/// lock: recording a sample is two atomic writes; every
/// [`RELEARN_EVERY`]-th sample (and the `min_samples`-th) also copies the
/// ring onto the stack and selects the percentile.
pub(crate) struct Latencies {
    slots: Box<[AtomicU64]>,
    /// Samples recorded since the layer was built.
    count: AtomicU64,
    /// The learned delay in nanoseconds; `0` until learned.
    learned: AtomicU64,
    percentile: Option<f64>,
    min_samples: u64,
    fixed: Duration,
}

// === impl Latencies ===

impl Latencies {
    pub(crate) fn new(config: &HedgeConfig) -> Self {
        let len = if config.percentile.is_some() {
            config.samples
        } else {
            0
        };
        Self {
            slots: (0..len).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            learned: AtomicU64::new(0),
            percentile: config.percentile,
            min_samples: config.min_samples as u64,
            fixed: config.delay,
        }
    }

    /// Whether latencies are recorded at all (a percentile is configured).
    #[inline]
    pub(crate) fn learns(&self) -> bool {
        self.percentile.is_some()
    }

    /// The hedge delay now: the learned percentile, or the fixed delay
    /// before it is learned.
    pub(crate) fn delay(&self) -> Duration {
        match self.learned.load(Ordering::Relaxed) {
            0 => self.fixed,
            ns => Duration::from_nanos(ns),
        }
    }

    /// Whether the delay is a learned percentile.
    pub(crate) fn is_learned(&self) -> bool {
        self.learned.load(Ordering::Relaxed) != 0
    }

    /// Records the latency of a good answer.
    pub(crate) fn record(&self, latency: Duration) {
        let Some(p) = self.percentile else { return };
        let len = self.slots.len() as u64;
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        self.slots[((n - 1) % len) as usize].store(ns, Ordering::Relaxed);
        if n >= self.min_samples && (n == self.min_samples || n % RELEARN_EVERY == 0) {
            self.learn(n.min(len) as usize, p);
        }
    }

    fn learn(&self, len: usize, p: f64) {
        let mut buf = [0u64; HedgeConfig::MAX_SAMPLES];
        let buf = &mut buf[..len];
        for (b, s) in buf.iter_mut().zip(self.slots.iter()) {
            *b = s.load(Ordering::Relaxed);
        }
        let k = ((p * len as f64).ceil() as usize).clamp(1, len) - 1;
        let (_, at, _) = buf.select_nth_unstable(k);
        let min = MIN_LEARNED.as_nanos() as u64;
        self.learned.store((*at).max(min), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latencies(p: f64, min: usize, samples: usize) -> Latencies {
        let config = HedgeConfig::builder()
            .delay(Duration::from_millis(50))
            .percentile(p)
            .min_samples(min)
            .samples(samples)
            .build()
            .unwrap();
        Latencies::new(&config)
    }

    #[test]
    fn fixed_until_min_samples_then_the_percentile() {
        let l = latencies(0.9, 10, 100);
        for ms in 1..10 {
            l.record(Duration::from_millis(ms));
            assert_eq!(l.delay(), Duration::from_millis(50));
        }
        l.record(Duration::from_millis(10));
        assert!(l.is_learned());
        // p90 of 1..=10 ms: the 9th smallest.
        assert_eq!(l.delay(), Duration::from_millis(9));
    }

    #[test]
    fn forgets_samples_older_than_the_ring() {
        let l = latencies(1.0, 4, 8);
        for _ in 0..8 {
            l.record(Duration::from_millis(200));
        }
        assert_eq!(l.delay(), Duration::from_millis(200));
        for _ in 0..8 {
            l.record(Duration::from_millis(5));
        }
        assert_eq!(l.delay(), Duration::from_millis(5));
    }

    #[test]
    fn never_learns_below_a_millisecond() {
        let l = latencies(0.5, 1, 10);
        l.record(Duration::ZERO);
        assert_eq!(l.delay(), MIN_LEARNED);
    }

    #[test]
    fn without_a_percentile_records_nothing() {
        let config = HedgeConfig::default();
        let l = Latencies::new(&config);
        assert!(!l.learns());
        l.record(Duration::from_millis(1));
        assert_eq!(l.delay(), HedgeConfig::DEFAULT_DELAY);
    }
}
