//! Which code path a request takes: per-request runtime flags.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod eval;
mod flag;
pub mod hash;
mod set;
mod store;

pub use crate::eval::{ErrorCode, FlagContext, FlagEvaluation, Reason};
pub use crate::flag::{Condition, Flag, FlagBuilder, FlagKind, FlagValue};
pub use crate::set::{FlagSet, FlagSetBuilder};
pub use crate::store::FlagStore;
#[cfg(feature = "file")]
pub mod source;
