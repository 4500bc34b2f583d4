use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use resilience_correlation::RequestContext;
use tower_service::Service;

use crate::config::FlagsConfig;
use crate::eval::FlagContext;
use crate::flag::FlagValue;
use crate::flags::Flags;
use crate::future::ResponseFuture;
use crate::store::FlagStore;

/// Builds each request's [`Flags`] and runs the inner service with them;
/// see [`FlagsLayer`](crate::FlagsLayer).
#[derive(Debug, Clone)]
pub struct FlagsService<S> {
    inner: S,
    store: FlagStore,
    config: Arc<FlagsConfig>,
}

// === impl FlagsService ===

impl<S> FlagsService<S> {
    pub(crate) fn new(inner: S, store: FlagStore, config: Arc<FlagsConfig>) -> Self {
        Self {
            inner,
            store,
            config,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for FlagsService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = &*self.config;
        let (mut parts, body) = req.into_parts();
        let set = self.store.flag_set();
        let key = config.key(&parts);
        let headers = if set.has_header_rules() {
            parts.headers.clone()
        } else {
            HeaderMap::new()
        };
        let ctx = FlagContext::from_parts(key, &parts.uri, headers);

        let mut overrides: Vec<(Arc<str>, FlagValue)> = Vec::new();
        let mut asked = false;
        let trusted = config.trusted(&parts);
        for (name, value) in &parts.headers {
            let Some(flag) = name.as_str().strip_prefix(FlagsConfig::OVERRIDE_PREFIX) else {
                continue;
            };
            asked = true;
            if !trusted || overrides.len() >= config.max_overrides {
                continue;
            }
            match set.get(flag) {
                Some(f) if f.is_overridable() => match f.parse_override(value.as_bytes()) {
                    Some(v) if !overrides.iter().any(|(n, _)| &**n == flag) => {
                        overrides.push((Arc::from(flag), v));
                    }
                    Some(_) => {}
                    None => tracing::debug!(flag, "ignoring an invalid flag override"),
                },
                Some(_) => tracing::debug!(flag, "ignoring an override of a protected flag"),
                None => tracing::debug!("ignoring an override of an unknown flag"),
            }
        }
        if asked && !trusted {
            tracing::debug!("ignoring flag overrides from an untrusted request");
        }

        let forward = if config.propagate && !overrides.is_empty() {
            let base = parts
                .extensions
                .get::<RequestContext>()
                .cloned()
                .or_else(RequestContext::current);
            base.map(|mut rctx| {
                for (name, value) in &overrides {
                    let header = format!("{}{name}", FlagsConfig::OVERRIDE_PREFIX);
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::try_from(header),
                        HeaderValue::from_str(value.as_header_str()),
                    ) {
                        rctx = rctx.with_forwarded_header(n, v);
                    }
                }
                parts.extensions.insert(rctx.clone());
                rctx
            })
        } else {
            None
        };

        let flags = Flags::with_overrides(self.store.clone(), ctx, overrides);
        parts.extensions.insert(flags.clone());
        let fut = self.inner.call(Request::from_parts(parts, body));
        ResponseFuture::new(flags, forward, fut)
    }
}
