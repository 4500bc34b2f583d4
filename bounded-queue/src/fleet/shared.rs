//! The state one layer's services share: leased tokens per key, the mode,
//! the Redis connection and the lease script.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use resilience_core::{BoxError, Priority, Rejected, RejectionKind};
use tokio::sync::{Notify, OnceCell};
use tokio::time::Instant;

use super::config::{FleetRateLimitConfig, WhenRedisFails};

/// The lease script: a GCRA kept in Redis, in microseconds of Redis's own
/// clock (so instances' clocks do not matter), granting up to the wanted
/// tokens at once, shared fairly between the instances asking. General
/// tokens may not use the last `reserve` of the burst; critical ones may.
///
/// KEYS[1]: the key's theoretical arrival time (TAT). KEYS[2]: the
/// instances that asked within `window` (a hash: instance id to `"<TAT of
/// its fair share> <when it last asked> <local admissions charged>"`).
/// ARGV: interval (us), burst
/// tolerance (us), reserve (us), general tokens wanted, critical tokens
/// wanted, the fewest general tokens worth a grant (half a batch: under
/// overload a lease still carries several tokens), this instance's id, the
/// liveness window (us), tokens this instance admitted on its own while it
/// could not reach Redis and the span (us) they were admitted over, the
/// longest retry-after (us), the tokens of a full lease (for the
/// retry-after that follows a grant), and how many tokens this instance
/// has admitted on its own in all (so a lease that Redis runs after the
/// instance gave up on it, and one sent again, charge nothing twice).
///
/// Each of the `n` live instances has a fair share: a GCRA at `n x
/// interval` holding at most `(burst - reserve) / n` tokens. A lease takes
/// the instance's share, or more when the key holds more than the other
/// instances' shares have accrued (spare: what an instance with less
/// demand leaves). Tokens admitted locally are charged first, as if leased
/// at an even pace over their span (so they cost nothing when the key was
/// idle then). Returns `{general granted, critical granted, general retry
/// after (us), critical retry after (us)}`: the general retry-after is when
/// this instance's next full lease fits (its share refilled, or spare left
/// over), 0 when it fits now; the critical one is 0 unless critical tokens
/// were denied.
const LEASE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local reserve = tonumber(ARGV[3])
local want_g = tonumber(ARGV[4])
local want_c = tonumber(ARGV[5])
local min_g = tonumber(ARGV[6])
local id = ARGV[7]
local window = tonumber(ARGV[8])
local debt = tonumber(ARGV[9])
local span = tonumber(ARGV[10])
local max_retry = tonumber(ARGV[11])
local local_total = tonumber(ARGV[13])
local mine = nil
local charged = 0
local others = {}
local fields = redis.call('HGETALL', KEYS[2])
for i = 1, #fields, 2 do
  local a, b, d = string.match(fields[i + 1], '^(%d+) (%d+) (%d+)$')
  if fields[i] == id and a then
    mine = tonumber(a)
    charged = tonumber(d)
  elseif b == nil or tonumber(b) + window < now then
    redis.call('HDEL', KEYS[2], fields[i])
  else
    others[#others + 1] = tonumber(a)
  end
end
local n = #others + 1
local share = interval * n
local cap = math.floor((tau - reserve) / share)
if cap < 1 then cap = 1 end
local tau_i = cap * share
local tat = tonumber(redis.call('GET', KEYS[1])) or 0
if mine == nil then mine = 0 end
if debt > local_total - charged then debt = local_total - charged end
if debt > 0 then
  tat = math.max(tat, now - span) + debt * interval
  mine = math.max(mine, now - span) + debt * share
end
if tat < now then tat = now end
if mine < now then mine = now end
local avail = math.floor((now + tau - reserve - tat) / interval)
if avail < 0 then avail = 0 end
local fair = math.floor((now + tau_i - mine) / share)
if fair < 0 then fair = 0 end
local promised = 0
for _, o in ipairs(others) do
  if o < now then o = now end
  local f = math.floor((now + tau_i - o) / share)
  if f > 0 then promised = promised + f end
end
local g = math.max(fair, avail - promised)
if g > avail then g = avail end
if g > want_g then g = want_g end
if g < math.min(min_g, cap) then g = 0 end
tat = tat + g * interval
mine = math.max(mine, math.min(mine + g * share, now + tau_i))
local c = math.floor((now + tau - tat) / interval)
if c < 0 then c = 0 end
if c > want_c then c = want_c end
tat = tat + c * interval
local retry_g = 0
local next_g = want_g
if g > 0 then next_g = tonumber(ARGV[12]) end
if next_g > 0 then
  local w = math.min(next_g, cap)
  local own = math.max(mine + w * share - tau_i, tat + w * interval - (tau - reserve))
  local spare = tat + (next_g + (n - 1) * cap) * interval - (tau - reserve)
  retry_g = math.floor(math.min(own, spare) - now)
  if retry_g > max_retry then retry_g = max_retry end
  if retry_g < 0 then retry_g = 0 end
  if g == 0 and retry_g < 1 then retry_g = 1 end
end
local retry_c = 0
if c == 0 and want_c > 0 then
  retry_c = math.floor(tat + interval - tau - now)
  if retry_c > max_retry then retry_c = max_retry end
  if retry_c < 1 then retry_c = 1 end
end
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
redis.call('HSET', KEYS[2], id, string.format('%.0f %.0f %.0f', mine, now, math.max(charged, local_total)))
redis.call('PEXPIRE', KEYS[2], math.floor(window / 1000) + 1000)
return {g, c, retry_g, retry_c}
";

/// What a fleet rate limit is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FleetMode {
    /// Limits kept in Redis, tokens leased in batches.
    Shared,
    /// Redis failing: each instance admits its local share.
    Local,
    /// Redis failing and the policy is to fail closed.
    Closed,
}

