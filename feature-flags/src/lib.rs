//! Which code path a request takes: per-request runtime flags.
//!
//! This crate is being built; see the project's issue tracker.
