//! Endpoints and the changes sources emit.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// One instance of a dependency: an address, optional metadata and a weight.
///
/// Endpoints are identified by their address: two endpoints with the same
/// address are the same instance, and inserting one replaces the other.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    addr: SocketAddr,
    weight: u32,
    metadata: BTreeMap<String, String>,
}

/// Makes the service that calls one endpoint: what a
/// [`RoundRobin`](crate::RoundRobin) (or [`discover`](crate::source::discover))
/// runs when an endpoint appears.
///
/// Implemented for every closure and function that takes the endpoint by
/// reference, `Fn(&Endpoint) -> S`, or by value, `Fn(Endpoint) -> S`.
/// `Args` (`fn(&Endpoint)` or `fn(Endpoint)`) tells the two apart; it is
/// inferred, you never name it. A closure names its parameter's type:
/// `|ep: &Endpoint| ...`.
///
/// A plain function returning `impl Service` is a maker as it is when it
/// takes the endpoint by value:
///
/// ```
/// use resilience_core::BoxError;
/// use resilience_discovery::{Endpoint, RoundRobin};
/// use tower::{Service, service_fn};
///
/// fn greeter(ep: Endpoint) -> impl Service<(), Response = String, Error = BoxError> + Clone {
///     let addr = ep.addr();
///     service_fn(move |()| async move { Ok::<_, BoxError>(format!("hello from {addr}")) })
/// }
///
/// let balancer = RoundRobin::new([Endpoint::new("10.0.0.1:80".parse().unwrap())], greeter);
/// # let _ = balancer;
/// ```
///
/// Taking `&Endpoint` instead, such a function's `impl Service` borrows the
/// endpoint as far as the compiler knows (in edition 2024 an `impl Trait`
/// return type captures every lifetime in scope), so it cannot outlive the
/// call and is refused as a maker; say that it borrows nothing with
/// `+ use<>`: `fn greeter(ep: &Endpoint) -> impl Service<..> + Clone + use<>`.
///
/// For a maker of your own type, implement the trait with any `Args`
/// (`()` will do).
pub trait MakeEndpoint<Args> {
    /// The endpoint's service.
    type Service;

    /// Makes the service of `endpoint`.
    fn make_endpoint(&self, endpoint: &Endpoint) -> Self::Service;
}

/// A change to the set of endpoints, as emitted by a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An endpoint appeared, or its weight or metadata changed.
    Insert(Endpoint),
    /// The endpoint with this address is gone.
    Remove(SocketAddr),
}

// === impl Endpoint ===

impl Endpoint {
    /// The weight of an endpoint nobody weighted: `1`.
    pub const DEFAULT_WEIGHT: u32 = 1;

    /// An endpoint at `addr`, with weight 1 and no metadata.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            weight: Self::DEFAULT_WEIGHT,
            metadata: BTreeMap::new(),
        }
    }

    /// Sets the relative weight (0 is treated as 1; DNS SRV weights land here).
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Adds one metadata entry (zone, version, ...).
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The relative weight, at least 1.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The metadata.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

// === impl MakeEndpoint ===

impl<F, S> MakeEndpoint<fn(&Endpoint)> for F
where
    F: Fn(&Endpoint) -> S,
{
    type Service = S;

    fn make_endpoint(&self, endpoint: &Endpoint) -> S {
        self(endpoint)
    }
}

impl<F, S> MakeEndpoint<fn(Endpoint)> for F
where
    F: Fn(Endpoint) -> S,
{
    type Service = S;

    fn make_endpoint(&self, endpoint: &Endpoint) -> S {
        self(endpoint.clone())
    }
}

/// The changes that turn `old` into `new` (both keyed by address).
pub(crate) fn diff(
    old: &BTreeMap<SocketAddr, Endpoint>,
    new: &BTreeMap<SocketAddr, Endpoint>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for addr in old.keys() {
        if !new.contains_key(addr) {
            changes.push(Change::Remove(*addr));
        }
    }
    for (addr, ep) in new {
        if old.get(addr) != Some(ep) {
            changes.push(Change::Insert(ep.clone()));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn diff_inserts_removes_and_replaces() {
        let old: BTreeMap<_, _> = [ep(1), ep(2)].into_iter().map(|e| (e.addr(), e)).collect();
        let new: BTreeMap<_, _> = [ep(2).with_weight(5), ep(3)]
            .into_iter()
            .map(|e| (e.addr(), e))
            .collect();
        let changes = diff(&old, &new);
        assert_eq!(
            changes,
            vec![
                Change::Remove(ep(1).addr()),
                Change::Insert(ep(2).with_weight(5)),
                Change::Insert(ep(3)),
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn zero_weight_is_one() {
        assert_eq!(ep(1).with_weight(0).weight(), 1);
        assert_eq!(ep(1).to_string(), "127.0.0.1:1");
    }
}
