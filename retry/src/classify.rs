//! What may be retried: requests (idempotent or opted in) and outcomes
//! (failures that mean "not processed").

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use http::request::Parts;
use http::{HeaderMap, Method, Response, header};
use resilience_core::error::{find, find_in_chain};
use resilience_core::{BoxError, Elapsed, ErrorClass, GrpcCode, GrpcOutcome, HttpOutcome, Outcome};

use crate::config::RetryConfig;
use crate::error::RetryError;
use crate::pushback::{self, Pushback};

/// The header that marks a request as safe to repeat whatever its method:
/// `idempotency-key`.
pub const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// Decides whether a request may be sent more than once.
///
/// The layer asks it once per request, before the first attempt; a request
/// it refuses is sent once, its body untouched. Implemented by
/// [`IdempotentRequests`] (the default) and by closures
/// `Fn(&http::request::Parts) -> bool`:
///
/// ```
/// use resilience_retry::{IdempotentRequests, RetryConfig, RetryLayer};
///
/// let config = RetryConfig::default();
/// let idempotent = IdempotentRequests::from_config(&config);
/// // Also retry the search endpoint's POSTs, which have no side effect.
/// let layer = RetryLayer::new(config).with_request_classifier(move |parts: &http::request::Parts| {
///     parts.uri.path() == "/search" || idempotent.is_retryable(parts)
/// });
/// # drop(layer);
/// ```
pub trait ClassifyRequest {
    /// Whether the request may be retried.
    fn is_retryable(&self, parts: &Parts) -> bool;
}

/// The default [`ClassifyRequest`]: idempotent HTTP requests, and gRPC
/// methods opted in.
///
/// - HTTP: the idempotent methods of RFC 9110 (`GET`, `HEAD`, `OPTIONS`,
///   `PUT`, `DELETE`, `TRACE`), or any request carrying an
///   [`Idempotency-Key`](IDEMPOTENCY_KEY) header.
/// - gRPC (content type `application/grpc`, `application/grpc+proto`, ...):
///   only the methods opted in
///   ([`RetryConfigBuilder::grpc_method`](crate::RetryConfigBuilder::grpc_method)):
///   every gRPC call is a `POST`, and only the service owner knows which
///   methods are idempotent.
///
/// ```
/// use resilience_retry::{IdempotentRequests, RetryConfig};
///
/// let config = RetryConfig::builder().grpc_method("/shop.Inventory/*").build().unwrap();
/// let c = IdempotentRequests::from_config(&config);
/// let parts = |method: &str, path: &str, grpc: bool| {
///     let mut req = http::Request::builder().method(method).uri(path);
///     if grpc {
///         req = req.header("content-type", "application/grpc");
///     }
///     req.body(()).unwrap().into_parts().0
/// };
/// assert!(c.is_retryable(&parts("GET", "/orders/1", false)));
/// assert!(!c.is_retryable(&parts("POST", "/orders", false)));
/// assert!(c.is_retryable(&parts("POST", "/shop.Inventory/GetStock", true)));
/// assert!(!c.is_retryable(&parts("POST", "/shop.Orders/Place", true)));
/// ```
#[derive(Clone, Default)]
pub struct IdempotentRequests {
    grpc: Arc<GrpcMethods>,
}

#[derive(Debug, Default)]
struct GrpcMethods {
    /// Full method paths, `/package.Service/Method`.
    methods: HashSet<String>,
    /// Services whose every method is opted in, as `/package.Service/`.
    services: HashSet<String>,
}

/// Why an attempt's outcome is retried; a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// An HTTP status of the retryable set (502, 503, 504).
    Status,
    /// A gRPC status of the retryable set (`UNAVAILABLE`), trailers-only.
    GrpcStatus,
    /// An error: a transport error or another error the family does not
    /// own.
    Error,
    /// An [`Elapsed`] timeout of one attempt.
    Timeout,
}

/// What to do with an attempt's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Return it as it is: a success, or a failure retrying cannot help.
    Return,
    /// Retrying may help.
    Retry { reason: Reason, pushback: Pushback },
}

/// The outcome classification of a layer: which statuses and codes are
/// retried.
#[derive(Debug, Clone)]
pub(crate) struct ClassifyOutcomes {
    statuses: Vec<u16>,
    grpc_codes: Vec<GrpcCode>,
}

// === impl IdempotentRequests ===

impl IdempotentRequests {
    /// HTTP's idempotent methods and `Idempotency-Key`; no gRPC method.
    pub fn new() -> Self {
        Self::default()
    }

    /// As [`new`](Self::new), with the gRPC methods opted in by `config`.
    pub fn from_config(config: &RetryConfig) -> Self {
        Self::from_grpc_methods(&config.grpc_methods)
    }

