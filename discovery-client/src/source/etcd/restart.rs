//! Rolling restarts, one instance of a service at a time, through an etcd
//! lock.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use resilience_core::ConfigError;
use resilience_core::config::{validate_duration, validate_positive_duration};
use resilience_core::etcd::{EtcdClient, Value};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{EtcdConfig, Registration};

/// Validated configuration of a [`RestartLock`].
///
/// With the `serde` feature it deserializes (same validation as the
/// builder), e.g. `{"registry_prefix": "/services/users/", "lock_key":
/// "/locks/restart/users", "min_healthy": 2, "lease_ttl": "10s"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RestartLockConfigBuilder"))]
pub struct RestartLockConfig {
    registry_prefix: String,
    lock_key: String,
    min_healthy: usize,
    lease_ttl: Duration,
    wait_timeout: Duration,
    poll: Duration,
}

/// Builds a [`RestartLockConfig`]; see [`RestartLockConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RestartLockConfigBuilder {
    registry_prefix: String,
    lock_key: String,
    min_healthy: usize,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    lease_ttl: Duration,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    wait_timeout: Duration,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    poll: Duration,
}

/// One lock per service, in etcd: before an instance restarts it takes the
/// lock, checks that enough of the other instances are registered,
/// deregisters, drains, restarts, registers again, and releases.
///
/// The lock is a key (`lock_key`) created in a transaction only if it does
/// not exist (`create_revision == 0`), under a lease kept alive in the
/// background: a holder that dies (or drops its [`RestartPermit`] without
/// releasing it) loses the lock when the lease expires, within `lease_ttl`.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use resilience_discovery::source::EtcdConfig;
/// use resilience_discovery::source::etcd::{RestartLock, RestartLockConfig};
/// # async fn run(registration: resilience_discovery::source::Registration) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let etcd = EtcdConfig::builder().endpoint("http://127.0.0.1:2379").build()?;
/// let lock = RestartLock::new(
///     &etcd,
///     RestartLockConfig::builder()
///         .registry_prefix("/services/users/")
///         .lock_key("/locks/restart/users")
///         .min_healthy(2)
///         .build()?,
/// );
/// let own_key = registration.key().to_owned();
/// let permit = lock.acquire("instance-1", &own_key).await?;
/// permit.deregister(registration).await?;
/// permit.drain(|| 0, Duration::from_millis(500), Duration::from_secs(30)).await?;
/// // ... restart, then register again under `own_key` ...
/// permit.release_when_registered(&own_key, Duration::from_secs(60)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RestartLock {
    client: EtcdClient,
    config: RestartLockConfig,
}

/// The lock, held: only one instance of the service holds it at a time.
///
/// Release it with [`release`](Self::release) or
/// [`release_when_registered`](Self::release_when_registered). Dropping it
/// stops the lease's keep-alive, as a crash would: the lock is freed when
/// the lease expires.
pub struct RestartPermit {
    client: EtcdClient,
    config: RestartLockConfig,
    holder: String,
    lease: i64,
    keepalive: JoinHandle<()>,
}

/// Why a rolling-restart step failed.
#[derive(Debug)]
pub struct RestartError {
    kind: RestartErrorKind,
    detail: String,
}

/// The kind of a [`RestartError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestartErrorKind {
    /// Another instance held the lock for the whole wait.
    LockTimeout,
    /// Fewer than `min_healthy` other instances were registered for the
    /// whole wait; the lock was released.
    Unhealthy,
    /// In-flight requests did not finish within the drain timeout.
    DrainTimeout,
    /// The instance did not appear in the registry again in time; the lock
    /// was released.
    NotRegistered,
    /// etcd could not be reached or answered an error.
    Etcd,
}

// === impl RestartLockConfig ===

impl RestartLockConfig {
    /// Other instances that must be registered: `1`.
    pub const DEFAULT_MIN_HEALTHY: usize = 1;
    /// The lock's lease: `10s`; a dead holder frees the lock within it.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
    /// How long [`RestartLock::acquire`] waits for the lock and the health
    /// gate: `5min`.
    pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);
    /// How often the lock and the registry are read while waiting: `100ms`.
    pub const DEFAULT_POLL: Duration = Duration::from_millis(100);

    /// A builder with the defaults (the prefix and the lock key have none).
    pub fn builder() -> RestartLockConfigBuilder {
        RestartLockConfigBuilder::default()
    }

    /// The registry prefix the service's instances register under.
    pub fn registry_prefix(&self) -> &str {
        &self.registry_prefix
    }

    /// The lock's key.
    pub fn lock_key(&self) -> &str {
        &self.lock_key
    }

    /// The lock's lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }
}

