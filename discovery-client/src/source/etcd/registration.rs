use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use resilience_core::BoxError;
use resilience_core::etcd::EtcdClient;
use tokio::task::JoinHandle;

use super::EtcdConfig;
use crate::endpoint::Endpoint;

/// This instance, registered in etcd under a lease kept alive in the
/// background.
///
/// [`deregister`](Registration::deregister) on graceful shutdown revokes the
/// lease, which removes the key at once. Dropping a registration without it
/// stops the keep-alive, as a crash would: the key goes when the lease
/// expires. If the lease is lost (etcd was down longer than the TTL), the
/// keep-alive grants a new one and writes the key again.
pub struct Registration {
    client: EtcdClient,
    key: String,
    lease: Arc<AtomicI64>,
    keepalive: JoinHandle<()>,
}

// === impl Registration ===

impl Registration {
    /// Registers `endpoint` as `key` (e.g. `/services/users/instance-1`) with
    /// a lease of `ttl` (at least one second), kept alive every `ttl / 3`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`](resilience_core::ConfigError) when `ttl` is longer
    /// than [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365
    /// days); when etcd cannot grant the lease or store the key.
    pub async fn register(
        config: &EtcdConfig,
        key: impl Into<String>,
        endpoint: &Endpoint,
        ttl: Duration,
    ) -> Result<Self, BoxError> {
        resilience_core::config::validate_duration("ttl", ttl)?;
        let client = config.client();
        let key = key.into();
        let ttl = ttl.max(Duration::from_secs(1));
        let value = serde_json::to_vec(&serde_json::json!({
            "address": endpoint.addr().to_string(),
            "weight": endpoint.weight(),
            "metadata": endpoint.metadata(),
        }))?;
        let id = client.grant(ttl).await?;
        client.put(&key, &value, id).await?;
        tracing::info!(%key, peer.addr = %endpoint, lease = id, "registered in etcd");
        let lease = Arc::new(AtomicI64::new(id));
        let keepalive = tokio::spawn(keep_alive(
            client.clone(),
            key.clone(),
            value,
            ttl,
            lease.clone(),
            config.backoff,
        ));
        Ok(Self {
            client,
            key,
            lease,
            keepalive,
        })
    }

    /// The current lease id.
    pub fn lease_id(&self) -> i64 {
        self.lease.load(Ordering::Acquire)
    }

    /// The key this instance is registered under.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Graceful shutdown: stops the keep-alive and revokes the lease, which
    /// deletes the key.
    ///
    /// # Errors
    ///
    /// When etcd cannot be reached; the key then goes when the lease expires.
    pub async fn deregister(self) -> Result<(), BoxError> {
        self.keepalive.abort();
        let id = self.lease_id();
        self.client.revoke(id).await?;
        tracing::info!(key = %self.key, lease = id, "deregistered from etcd");
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.key)
            .field("lease", &self.lease_id())
            .finish_non_exhaustive()
    }
}

async fn keep_alive(
    client: EtcdClient,
    key: String,
    value: Vec<u8>,
    ttl: Duration,
    lease: Arc<AtomicI64>,
    backoff: super::Backoff,
) {
    let period = ttl / 3;
    let mut failures = 0u32;
    loop {
        let delay = match refresh(&client, &key, &value, ttl, &lease).await {
            Ok(()) => {
                failures = 0;
                period
            }
            Err(err) => {
                tracing::warn!(%key, error = %err, "etcd lease keep-alive failed");
                let d = backoff.delay(failures).min(period);
                failures = failures.saturating_add(1);
                d
            }
        };
        tokio::time::sleep(delay).await;
    }
}

async fn refresh(
    client: &EtcdClient,
    key: &str,
    value: &[u8],
    ttl: Duration,
    lease: &AtomicI64,
) -> Result<(), BoxError> {
    let id = lease.load(Ordering::Acquire);
    if client.keepalive(id).await?.is_some() {
        return Ok(());
    }
    // The lease expired (etcd was unreachable for longer than the TTL):
    // register again under a new one.
    let id = client.grant(ttl).await?;
    client.put(key, value, id).await?;
    lease.store(id, Ordering::Release);
    tracing::info!(%key, lease = id, "lease lost; registered again in etcd");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An over-long TTL is refused before etcd is asked anything (none
    /// runs here).
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_over_long_ttl_is_a_config_error() {
        let endpoint = Endpoint::new(([127, 0, 0, 1], 8080).into());
        let ttl = resilience_core::config::MAX_DURATION + Duration::from_secs(1);
        let err = Registration::register(&EtcdConfig::default(), "/services/a/1", &endpoint, ttl)
            .await
            .unwrap_err();
        let err = err
            .downcast_ref::<resilience_core::ConfigError>()
            .expect("a ConfigError");
        assert_eq!(err.field(), "ttl");
    }
}
