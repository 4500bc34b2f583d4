//! Which code path a request takes: per-request runtime flags.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod eval;
mod flag;
mod flags;
pub mod future;
pub mod hash;
mod layer;
mod service;
mod set;
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub mod source;
mod store;

pub use crate::config::{FlagsConfig, FlagsConfigBuilder};
pub use crate::eval::{ErrorCode, FlagContext, FlagEvaluation, Reason};
pub use crate::flag::{Condition, Flag, FlagBuilder, FlagKind, FlagValue};
pub use crate::flags::Flags;
#[cfg(feature = "axum")]
pub use crate::flags::MissingFlags;
pub use crate::layer::FlagsLayer;
pub use crate::service::FlagsService;
pub use crate::set::{FlagSet, FlagSetBuilder};
pub use crate::store::FlagStore;