/// The outcome of trying to admit a request without waiting.
pub(crate) enum Acquire {
    Admitted,
    Rejected(Rejected),
    /// No leased token: wait (bounded) for the lease in flight.
    Wait(Arc<KeyState>),
}

pub(crate) struct Shared {
    pub(crate) config: FleetRateLimitConfig,
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    script: redis::Script,
    shards: Box<[Shard]>,
    shard_cap: usize,
    mode: AtomicU8,
    origin: Instant,
    next_probe: AtomicU64,
    redis_commands: AtomicU64,
    tokens_leased: AtomicU64,
    rejected: AtomicU64,
    mode_changes: AtomicU64,
    /// Redis GCRA parameters, microseconds.
    interval_us: u64,
    tau_us: u64,
    reserve_us: u64,
    /// The local share's GCRA, nanoseconds.
    local_interval: u64,
    local_tolerance: u64,
    local_tolerance_general: u64,
    low_water: i64,
    /// This layer's id among the instances sharing a key in Redis.
    id: String,
    /// How long an instance that stopped asking still counts as live, us.
    window_us: u64,
    /// The most locally admitted tokens charged to Redis at once: the local
    /// share's burst and one period of its rate.
    debt_cap: u64,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

pub(crate) struct KeyState {
    redis_key: Box<[u8]>,
    /// The hash of the instances sharing this key (their fair shares).
    instances_key: Box<[u8]>,
    tokens: AtomicI64,
    reserve: AtomicI64,
    refilling: AtomicBool,
    critical_wanted: AtomicBool,
    /// 0 none yet, 1 granted, 2 denied, 3 failed.
    outcome: AtomicU8,
    /// Until when (ns since `origin`) Redis refuses general tokens (or this
    /// instance's next full lease would not fit its fair share), and
    /// critical ones: misses before then are refused without asking again.
    denied_until: AtomicU64,
    critical_denied_until: AtomicU64,
    notify: Notify,
    local_tat: AtomicU64,
    /// Tokens admitted by the local share, in all and as far as Redis has
    /// confirmed charging them; since when (ns since `origin`) the ones not
    /// confirmed were admitted.
    local_admitted: AtomicU64,
    local_charged: AtomicU64,
    debt_since: AtomicU64,
    last_used: AtomicU64,
}

#[cfg(feature = "metrics")]
struct Metrics {
    mode: [metrics::Gauge; 3],
    changes: [metrics::Counter; 3],
    rejected: [metrics::Counter; 4],
    calls: [metrics::Counter; 3],
}

/// One of the key map's shards: key bytes to their state.
type Shard = RwLock<HashMap<Box<[u8]>, Arc<KeyState>>>;

const SHARDS: usize = 16;
const GRANTED: u8 = 1;
const DENIED: u8 = 2;
const FAILED: u8 = 3;

// === impl FleetMode ===

impl FleetMode {
    /// Every mode.
    pub const ALL: [FleetMode; 3] = [FleetMode::Shared, FleetMode::Local, FleetMode::Closed];

    /// The mode as a bounded, lowercase label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            FleetMode::Shared => "shared",
            FleetMode::Local => "local",
            FleetMode::Closed => "closed",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => FleetMode::Shared,
            1 => FleetMode::Local,
            _ => FleetMode::Closed,
        }
    }
}

impl fmt::Display for FleetMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Shared ===

