//! The request body the inner service sees: the original body, or a
//! replayable copy of it.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use resilience_core::BoxError;

use crate::error::{RetryError, RetryErrorKind};

pin_project! {
    /// The body of a request sent by [`Retry`](crate::Retry): an
    /// [`http_body::Body`] of [`Bytes`] whatever the original body type.
    ///
    /// - A request that is not retried gets its original body, passed
    ///   through (its data copied into `Bytes` only if it is another
    ///   [`Buf`]).
    /// - A request that may be retried and has a body streams it on the
    ///   first attempt while keeping a copy of each chunk, up to the
    ///   replay cap
    ///   ([`RetryConfigBuilder::max_replay_body`](crate::RetryConfigBuilder::max_replay_body));
    ///   a retry replays the copy, then reads on from the original body if
    ///   the first attempt stopped early. A body that grows over the cap
    ///   drops its copy and is sent once: the request is not retried.
    ///   Nothing is collected before the first attempt starts.
    ///
    /// Services that take any body (hyper-util's `Client`, axum routers) take
    /// it as it is. A service that takes one body type only, such as tonic's
    /// `Channel` (`tonic::body::Body`), takes it through a `map_request`
    /// that wraps it, `req.map(tonic::body::Body::new)`: see
    /// [the crate docs](crate#with-hyper-axum-and-tonic).
    pub struct RetryBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Plain { #[pin] body: B },
        Empty,
        Replay { replay: Replay<B> },
    }
}

/// The original body of a retryable request, shared by its attempts.
pub(crate) struct ReplaySource<B> {
    shared: Arc<Shared<B>>,
}

/// One attempt's copy of a replayable body.
struct Replay<B> {
    shared: Arc<Shared<B>>,
    /// The rest of the original body, while this copy reads it.
    rest: Option<Pin<Box<B>>>,
    /// The next buffered chunk to replay.
    cursor: usize,
    /// Bytes this copy has yielded.
    yielded: u64,
    /// The copy's generation: only the newest may take the original body.
    epoch: u64,
    trailers_sent: bool,
    done: bool,
}

struct Shared<B> {
    state: Mutex<State<B>>,
    cap: usize,
    size_hint: SizeHint,
}

struct State<B> {
    chunks: Vec<Bytes>,
    len: usize,
    trailers: Option<HeaderMap>,
    /// The original body has ended (all of it is in `chunks` unless capped).
    completed: bool,
    /// The body went over the cap (or failed): it cannot be replayed.
    capped: bool,
    /// The rest of the original body, when no copy is reading it.
    rest: Option<Pin<Box<B>>>,
    epoch: u64,
}

// === impl RetryBody ===

impl<B> RetryBody<B> {
    /// The original body, passed through.
    pub(crate) fn plain(body: B) -> Self {
        Self {
            kind: Kind::Plain { body },
        }
    }

    /// A body without data (a retry of a request whose body was empty).
    pub(crate) fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    /// Whether this body is a copy of a replayable body.
    #[cfg(test)]
    pub(crate) fn is_replay(&self) -> bool {
        matches!(self.kind, Kind::Replay { .. })
    }
}

impl<B> Body for RetryBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Plain { body } => body.poll_frame(cx).map(|f| {
                f.map(|f| {
                    f.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                        .map_err(Into::into)
                })
            }),
            KindProj::Empty => Poll::Ready(None),
            KindProj::Replay { replay } => replay.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Plain { body } => body.is_end_stream(),
            Kind::Empty => true,
            Kind::Replay { replay } => replay.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Plain { body } => body.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Replay { replay } => replay.size_hint(),
        }
    }
}

impl<B> fmt::Debug for RetryBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Plain { .. } => "plain",
            Kind::Empty => "empty",
            Kind::Replay { .. } => "replay",
        };
        f.debug_struct("RetryBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

// === impl ReplaySource ===

impl<B: Body> ReplaySource<B> {
    /// Keeps `body` for replay, buffering at most `cap` bytes of it.
    pub(crate) fn new(body: B, cap: usize) -> Self {
        let size_hint = body.size_hint();
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    chunks: Vec::new(),
                    len: 0,
                    trailers: None,
                    completed: false,
                    capped: false,
                    rest: Some(Box::pin(body)),
                    epoch: 0,
                }),
                cap,
                size_hint,
            }),
        }
    }
}

impl<B> ReplaySource<B> {
    /// The first attempt's body.
    pub(crate) fn first(&self) -> RetryBody<B> {
        self.copy(0)
    }

