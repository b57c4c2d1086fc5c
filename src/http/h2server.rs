//! torii's HTTP/2 server for client connections, on the h2 crate.
//!
//! hyper's server spawns a task for every stream; the stream task and the
//! connection task then wake each other for every frame. On the
//! single-threaded runtime (`--workers 1`) torii polls a connection's
//! streams inside the connection's own task instead: in one poll the
//! streams that can progress do so, and what they queued is written by the
//! connection right after — one task, one write. With several worker
//! threads each stream gets a task, as with hyper, so one busy client
//! connection can use more than one core.
//!
//! Kept from hyper's server: a client that resets a stream (or goes away)
//! cancels its exchange; GOAWAY on drain, then in-flight streams finish;
//! keepalive PINGs; the same SETTINGS (stream limit, header list size,
//! windows); h2's defences against reset floods.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{Request, Response};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::{Handle, RuntimeFlavor};

use super::body::Received;
use super::h2::{keepalive, H2Received, Pipe};
use super::proxy::{ConnInfo, ListenerRuntime};
use super::server::{MAX_CONCURRENT_STREAMS, MAX_HEADER_LIST_SIZE};
use crate::coalesce;
use crate::drain;
use crate::upstream::connect::{H2_CONNECTION_WINDOW, H2_STREAM_WINDOW};

/// HTTP/2 PINGs to clients, so connections to vanished clients are closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves HTTP/2 on `io` until the client closes it, it fails, or the
/// listener drains. `preface_timeout` bounds the wait for the client's
/// connection preface and SETTINGS.
pub async fn serve<I>(
    io: I,
    rt: Arc<ArcSwap<ListenerRuntime>>,
    conn: Arc<ConnInfo>,
    mut drain: drain::Watch,
    preface_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Whatever the connection and its streams write in one poll leaves in
    // one write.
    let (io, flusher) = coalesce::split(io);
    flusher
        .run(async move {
            let handshake = h2::server::Builder::new()
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                .max_header_list_size(MAX_HEADER_LIST_SIZE)
                .initial_window_size(H2_STREAM_WINDOW)
                .initial_connection_window_size(H2_CONNECTION_WINDOW)
                .handshake::<_, Bytes>(io);
            // Boxed: the connection's future keeps only what it needs after.
            let handshake = Box::pin(tokio::time::timeout(preface_timeout, handshake));
            let mut connection = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        tracing::debug!(client = %conn.peer, error = %e, "HTTP/2 connection preface failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(client = %conn.peer, "no HTTP/2 connection preface within {preface_timeout:?}; closing");
                        return;
                    }
                },
                _ = drain.signaled() => return,
            };
            let keepalive = keepalive(connection.ping_pong(), KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT);
            let signaled = drain.signaled();
            tokio::pin!(keepalive, signaled);
            let inline = Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread;
            let start = |req, respond| serve_stream(rt.load_full(), conn.clone(), req, respond);
            let mut streams = StreamSet::for_futures_of(&start);
            let mut draining = false;
            poll_fn(|cx| {
                if !draining && signaled.as_mut().poll(cx).is_ready() {
                    // GOAWAY: no new streams; the open ones finish.
                    draining = true;
                    connection.graceful_shutdown();
                }
                if let Poll::Ready(t) = keepalive.as_mut().poll(cx) {
                    tracing::debug!(client = %conn.peer, "closing a client connection: no answer to a PING within {t:?}");
                    return Poll::Ready(());
                }
                loop {
                    // Streams first: what they queue is written by the
                    // connection's poll below, in this same poll.
                    streams.poll_all(cx);
                    let mut accepted = false;
                    loop {
                        match connection.poll_accept(cx) {
                            Poll::Ready(Some(Ok((req, respond)))) => {
                                accepted = true;
                                let stream = start(req, respond);
                                if inline {
                                    streams.push(stream);
                                } else {
                                    tokio::spawn(stream);
                                }
                            }
                            Poll::Ready(Some(Err(e))) => {
                                tracing::debug!(client = %conn.peer, error = %e, "client HTTP/2 connection ended with an error");
                                return Poll::Ready(());
                            }
                            // Closed by the client, or drained: streams
                            // still here have lost their connection.
                            Poll::Ready(None) => return Poll::Ready(()),
                            Poll::Pending => break,
                        }
                    }
                    if !accepted {
                        return Poll::Pending;
                    }
                }
            })
            .await
        })
        .await
}

