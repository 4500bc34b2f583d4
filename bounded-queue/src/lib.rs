//! How a server protects itself from more work than it can do: bounded,
//! priority- and deadline-aware admission.
//!
//! This crate is being built; see the project's issue tracker.