impl Shared {
    pub(crate) fn new(config: FleetRateLimitConfig, client: redis::Client) -> Self {
        let per_ns = config.per.as_nanos();
        let per_us = config.per.as_micros();
        let num = u128::from(config.num);
        let to_u64 = |v: u128| v.min(u128::from(u64::MAX)) as u64;
        let interval_us = to_u64(per_us / num).max(1);
        let local_interval = to_u64(per_ns * u128::from(config.instances) / num).max(1);
        let local_burst = (config.burst / config.instances).max(1);
        let debt_cap = local_burst.saturating_add(config.num / config.instances);
        let local_reserve = config.reserve / config.instances;
        let local_tolerance = local_interval.saturating_mul(local_burst);
        let local_tolerance_general = local_tolerance
            .saturating_sub(local_interval.saturating_mul(local_reserve))
            .max(local_interval);
        let shard_cap = config.max_keys.div_ceil(SHARDS).max(1);
        #[cfg(feature = "metrics")]
        let metrics = Metrics::new(&config.name);
        let shared = Self {
            interval_us,
            tau_us: interval_us.saturating_mul(config.burst),
            reserve_us: interval_us.saturating_mul(config.reserve),
            local_interval,
            local_tolerance,
            local_tolerance_general,
            low_water: (config.batch / 2) as i64,
            id: instance_id(),
            window_us: to_u64(per_us * 2),
            debt_cap,
            client,
            conn: OnceCell::new(),
            script: redis::Script::new(LEASE_SCRIPT),
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            shard_cap,
            mode: AtomicU8::new(0),
            origin: Instant::now(),
            next_probe: AtomicU64::new(0),
            redis_commands: AtomicU64::new(0),
            tokens_leased: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            mode_changes: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metrics,
            config,
        };
        #[cfg(feature = "metrics")]
        shared.metrics.mode[0].set(1.0);
        shared
    }

    pub(crate) fn mode(&self) -> FleetMode {
        FleetMode::from_u8(self.mode.load(Ordering::Acquire))
    }

    pub(crate) fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub(crate) fn redis_commands(&self) -> u64 {
        self.redis_commands.load(Ordering::Relaxed)
    }

