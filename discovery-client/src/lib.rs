//! Where the instances of a dependency are, and which one to call: endpoint
//! sources, health checks and a round-robin balancer.
//!
//! This crate is being built; see the project's issue tracker.