impl Default for RestartLockConfigBuilder {
    fn default() -> Self {
        Self {
            registry_prefix: String::new(),
            lock_key: String::new(),
            min_healthy: RestartLockConfig::DEFAULT_MIN_HEALTHY,
            lease_ttl: RestartLockConfig::DEFAULT_LEASE_TTL,
            wait_timeout: RestartLockConfig::DEFAULT_WAIT_TIMEOUT,
            poll: RestartLockConfig::DEFAULT_POLL,
        }
    }
}

impl RestartLockConfigBuilder {
    /// Where the service's instances register (e.g. `/services/users/`).
    pub fn registry_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.registry_prefix = prefix.into();
        self
    }

    /// The lock's key (e.g. `/locks/restart/users`), one per service.
    pub fn lock_key(mut self, key: impl Into<String>) -> Self {
        self.lock_key = key.into();
        self
    }

    /// Other instances (besides the one restarting) that must be
    /// registered before it goes (default 1).
    pub fn min_healthy(mut self, k: usize) -> Self {
        self.min_healthy = k;
        self
    }

    /// The lock's lease (default 10 s, at least 1 s).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long to wait for the lock and the health gate (default 5 min).
    pub fn wait_timeout(mut self, d: Duration) -> Self {
        self.wait_timeout = d;
        self
    }

    /// How often to look again while waiting (default 100 ms).
    pub fn poll(mut self, d: Duration) -> Self {
        self.poll = d;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `registry_prefix` or `lock_key` is empty
    /// - `lock_key` is under `registry_prefix`
    /// - `lease_ttl` is below one second (etcd's granularity)
    /// - `wait_timeout` or `poll` is zero
    /// - a duration is longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days)
    pub fn build(self) -> Result<RestartLockConfig, ConfigError> {
        let c = RestartLockConfig {
            registry_prefix: self.registry_prefix,
            lock_key: self.lock_key,
            min_healthy: self.min_healthy,
            lease_ttl: self.lease_ttl,
            wait_timeout: self.wait_timeout,
            poll: self.poll,
        };
        if c.registry_prefix.is_empty() {
            return Err(ConfigError::new("registry_prefix", "must not be empty"));
        }
        if c.lock_key.is_empty() {
            return Err(ConfigError::new("lock_key", "must not be empty"));
        }
        if c.lock_key.starts_with(&c.registry_prefix) {
            return Err(ConfigError::new(
                "lock_key",
                "must not be under the registry prefix",
            ));
        }
        if c.lease_ttl < Duration::from_secs(1) {
            return Err(ConfigError::new("lease_ttl", "must be at least 1s"));
        }
        validate_duration("lease_ttl", c.lease_ttl)?;
        validate_positive_duration("wait_timeout", c.wait_timeout)?;
        validate_positive_duration("poll", c.poll)?;
        Ok(c)
    }
}

impl TryFrom<RestartLockConfigBuilder> for RestartLockConfig {
    type Error = ConfigError;

    fn try_from(b: RestartLockConfigBuilder) -> Result<Self, Self::Error> {
        b.build()
    }
}

// === impl RestartLock ===

impl RestartLock {
    /// A lock in the etcd of `etcd`.
    pub fn new(etcd: &EtcdConfig, config: RestartLockConfig) -> Self {
        Self {
            client: etcd.client(),
            config,
        }
    }

