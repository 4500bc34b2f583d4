use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{Resolver, TokioResolver};
use resilience_core::config::{validate_duration, validate_name, validate_positive_duration};
use resilience_core::{BoxError, ConfigError};

use super::{Backoff, FetchSet, SourceHealth, SourceStream, spawn_polling};
use crate::endpoint::Endpoint;

/// What to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Query {
    /// A/AAAA of a host, each address with this port.
    Host(String, u16),
    /// SRV records of `_service._proto.name`.
    Srv(String),
}

/// Validated configuration of a [`DnsSource`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_discovery::source::DnsSourceConfig;
///
/// let srv = DnsSourceConfig::srv("_http._tcp.users.example.")
///     .min_ttl(Duration::from_secs(5))
///     .build()?;
/// let host = DnsSourceConfig::host("users.example:8080").build()?;
/// assert!(DnsSourceConfig::host("no-port.example").build().is_err());
/// # Ok::<_, resilience_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSourceConfig {
    query: Result<Query, &'static str>,
    name: String,
    nameservers: Vec<SocketAddr>,
    min_ttl: Duration,
    max_ttl: Duration,
    timeout: Duration,
    backoff: Backoff,
}

/// Builds a [`DnsSourceConfig`]; see [`DnsSourceConfig::srv`] and
/// [`DnsSourceConfig::host`].
#[derive(Debug, Clone)]
#[must_use]
pub struct DnsSourceConfigBuilder {
    config: DnsSourceConfig,
}

/// Endpoints from DNS through `hickory-resolver`: A/AAAA records of
/// `host:port`, or SRV records of `_service._proto.name`.
///
/// SRV: only the records of the lowest priority whose targets resolve are
/// used (the others are backups), each with its weight (weight 0 counts as
/// 1). The name is resolved again when the shortest record TTL runs out,
/// clamped to `[min_ttl, max_ttl]`. A failed lookup (no answer, timeout,
/// no records) keeps the last good set and retries with backoff.
#[derive(Debug)]
pub struct DnsSource {
    config: DnsSourceConfig,
}

struct Poller {
    resolver: TokioResolver,
    query: Query,
    min_ttl: Duration,
    max_ttl: Duration,
}

// === impl DnsSourceConfig ===

impl DnsSourceConfig {
    /// The `name` metric label: `"dns"`.
    pub const DEFAULT_NAME: &'static str = "dns";
    /// The shortest time between two resolutions: `1s`.
    pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
    /// The longest time between two resolutions: `300s`.
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);
    /// Longest a lookup may take: `5s`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    fn builder(query: Result<Query, &'static str>) -> DnsSourceConfigBuilder {
        DnsSourceConfigBuilder {
            config: DnsSourceConfig {
                query,
                name: Self::DEFAULT_NAME.to_owned(),
                nameservers: Vec::new(),
                min_ttl: Self::DEFAULT_MIN_TTL,
                max_ttl: Self::DEFAULT_MAX_TTL,
                timeout: Self::DEFAULT_TIMEOUT,
                backoff: Backoff::default(),
            },
        }
    }

    /// SRV records of `name` (`_service._proto.name`).
    pub fn srv(name: impl Into<String>) -> DnsSourceConfigBuilder {
        let name = name.into();
        let query = if name.is_empty() {
            Err("must not be empty")
        } else {
            Ok(Query::Srv(name))
        };
        Self::builder(query)
    }

    /// A/AAAA records of `host`, in `host:port` form.
    pub fn host(host_port: impl AsRef<str>) -> DnsSourceConfigBuilder {
        let s = host_port.as_ref();
        let query = match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() => port
                .parse::<u16>()
                .map(|port| Query::Host(host.trim_matches(['[', ']']).to_owned(), port))
                .map_err(|_| "the port is not a number"),
            _ => Err("must be host:port"),
        };
        Self::builder(query)
    }
}

// === impl DnsSourceConfigBuilder ===

impl DnsSourceConfigBuilder {
    /// Names the source: the `name` label of its metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Asks this name server (UDP, then TCP) instead of the system's; may
    /// be given several times.
    pub fn nameserver(mut self, addr: SocketAddr) -> Self {
        self.config.nameservers.push(addr);
        self
    }

    /// The shortest time between two resolutions (default
    /// [`DnsSourceConfig::DEFAULT_MIN_TTL`]).
    pub fn min_ttl(mut self, d: Duration) -> Self {
        self.config.min_ttl = d;
        self
    }

    /// The longest time between two resolutions (default
    /// [`DnsSourceConfig::DEFAULT_MAX_TTL`]).
    pub fn max_ttl(mut self, d: Duration) -> Self {
        self.config.max_ttl = d;
        self
    }

    /// Longest a lookup may take (default [`DnsSourceConfig::DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.config.timeout = d;
        self
    }

    /// The retry delays after a failed lookup.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `query`: an empty SRV name, or a host without a numeric port
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    /// - `min_ttl` is zero, or `max_ttl` is below it
    /// - `timeout` is zero
    /// - a duration is longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days)
    pub fn build(self) -> Result<DnsSourceConfig, ConfigError> {
        let c = self.config;
        if let Err(why) = &c.query {
            return Err(ConfigError::new("query", *why));
        }
        validate_name("name", &c.name)?;
        validate_positive_duration("min_ttl", c.min_ttl)?;
        validate_duration("max_ttl", c.max_ttl)?;
        if c.max_ttl < c.min_ttl {
            return Err(ConfigError::new("max_ttl", "must be at least min_ttl"));
        }
        validate_positive_duration("timeout", c.timeout)?;
        Ok(c)
    }
}