    /// As [`new`](Self::new), with the gRPC methods `methods` opted in
    /// (validated paths, `/package.Service/Method` or `/package.Service/*`).
    pub(crate) fn from_grpc_methods(methods: &[String]) -> Self {
        let mut grpc = GrpcMethods::default();
        for path in methods {
            match path.strip_suffix('*') {
                Some(service) => grpc.services.insert(service.to_owned()),
                None => grpc.methods.insert(path.clone()),
            };
        }
        Self {
            grpc: Arc::new(grpc),
        }
    }

    /// Whether `parts` may be retried (see the [type docs](Self)).
    pub fn is_retryable(&self, parts: &Parts) -> bool {
        if is_grpc(&parts.headers) {
            let path = parts.uri.path();
            if self.grpc.methods.contains(path) {
                return true;
            }
            // "/package.Service/Method" -> "/package.Service/"
            return match path[1.min(path.len())..].find('/') {
                Some(i) => self.grpc.services.contains(&path[..i + 2]),
                None => false,
            };
        }
        matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        ) || parts.headers.contains_key(IDEMPOTENCY_KEY)
    }
}

impl ClassifyRequest for IdempotentRequests {
    #[inline]
    fn is_retryable(&self, parts: &Parts) -> bool {
        IdempotentRequests::is_retryable(self, parts)
    }
}

impl<F> ClassifyRequest for F
where
    F: Fn(&Parts) -> bool,
{
    #[inline]
    fn is_retryable(&self, parts: &Parts) -> bool {
        self(parts)
    }
}

impl fmt::Debug for IdempotentRequests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotentRequests")
            .field("grpc_methods", &self.grpc.methods)
            .field("grpc_services", &self.grpc.services)
            .finish()
    }
}

/// Whether a request or response is gRPC: content type `application/grpc`,
/// optionally followed by `+format` or `;parameters`.
#[inline]
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    // A request without headers (no lookup, which hashes the name) is not.
    !headers.is_empty()
        && headers.get(header::CONTENT_TYPE).is_some_and(|v| {
            let v = v.as_bytes();
            v.starts_with(b"application/grpc") && matches!(v.get(16), None | Some(b'+' | b';'))
        })
}

// === impl Reason ===

impl Reason {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const ALL: [Reason; 4] = [
        Reason::Status,
        Reason::GrpcStatus,
        Reason::Error,
        Reason::Timeout,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Reason::Status => "status",
            Reason::GrpcStatus => "grpc_status",
            Reason::Error => "error",
            Reason::Timeout => "timeout",
        }
    }

    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

// === impl ClassifyOutcomes ===

impl ClassifyOutcomes {
    pub(crate) fn new(config: &RetryConfig) -> Self {
        Self {
            statuses: config.retryable_statuses.clone(),
            grpc_codes: config.retryable_grpc_codes.clone(),
        }
    }

    /// Classifies an attempt's outcome; `grpc` says whether the request was
    /// a gRPC call.
    ///
    /// - A response is retried when resilience-core classifies it as a
    ///   failure of the callee ([`Outcome::Failure`]) *and* it is in the
    ///   retryable set: an HTTP status (502, 503, 504 by default), or on a
    ///   gRPC call answered `200` with a `grpc-status` header (a
    ///   trailers-only answer) a code of the set (`UNAVAILABLE` by
    ///   default). A gRPC answer whose status comes in trailers, after
    ///   response headers, is never retried: the call was committed.
    /// - An error is retried unless the family knows it as something
    ///   retrying cannot help ([`find`]): any [`Rejected`](resilience_core::Rejected)
    ///   (our own layers below refused: a breaker, a throttle, a queue, a
    ///   balancer without endpoints, a flag) or the request's own
    ///   deadline passing ([`Elapsed::deadline_exceeded`]). An
    ///   [`Elapsed`] of an attempt's timeout is retried, as is any error
    ///   the family does not own (transport errors).
    pub(crate) fn classify<B>(
        &self,
        grpc: bool,
        result: &Result<Response<B>, BoxError>,
    ) -> Verdict {
        match result {
            Ok(rsp) => self.classify_response(grpc, rsp),
            Err(err) => classify_error(err),
        }
    }

