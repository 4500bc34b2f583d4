//! Criterion benchmarks of the resilience layers, side by side with peers.
//!
//! Run them with `cargo bench -p resilience-benches`; every group has a
//! `baseline` (a bare service) measured in the same run, so read the results
//! as ratios.
