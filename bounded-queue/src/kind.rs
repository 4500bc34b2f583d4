//! Per-kind queues: requests routed by a key to named queues, each with its
//! own limits, so a flood of one kind of work does not starve another (like
//! Elasticsearch's `search` / `index` / `get` / `bulk` thread pools).
//!
//! # Example
//!
//! ```
//! use resilience_bounded_queue::{BoundedQueueConfig, kind::KindQueuesLayer};
//! use resilience_core::BoxError;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = KindQueuesLayer::builder()
//!     .queue(BoundedQueueConfig::builder().name("search").concurrency(8).build()?)
//!     .queue(BoundedQueueConfig::builder().name("index").concurrency(2).capacity(10).build()?)
//!     .default_kind("search")
//!     .build(|req: &http::Request<()>| {
//!         if req.method() == http::Method::POST { "index" } else { "search" }
//!     })?;
//! let index = layer.handle("index").unwrap();
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_req: http::Request<()>| async { Ok::<_, BoxError>("ok") }));
//! let req = http::Request::post("/doc").body(()).unwrap();
//! assert_eq!(svc.ready().await?.call(req).await?, "ok");
//! assert_eq!(index.snapshot().limit, 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Clone semantics
//!
//! As for [`BoundedQueueLayer`](crate::BoundedQueueLayer): every clone
//! shares the same queues.

use std::fmt;
use std::task::{Context, Poll};

use resilience_core::timeout::{FromExtensions, ReadDeadline};
use resilience_core::{BoxError, ConfigError};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::BoundedQueueConfig;
use crate::future::ResponseFuture;
use crate::handle::BoundedQueueHandle;
use crate::service::{PriorityFromExtensions, ReadPriority, call};
use crate::state::Shared;
use crate::sync::Arc;

/// Routes requests to named [`BoundedQueue`](crate::BoundedQueue)s by a key.
#[derive(Clone)]
pub struct KindQueuesLayer<F, P = PriorityFromExtensions, D = FromExtensions> {
    queues: Arc<Queues>,
    kind: F,
    read_priority: P,
    read_deadline: D,
}

/// Builds a [`KindQueuesLayer`]; see [`KindQueuesLayer::builder`].
#[derive(Debug, Default)]
#[must_use]
pub struct KindQueuesBuilder {
    configs: Vec<BoundedQueueConfig>,
    default: Option<String>,
}

/// The service of a [`KindQueuesLayer`].
#[derive(Clone)]
pub struct KindQueues<S, F, P = PriorityFromExtensions, D = FromExtensions> {
    inner: S,
    queues: Arc<Queues>,
    kind: F,
    read_priority: P,
    read_deadline: D,
}

#[derive(Debug)]
struct Queues {
    queues: Vec<Arc<Shared>>,
    default: usize,
}

// === impl KindQueuesBuilder ===

impl KindQueuesBuilder {
    /// Adds a queue; its configuration's `name` is its kind.
    pub fn queue(mut self, config: BoundedQueueConfig) -> Self {
        self.configs.push(config);
        self
    }

    /// The queue for keys that name no queue (default: the first one added).
    pub fn default_kind(mut self, name: impl Into<String>) -> Self {
        self.default = Some(name.into());
        self
    }

    /// Builds the layer, with `kind` giving each request's queue name.
    ///
    /// # Errors
    /// - no queue was added (`queues`)
    /// - two queues have the same name (`queues`)
    /// - `default_kind` names no queue
    pub fn build<F>(self, kind: F) -> Result<KindQueuesLayer<F>, ConfigError> {
        if self.configs.is_empty() {
            return Err(ConfigError::new("queues", "must have at least one queue"));
        }
        for (i, c) in self.configs.iter().enumerate() {
            if self.configs[..i].iter().any(|o| o.name == c.name) {
                return Err(ConfigError::new(
                    "queues",
                    format!("duplicate queue name {:?}", c.name),
                ));
            }
        }
        let default = match &self.default {
            None => 0,
            Some(d) => self
                .configs
                .iter()
                .position(|c| &c.name == d)
                .ok_or_else(|| ConfigError::new("default_kind", "must name a queue"))?,
        };
        let queues = self
            .configs
            .iter()
            .map(|c| Arc::new(Shared::new(c)))
            .collect();
        Ok(KindQueuesLayer {
            queues: Arc::new(Queues { queues, default }),
            kind,
            read_priority: PriorityFromExtensions,
            read_deadline: FromExtensions::new(),
        })
    }
}

// === impl KindQueuesLayer ===

impl KindQueuesLayer<()> {
    /// A builder with no queues.
    pub fn builder() -> KindQueuesBuilder {
        KindQueuesBuilder::default()
    }
}

impl<F, P, D> KindQueuesLayer<F, P, D> {
    /// Reads request priorities with `read` instead (see
    /// [`BoundedQueueLayer::with_priority`](crate::BoundedQueueLayer::with_priority)).
    pub fn with_priority<P2>(self, read: P2) -> KindQueuesLayer<F, P2, D> {
        KindQueuesLayer {
            queues: self.queues,
            kind: self.kind,
            read_priority: read,
            read_deadline: self.read_deadline,
        }
    }

    /// Reads request deadlines with `read` instead (see
    /// [`BoundedQueueLayer::with_deadline`](crate::BoundedQueueLayer::with_deadline)).
    pub fn with_deadline<D2>(self, read: D2) -> KindQueuesLayer<F, P, D2> {
        KindQueuesLayer {
            queues: self.queues,
            kind: self.kind,
            read_priority: self.read_priority,
            read_deadline: read,
        }
    }

    /// A read-only handle on the queue named `name`.
    pub fn handle(&self, name: &str) -> Option<BoundedQueueHandle> {
        self.queues
            .queues
            .iter()
            .find(|q| &*q.name == name)
            .map(|q| BoundedQueueHandle::new(q.clone()))
    }
}

impl<F, P, D> fmt::Debug for KindQueuesLayer<F, P, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindQueuesLayer")
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl<S, F: Clone, P: Clone, D: Clone> Layer<S> for KindQueuesLayer<F, P, D> {
    type Service = KindQueues<S, F, P, D>;

    fn layer(&self, inner: S) -> Self::Service {
        KindQueues {
            inner,
            queues: self.queues.clone(),
            kind: self.kind.clone(),
            read_priority: self.read_priority.clone(),
            read_deadline: self.read_deadline.clone(),
        }
    }
}

// === impl KindQueues ===

impl<S, F, P, D> KindQueues<S, F, P, D> {
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

impl<S, F, P, D> fmt::Debug for KindQueues<S, F, P, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindQueues")
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl<S, F, P, D, Req> Service<Req> for KindQueues<S, F, P, D>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> &'static str,
    P: ReadPriority<Req>,
    D: ReadDeadline<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = (self.kind)(&req);
        let qs = &self.queues.queues;
        let shared = qs
            .iter()
            .find(|q| &*q.name == key)
            .unwrap_or(&qs[self.queues.default]);
        call(
            shared,
            &mut self.inner,
            &self.read_priority,
            &self.read_deadline,
            req,
        )
    }
}