    fn classify_response<B>(&self, grpc: bool, rsp: &Response<B>) -> Verdict {
        let headers = rsp.headers();
        if grpc && rsp.status() == http::StatusCode::OK {
            let Some(value) = headers.get("grpc-status") else {
                return Verdict::Return;
            };
            let code = GrpcCode::from_bytes(value.as_bytes()).unwrap_or(GrpcCode::Unknown);
            if GrpcOutcome::new().classify_code(code) != Outcome::Failure
                || !self.grpc_codes.contains(&code)
            {
                return Verdict::Return;
            }
            return Verdict::Retry {
                reason: Reason::GrpcStatus,
                pushback: grpc_pushback(headers),
            };
        }
        let status = rsp.status();
        if HttpOutcome::new().classify_status(status) != Outcome::Failure
            || !self.statuses.contains(&status.as_u16())
        {
            return Verdict::Return;
        }
        // On a gRPC call, the gRPC hint wins; else `Retry-After`.
        let pushback = match grpc_pushback(headers) {
            hint if grpc && hint != Pushback::None => hint,
            _ => headers
                .get(header::RETRY_AFTER)
                .map_or(Pushback::None, |v| {
                    pushback::retry_after(v.as_bytes(), SystemTime::now())
                }),
        };
        Verdict::Retry {
            reason: Reason::Status,
            pushback,
        }
    }
}

fn grpc_pushback(headers: &HeaderMap) -> Pushback {
    headers
        .get(pushback::GRPC_PUSHBACK)
        .map_or(Pushback::None, |v| pushback::grpc(v.as_bytes()))
}

