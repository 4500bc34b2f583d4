//! Reference services built on the resilience layers.
