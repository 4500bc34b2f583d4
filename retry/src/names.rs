//! Metric names of the retry layer.
//!
//! They live in [`resilience_core::names`], with the rest of the family's
//! names (its module docs list every metric, with kind, labels and
//! meaning); this module re-exports the retry layer's:
//!
//! | metric | kind | labels = values |
//! |---|---|---|
//! | [`resilience_retry_attempts_total`](RETRY_ATTEMPTS_TOTAL) | counter | `name` |
//! | [`resilience_retry_retries_total`](RETRY_RETRIES_TOTAL) | counter | `name`, `reason` = `status`\|`grpc_status`\|`error`\|`timeout` |
//! | [`resilience_retry_declined_total`](RETRY_DECLINED_TOTAL) | counter | `name`, `reason` = `budget_exhausted`\|`deadline`\|`pushback`\|`body`\|`max_attempts`, `priority` |
//! | [`resilience_retry_hedges_total`](RETRY_HEDGES_TOTAL) | counter | `name` (of the [`HedgeLayer`](crate::HedgeLayer)) |
//! | [`resilience_retry_hedges_won_total`](RETRY_HEDGES_WON_TOTAL) | counter | `name` (of the [`HedgeLayer`](crate::HedgeLayer)) |

pub use resilience_core::names::{
    RETRY_ATTEMPTS_TOTAL, RETRY_DECLINED_TOTAL, RETRY_HEDGES_TOTAL, RETRY_HEDGES_WON_TOTAL,
    RETRY_RETRIES_TOTAL,
};
