//! A `tracing-subscriber` event format that shows the correlation id on every
//! line (`fmt` feature).
//!
//! ```text
//! 12:00:01 [invoice] WARN [123-gda] Unknown country code
//! 12:00:01 [warehouse] ERROR [123-gda] Invalid country code
//! ```
//!
//! The id comes from the `correlation_id` field of the span that
//! [`CorrelationLayer`](crate::CorrelationLayer) opens, recognised by its
//! callsite, not by its name: other spans named `request` (tower-http's
//! `TraceLayer` has one, inside ours in the recommended layer order) are
//! not taken for it. Where that span is not built (a subscriber below
//! `INFO`, or spans switched off in the
//! [config](crate::server::CorrelationConfigBuilder::span)), the id comes
//! from the [`RequestContext`] in scope. Lines outside a request show `[-]`.
//! Finding the id copies nothing: this format adds no allocation to a line.
//!
//! On an outgoing call made through
//! [`PropagateContextLayer`](crate::PropagateContextLayer) below a retry
//! layer, the line also shows the attempt number, from the `attempt` span
//! that layer opens around each attempt
//! ([Attempts](crate::PropagateContext#attempts)). With the propagation
//! above the retry layer (the standard client stack's order), a retry's
//! lines show it too, from the `attempt` span `resilience-retry` opens
//! around each retry (the first try's lines have no number):
//!
//! ```text
//! 12:00:02 [shop] WARN [123-gda attempt=2] inventory answered 503
//! ```
//! Installing the subscriber is the application's job:
//!
//! ```no_run
//! use resilience_correlation::fmt::CorrelationFormat;
//!
//! tracing_subscriber::fmt()
//!     .event_format(CorrelationFormat::new("invoice"))
//!     .init();
//! ```

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::RequestContext;

/// Formats events as `HH:MM:SS [service] LEVEL [correlation id] message`.
#[derive(Debug, Clone)]
pub struct CorrelationFormat {
    service: String,
    time: bool,
    span_names: bool,
}

impl CorrelationFormat {
    /// A format naming `service` on every line.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            time: true,
            span_names: false,
        }
    }

    /// Whether to start lines with the UTC time of day (default `true`).
    #[must_use]
    pub fn with_time(mut self, yes: bool) -> Self {
        self.time = yes;
        self
    }
}

impl CorrelationFormat {
    /// Names the line after the innermost span not named `request` (ours,
    /// tower-http's `TraceLayer`'s), when there is one (several services in
    /// one process, as in tests and demos); default `false`.
    #[must_use]
    pub fn with_span_names(mut self, yes: bool) -> Self {
        self.span_names = yes;
        self
    }
}

impl<S, N> FormatEvent<S, N> for CorrelationFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ours = crate::server::request_span_metadata().map(|meta| meta.callsite());
        let attempts = crate::client::attempt_span_metadata().map(|meta| meta.callsite());
        // Leaf to root: the innermost span of ours (a request served inside
        // another one's handler names its own id), the innermost attempt of
        // an outgoing call below it, and the innermost other one for the
        // line's name.
        let mut request = None;
        let mut attempt = None;
        let mut service = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                let callsite = Some(span.metadata().callsite());
                if callsite == ours {
                    request.get_or_insert(span);
                } else if callsite == attempts || is_retry_attempt(span.metadata()) {
                    if request.is_none() && attempt.is_none() {
                        attempt = Some(span);
                    }
                } else if self.span_names && span.name() != "request" && span.name() != "attempt" {
                    service.get_or_insert(span.name());
                }
                if request.is_some() && (service.is_some() || !self.span_names) {
                    break;
                }
            }
        }
        if self.time {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let day = secs % 86_400;
            write!(
                writer,
                "{:02}:{:02}:{:02} ",
                day / 3600,
                day / 60 % 60,
                day % 60
            )?;
        }
        write!(
            writer,
            "[{}] {} [",
            service.unwrap_or(&self.service),
            event.metadata().level(),
        )?;
        match request {
            Some(span) => {
                let ext = span.extensions();
                let id = ext
                    .get::<FormattedFields<N>>()
                    .and_then(|fields| field_value(fields, "correlation_id"));
                writer.write_str(id.unwrap_or("-"))?;
            }
            // No span of ours (not built while INFO is off, or switched
            // off): the context in scope on this thread, if any.
            None => match RequestContext::current() {
                Some(ctx) => writer.write_str(ctx.correlation_id().as_str())?,
                None => writer.write_str("-")?,
            },
        }
        if let Some(span) = attempt {
            let ext = span.extensions();
            if let Some(n) = ext
                .get::<FormattedFields<N>>()
                .and_then(|fields| field_value(fields, "attempt"))
            {
                write!(writer, " attempt={n}")?;
            }
        }
        writer.write_str("] ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Finds `name=value` in formatted span fields, with or without ANSI
/// colours around the name and the `=`, without copying: the value runs to
/// the next space or escape.
fn field_value<'a>(fields: &'a str, name: &str) -> Option<&'a str> {
    fields.split(' ').find_map(|kv| {
        let mut rest = kv;
        for &b in name.as_bytes() {
            rest = skip_ansi(rest).strip_prefix(char::from(b))?;
        }
        let value = skip_ansi(skip_ansi(rest).strip_prefix('=')?);
        let end = value.find('\x1b').unwrap_or(value.len());
        Some(&value[..end])
    })
}

/// `s` without the ANSI escape sequences at its start (each runs from ESC
/// to a letter).
fn skip_ansi(mut s: &str) -> &str {
    while let Some(escape) = s.strip_prefix('\x1b') {
        match escape.find(|c: char| c.is_ascii_alphabetic()) {
            Some(end) => s = &escape[end + 1..],
            None => return "",
        }
    }
    s
}

/// The `attempt` span the retry layer (`resilience-retry`) opens around a
/// retry: known by its target and name, as that crate is not a dependency.
fn is_retry_attempt(meta: &tracing::Metadata<'_>) -> bool {
    meta.name() == "attempt" && meta.target() == "resilience_retry"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields() {
        let f = "correlation_id=123-gda trace_id=abc";
        assert_eq!(field_value(f, "correlation_id"), Some("123-gda"));
        assert_eq!(field_value(f, "trace_id"), Some("abc"));
        let coloured = "\x1b[3mcorrelation_id\x1b[0m\x1b[2m=\x1b[0m123-gda \x1b[3mtrace_id\x1b[0m\x1b[2m=\x1b[0mabc";
        assert_eq!(field_value(coloured, "correlation_id"), Some("123-gda"));
        assert_eq!(field_value(coloured, "trace_id"), Some("abc"));
        assert_eq!(field_value(f, "other"), None);
        assert_eq!(field_value(f, "correlation"), None);
        assert_eq!(field_value("my_correlation_id=x", "correlation_id"), None);
        assert_eq!(field_value("", "correlation_id"), None);
        assert_eq!(field_value("\x1b[3m", "correlation_id"), None);
    }
}