    /// A body for the next attempt, if the body can be replayed: it did
    /// not go over the cap, and no earlier attempt is still reading the
    /// original body. Earlier copies lose their right to the original body.
    pub(crate) fn replay(&self) -> Option<RetryBody<B>> {
        let mut st = self.shared.lock();
        if !st.can_replay() {
            return None;
        }
        st.epoch += 1;
        let epoch = st.epoch;
        drop(st);
        Some(self.copy(epoch))
    }

    /// Whether [`replay`](Self::replay) would give a body now.
    pub(crate) fn can_replay(&self) -> bool {
        self.shared.lock().can_replay()
    }

    fn copy(&self, epoch: u64) -> RetryBody<B> {
        RetryBody {
            kind: Kind::Replay {
                replay: Replay {
                    shared: self.shared.clone(),
                    rest: None,
                    cursor: 0,
                    yielded: 0,
                    epoch,
                    trailers_sent: false,
                    done: false,
                },
            },
        }
    }
}

impl<B> fmt::Debug for ReplaySource<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplaySource").finish_non_exhaustive()
    }
}

// === impl Shared ===

impl<B> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B> State<B> {
    fn can_replay(&self) -> bool {
        !self.capped && (self.completed || self.rest.is_some())
    }
}

// === impl Replay ===

impl<B> Replay<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if self.rest.is_none() {
                let mut st = self.shared.lock();
                if !st.capped && self.cursor < st.chunks.len() {
                    let chunk = st.chunks[self.cursor].clone();
                    self.cursor += 1;
                    self.yielded += chunk.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if st.capped {
                    return Poll::Ready(Some(Err(RetryError::new(RetryErrorKind::Capped).into())));
                }
                if st.completed {
                    if !self.trailers_sent {
                        self.trailers_sent = true;
                        if let Some(t) = st.trailers.clone() {
                            return Poll::Ready(Some(Ok(Frame::trailers(t))));
                        }
                    }
                    self.done = true;
                    return Poll::Ready(None);
                }
                if self.epoch != st.epoch {
                    return Poll::Ready(Some(Err(
                        RetryError::new(RetryErrorKind::Superseded).into()
                    )));
                }
                match st.rest.take() {
                    Some(rest) => self.rest = Some(rest),
                    None => {
                        return Poll::Ready(Some(Err(
                            RetryError::new(RetryErrorKind::InUse).into()
                        )));
                    }
                }
            }
            let rest = self.rest.as_mut().expect("holds the original body");
            let frame = match ready!(rest.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    // A failed body cannot be replayed.
                    self.rest = None;
                    self.done = true;
                    let mut st = self.shared.lock();
                    st.capped = true;
                    st.chunks = Vec::new();
                    return Poll::Ready(Some(Err(e.into())));
                }
                None => {
                    self.rest = None;
                    self.done = true;
                    self.shared.lock().completed = true;
                    return Poll::Ready(None);
                }
            };
            match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    let mut st = self.shared.lock();
                    if !st.capped {
                        if st.len + bytes.len() > self.shared.cap {
                            tracing::debug!(
                                cap = self.shared.cap,
                                "request body over the replay cap: it is sent once, not retried"
                            );
                            st.capped = true;
                            st.chunks = Vec::new();
                            st.len = 0;
                        } else {
                            st.len += bytes.len();
                            st.chunks.push(bytes.clone());
                            self.cursor = st.chunks.len();
                        }
                    }
                    self.yielded += bytes.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.shared.lock().trailers = Some(trailers.clone());
                        self.trailers_sent = true;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    // A frame of a kind this version of `http-body` does
                    // not know: skip it.
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        if let Some(rest) = &self.rest {
            return rest.is_end_stream();
        }
        let st = self.shared.lock();
        !st.capped
            && st.completed
            && self.cursor == st.chunks.len()
            && (st.trailers.is_none() || self.trailers_sent)
    }

    fn size_hint(&self) -> SizeHint {
        if let Some(rest) = &self.rest {
            return rest.size_hint();
        }
        let st = self.shared.lock();
        if st.completed && !st.capped {
            return SizeHint::with_exact((st.len as u64).saturating_sub(self.yielded));
        }
        let orig = &self.shared.size_hint;
        let mut hint = SizeHint::new();
        hint.set_lower(orig.lower().saturating_sub(self.yielded));
        if let Some(upper) = orig.upper() {
            hint.set_upper(upper.saturating_sub(self.yielded));
        }
        hint
    }
}

