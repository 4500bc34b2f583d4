use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use resilience_core::config::validate_positive_duration;
use resilience_core::{ConfigError, Deadline, DeadlinePolicy, Priority, PriorityPolicy};
use tokio::time::Instant;

use crate::context::RequestContext;
use crate::id::CorrelationId;
use crate::trace::TraceContext;

const STATIC_NAMES: [HeaderName; 3] = [
    HeaderName::from_static("x-correlation-id"),
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("request-id"),
];

type TrustFn = dyn Fn(&RequestHead<'_>) -> bool + Send + Sync;

/// What a trust predicate sees of a request: its head, not its body.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    method: &'a http::Method,
    uri: &'a http::Uri,
    headers: &'a HeaderMap,
    extensions: &'a http::Extensions,
}

/// Validated configuration of a [`CorrelationLayer`](crate::CorrelationLayer).
///
/// # Example
///
/// ```
/// use resilience_core::{Priority, PriorityPolicy};
/// use resilience_correlation::CorrelationConfig;
///
/// let config = CorrelationConfig::builder()
///     .id_header("x-correlation-id")
///     .accept_header("x-request-id")
///     .priority_policy(PriorityPolicy::new().untrusted_ceiling(Priority::SheddablePlus))
///     // Requests from the internal gateway may claim any priority.
///     .trust(|head| head.headers().get("x-internal-gateway").is_some())
///     .build()?;
/// # Ok::<_, resilience_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct CorrelationConfig {
    pub(super) id_header: HeaderName,
    pub(super) accept_headers: Vec<HeaderName>,
    pub(super) echo: bool,
    pub(super) span: bool,
    pub(super) priority: PriorityPolicy,
    pub(super) deadline: DeadlinePolicy,
    pub(super) trust: Option<Arc<TrustFn>>,
}

/// Builds a [`CorrelationConfig`]; see [`CorrelationConfig::builder`].
#[must_use]
pub struct CorrelationConfigBuilder {
    id_header: String,
    accept_headers: Vec<String>,
    echo: bool,
    span: bool,
    priority: PriorityPolicy,
    deadline: DeadlinePolicy,
    trust: Option<Arc<TrustFn>>,
}

// === impl RequestHead ===

impl<'a> RequestHead<'a> {
    pub(crate) fn of<B>(req: &'a Request<B>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }

    /// The method.
    pub fn method(&self) -> &'a http::Method {
        self.method
    }

    /// The URI.
    pub fn uri(&self) -> &'a http::Uri {
        self.uri
    }

    /// The headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The extensions (e.g. axum's `ConnectInfo`, a TLS peer identity).
    pub fn extensions(&self) -> &'a http::Extensions {
        self.extensions
    }
}

// === impl CorrelationConfig ===

impl CorrelationConfig {
    /// The header that carries the correlation id: `x-correlation-id`.
    pub const DEFAULT_ID_HEADER: &'static str = "x-correlation-id";
    /// Other inbound headers an id is accepted from: `x-request-id`.
    pub const DEFAULT_ACCEPT_HEADERS: &'static [&'static str] = &["x-request-id"];
    /// Whether the id is returned on the response: `true`.
    pub const DEFAULT_ECHO: bool = true;
    /// Whether a `request` span with the ids is opened: `true`.
    pub const DEFAULT_SPAN: bool = true;

    /// A builder with the defaults.
    pub fn builder() -> CorrelationConfigBuilder {
        CorrelationConfigBuilder {
            id_header: Self::DEFAULT_ID_HEADER.to_owned(),
            accept_headers: Self::DEFAULT_ACCEPT_HEADERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            echo: Self::DEFAULT_ECHO,
            span: Self::DEFAULT_SPAN,
            priority: PriorityPolicy::new(),
            deadline: DeadlinePolicy::new(),
            trust: None,
        }
    }

    /// The header that carries the correlation id.
    pub fn id_header(&self) -> &HeaderName {
        &self.id_header
    }

    /// Builds the context of an inbound request. Invalid inbound values are
    /// replaced (an invalid deadline is ignored), logged at debug and
    /// counted, never echoed.
    pub fn context_for<B>(&self, req: &Request<B>) -> RequestContext {
        let headers = req.headers();
        let inbound = self.scan(headers);
        let id = inbound
            .id
            .into_iter()
            .chain(inbound.alt_id)
            .find_map(|v| {
                CorrelationId::from_header(v)
                    .map_err(|_| invalid("correlation_id"))
                    .ok()
            })
            .unwrap_or_else(CorrelationId::generate_shared);
        let trace = match inbound.traceparent {
            Some(v) => match TraceContext::child_of(v.as_bytes()) {
                Ok(t) if inbound.tracestate.is_some() => t.with_tracestate(inbound.tracestate),
                Ok(t) => t,
                Err(_) => {
                    invalid("traceparent");
                    TraceContext::new_root()
                }
            },
            None => TraceContext::new_root(),
        };
        let requested = inbound.priority.and_then(|v| {
            Priority::from_bytes(v.as_bytes())
                .map_err(|_| invalid("x-priority"))
                .ok()
        });
        let untrusted = self.priority.resolve(requested, false);
        let priority = if untrusted != self.priority.resolve(requested, true)
            && self
                .trust
                .as_ref()
                .is_some_and(|t| t(&RequestHead::of(req)))
        {
            self.priority.resolve(requested, true)
        } else {
            untrusted
        };
        let deadline = if inbound.grpc_timeout.is_some() || inbound.deadline_ms.is_some() {
            let d = self.deadline.from_values(
                inbound.grpc_timeout,
                inbound.deadline_ms,
                Instant::now(),
            );
            if d.is_none() {
                // Present but malformed or above the maximum: ignored.
                invalid("deadline");
            }
            d
        } else {
            None
        };
        // A `Deadline` the request already carries (set by an outer layer);
        // not a context in scope: this request starts a context of its own.
        let deadline = match (deadline, req.extensions().get::<Deadline>().copied()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        RequestContext::from_parts(id, trace, priority, deadline)
    }

    /// One pass over the headers (cheaper than a hashed lookup per name).
    fn scan<'h>(&self, headers: &'h HeaderMap) -> Inbound<'h> {
        let mut found = Inbound::default();
        for (name, value) in headers {
            if *name == self.id_header {
                found.id.get_or_insert(value);
                continue;
            }
            match name.as_str() {
                "traceparent" => {
                    found.traceparent.get_or_insert(value);
                }
                "tracestate" => {
                    found.tracestate.get_or_insert(value);
                }
                "x-priority" => {
                    found.priority.get_or_insert(value);
                }
                "grpc-timeout" => {
                    found.grpc_timeout.get_or_insert(value);
                }
                "x-deadline-ms" => {
                    found.deadline_ms.get_or_insert(value);
                }
                _ if self.accept_headers.contains(name) => {
                    found.alt_id.get_or_insert(value);
                }
                _ => {}
            }
        }
        found
    }
}