    /// Takes the lock for `holder` (a name shown to others), then waits
    /// until at least `min_healthy` instances other than `own_key` are
    /// registered. Both waits together take at most `wait_timeout`.
    ///
    /// # Errors
    ///
    /// [`LockTimeout`](RestartErrorKind::LockTimeout) when the lock stays
    /// taken, [`Unhealthy`](RestartErrorKind::Unhealthy) when too few
    /// instances are registered (the lock is released),
    /// [`Etcd`](RestartErrorKind::Etcd) when etcd fails.
    pub async fn acquire(
        &self,
        holder: &str,
        own_key: &str,
    ) -> Result<RestartPermit, RestartError> {
        let deadline = Instant::now() + self.config.wait_timeout;
        let lease = self
            .client
            .grant(self.config.lease_ttl)
            .await
            .map_err(etcd)?;
        let permit = RestartPermit {
            client: self.client.clone(),
            config: self.config.clone(),
            holder: holder.to_owned(),
            lease,
            keepalive: tokio::spawn(keep_alive(
                self.client.clone(),
                lease,
                self.config.lease_ttl,
            )),
        };
        loop {
            if self.try_lock(holder, lease).await? {
                break;
            }
            if Instant::now() >= deadline {
                let _ = permit.release().await;
                return Err(RestartError::new(
                    RestartErrorKind::LockTimeout,
                    format!(
                        "{} still held after {:?}",
                        self.config.lock_key, self.config.wait_timeout
                    ),
                ));
            }
            tokio::time::sleep(self.config.poll).await;
        }
        tracing::info!(lock = %self.config.lock_key, %holder, "restart lock taken");
        loop {
            let others = self.registered_others(own_key).await?;
            if others >= self.config.min_healthy {
                return Ok(permit);
            }
            if Instant::now() >= deadline {
                let _ = permit.release().await;
                return Err(RestartError::new(
                    RestartErrorKind::Unhealthy,
                    format!(
                        "{others} other instances registered, {} needed",
                        self.config.min_healthy
                    ),
                ));
            }
            tokio::time::sleep(self.config.poll).await;
        }
    }

    /// Who holds the lock now, if anyone.
    ///
    /// # Errors
    ///
    /// When etcd fails.
    pub async fn holder(&self) -> Result<Option<String>, RestartError> {
        let (_, kvs) = self
            .client
            .range_prefix(&self.config.lock_key)
            .await
            .map_err(etcd)?;
        Ok(kvs
            .into_iter()
            .find(|kv| kv.key == self.config.lock_key.as_bytes())
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    /// Instances registered under the prefix, other than `own_key`.
    async fn registered_others(&self, own_key: &str) -> Result<usize, RestartError> {
        let (_, kvs) = self
            .client
            .range_prefix(&self.config.registry_prefix)
            .await
            .map_err(etcd)?;
        Ok(kvs.iter().filter(|kv| kv.key != own_key.as_bytes()).count())
    }

    /// One transaction: create the lock key under `lease` if it does not
    /// exist.
    async fn try_lock(&self, holder: &str, lease: i64) -> Result<bool, RestartError> {
        let key = B64.encode(&self.config.lock_key);
        let v = self
            .client
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{
                        "key": key,
                        "target": "CREATE",
                        "result": "EQUAL",
                        "create_revision": "0",
                    }],
                    "success": [{"request_put": {
                        "key": key,
                        "value": B64.encode(holder),
                        "lease": lease.to_string(),
                    }}],
                }),
            )
            .await
            .map_err(etcd)?;
        match v.get("succeeded") {
            Some(Value::Bool(b)) => Ok(*b),
            // proto3 JSON leaves out `false`.
            None if v.get("header").is_some() => Ok(false),
            _ => Err(RestartError::new(
                RestartErrorKind::Etcd,
                format!("etcd /v3/kv/txn: unexpected answer {v}"),
            )),
        }
    }
}

impl fmt::Debug for RestartLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestartLock")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

// === impl RestartPermit ===

impl RestartPermit {
    /// Who holds the lock.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The lock's lease id.
    pub fn lease_id(&self) -> i64 {
        self.lease
    }

    /// Takes this instance out of the registry, so that clients stop
    /// picking it.
    ///
    /// # Errors
    ///
    /// When etcd fails; the key then goes when its lease expires.
    pub async fn deregister(&self, registration: Registration) -> Result<(), RestartError> {
        registration.deregister().await.map_err(etcd)
    }

