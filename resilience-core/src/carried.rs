//! Priority and deadline carried inside a request context.
//!
//! A request-context crate (`resilience-correlation`) keeps a request's
//! [`Priority`] and [`Deadline`] inside its own context, which it puts in
//! the request's extensions and in a task-local scope around the handler.
//! One extension per request instead of three costs one boxed value
//! instead of three (a request's extensions are a map of boxed values),
//! and an outgoing call made inside the scope needs no extension at all.
//! So that the readers of this crate ([`Deadline::from_extensions`],
//! [`Priority::from_extensions`], [`PriorityFromExtensions`], the
//! [`TimeoutLayer`](crate::TimeoutLayer)'s default) find them without
//! depending on that crate, the context crate registers a
//! [`ContextReader`] once: how to read priority and deadline from its
//! extension, and from the context in scope on this thread.
//!
//! What the readers return, for a request:
//!
//! - the deadline: the earlier of a [`Deadline`] in its extensions and the
//!   deadline of its context (the context in its extensions, else the one
//!   in scope while it is read);
//! - the priority: a [`Priority`] in its extensions, else its context's,
//!   else none (the readers' default, `critical`).
//!
//! Without a registered reader, only the [`Deadline`] and [`Priority`]
//! extensions count. Reading costs an atomic load, an extension lookup
//! and a thread-local access; registering is done by the context crate
//! when its layers are built, and a second registration is ignored.
//!
//! [`PriorityFromExtensions`]: crate::PriorityFromExtensions
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience_core::carried::{Carried, ContextReader, register};
//! use resilience_core::{Deadline, Priority};
//!
//! #[derive(Clone)]
//! struct MyContext { priority: Priority, deadline: Option<Deadline> }
//!
//! register(ContextReader {
//!     extensions: |ext| ext.get::<MyContext>().map(|c| Carried {
//!         priority: c.priority,
//!         deadline: c.deadline,
//!     }),
//!     current: || None,
//! });
//! # // (the doctest's process has no other reader)
//! let mut req = http::Request::new(());
//! let deadline = Deadline::after(Duration::from_secs(1));
//! req.extensions_mut().insert(MyContext { priority: Priority::Sheddable, deadline: Some(deadline) });
//! assert_eq!(Deadline::from_extensions(req.extensions()), Some(deadline));
//! assert_eq!(Priority::from_extensions(req.extensions()), Some(Priority::Sheddable));
//! ```

use std::sync::OnceLock;

use crate::deadline::Deadline;
use crate::priority::Priority;

/// What a request context carries for the other layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    /// The request's priority (the context's own, after its policy).
    pub priority: Priority,
    /// The request's deadline, if it has one.
    pub deadline: Option<Deadline>,
}

/// How to find a request context's [`Carried`] values; see the
/// [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct ContextReader {
    /// From a request's extensions (the context extension, if present).
    pub extensions: fn(&http::Extensions) -> Option<Carried>,
    /// From the context in scope on this thread, if any.
    pub current: fn() -> Option<Carried>,
}

static READER: OnceLock<ContextReader> = OnceLock::new();

/// Registers the reader of a request context; returns `false` (and keeps
/// the first) if one was registered already.
pub fn register(reader: ContextReader) -> bool {
    READER.set(reader).is_ok()
}

/// The values of the context of a request with these extensions: the
/// context in them, else the one in scope.
pub fn find(ext: &http::Extensions) -> Option<Carried> {
    let reader = READER.get()?;
    (reader.extensions)(ext).or_else(reader.current)
}

/// The values of the context in scope on this thread, if any.
pub fn current() -> Option<Carried> {
    (READER.get()?.current)()
}