#[derive(Default)]
struct Inbound<'h> {
    id: Option<&'h HeaderValue>,
    alt_id: Option<&'h HeaderValue>,
    traceparent: Option<&'h HeaderValue>,
    tracestate: Option<&'h HeaderValue>,
    priority: Option<&'h HeaderValue>,
    grpc_timeout: Option<&'h HeaderValue>,
    deadline_ms: Option<&'h HeaderValue>,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        Self::builder().build().expect("defaults are valid")
    }
}

impl fmt::Debug for CorrelationConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CorrelationConfig")
            .field("id_header", &self.id_header)
            .field("accept_headers", &self.accept_headers)
            .field("echo", &self.echo)
            .field("span", &self.span)
            .field("priority", &self.priority)
            .field("deadline", &self.deadline)
            .field("trust", &self.trust.as_ref().map(|_| "fn"))
            .finish()
    }
}

#[cold]
fn invalid(header: &'static str) {
    tracing::debug!(header, "replacing invalid inbound value");
    #[cfg(feature = "metrics")]
    metrics::counter!(
        resilience_core::names::CORRELATION_INVALID_TOTAL,
        resilience_core::names::LABEL_HEADER => header
    )
    .increment(1);
}

// === impl CorrelationConfigBuilder ===

impl CorrelationConfigBuilder {
    /// The header that carries the id in and out (default
    /// `x-correlation-id`).
    pub fn id_header(mut self, name: impl Into<String>) -> Self {
        self.id_header = name.into();
        self
    }

    /// Also accepts an inbound id from `name` (default: `x-request-id`).
    pub fn accept_header(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !self.accept_headers.contains(&name) {
            self.accept_headers.push(name);
        }
        self
    }

    /// Accepts an inbound id only from the id header.
    pub fn no_accept_headers(mut self) -> Self {
        self.accept_headers.clear();
        self
    }

    /// Whether the id is set on the response (default `true`).
    pub fn echo(mut self, yes: bool) -> Self {
        self.echo = yes;
        self
    }

    /// Whether to open a `request` span with the `correlation_id` and
    /// `trace_id` fields around the inner service (default `true`).
    pub fn span(mut self, yes: bool) -> Self {
        self.span = yes;
        self
    }

    /// How far inbound requests may choose their priority.
    pub fn priority_policy(mut self, policy: PriorityPolicy) -> Self {
        self.priority = policy;
        self
    }

    /// How inbound deadlines are read (the largest accepted; its maximum
    /// must be greater than zero and at most 365 days, checked by
    /// [`build`](Self::build)).
    pub fn deadline_policy(mut self, policy: DeadlinePolicy) -> Self {
        self.deadline = policy;
        self
    }

    /// Which requests are trusted to claim a priority above the policy's
    /// ceiling (default: none).
    pub fn trust<F>(mut self, f: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    {
        self.trust = Some(Arc::new(f));
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `id_header` or an `accept_header` is not a valid header name
    /// - the deadline policy's maximum is zero or longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days)
    pub fn build(self) -> Result<CorrelationConfig, ConfigError> {
        // Well-known names are static: cloning them never touches a
        // reference count.
        let header = |field, s: &str| {
            if let Some(known) = STATIC_NAMES.iter().find(|n| n.as_str() == s) {
                return Ok(known.clone());
            }
            HeaderName::try_from(s)
                .map_err(|_| ConfigError::new(field, format!("{s:?} is not a valid header name")))
        };
        let id_header = header("id_header", &self.id_header)?;
        let accept_headers = self
            .accept_headers
            .iter()
            .map(|s| header("accept_header", s))
            .filter(|h| h.as_ref().map_or(true, |h| *h != id_header))
            .collect::<Result<Vec<_>, _>>()?;
        validate_positive_duration("deadline_policy.max", self.deadline.max_value())?;
        Ok(CorrelationConfig {
            id_header,
            accept_headers,
            echo: self.echo,
            span: self.span,
            priority: self.priority,
            deadline: self.deadline,
            trust: self.trust,
        })
    }
}

impl fmt::Debug for CorrelationConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CorrelationConfigBuilder")
            .field("id_header", &self.id_header)
            .field("accept_headers", &self.accept_headers)
            .finish_non_exhaustive()
    }
}
