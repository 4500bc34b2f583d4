//! Shared helpers for the correlation integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use resilience_correlation::{Priority, RequestContext};

/// What one hop saw of its request context.
#[derive(Clone, Debug)]
pub struct Seen {
    pub hop: &'static str,
    pub id: String,
    pub trace_id: String,
    pub parent: Option<String>,
    pub span: String,
    pub priority: Priority,
    /// Remaining time the hop received on the wire (ms over HTTP, µs over gRPC).
    pub wire_deadline: Option<u64>,
}

/// A log of observations shared by all hops of one test.
#[derive(Clone, Default, Debug)]
pub struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    pub fn record(&self, hop: &'static str, wire_deadline: Option<u64>) {
        let ctx = RequestContext::current().expect("handler runs inside the context scope");
        self.0.lock().unwrap().push(Seen {
            hop,
            id: ctx.correlation_id().to_string(),
            trace_id: ctx.trace().trace_id().to_string(),
            parent: ctx.trace().parent_id().map(|p| p.to_string()),
            span: ctx.trace().span_id().to_string(),
            priority: ctx.priority(),
            wire_deadline,
        });
    }

    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Checks what every chain test checks: one id, one trace, chained spans,
/// one priority, a shrinking deadline.
pub fn assert_chain(
    seen: &[Seen],
    id: Option<&str>,
    inbound_parent: Option<&str>,
    priority: Priority,
) {
    let hops: Vec<_> = seen.iter().map(|s| s.hop).collect();
    assert_eq!(
        hops,
        ["edge", "a", "b"],
        "every hop handled the request once"
    );
    let (edge, a, b) = (&seen[0], &seen[1], &seen[2]);
    if let Some(id) = id {
        assert_eq!(edge.id, id);
    } else {
        assert_eq!(edge.id.len(), 36, "a UUID was generated: {}", edge.id);
    }
    assert!(
        seen.iter().all(|s| s.id == edge.id),
        "same id everywhere: {seen:?}"
    );
    assert!(
        seen.iter().all(|s| s.trace_id == edge.trace_id),
        "same trace: {seen:?}"
    );
    assert_eq!(edge.parent.as_deref(), inbound_parent);
    assert_eq!(
        a.parent.as_deref(),
        Some(edge.span.as_str()),
        "A's parent is the edge's span"
    );
    assert_eq!(
        b.parent.as_deref(),
        Some(a.span.as_str()),
        "B's parent is A's span"
    );
    assert!(edge.span != a.span && a.span != b.span && edge.span != b.span);
    assert!(
        seen.iter().all(|s| s.priority == priority),
        "priority {priority:?}: {seen:?}"
    );
}

/// Checks that the wire deadline strictly shrinks hop after hop.
pub fn assert_deadline_shrinks(seen: &[Seen], first: u64) {
    let d: Vec<u64> = seen
        .iter()
        .map(|s| s.wire_deadline.expect("deadline on the wire"))
        .collect();
    assert!(d[0] <= first, "{d:?}");
    assert!(
        d[1] < d[0] && d[2] < d[1],
        "deadline shrinks across hops: {d:?}"
    );
}
