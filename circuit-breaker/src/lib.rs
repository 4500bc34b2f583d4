//! How a client protects itself from a failing dependency: a circuit breaker
//! and the client-side throttles.
//!
//! This crate is being built; see the project's issue tracker.