fn classify_error(err: &BoxError) -> Verdict {
    if find_in_chain::<RetryError>(&**err).is_some() {
        // an attempt whose body could not be replayed
        return Verdict::Return;
    }
    match find(&**err).map(|c| c.error_class()) {
        Some(ErrorClass::Timeout) => {
            if find_in_chain::<Elapsed>(&**err).is_some_and(Elapsed::is_deadline) {
                Verdict::Return
            } else {
                Verdict::Retry {
                    reason: Reason::Timeout,
                    pushback: Pushback::None,
                }
            }
        }
        // A `Rejected` of any kind: our own layers refused.
        Some(_) => Verdict::Return,
        None => Verdict::Retry {
            reason: Reason::Error,
            pushback: Pushback::None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use resilience_core::{Rejected, RejectionKind};

    fn parts(method: Method, headers: &[(&str, &str)], path: &str) -> Parts {
        let mut b = http::Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn rsp(status: u16, headers: &[(&str, &str)]) -> Result<Response<()>, BoxError> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        Ok(b.body(()).unwrap())
    }

    fn outcomes() -> ClassifyOutcomes {
        ClassifyOutcomes::new(&RetryConfig::default())
    }

    #[test]
    fn idempotent_methods_or_a_key() {
        let c = IdempotentRequests::new();
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ] {
            assert!(c.is_retryable(&parts(m.clone(), &[], "/")), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!c.is_retryable(&parts(m.clone(), &[], "/")), "{m}");
            assert!(
                c.is_retryable(&parts(m.clone(), &[("idempotency-key", "k-1")], "/")),
                "{m} with a key"
            );
        }
    }

    #[test]
    fn grpc_methods_are_opt_in() {
        let config = RetryConfig::builder()
            .grpc_method("/shop.Inventory/GetStock")
            .grpc_method("/grpc.health.v1.Health/*")
            .build()
            .unwrap();
        let c = IdempotentRequests::from_config(&config);
        let grpc = |path: &str, ct: &str| parts(Method::POST, &[("content-type", ct)], path);
        assert!(c.is_retryable(&grpc("/shop.Inventory/GetStock", "application/grpc")));
        assert!(c.is_retryable(&grpc("/shop.Inventory/GetStock", "application/grpc+proto")));
        assert!(!c.is_retryable(&grpc("/shop.Inventory/Reserve", "application/grpc")));
        assert!(c.is_retryable(&grpc("/grpc.health.v1.Health/Check", "application/grpc")));
        assert!(c.is_retryable(&grpc("/grpc.health.v1.Health/Watch", "application/grpc")));
        assert!(!c.is_retryable(&grpc("/grpc.health.v1.HealthX/Check", "application/grpc")));
        assert!(!c.is_retryable(&grpc("/", "application/grpc")));
        assert!(!c.is_retryable(&grpc("/x", "application/grpc")));
        // a GET with a gRPC content type is still gRPC: not opted in
        assert!(!c.is_retryable(&parts(
            Method::GET,
            &[("content-type", "application/grpc")],
            "/other.Svc/M"
        )));
        // not gRPC: application/grpc-web is another protocol, plain POST
        assert!(!c.is_retryable(&grpc("/shop.Inventory/GetStock", "application/grpc-web")));
        assert!(
            !IdempotentRequests::new()
                .is_retryable(&grpc("/shop.Inventory/GetStock", "application/grpc"))
        );
    }

    #[test]
    fn closures_classify_requests() {
        let only_get = |p: &Parts| p.method == Method::GET;
        assert!(ClassifyRequest::is_retryable(
            &only_get,
            &parts(Method::GET, &[], "/")
        ));
        assert!(!ClassifyRequest::is_retryable(
            &only_get,
            &parts(Method::PUT, &[], "/")
        ));
    }

    #[test]
    fn http_statuses() {
        let c = outcomes();
        for s in [502, 503, 504] {
            assert!(
                matches!(
                    c.classify(false, &rsp(s, &[])),
                    Verdict::Retry {
                        reason: Reason::Status,
                        ..
                    }
                ),
                "{s}"
            );
        }
        for s in [200, 204, 301, 400, 401, 404, 409, 429, 499, 500, 501, 505] {
            assert_eq!(c.classify(false, &rsp(s, &[])), Verdict::Return, "{s}");
        }
    }

    #[test]
    fn grpc_statuses() {
        let c = outcomes();
        let unavailable = rsp(200, &[("grpc-status", "14")]);
        assert_eq!(
            c.classify(true, &unavailable),
            Verdict::Retry {
                reason: Reason::GrpcStatus,
                pushback: Pushback::None
            }
        );
        for code in ["0", "2", "3", "4", "5", "8", "13", "zz"] {
            assert_eq!(
                c.classify(true, &rsp(200, &[("grpc-status", code)])),
                Verdict::Return,
                "{code}"
            );
        }
        // status in trailers (no grpc-status header): committed
        assert_eq!(c.classify(true, &rsp(200, &[])), Verdict::Return);
        // HTTP 503 on a gRPC call is retried as HTTP
        assert!(matches!(
            c.classify(true, &rsp(503, &[])),
            Verdict::Retry { .. }
        ));
        // not a gRPC call: grpc-status is just a header
        assert_eq!(
            c.classify(false, &rsp(200, &[("grpc-status", "14")])),
            Verdict::Return
        );
    }

    #[test]
    fn pushback_headers() {
        let c = outcomes();
        let v = c.classify(
            true,
            &rsp(
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "250")],
            ),
        );
        assert_eq!(
            v,
            Verdict::Retry {
                reason: Reason::GrpcStatus,
                pushback: Pushback::Delay(Duration::from_millis(250))
            }
        );
        let v = c.classify(
            true,
            &rsp(
                200,
                &[("grpc-status", "14"), ("grpc-retry-pushback-ms", "-1")],
            ),
        );
        assert_eq!(
            v,
            Verdict::Retry {
                reason: Reason::GrpcStatus,
                pushback: Pushback::Stop
            }
        );
        let v = c.classify(false, &rsp(503, &[("retry-after", "2")]));
        assert_eq!(
            v,
            Verdict::Retry {
                reason: Reason::Status,
                pushback: Pushback::Delay(Duration::from_secs(2))
            }
        );
        let v = c.classify(false, &rsp(503, &[("retry-after", "tomorrow")]));
        assert_eq!(
            v,
            Verdict::Retry {
                reason: Reason::Status,
                pushback: Pushback::None
            }
        );
        // over HTTP, a gRPC pushback header is not ours to read
        let v = c.classify(
            false,
            &rsp(
                503,
                &[("grpc-retry-pushback-ms", "-1"), ("retry-after", "1")],
            ),
        );
        assert_eq!(
            v,
            Verdict::Retry {
                reason: Reason::Status,
                pushback: Pushback::Delay(Duration::from_secs(1))
            }
        );
        // a gRPC call answered 503 with both: the gRPC one wins
        let v = c.classify(
            true,
            &rsp(
                503,
                &[("grpc-retry-pushback-ms", "-1"), ("retry-after", "1")],
            ),
        );
        assert_eq!(
            v,
            Verdict::Retry {
                reason: Reason::Status,
                pushback: Pushback::Stop
            }
        );
    }

    #[test]
    fn errors() {
        let c = outcomes();
        let err = |e: BoxError| c.classify::<()>(false, &Err(e));
        assert!(matches!(
            err(std::io::Error::other("reset").into()),
            Verdict::Retry {
                reason: Reason::Error,
                ..
            }
        ));
        assert!(matches!(
            err(Elapsed::new().into()),
            Verdict::Retry {
                reason: Reason::Timeout,
                ..
            }
        ));
        assert_eq!(err(Elapsed::deadline_exceeded().into()), Verdict::Return);
        for kind in [
            RejectionKind::Throttled,
            RejectionKind::Overloaded,
            RejectionKind::CircuitOpen,
            RejectionKind::NoHealthyEndpoint,
            RejectionKind::Disabled,
        ] {
            assert_eq!(
                err(Rejected::new(kind, "").into()),
                Verdict::Return,
                "{kind:?}"
            );
        }
    }
}
