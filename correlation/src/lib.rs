//! Correlation.