    pub(crate) fn tokens_leased(&self) -> u64 {
        self.tokens_leased.load(Ordering::Relaxed)
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub(crate) fn mode_changes(&self) -> u64 {
        self.mode_changes.load(Ordering::Relaxed)
    }

    /// Admits with a leased token, or says what to do instead. No Redis
    /// round trip, no clock read and no allocation while tokens are leased:
    /// a shard read lock, a hash lookup and a compare-and-swap.
    pub(crate) fn acquire(self: &Arc<Self>, key: &[u8], p: Priority) -> Acquire {
        let shard = &self.shards[shard_of(key)];
        // `Ok`: admitted, wants a refill; `Err`: not admitted yet.
        let found = {
            let map = shard.read().unwrap_or_else(PoisonError::into_inner);
            match map.get(key) {
                Some(st) if st.take(p) => {
                    if !self.wants_refill(st) {
                        return Acquire::Admitted;
                    }
                    Ok(st.clone())
                }
                Some(st) => Err(Some(st.clone())),
                None => Err(None),
            }
        };
        let st = match found {
            Ok(st) => {
                self.refill(&st);
                return Acquire::Admitted;
            }
            Err(Some(st)) => st,
            // The read lock is released: now take the write lock.
            Err(None) => self.insert(shard, key),
        };
        if st.take(p) {
            if self.wants_refill(&st) {
                self.refill(&st);
            }
            return Acquire::Admitted;
        }
        if self.mode.load(Ordering::Acquire) == 0 {
            // Redis said no a moment ago: no round trip until it may say yes.
            let now = self.nanos(Instant::now());
            if let Some(retry) = self.denied_for(&st, p, now) {
                return Acquire::Rejected(self.reject(p, retry));
            }
            if p >= Priority::Critical && self.config.reserve > 0 {
                st.critical_wanted.store(true, Ordering::Release);
            }
            self.refill(&st);
            return Acquire::Wait(st);
        }
        self.fallback(&st, p)
    }

    /// Waits for the lease in flight, at most `redis_timeout`; then (or if
    /// Redis fails) decides by the fallback policy.
    pub(crate) async fn wait(self: Arc<Self>, st: Arc<KeyState>, p: Priority) -> Acquire {
        // At most 365 days (checked at build): never overflows; and if it
        // did, no deadline rather than a panic.
        let deadline = Instant::now().checked_add(self.config.redis_timeout);
        loop {
            let notified = st.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if st.take(p) {
                return Acquire::Admitted;
            }
            if !st.refilling.load(Ordering::Acquire) {
                match st.outcome.load(Ordering::Acquire) {
                    // Denied, or others took the tokens first: lease again
                    // unless Redis said when to come back.
                    GRANTED | DENIED => {
                        let now = self.nanos(Instant::now());
                        match self.denied_for(&st, p, now) {
                            Some(retry) => return Acquire::Rejected(self.reject(p, retry)),
                            None => {
                                if p >= Priority::Critical && self.config.reserve > 0 {
                                    st.critical_wanted.store(true, Ordering::Release);
                                }
                                self.refill(&st);
                            }
                        }
                    }
                    _ => return self.fallback(&st, p),
                }
            }
            let timed_out = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, notified).await.is_err(),
                None => {
                    notified.await;
                    false
                }
            };
            if timed_out {
                tracing::debug!(name = %self.config.name, "redis slower than the bound");
                return self.fallback(&st, p);
            }
        }
    }

    /// Whether to lease more for `st` now: below the low water mark, Redis
    /// in use, no lease in flight, and Redis not refusing.
    fn wants_refill(&self, st: &KeyState) -> bool {
        st.tokens.load(Ordering::Relaxed) < self.low_water
            && self.mode.load(Ordering::Relaxed) == 0
            && !st.refilling.load(Ordering::Relaxed)
            && self
                .denied_for(st, Priority::Sheddable, self.nanos(Instant::now()))
                .is_none()
    }

    /// How long Redis still refuses what `p` may use, if it does.
    fn denied_for(&self, st: &KeyState, p: Priority, now: u64) -> Option<Duration> {
        let general = st.denied_until.load(Ordering::Acquire);
        if now >= general {
            return None;
        }
        let until = if p >= Priority::Critical && self.config.reserve > 0 {
            let critical = st.critical_denied_until.load(Ordering::Acquire);
            if now >= critical {
                return None;
            }
            general.min(critical)
        } else {
            general
        };
        Some(Duration::from_nanos(until - now))
    }

    /// Decides without Redis: the local share, or closed.
    fn fallback(self: &Arc<Self>, st: &Arc<KeyState>, p: Priority) -> Acquire {
        let now = self.nanos(Instant::now());
        self.maybe_probe(st, now);
        match self.config.when_redis_fails {
            WhenRedisFails::FailClosed => {
                Acquire::Rejected(self.reject(p, self.config.probe_every))
            }
            WhenRedisFails::LocalShare => {
                let tolerance = if p >= Priority::Critical {
                    self.local_tolerance
                } else {
                    self.local_tolerance_general
                };
                match gcra(&st.local_tat, now, self.local_interval, tolerance) {
                    Ok(()) => {
                        // Charged to Redis when it answers again.
                        let before = st.local_admitted.fetch_add(1, Ordering::AcqRel);
                        if before == st.local_charged.load(Ordering::Acquire) {
                            st.debt_since.store(now, Ordering::Release);
                        }
                        Acquire::Admitted
                    }
                    Err(wait) => Acquire::Rejected(self.reject(p, wait)),
                }
            }
        }
    }

    fn reject(&self, p: Priority, retry_after: Duration) -> Rejected {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.metrics.rejected[p.index()].increment(1);
        tracing::debug!(name = %self.config.name, priority = %p.as_str(), "fleet rate limited");
        Rejected::new(RejectionKind::Throttled, "fleet rate limited").with_retry_after(
            retry_after
                .max(Duration::from_millis(1))
                .min(self.config.per),
        )
    }

    /// While Redis fails, one key tries it again every `probe_every`.
    fn maybe_probe(self: &Arc<Self>, st: &Arc<KeyState>, now: u64) {
        if self.mode.load(Ordering::Acquire) == 0 {
            return;
        }
        let next = self.next_probe.load(Ordering::Acquire);
        let period = self.config.probe_every.as_nanos().min(u128::from(u64::MAX)) as u64;
        if now >= next
            && self
                .next_probe
                .compare_exchange(
                    next,
                    now.saturating_add(period),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.refill(st);
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
    }

    /// Starts a lease for `st` unless one is in flight.
    fn refill(self: &Arc<Self>, st: &Arc<KeyState>) {
        if st.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(self.clone().run_refill(st.clone()));
            }
            Err(_) => {
                // Outside a runtime nothing can reach Redis.
                st.outcome.store(FAILED, Ordering::Release);
                st.refilling.store(false, Ordering::Release);
                st.notify.notify_waiters();
            }
        }
    }

    async fn run_refill(self: Arc<Self>, st: Arc<KeyState>) {
        let batch = self.config.batch as i64;
        let want_g = (batch - st.tokens.load(Ordering::Acquire).max(0)).max(0);
        let want_c = if self.config.reserve > 0 && st.critical_wanted.swap(false, Ordering::AcqRel)
        {
            (batch.min(self.config.reserve as i64) - st.reserve.load(Ordering::Acquire).max(0))
                .max(0)
        } else {
            0
        };
        let local_total = st.local_admitted.load(Ordering::Acquire);
        let debt = local_total.saturating_sub(st.local_charged.load(Ordering::Acquire));
        if want_g + want_c > 0 || debt > 0 {
            let charge = self.charge(&st, debt, local_total);
            self.redis_commands.fetch_add(1, Ordering::Relaxed);
            let result = tokio::time::timeout(
                self.config.redis_timeout,
                self.lease(&st, want_g, want_c, charge),
            )
            .await
            .map_err(|_| BoxError::from("redis command timed out"))
            .and_then(|r| r);
            match result {
                Ok((g, c, retry_g, retry_c)) => {
                    st.tokens.fetch_add(g, Ordering::AcqRel);
                    st.reserve.fetch_add(c, Ordering::AcqRel);
                    // Charged (what exceeded the cap is forgiven).
                    st.local_charged.fetch_max(local_total, Ordering::AcqRel);
                    let now = self.nanos(Instant::now());
                    // When this instance's next lease fits: until then a miss
                    // is refused without asking (0: it fits now).
                    let until = if retry_g > 0 {
                        now.saturating_add(retry_g.saturating_mul(1000))
                    } else {
                        0
                    };
                    st.denied_until.store(until, Ordering::Release);
                    if retry_c > 0 {
                        st.critical_denied_until
                            .store(now.saturating_add(retry_c * 1000), Ordering::Release);
                    }
                    self.tokens_leased
                        .fetch_add((g + c) as u64, Ordering::Relaxed);
                    let granted = g + c > 0;
                    #[cfg(feature = "metrics")]
                    self.metrics.calls[if granted { 0 } else { 1 }].increment(1);
                    st.outcome
                        .store(if granted { GRANTED } else { DENIED }, Ordering::Release);
                    self.set_mode(FleetMode::Shared, None);
                }
                Err(err) => {
                    #[cfg(feature = "metrics")]
                    self.metrics.calls[2].increment(1);
                    st.outcome.store(FAILED, Ordering::Release);
                    let now = self.nanos(Instant::now());
                    let period =
                        self.config.probe_every.as_nanos().min(u128::from(u64::MAX)) as u64;
                    self.next_probe
                        .store(now.saturating_add(period), Ordering::Release);
                    let mode = match self.config.when_redis_fails {
                        WhenRedisFails::LocalShare => FleetMode::Local,
                        WhenRedisFails::FailClosed => FleetMode::Closed,
                    };
                    self.set_mode(mode, Some(&*err));
                }
            }
        } else {
            st.outcome.store(GRANTED, Ordering::Release);
        }
        st.last_used.store(
            self.redis_commands.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        st.refilling.store(false, Ordering::Release);
        st.notify.notify_waiters();
    }

    /// What to charge Redis for `debt` tokens admitted by the local share
    /// and not yet charged: the tokens, the span (us) they were admitted
    /// over, and the local admissions in all. Only the last period counts
    /// (older ones in proportion are forgiven), at most the local share's
    /// burst plus one period of its rate.
    fn charge(&self, st: &KeyState, debt: u64, local_total: u64) -> (u64, u64, u64) {
        if debt == 0 {
            return (0, 0, local_total);
        }
        let now = self.nanos(Instant::now());
        let since = st.debt_since.load(Ordering::Acquire);
        let span = now.saturating_sub(since).max(1);
        let per = self.config.per.as_nanos().min(u128::from(u64::MAX)) as u64;
        let (tokens, span) = if span > per {
            let recent = u128::from(debt) * u128::from(per) / u128::from(span);
            (recent.min(u128::from(u64::MAX)) as u64, per)
        } else {
            (debt, span)
        };
        (tokens.min(self.debt_cap), (span / 1000).max(1), local_total)
    }

    /// One `EVALSHA` of the lease script; connects first if needed.
    async fn lease(
        &self,
        st: &KeyState,
        want_g: i64,
        want_c: i64,
        (debt, span_us, local_total): (u64, u64, u64),
    ) -> Result<(i64, i64, u64, u64), BoxError> {
        let min_g = want_g.min(self.config.batch.div_ceil(2) as i64);
        let mut conn = self
            .conn
            .get_or_try_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(self.config.redis_timeout)
                    .set_response_timeout(self.config.redis_timeout)
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await?
            .clone();
        let value: redis::Value = self
            .script
            .key(&*st.redis_key)
            .key(&*st.instances_key)
            .arg(self.interval_us)
            .arg(self.tau_us)
            .arg(self.reserve_us)
            .arg(want_g)
            .arg(want_c)
            .arg(min_g)
            .arg(&self.id)
            .arg(self.window_us)
            .arg(debt)
            .arg(span_us)
            .arg(self.config.per.as_micros().min(u128::from(u64::MAX)) as u64)
            .arg(self.config.batch)
            .arg(local_total)
            .invoke_async(&mut conn)
            .await?;
        parse_lease(&value, want_g, want_c, self.config.per)
    }

    fn set_mode(&self, mode: FleetMode, err: Option<&(dyn std::error::Error + 'static)>) {
        let old = FleetMode::from_u8(self.mode.swap(mode as u8, Ordering::AcqRel));
        if old == mode {
            return;
        }
        self.mode_changes.fetch_add(1, Ordering::Relaxed);
        match err {
            Some(err) => tracing::info!(
                name = %self.config.name, from = %old, to = %mode, error = %err,
                "fleet rate limit: redis failing"
            ),
            None => tracing::info!(
                name = %self.config.name, from = %old, to = %mode,
                "fleet rate limit: redis back, limit shared again"
            ),
        }
        #[cfg(feature = "metrics")]
        {
            for (i, m) in FleetMode::ALL.iter().enumerate() {
                self.metrics.mode[i].set(if *m == mode { 1.0 } else { 0.0 });
            }
            self.metrics.changes[mode as usize].increment(1);
        }
    }

    /// The key's state, created (and an old key forgotten if the shard is
    /// full) on first use.
    fn insert(&self, shard: &Shard, key: &[u8]) -> Arc<KeyState> {
        let mut map = shard.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(st) = map.get(key) {
            return st.clone();
        }
        if map.len() >= self.shard_cap {
            let oldest = map
                .iter()
                .filter(|(_, s)| !s.refilling.load(Ordering::Acquire))
                .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest.or_else(|| map.keys().next().cloned()) {
                map.remove(&k);
            }
        }
        // `<prefix><name>:<key>` and `<prefix><name>#i:<key>`: a name has no
        // `#` or `:`, so no request's key can name another's state.
        let redis_key = |tag: &[u8]| {
            let mut k = Vec::with_capacity(
                self.config.prefix.len() + self.config.name.len() + tag.len() + key.len(),
            );
            k.extend_from_slice(self.config.prefix.as_bytes());
            k.extend_from_slice(self.config.name.as_bytes());
            k.extend_from_slice(tag);
            k.extend_from_slice(key);
            k.into_boxed_slice()
        };
        let st = Arc::new(KeyState {
            redis_key: redis_key(b":"),
            instances_key: redis_key(b"#i:"),
            tokens: AtomicI64::new(0),
            reserve: AtomicI64::new(0),
            refilling: AtomicBool::new(false),
            critical_wanted: AtomicBool::new(false),
            outcome: AtomicU8::new(0),
            denied_until: AtomicU64::new(0),
            critical_denied_until: AtomicU64::new(0),
            notify: Notify::new(),
            local_tat: AtomicU64::new(0),
            local_admitted: AtomicU64::new(0),
            local_charged: AtomicU64::new(0),
            debt_since: AtomicU64::new(0),
            last_used: AtomicU64::new(self.redis_commands.load(Ordering::Relaxed)),
        });
        map.insert(key.into(), st.clone());
        st
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.config.name)
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

// === impl KeyState ===

impl KeyState {
    /// Spends a leased token: general first, then (critical requests) the
    /// reserve.
    fn take(&self, p: Priority) -> bool {
        if take_one(&self.tokens) {
            return true;
        }
        p >= Priority::Critical && take_one(&self.reserve)
    }
}

impl fmt::Debug for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyState")
            .field("tokens", &self.tokens)
            .field("reserve", &self.reserve)
            .finish_non_exhaustive()
    }
}