    /// Waits `grace` (for clients to see the instance leave the registry),
    /// then until `in_flight()` is zero, at most `timeout` in all (a
    /// timeout too long to represent never runs out).
    ///
    /// `in_flight` counts the requests still in service, e.g.
    /// `|| handle.snapshot().in_service` of a bounded queue.
    ///
    /// # Errors
    ///
    /// [`DrainTimeout`](RestartErrorKind::DrainTimeout) when requests are
    /// still in flight at the timeout.
    pub async fn drain(
        &self,
        mut in_flight: impl FnMut() -> usize,
        grace: Duration,
        timeout: Duration,
    ) -> Result<(), RestartError> {
        let deadline = Instant::now().checked_add(timeout);
        tokio::time::sleep(grace.min(timeout)).await;
        loop {
            let n = in_flight();
            if n == 0 {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(RestartError::new(
                    RestartErrorKind::DrainTimeout,
                    format!("{n} requests still in flight after {timeout:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `own_key` is registered again, then releases the lock.
    /// Waits at most `timeout` (a timeout too long to represent never runs
    /// out).
    ///
    /// # Errors
    ///
    /// [`NotRegistered`](RestartErrorKind::NotRegistered) when the key does
    /// not appear within `timeout` (the lock is released anyway);
    /// [`Etcd`](RestartErrorKind::Etcd) when etcd fails.
    pub async fn release_when_registered(
        self,
        own_key: &str,
        timeout: Duration,
    ) -> Result<(), RestartError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let (_, kvs) = self
                .client
                .range_prefix(&self.config.registry_prefix)
                .await
                .map_err(etcd)?;
            if kvs.iter().any(|kv| kv.key == own_key.as_bytes()) {
                return self.release().await;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = self.release().await;
                return Err(RestartError::new(
                    RestartErrorKind::NotRegistered,
                    format!("{own_key} not registered within {timeout:?}"),
                ));
            }
            tokio::time::sleep(self.config.poll).await;
        }
    }

    /// Releases the lock now (revokes its lease, which deletes the key).
    ///
    /// # Errors
    ///
    /// When etcd fails; the lock is then freed when the lease expires.
    pub async fn release(self) -> Result<(), RestartError> {
        self.keepalive.abort();
        self.client.revoke(self.lease).await.map_err(etcd)?;
        tracing::info!(lock = %self.config.lock_key, holder = %self.holder, "restart lock released");
        Ok(())
    }
}

impl Drop for RestartPermit {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

impl fmt::Debug for RestartPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestartPermit")
            .field("holder", &self.holder)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

// === impl RestartError ===

impl RestartError {
    fn new(kind: RestartErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    /// What failed.
    pub fn kind(&self) -> RestartErrorKind {
        self.kind
    }
}

impl fmt::Display for RestartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            RestartErrorKind::LockTimeout => "restart lock not acquired",
            RestartErrorKind::Unhealthy => "too few healthy instances",
            RestartErrorKind::DrainTimeout => "drain timed out",
            RestartErrorKind::NotRegistered => "instance not registered again",
            RestartErrorKind::Etcd => "etcd failed",
        };
        write!(f, "{what}: {}", self.detail)
    }
}

impl std::error::Error for RestartError {}

fn etcd(err: resilience_core::BoxError) -> RestartError {
    RestartError::new(RestartErrorKind::Etcd, err.to_string())
}

/// Keeps the lock's lease alive every `ttl / 3` until aborted.
async fn keep_alive(client: EtcdClient, lease: i64, ttl: Duration) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        match client.keepalive(lease).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!(lease, "restart lock lease expired");
                return;
            }
            Err(err) => tracing::warn!(lease, error = %err, "restart lock keep-alive failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_configs_fail_at_build() {
        let b = || {
            RestartLockConfig::builder()
                .registry_prefix("/services/a/")
                .lock_key("/locks/a")
        };
        assert!(b().build().is_ok());
        let field = |c: RestartLockConfigBuilder| c.build().unwrap_err().field();
        assert_eq!(field(b().registry_prefix("")), "registry_prefix");
        assert_eq!(field(b().lock_key("")), "lock_key");
        assert_eq!(field(b().lock_key("/services/a/lock")), "lock_key");
        assert_eq!(
            field(b().lease_ttl(Duration::from_millis(500))),
            "lease_ttl"
        );
        assert_eq!(field(b().wait_timeout(Duration::ZERO)), "wait_timeout");
        assert_eq!(field(b().poll(Duration::ZERO)), "poll");
        let too_long = resilience_core::config::MAX_DURATION + Duration::from_nanos(1);
        assert_eq!(field(b().lease_ttl(too_long)), "lease_ttl");
        assert_eq!(field(b().wait_timeout(too_long)), "wait_timeout");
        assert_eq!(field(b().poll(too_long)), "poll");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserializes_through_the_same_validation() {
        let c: RestartLockConfig = serde_json::from_str(
            r#"{"registry_prefix": "/services/a/", "lock_key": "/locks/a", "min_healthy": 2, "lease_ttl": "3s"}"#,
        )
        .unwrap();
        assert_eq!(c.lease_ttl(), Duration::from_secs(3));
        assert!(serde_json::from_str::<RestartLockConfig>(r#"{"lock_key": "/locks/a"}"#).is_err());
        assert!(serde_json::from_str::<RestartLockConfig>(r#"{"bogus": 1}"#).is_err());
    }
}