impl<B> Drop for Replay<B> {
    fn drop(&mut self) {
        // Hand the rest of the original body back for the next attempt.
        if let Some(rest) = self.rest.take() {
            self.shared.lock().rest = Some(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use http_body_util::{BodyExt, Full};

    /// A body of given frames, optionally failing after them.
    struct Chunks {
        frames: VecDeque<Frame<Bytes>>,
        fail: bool,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.frames.pop_front() {
                Some(f) => Poll::Ready(Some(Ok(f))),
                None if self.fail => {
                    self.fail = false;
                    Poll::Ready(Some(Err("connection reset".into())))
                }
                None => Poll::Ready(None),
            }
        }
    }

    fn chunks(parts: &[&'static str], trailers: bool) -> Chunks {
        let mut frames: VecDeque<Frame<Bytes>> = parts
            .iter()
            .map(|p| Frame::data(Bytes::from_static(p.as_bytes())))
            .collect();
        if trailers {
            let mut t = HeaderMap::new();
            t.insert("x-sum", "abc".parse().unwrap());
            frames.push_back(Frame::trailers(t));
        }
        Chunks {
            frames,
            fail: false,
        }
    }

    async fn collect<B>(body: RetryBody<B>) -> Result<(Bytes, Option<HeaderMap>), BoxError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let c = body.collect().await?;
        let trailers = c.trailers().cloned();
        Ok((c.to_bytes(), trailers))
    }

    #[tokio::test]
    async fn replays_the_whole_body_and_trailers() {
        let src = ReplaySource::new(chunks(&["he", "llo"], true), 64);
        let (data, trailers) = collect(src.first()).await.unwrap();
        assert_eq!(data, "hello");
        assert_eq!(trailers.unwrap()["x-sum"], "abc");
        for _ in 0..3 {
            let again = src.replay().unwrap();
            assert!(again.is_replay());
            assert_eq!(again.size_hint().exact(), Some(5));
            let (data, trailers) = collect(again).await.unwrap();
            assert_eq!(data, "hello");
            assert_eq!(trailers.unwrap()["x-sum"], "abc");
        }
    }

    #[tokio::test]
    async fn a_retry_reads_on_where_the_first_attempt_stopped() {
        let src = ReplaySource::new(chunks(&["a", "b", "c"], false), 64);
        let mut first = src.first();
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "a");
        assert!(!src.can_replay(), "the first attempt still reads the body");
        drop(first); // the attempt failed early
        let (data, _) = collect(src.replay().unwrap()).await.unwrap();
        assert_eq!(data, "abc");
        let (data, _) = collect(src.replay().unwrap()).await.unwrap();
        assert_eq!(data, "abc");
    }

    #[tokio::test]
    async fn a_body_never_polled_is_sent_whole_by_the_retry() {
        let src = ReplaySource::new(Full::new(Bytes::from_static(b"xyz")), 64);
        let first = src.first();
        drop(first); // e.g. connection refused before the body was sent
        let (data, _) = collect(src.replay().unwrap()).await.unwrap();
        assert_eq!(data, "xyz");
    }

    #[tokio::test]
    async fn over_the_cap_is_sent_once_and_not_replayed() {
        let src = ReplaySource::new(chunks(&["12345", "67890"], false), 8);
        let (data, _) = collect(src.first()).await.unwrap();
        assert_eq!(data, "1234567890", "the first attempt gets the whole body");
        assert!(!src.can_replay());
        assert!(src.replay().is_none());
    }

    #[tokio::test]
    async fn exactly_the_cap_is_replayed() {
        let src = ReplaySource::new(chunks(&["1234", "5678"], false), 8);
        collect(src.first()).await.unwrap();
        assert_eq!(collect(src.replay().unwrap()).await.unwrap().0, "12345678");
    }

    #[tokio::test]
    async fn a_stale_copy_cannot_take_the_body_back() {
        let src = ReplaySource::new(chunks(&["a", "b"], false), 64);
        let stale = src.first(); // never polled: held by a dead attempt
        let fresh = src.replay().unwrap();
        let err = collect(stale).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<RetryError>().unwrap().kind(),
            RetryErrorKind::Superseded
        );
        assert_eq!(collect(fresh).await.unwrap().0, "ab");
    }

    #[tokio::test]
    async fn a_failed_body_is_not_replayed() {
        let mut failing = chunks(&["a"], false);
        failing.fail = true;
        let src = ReplaySource::new(failing, 64);
        assert!(collect(src.first()).await.is_err());
        assert!(src.replay().is_none());
    }

    #[tokio::test]
    async fn plain_and_empty_pass_through() {
        let (data, _) = collect(RetryBody::plain(Full::new(Bytes::from_static(b"p"))))
            .await
            .unwrap();
        assert_eq!(data, "p");
        let empty = RetryBody::<Full<Bytes>>::empty();
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert_eq!(collect(empty).await.unwrap().0, "");
    }
}
