use std::fmt;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{CheckFuture, CheckHealth};
use crate::endpoint::Endpoint;

/// An HTTP health check: `GET http://<endpoint><path>`, healthy on 2xx or
/// 3xx, through its own hyper-util client (its own connections, apart from
/// user traffic).
#[derive(Clone)]
pub struct HttpHealthCheck {
    path: String,
    client: Client<HttpConnector, Empty<Bytes>>,
}

// === impl HttpHealthCheck ===

impl HttpHealthCheck {
    /// Checks `path` (e.g. [`HealthCheckConfig::DEFAULT_PATH`](super::HealthCheckConfig::DEFAULT_PATH)).
    pub fn new(path: impl Into<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            path: path.into(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Checks the path of `config`.
    pub fn from_config(config: &super::HealthCheckConfig) -> Self {
        Self::new(config.path())
    }
}

impl CheckHealth for HttpHealthCheck {
    fn check(&self, endpoint: &Endpoint) -> CheckFuture {
        let uri = format!("http://{}{}", endpoint.addr(), self.path);
        let client = self.client.clone();
        Box::pin(async move {
            let uri: http::Uri = uri.parse()?;
            let rsp = client.get(uri).await?;
            let status = rsp.status();
            if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("health check answered {status}").into())
            }
        })
    }
}

impl fmt::Debug for HttpHealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpHealthCheck")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}
