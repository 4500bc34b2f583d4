//! A `tracing-subscriber` event format that shows the correlation id on every
//! line (`fmt` feature).
//!
//! ```text
//! 12:00:01 [invoice] WARN [123-gda] Unknown country code
//! 12:00:01 [warehouse] ERROR [123-gda] Invalid country code
//! ```
//!
//! The id comes from the `correlation_id` field of the `request` span that
//! [`CorrelationLayer`](crate::CorrelationLayer) opens; lines outside a
//! request show `[-]`. Installing the subscriber is the application's job:
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
    /// Names the line after the innermost span other than `request`, when
    /// there is one (several services in one process, as in tests and
    /// demos); default `false`.
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
        let mut id = None;
        let mut service = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if span.name() == "request" {
                    let ext = span.extensions();
                    if let Some(fields) = ext.get::<FormattedFields<N>>() {
                        id = field_value(fields, "correlation_id");
                    }
                } else if self.span_names {
                    service = Some(span.name());
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
            "[{}] {} [{}] ",
            service.unwrap_or(&self.service),
            event.metadata().level(),
            id.as_deref().unwrap_or("-")
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Finds `name=value` in formatted span fields, with or without ANSI
/// colours.
fn field_value(fields: &str, name: &str) -> Option<String> {
    fields.split(' ').find_map(|kv| {
        let plain = strip_ansi(kv);
        let (k, v) = plain.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // Skip to the end of the escape sequence (a letter).
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields() {
        let f = "correlation_id=123-gda trace_id=abc";
        assert_eq!(field_value(f, "correlation_id").as_deref(), Some("123-gda"));
        assert_eq!(field_value(f, "trace_id").as_deref(), Some("abc"));
        let coloured = "\x1b[3mcorrelation_id\x1b[0m\x1b[2m=\x1b[0m123-gda";
        assert_eq!(
            field_value(coloured, "correlation_id").as_deref(),
            Some("123-gda")
        );
        assert_eq!(field_value(f, "other"), None);
        assert_eq!(field_value("", "correlation_id"), None);
    }
}
