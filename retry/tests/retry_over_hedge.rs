//! A retry layer above a hedge layer, with real body types: the hedge
//! layer wraps the retry layer's replayable body in one of its own, and a
//! retry must still replay the whole body, whatever the attempt below read
//! of it before it failed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use resilience_core::{Attempt, BoxError};
use resilience_retry::{HedgeConfig, HedgeLayer, RetryBody, RetryConfig, RetryLayer};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// How one call goes: reads the whole body (`true`) or its first frame
/// only, then waits this long, then answers with this status.
type Script = fn(usize) -> (bool, Duration, u16);

/// The body each call received (what it read of it), in call order.
type Seen = Arc<Mutex<Vec<Bytes>>>;

const MS: fn(u64) -> Duration = Duration::from_millis;

/// A retry layer (no backoff) above a hedge layer (delay 50 ms) over a
/// dependency that follows `script`; returns the response status, what
/// each call read, and the attempt numbers the calls carried.
async fn run<B>(body: B, script: Script) -> (u16, Vec<Bytes>, Vec<u32>)
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let seen: Seen = Arc::default();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let (s, a) = (seen.clone(), attempts.clone());
    let dependency = service_fn(move |req: Request<RetryBody<RetryBody<B>>>| {
        let (seen, attempts) = (s.clone(), a.clone());
        async move {
            let n = {
                let mut attempts = attempts.lock().unwrap();
                attempts.push(Attempt::from_extensions(req.extensions()).cloned());
                attempts.len() - 1
            };
            let (whole, wait, status) = script(n);
            let mut body = req.into_body();
            let read = if whole {
                body.collect().await?.to_bytes()
            } else {
                let frame = body.frame().await.transpose()?;
                // What is left of the body is dropped here, as a client
                // drops a request whose connection failed.
                drop(body);
                frame.and_then(|f| f.into_data().ok()).unwrap_or_default()
            };
            seen.lock().unwrap().push(read);
            tokio::time::sleep(wait).await;
            Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap())
        }
    });
    let retry = RetryLayer::new(RetryConfig::builder().name("inventory").build().unwrap())
        .with_random(|| 0.0);
    let hedge = HedgeLayer::new(
        HedgeConfig::builder()
            .name("inventory")
            .delay(MS(50))
            .build()
            .unwrap(),
    )
    .with_budget(retry.budget().clone());
    let client = ServiceBuilder::new()
        .layer(retry)
        .layer(hedge)
        .service(dependency);
    let req = Request::put("/stock/42").body(body).unwrap();
    let rsp = client.oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let attempts = attempts.lock().unwrap().clone();
    // Every try that carries an attempt shares the first one's record of
    // the endpoints tried.
    let first = attempts.iter().flatten().next();
    assert!(
        attempts
            .iter()
            .flatten()
            .all(|a| first.is_some_and(|f| f.same_request(a))),
        "one record of the endpoints tried across both layers"
    );
    let numbers = attempts
        .iter()
        .map(|a| a.as_ref().map_or(0, Attempt::number))
        .collect();
    (rsp.status().as_u16(), seen, numbers)
}

/// An axum body of three chunks, streamed.
fn axum_body() -> axum::body::Body {
    struct Chunks(std::vec::IntoIter<&'static str>);
    impl futures_core::Stream for Chunks {
        type Item = Result<Bytes, BoxError>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next().map(|c| Ok(Bytes::from_static(c.as_bytes()))))
        }
    }
    axum::body::Body::from_stream(Chunks(vec!["quantity=", "4", "&sku=42"].into_iter()))
}

/// Call 0 reads the first frame only and fails with 503 at once; call 1
/// (the retry) reads all and answers 200.
fn partial_then_ok(n: usize) -> (bool, Duration, u16) {
    match n {
        0 => (false, Duration::ZERO, 503),
        _ => (true, Duration::ZERO, 200),
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_replays_a_full_body_the_failed_attempt_read_below_a_hedge_layer() {
    let body = Full::new(Bytes::from_static(b"quantity=4&sku=42"));
    let (status, seen, attempts) = run(body, partial_then_ok).await;
    assert_eq!(status, 200, "the retry was sent and answered");
    assert_eq!(seen, ["quantity=4&sku=42", "quantity=4&sku=42"]);
    assert_eq!(attempts, [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_retry_replays_an_axum_body_the_failed_attempt_read_in_part_below_a_hedge_layer() {
    let (status, seen, attempts) = run(axum_body(), partial_then_ok).await;
    assert_eq!(status, 200, "the retry was sent and answered");
    assert_eq!(seen, ["quantity=", "quantity=4&sku=42"]);
    assert_eq!(attempts, [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_and_then_a_retry_both_replay_the_body() {
    // Call 0 reads one frame and answers 503 after 100 ms; its hedge
    // (call 1, at 50 ms) reads all and answers 503 at once; the retry
    // (call 2) reads all and answers 200.
    fn script(n: usize) -> (bool, Duration, u16) {
        match n {
            0 => (false, MS(100), 503),
            1 => (true, Duration::ZERO, 503),
            _ => (true, Duration::ZERO, 200),
        }
    }
    let (status, seen, attempts) = run(axum_body(), script).await;
    assert_eq!(status, 200);
    assert_eq!(
        seen,
        ["quantity=", "quantity=4&sku=42", "quantity=4&sku=42"]
    );
    // One record, one counter: the hedge is attempt 2, the retry 3.
    assert_eq!(attempts, [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn attempt_numbers_are_unique_across_retries_and_hedges() {
    // Call 0 is slow and fails; its hedge (call 1) fails at once; the
    // retry (call 2) is slow too, and its hedge (call 3) answers.
    fn script(n: usize) -> (bool, Duration, u16) {
        match n {
            0 | 2 => (true, MS(100), 503),
            1 => (true, Duration::ZERO, 503),
            _ => (true, Duration::ZERO, 200),
        }
    }
    let body = Full::new(Bytes::from_static(b"quantity=4&sku=42"));
    let (status, seen, attempts) = run(body, script).await;
    assert_eq!(status, 200, "the retry's hedge answered");
    assert_eq!(seen.len(), 4);
    assert_eq!(attempts, [1, 2, 3, 4], "no number given twice");
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_cap_is_sent_once_through_both_layers() {
    let big = Full::new(Bytes::from(vec![
        b'x';
        RetryConfig::DEFAULT_MAX_REPLAY_BODY + 1
    ]));
    let (status, seen, attempts) = run(big, partial_then_ok).await;
    assert_eq!(status, 503, "not retried: the body cannot be replayed");
    assert_eq!(seen.len(), 1);
    assert_eq!(attempts, [0], "passed through untouched: no attempt");
}
