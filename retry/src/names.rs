//! Metric names of the retry layer.
//!
//! They follow the family's rule, `resilience_<crate>_<what>_<unit>`, with
//! the labels of [`resilience_core::names`] (`name`, `reason`, `priority`).
//! They are kept in this crate for now; they will move to
//! `resilience_core::names` with the rest of the family's names.
//!
//! | metric | kind | labels = values | meaning |
//! |---|---|---|---|
//! | [`resilience_retry_attempts_total`](RETRY_ATTEMPTS_TOTAL) | counter | `name` | attempts sent: every request's first attempt and every retry |
//! | [`resilience_retry_retries_total`](RETRY_RETRIES_TOTAL) | counter | `name`, `reason` = `status`\|`grpc_status`\|`error`\|`timeout` | retries scheduled, by what the failed attempt got |
//! | [`resilience_retry_declined_total`](RETRY_DECLINED_TOTAL) | counter | `name`, `reason` = `budget_exhausted`\|`deadline`\|`pushback`\|`body`\|`max_attempts`, `priority` | retryable failures returned without a retry, by why |

/// Counter: attempts sent (first attempts and retries).
pub const RETRY_ATTEMPTS_TOTAL: &str = "resilience_retry_attempts_total";
/// Counter: retries scheduled, by reason.
pub const RETRY_RETRIES_TOTAL: &str = "resilience_retry_retries_total";
/// Counter: retryable failures not retried, by reason and priority.
pub const RETRY_DECLINED_TOTAL: &str = "resilience_retry_declined_total";