// === impl DnsSource ===

impl DnsSource {
    /// A source resolving as configured.
    pub fn new(config: DnsSourceConfig) -> Self {
        Self { config }
    }

    /// Starts resolving.
    ///
    /// # Errors
    ///
    /// Without configured name servers, when the system's resolver
    /// configuration cannot be read.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn into_stream(self) -> Result<SourceStream, BoxError> {
        let c = self.config;
        let mut builder = if c.nameservers.is_empty() {
            Resolver::builder_tokio()?
        } else {
            let mut group = NameServerConfigGroup::new();
            for ns in &c.nameservers {
                let ips: [IpAddr; 1] = [ns.ip()];
                group.merge(NameServerConfigGroup::from_ips_clear(&ips, ns.port(), true));
            }
            Resolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), group),
                TokioConnectionProvider::default(),
            )
        };
        let opts = builder.options_mut();
        opts.timeout = c.timeout;
        opts.attempts = 1;
        opts.positive_max_ttl = Some(c.max_ttl);
        opts.negative_max_ttl = Some(c.min_ttl);
        let poller = Poller {
            resolver: builder.build(),
            query: c.query.expect("validated by build()"),
            min_ttl: c.min_ttl,
            max_ttl: c.max_ttl,
        };
        Ok(spawn_polling(poller, SourceHealth::new(&c.name), c.backoff))
    }
}

impl FetchSet for Poller {
    async fn fetch(&mut self, _: &SourceHealth) -> Result<(Vec<Endpoint>, Duration), BoxError> {
        let (set, ttl) = match &self.query {
            Query::Host(host, port) => {
                let lookup = self.resolver.lookup_ip(host.as_str()).await?;
                let ttl = min_ttl(lookup.as_lookup().records().iter().map(|r| r.ttl()));
                let set: Vec<Endpoint> = lookup
                    .iter()
                    .map(|ip| Endpoint::new(SocketAddr::new(ip, *port)))
                    .collect();
                (set, ttl)
            }
            Query::Srv(name) => self.srv(name).await?,
        };
        if set.is_empty() {
            return Err("dns: no usable records".into());
        }
        let next = ttl.clamp(self.min_ttl, self.max_ttl);
        tracing::debug!(endpoints = set.len(), ?next, "dns resolved");
        Ok((set, next))
    }
}

impl Poller {
    async fn srv(&self, name: &str) -> Result<(Vec<Endpoint>, Duration), BoxError> {
        let lookup = self.resolver.srv_lookup(name).await?;
        let mut ttls: Vec<u32> = lookup
            .as_lookup()
            .records()
            .iter()
            .map(|r| r.ttl())
            .collect();
        let mut records: Vec<_> = lookup.iter().cloned().collect();
        records.sort_by_key(|r| r.priority());
        let mut set = Vec::new();
        let mut priority = None;
        for r in records {
            if priority.is_some_and(|p| p != r.priority()) && !set.is_empty() {
                break; // lower-priority records are backups
            }
            let target = r.target().to_utf8();
            let ips = match self.resolver.lookup_ip(target.as_str()).await {
                Ok(ips) => ips,
                Err(err) => {
                    tracing::debug!(%target, error = %err, "srv target does not resolve");
                    continue;
                }
            };
            ttls.extend(ips.as_lookup().records().iter().map(|r| r.ttl()));
            priority = Some(r.priority());
            for ip in ips.iter() {
                set.push(
                    Endpoint::new(SocketAddr::new(ip, r.port())).with_weight(u32::from(r.weight())),
                );
            }
        }
        Ok((set, min_ttl(ttls)))
    }
}

fn min_ttl(ttls: impl IntoIterator<Item = u32>) -> Duration {
    Duration::from_secs(u64::from(ttls.into_iter().min().unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validates() {
        let field = |b: DnsSourceConfigBuilder| b.build().unwrap_err().field();
        assert_eq!(field(DnsSourceConfig::srv("")), "query");
        assert_eq!(field(DnsSourceConfig::host("x")), "query");
        assert_eq!(field(DnsSourceConfig::host(":80")), "query");
        assert_eq!(field(DnsSourceConfig::host("x:http")), "query");
        assert_eq!(
            field(DnsSourceConfig::srv("_a._tcp.x").min_ttl(Duration::ZERO)),
            "min_ttl"
        );
        assert_eq!(
            field(DnsSourceConfig::srv("_a._tcp.x").max_ttl(Duration::from_millis(1))),
            "max_ttl"
        );
        let too_long = resilience_core::config::MAX_DURATION + Duration::from_nanos(1);
        let srv = || DnsSourceConfig::srv("_a._tcp.x");
        assert_eq!(field(srv().min_ttl(too_long).max_ttl(too_long)), "min_ttl");
        assert_eq!(field(srv().max_ttl(too_long)), "max_ttl");
        assert_eq!(field(srv().timeout(too_long)), "timeout");
        assert_eq!(field(srv().timeout(Duration::ZERO)), "timeout");
        let c = DnsSourceConfig::host("[::1]:80").build().unwrap();
        assert_eq!(c.query, Ok(Query::Host("::1".into(), 80)));
    }

    #[test]
    fn ttl_is_the_shortest() {
        assert_eq!(min_ttl([30, 5, 60]), Duration::from_secs(5));
        assert_eq!(min_ttl([]), Duration::ZERO);
    }
}
