//! The response body of the server stack: the service's own, or a refusal's.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a [`ServerStack`](super::ServerStack)'s response: the
    /// inner service's body, or the short fixed text of a refusal (empty for
    /// a gRPC refusal, whose status is in the headers).
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Refusal { text: Option<Bytes> },
        // A refusal's text in static pieces (empty ones skipped), sent as
        // they are: nothing to allocate.
        Static { pieces: [&'static str; 4], next: usize },
    }
}

// === impl ResponseBody ===

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn refusal(text: impl Into<Bytes>) -> Self {
        let text: Bytes = text.into();
        Self {
            kind: Kind::Refusal {
                text: (!text.is_empty()).then_some(text),
            },
        }
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn refusal_static(pieces: [&'static str; 4]) -> Self {
        Self {
            kind: Kind::Static { pieces, next: 0 },
        }
    }
}

impl<B> Default for ResponseBody<B> {
    /// An empty refusal body.
    fn default() -> Self {
        Self {
            kind: Kind::Refusal { text: None },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Refusal { text } => Poll::Ready(text.take().map(|t| Ok(Frame::data(t)))),
            KindProj::Static { pieces, next } => {
                while let Some(piece) = pieces.get(*next) {
                    *next += 1;
                    if !piece.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                            piece.as_bytes(),
                        )))));
                    }
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Refusal { text } => text.is_none(),
            Kind::Static { pieces, next } => pieces.iter().skip(*next).all(|p| p.is_empty()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Refusal { text } => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
            Kind::Static { pieces, next } => {
                SizeHint::with_exact(pieces.iter().skip(*next).map(|p| p.len() as u64).sum())
            }
        }
    }
}