// === impl Metrics ===

#[cfg(feature = "metrics")]
impl Metrics {
    fn new(name: &str) -> Self {
        use resilience_core::names::{
            FLEET_RATE_LIMIT_MODE, FLEET_RATE_LIMIT_MODE_CHANGES_TOTAL,
            FLEET_RATE_LIMIT_REDIS_CALLS_TOTAL, FLEET_RATE_LIMIT_REJECTED_TOTAL, LABEL_MODE,
            LABEL_NAME, LABEL_OUTCOME, LABEL_PRIORITY,
        };
        metrics::describe_gauge!(
            FLEET_RATE_LIMIT_MODE,
            metrics::Unit::Count,
            "1 for a fleet rate limit's current mode (shared, local, closed)."
        );
        metrics::describe_counter!(
            FLEET_RATE_LIMIT_MODE_CHANGES_TOTAL,
            metrics::Unit::Count,
            "Changes of a fleet rate limit's mode, by the mode entered."
        );
        metrics::describe_counter!(
            FLEET_RATE_LIMIT_REJECTED_TOTAL,
            metrics::Unit::Count,
            "Requests a fleet rate limit refused."
        );
        metrics::describe_counter!(
            FLEET_RATE_LIMIT_REDIS_CALLS_TOTAL,
            metrics::Unit::Count,
            "Token leases asked of Redis, by outcome."
        );
        let name = name.to_owned();
        Self {
            mode: FleetMode::ALL.map(|m| {
                metrics::gauge!(FLEET_RATE_LIMIT_MODE, LABEL_NAME => name.clone(), LABEL_MODE => m.as_str())
            }),
            changes: FleetMode::ALL.map(|m| {
                metrics::counter!(FLEET_RATE_LIMIT_MODE_CHANGES_TOTAL, LABEL_NAME => name.clone(), LABEL_MODE => m.as_str())
            }),
            rejected: Priority::ALL.map(|p| {
                metrics::counter!(FLEET_RATE_LIMIT_REJECTED_TOTAL, LABEL_NAME => name.clone(), LABEL_PRIORITY => p.as_str())
            }),
            calls: ["granted", "denied", "error"].map(|o| {
                metrics::counter!(FLEET_RATE_LIMIT_REDIS_CALLS_TOTAL, LABEL_NAME => name.clone(), LABEL_OUTCOME => o)
            }),
        }
    }
}