/// The streams of a connection polled by its own task.
///
/// Made when the first stream arrives and dropped when the last one ends:
/// even empty, a `FuturesUnordered` holds room for one stream's state, and
/// an idle connection should hold as little as it can.
struct StreamSet<F> {
    set: Option<FuturesUnordered<Counted<F>>>,
}

thread_local! {
    /// Stream polls on this thread (see [`StreamSet::poll_all`]).
    static STREAM_POLLS: Cell<u64> = const { Cell::new(0) };
}

pin_project_lite::pin_project! {
    /// A stream's future that counts its polls in [`STREAM_POLLS`].
    struct Counted<F> {
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        STREAM_POLLS.with(|n| n.set(n.get() + 1));
        self.project().fut.poll(cx)
    }
}

impl<F: Future<Output = ()>> StreamSet<F> {
    /// An empty set of the futures `start` makes (they cannot be named).
    fn for_futures_of<A, B>(_start: &impl Fn(A, B) -> F) -> Self {
        StreamSet { set: None }
    }

    fn push(&mut self, fut: F) {
        self.set
            .get_or_insert_with(FuturesUnordered::new)
            .push(Counted { fut });
    }

    /// Polls every stream that was woken, once. `FuturesUnordered` gives
    /// up (wakes the task and returns Pending) after two streams that
    /// woke themselves while polled — and h2 wakes a stream whenever it
    /// gets send capacity, as a stream sending a message does. Stopping
    /// there would end the connection's poll, and its write, after every
    /// second stream; instead this asks again while asking still polls
    /// streams, bounded so streams that always wake themselves cannot keep
    /// the thread.
    fn poll_all(&mut self, cx: &mut Context<'_>) {
        let Some(set) = &mut self.set else { return };
        let budget = 2 * set.len() as u64 + 16;
        let start = STREAM_POLLS.with(Cell::get);
        loop {
            let before = STREAM_POLLS.with(Cell::get);
            match set.poll_next_unpin(cx) {
                Poll::Ready(Some(())) => continue,
                Poll::Ready(None) => break,
                Poll::Pending => {
                    let now = STREAM_POLLS.with(Cell::get);
                    if now == before || now - start >= budget {
                        break;
                    }
                }
            }
        }
        if set.is_empty() {
            self.set = None;
        }
    }
}

/// One request on its stream: handled, answered, its body streamed back.
async fn serve_stream(
    rt: Arc<ListenerRuntime>,
    conn: Arc<ConnInfo>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let req = req.map(|recv| Received::H2(H2Received::new(recv, None)));
    let mut handling = std::pin::pin!(rt.handle(req, conn));
    let response = poll_fn(|cx| {
        if let Poll::Ready(resp) = handling.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        // A client that resets the stream cancels the exchange (dropping
        // it resets the upstream stream too).
        respond.poll_reset(cx).map(|_| None)
    })
    .await;
    let Some(response) = response else {
        tracing::debug!("the client reset a stream before its response");
        return;
    };
    let (parts, body) = response.into_parts();
    let eos = body.is_end_stream();
    let stream = match respond.send_response(Response::from_parts(parts, ()), eos) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::debug!(error = %e, "could not send a response head; resetting the stream");
            respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
    };
    if !eos {
        let mut pipe = Pipe::new(body, stream, Reason::INTERNAL_ERROR, "client");
        poll_fn(|cx| pipe.poll_pipe(cx)).await;
    }
}
