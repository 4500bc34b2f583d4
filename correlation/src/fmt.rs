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
}

impl CorrelationFormat {
    /// A format naming `service` on every line.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            time: true,
        }
    }

    /// Whether to start lines with the UTC time of day (default `true`).
    #[must_use]
    pub fn with_time(mut self, yes: bool) -> Self {
        self.time = yes;
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
        let id = ctx.event_scope().and_then(|scope| {
            scope.from_root().find_map(|span| {
                let ext = span.extensions();
                let fields = ext.get::<FormattedFields<N>>()?;
                field_value(fields, "correlation_id").map(str::to_owned)
            })
        });
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
            self.service,
            event.metadata().level(),
            id.as_deref().unwrap_or("-")
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Finds `name=value` in formatted span fields.
fn field_value<'a>(fields: &'a str, name: &str) -> Option<&'a str> {
    fields.split(' ').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields() {
        let f = "correlation_id=123-gda trace_id=abc";
        assert_eq!(field_value(f, "correlation_id"), Some("123-gda"));
        assert_eq!(field_value(f, "trace_id"), Some("abc"));
        assert_eq!(field_value(f, "other"), None);
        assert_eq!(field_value("", "correlation_id"), None);
    }
}