fn take_one(tokens: &AtomicI64) -> bool {
    let mut v = tokens.load(Ordering::Relaxed);
    while v > 0 {
        match tokens.compare_exchange_weak(v, v - 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(actual) => v = actual,
        }
    }
    false
}

/// A random id for this layer among the instances sharing a key: 16 hex
/// digits from std's randomly keyed hasher, the process id and the time.
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut h);
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .hash(&mut h);
    format!("{:016x}", h.finish())
}

fn shard_of(key: &[u8]) -> usize {
    // FNV-1a: cheap for short keys; the map itself hashes with SipHash.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

/// A GCRA step at `now` (ns): a token, or how long until one.
pub(crate) fn gcra(
    tat: &AtomicU64,
    now: u64,
    interval: u64,
    tolerance: u64,
) -> Result<(), Duration> {
    let mut cur = tat.load(Ordering::Relaxed);
    loop {
        let next = cur.max(now).saturating_add(interval);
        let ahead = next - now;
        if ahead > tolerance {
            return Err(Duration::from_nanos(ahead - tolerance));
        }
        match tat.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(actual) => cur = actual,
        }
    }
}

/// Reads the script's answer; anything but four integers in range is an
/// error (a garbage answer never grants tokens).
pub(crate) fn parse_lease(
    value: &redis::Value,
    want_g: i64,
    want_c: i64,
    per: Duration,
) -> Result<(i64, i64, u64, u64), BoxError> {
    let redis::Value::Array(items) = value else {
        return Err("redis answered something that is not a lease".into());
    };
    let [
        redis::Value::Int(g),
        redis::Value::Int(c),
        redis::Value::Int(retry_g),
        redis::Value::Int(retry_c),
    ] = items.as_slice()
    else {
        return Err("redis answered a malformed lease".into());
    };
    // A retry-after can be at most the burst plus a batch: within two periods.
    let max_retry = per.as_micros().min(i64::MAX as u128 / 2) as i64 * 2;
    let in_range = (0..=want_g).contains(g)
        && (0..=want_c).contains(c)
        && (0..=max_retry).contains(retry_g)
        && (0..=max_retry).contains(retry_c);
    if !in_range {
        return Err("redis answered a lease out of range".into());
    }
    Ok((*g, *c, *retry_g as u64, *retry_c as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn garbage_answers_are_errors() {
        let per = Duration::from_secs(1);
        let lease = |v: [i64; 4]| Value::Array(v.iter().map(|i| Value::Int(*i)).collect());
        assert_eq!(
            parse_lease(&lease([3, 0, 0, 0]), 5, 0, per).unwrap(),
            (3, 0, 0, 0)
        );
        assert_eq!(
            parse_lease(&lease([0, 0, 7, 0]), 5, 0, per).unwrap(),
            (0, 0, 7, 0)
        );
        for bad in [
            Value::Okay,
            Value::Nil,
            Value::Int(5),
            Value::Array(vec![Value::Int(1)]),
            lease([6, 0, 0, 0]),
            lease([-1, 0, 0, 0]),
            lease([0, 1, 0, 0]),
            lease([0, 0, i64::MAX, 0]),
            lease([0, 0, 0, -1]),
            Value::Array(vec![
                Value::BulkString(b"3".to_vec()),
                Value::Int(0),
                Value::Int(0),
                Value::Int(0),
            ]),
        ] {
            assert!(parse_lease(&bad, 5, 0, per).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn local_gcra_allows_burst_then_rate() {
        let tat = AtomicU64::new(0);
        let t0 = 1_000_000_000;
        for _ in 0..3 {
            assert!(gcra(&tat, t0, 10, 30).is_ok());
        }
        assert_eq!(gcra(&tat, t0, 10, 30), Err(Duration::from_nanos(10)));
        assert!(gcra(&tat, t0 + 10, 10, 30).is_ok());
    }

    fn shared(redis: &resilience_test_support::RedisServer, name: &str) -> Arc<Shared> {
        // Ten tokens an hour: nothing refills during a test.
        let config = FleetRateLimitConfig::builder()
            .name(name)
            .rate(10, Duration::from_secs(3600))
            .batch(10)
            .burst(10)
            .instances(2)
            .redis_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        Arc::new(Shared::new(
            config,
            redis::Client::open(redis.url()).unwrap(),
        ))
    }

    fn key(shared: &Shared) -> Arc<KeyState> {
        shared.insert(&shared.shards[shard_of(b"k")], b"k")
    }

    /// What an instance admitted on its own is charged once, even when the
    /// report reaches Redis twice (a lease Redis runs after the instance
    /// gave up on it, then the next lease).
    #[tokio::test(flavor = "current_thread")]
    async fn local_admissions_are_charged_once() {
        let Some(redis) = resilience_test_support::RedisServer::start().await else {
            return;
        };
        let a = shared(&redis, "charge");
        let st = key(&a);
        for _ in 0..2 {
            let (g, ..) = a.lease(&st, 0, 0, (4, 1_000, 4)).await.unwrap();
            assert_eq!(g, 0);
        }
        let (g, ..) = a.lease(&st, 10, 0, (0, 0, 4)).await.unwrap();
        assert_eq!(g, 6, "10 less the 4 admitted alone, charged once");
    }

    /// An instance's fair share holds what it has accrued: another may take
    /// its own share and what is spare, not that.
    #[tokio::test(flavor = "current_thread")]
    async fn a_share_is_kept_for_an_instance_that_asked() {
        let Some(redis) = resilience_test_support::RedisServer::start().await else {
            return;
        };
        let (a, b) = (shared(&redis, "fair"), shared(&redis, "fair"));
        let (sa, sb) = (key(&a), key(&b));
        // Alone, A could take all ten; it takes two.
        assert_eq!(a.lease(&sa, 2, 0, (0, 0, 0)).await.unwrap().0, 2);
        // Two live instances: a share of five each. A has four of its share
        // left, so B gets its five, not the eight left in Redis...
        assert_eq!(b.lease(&sb, 10, 0, (0, 0, 0)).await.unwrap().0, 5);
        // ...and A the three that remain (its share would hold four).
        let (g, _, retry, _) = a.lease(&sa, 3, 0, (0, 0, 0)).await.unwrap();
        assert_eq!(g, 3);
        assert!(retry > 0, "told when its next lease fits");
        // Nothing left: B is refused and told to come back later.
        let (g, _, retry, _) = b.lease(&sb, 10, 0, (0, 0, 0)).await.unwrap();
        assert_eq!(g, 0);
        assert!(retry > 0);
    }

    /// What an instance admitted alone is charged over the span it was
    /// admitted in, its last period only, at most the local share's burst
    /// and one period of its rate.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_charge_covers_the_last_period_and_is_capped() {
        let config = FleetRateLimitConfig::builder()
            .rate(300, Duration::from_secs(1))
            .batch(10)
            .instances(3)
            .build()
            .unwrap();
        // No connection is made: only the charge is computed.
        let shared = Shared::new(config, redis::Client::open("redis://127.0.0.1:1/").unwrap());
        let st = key(&shared);
        tokio::time::advance(Duration::from_secs(20)).await;
        let now = shared.nanos(Instant::now());
        let half = Duration::from_millis(500).as_nanos() as u64;
        st.debt_since.store(now - half, Ordering::Release);
        assert_eq!(shared.charge(&st, 40, 40), (40, 500_000, 40));
        // Admitted over ten seconds: the last second's tenth is charged...
        st.debt_since.store(now - 20 * half, Ordering::Release);
        assert_eq!(shared.charge(&st, 1_000, 1_200), (100, 1_000_000, 1_200));
        // ...at most the local burst (30 / 3) and a period of the local
        // share (100).
        assert_eq!(shared.charge(&st, 5_000, 5_000), (110, 1_000_000, 5_000));
        assert_eq!(shared.charge(&st, 0, 7), (0, 0, 7));
    }

    #[test]
    fn shards_spread_keys() {
        let used: std::collections::HashSet<_> =
            (0..200u32).map(|i| shard_of(&i.to_be_bytes())).collect();
        assert_eq!(used.len(), SHARDS);
    }
}
