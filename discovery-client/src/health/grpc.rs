use std::fmt;
use std::time::Duration;

use resilience_core::ConfigError;
use resilience_core::config::validate_positive_duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{CheckFuture, CheckHealth};
use crate::endpoint::Endpoint;

/// A gRPC health check: `grpc.health.v1.Health/Check` for one service name
/// (empty: the server as a whole), healthy when `SERVING`.
///
/// Each check opens its own connection (apart from user traffic), so a
/// check also tells whether the endpoint accepts connections.
#[derive(Clone)]
pub struct GrpcHealthCheck {
    service: String,
    connect_timeout: Duration,
}

// === impl GrpcHealthCheck ===

impl GrpcHealthCheck {
    /// Longest a connection attempt may take: `5s` (the check's own timeout
    /// bounds the whole check).
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Checks `service` (`""` for the whole server).
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Sets the connection timeout (default
    /// [`DEFAULT_CONNECT_TIMEOUT`](Self::DEFAULT_CONNECT_TIMEOUT)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_discovery::health::GrpcHealthCheck;
    ///
    /// let check = GrpcHealthCheck::new("inventory.v1.Inventory")
    ///     .connect_timeout(Duration::from_secs(1))?;
    /// assert!(GrpcHealthCheck::new("").connect_timeout(Duration::ZERO).is_err());
    /// let too_long = resilience_core::config::MAX_DURATION + Duration::from_secs(1);
    /// assert!(GrpcHealthCheck::new("").connect_timeout(too_long).is_err());
    /// # Ok::<_, resilience_core::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// - `d` is zero or longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days)
    pub fn connect_timeout(mut self, d: Duration) -> Result<Self, ConfigError> {
        validate_positive_duration("connect_timeout", d)?;
        self.connect_timeout = d;
        Ok(self)
    }
}

impl CheckHealth for GrpcHealthCheck {
    fn check(&self, endpoint: &Endpoint) -> CheckFuture {
        let uri = format!("http://{}", endpoint.addr());
        let service = self.service.clone();
        let connect_timeout = self.connect_timeout;
        Box::pin(async move {
            let channel = tonic::transport::Endpoint::from_shared(uri)?
                .connect_timeout(connect_timeout)
                .connect()
                .await?;
            let rsp = HealthClient::new(channel)
                .check(HealthCheckRequest { service })
                .await?;
            match rsp.into_inner().status() {
                ServingStatus::Serving => Ok(()),
                other => Err(format!("grpc health: {}", other.as_str_name()).into()),
            }
        })
    }
}

impl fmt::Debug for GrpcHealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcHealthCheck")
            .field("service", &self.service)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}
