//! The deprecated old names still compile and behave the same.

use resilience_retry::{RetryBudgetSnapshot, RetryConfig, RetryLayer};

#[test]
#[allow(deprecated)]
fn the_old_budget_snapshot_name_is_the_same_type() {
    let layer = RetryLayer::new(RetryConfig::default());
    let budget = layer.budget();
    budget.deposit();
    let old: resilience_retry::BudgetSnapshot = layer.handle().snapshot();
    let new: RetryBudgetSnapshot = budget.snapshot();
    assert_eq!(old.requests_total(), new.requests_total());
    assert_eq!(old.retries(), 0);
    assert_eq!(old.allowance(), new.allowance());
}

#[test]
fn default_layers_use_the_default_configs() {
    let retry = RetryLayer::default();
    assert_eq!(retry.handle().name(), RetryConfig::default().name());
    assert_eq!(retry.budget().config(), RetryConfig::default().budget());
    let hedge = resilience_retry::HedgeLayer::default();
    assert_eq!(
        hedge.handle().name(),
        resilience_retry::HedgeConfig::default().name()
    );
}
