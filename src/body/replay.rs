//! A request body that can be sent more than once, for retry policies:
//! every attempt reads it from the start; what the first read took from
//! the client is kept (refcounted chunks, not copies) up to
//! [`RECORD_LIMIT`], and past that the body can no longer be replayed
//! (the attempt under way still gets all of it). Only the newest attempt
//! reads on from the client; an older one, abandoned, gets an error.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;

use super::h2::RECORD_LIMIT;
use super::Body;
use crate::error::BoxError;

/// The body shared by a request's attempts.
#[derive(Clone)]
pub struct Replayable {
    shared: Arc<Mutex<State>>,
}

struct State {
    chunks: Vec<Bytes>,
    size: usize,
    trailers: Option<HeaderMap>,
    /// What the client has not sent yet (None once it ended).
    source: Option<Body>,
    ended: bool,
    /// Past the limit, or committed: nothing is kept any more.
    given_up: bool,
    /// The client's body broke off.
    broken: bool,
    /// The attempt allowed to read on from the client.
    generation: u32,
}

impl Replayable {
    pub fn new(body: Body) -> Self {
        let ended = body.is_end_stream();
        Replayable {
            shared: Arc::new(Mutex::new(State {
                chunks: Vec::new(),
                size: 0,
                trailers: None,
                source: (!ended).then_some(body),
                ended,
                given_up: false,
                broken: false,
                generation: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The body for the next attempt, from its start; None when it cannot
    /// be sent whole again (over the limit, broken off, or committed).
    pub fn attempt(&self) -> Option<Body> {
        let mut st = self.lock();
        if (st.given_up && st.generation > 0) || st.broken {
            return None;
        }
        st.generation += 1;
        let generation = st.generation;
        drop(st);
        Some(BodyExt::boxed_unsync(Attempt {
            shared: self.shared.clone(),
            pos: 0,
            generation,
            trailers_sent: false,
        }))
    }

    /// Whether another attempt could send the body whole.
    pub fn can_replay(&self) -> bool {
        let st = self.lock();
        !st.given_up && !st.broken
    }

    /// The answer is the client's: nothing will be sent again, so nothing
    /// more is kept.
    pub fn commit(&self) {
        let mut st = self.lock();
        st.given_up = true;
        st.chunks = Vec::new();
    }
}

struct Attempt {
    shared: Arc<Mutex<State>>,
    pos: usize,
    generation: u32,
    trailers_sent: bool,
}

impl HttpBody for Attempt {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut st = this.shared.lock().unwrap_or_else(|p| p.into_inner());
        if st.generation != this.generation {
            return Poll::Ready(Some(Err(
                "a newer attempt took over the request body".into()
            )));
        }
        if !st.given_up && this.pos < st.chunks.len() {
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(st.chunks[this.pos - 1].clone()))));
        }
        if st.ended {
            if this.trailers_sent {
                return Poll::Ready(None);
            }
            this.trailers_sent = true;
            return Poll::Ready(st.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        let Some(source) = st.source.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(source).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(f) => f,
        };
        match frame {
            None => {
                st.ended = true;
                st.source = None;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                st.broken = true;
                st.chunks = Vec::new();
                Poll::Ready(Some(Err(e)))
            }
            Some(Ok(frame)) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        if !st.given_up {
                            st.size += data.len();
                            if st.size > RECORD_LIMIT {
                                st.given_up = true;
                                st.chunks = Vec::new();
                            } else {
                                st.chunks.push(data.clone());
                                this.pos += 1;
                            }
                        }
                        Frame::data(data)
                    }
                    Err(frame) => {
                        if let Some(t) = frame.trailers_ref() {
                            st.trailers = Some(t.clone());
                            st.ended = true;
                            st.source = None;
                            this.trailers_sent = true;
                        }
                        frame
                    }
                };
                if st.source.as_ref().is_some_and(|s| s.is_end_stream()) {
                    st.ended = true;
                    st.source = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let st = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        st.generation == self.generation
            && st.ended
            && (st.given_up || self.pos >= st.chunks.len())
            && (self.trailers_sent || st.trailers.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn whole(body: Body) -> Bytes {
        body.collect().await.expect("a whole body").to_bytes()
    }

    #[tokio::test]
    async fn every_attempt_reads_the_whole_body() {
        let r = Replayable::new(super::super::full(Bytes::from_static(b"hello")));
        let first = r.attempt().unwrap();
        assert_eq!(whole(first).await, Bytes::from_static(b"hello"));
        assert!(r.can_replay());
        let second = r.attempt().unwrap();
        assert_eq!(whole(second).await, Bytes::from_static(b"hello"));
    }

    #[tokio::test]
    async fn an_older_attempt_is_cut_off() {
        let r = Replayable::new(super::super::full(Bytes::from_static(b"x")));
        let first = r.attempt().unwrap();
        let _second = r.attempt().unwrap();
        assert!(first.collect().await.is_err());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_sent_once() {
        let big = Bytes::from(vec![7u8; RECORD_LIMIT + 1]);
        let r = Replayable::new(super::super::full(big.clone()));
        assert_eq!(whole(r.attempt().unwrap()).await, big);
        assert!(!r.can_replay());
        assert!(r.attempt().is_none());
        let small = Replayable::new(super::super::full(Bytes::from(vec![1u8; RECORD_LIMIT])));
        let _ = whole(small.attempt().unwrap()).await;
        assert!(small.can_replay(), "exactly the limit is kept");
        small.commit();
        assert!(small.attempt().is_none());
    }
}
