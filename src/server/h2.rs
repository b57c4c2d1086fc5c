//! torii's HTTP/2 server for client connections, on torii's own HTTP/2
//! implementation ([`crate::http2`]).
//!
//! On the single-threaded runtime (`--workers 1`) a connection's streams
//! are polled inside the connection's own task: in one poll the streams
//! that can progress do so, and what they queued is written by the
//! connection right after — one task, one write. With several worker
//! threads each stream gets a task, so one busy client connection can use
//! more than one core.
//!
//! A client that resets a stream (or goes away) cancels its exchange;
//! GOAWAY on drain, then in-flight streams finish; keepalive PINGs.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::Request;
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::body::h2::{H2Received, Pipe};
use crate::body::Received;
use crate::drain;
use crate::http2::server::{Config, Respond, Server};
use crate::http2::{Reason, RecvBody};
use crate::limits::{H2_CONNECTION_WINDOW, H2_STREAM_WINDOW};
use crate::proxy::{ConnInfo, Pipeline};

/// Concurrent streams one client connection may open. gRPC clients
/// multiplex everything over one connection, so this is generous; a
/// client above it gets REFUSED_STREAM for the extra stream only.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Largest request header block accepted (HTTP/2 SETTINGS and HTTP/1.1).
pub const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

/// HTTP/2 PINGs to clients, so connections to vanished clients are closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves HTTP/2 on `io` until the client closes it, it fails, or the
/// listener drains. `preface_timeout` bounds the wait for the client's
/// connection preface and SETTINGS.
///
/// The [`Server`] (which holds `io`) is boxed: an `async fn` keeps its
/// arguments twice (as captured, and as moved into its body), and every
/// idle connection would carry the copy.
pub fn serve<I>(
    io: I,
    rt: Arc<ArcSwap<Pipeline>>,
    conn: Arc<ConnInfo>,
    drain: drain::Watch,
    preface_timeout: Duration,
) -> impl Future<Output = ()> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = Config {
        max_concurrent_streams: MAX_CONCURRENT_STREAMS,
        max_header_list_size: MAX_HEADER_LIST_SIZE,
        stream_window: H2_STREAM_WINDOW,
        connection_window: H2_CONNECTION_WINDOW,
        keepalive_interval: KEEPALIVE_INTERVAL,
        keepalive_timeout: KEEPALIVE_TIMEOUT,
        // Clients do not police PINGs; an idle client connection is the
        // one most worth checking.
        keepalive_while_idle: true,
        handshake_timeout: preface_timeout,
    };
    run(Box::new(Server::new(io, config)), rt, conn, drain)
}

async fn run<I>(
    mut server: Box<Server<I>>,
    rt: Arc<ArcSwap<Pipeline>>,
    conn: Arc<ConnInfo>,
    mut drain: drain::Watch,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let inline = Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread;
    let start = |req, respond| serve_stream(rt.load_full(), conn.clone(), req, respond);
    let mut streams = StreamSet::for_futures_of(&start);
    let mut draining = false;
    poll_fn(|cx| {
        if !draining && drain.poll_signaled(cx).is_ready() {
            // GOAWAY: no new streams; the open ones finish.
            draining = true;
            server.graceful_shutdown();
        }
        server.begin_poll(cx, inline);
        loop {
            // Streams first: what they queue is written below, in this
            // same poll.
            streams.poll_all(cx);
            let read = server.poll_read(cx);
            let mut accepted = false;
            while let Some((req, respond)) = server.accept() {
                accepted = true;
                let stream = start(req, respond);
                if inline {
                    streams.push(stream);
                } else {
                    tokio::spawn(stream);
                }
            }
            if !read && !accepted {
                break;
            }
        }
        server.end_poll();
        if server.poll_timer(cx) {
            return Poll::Ready(());
        }
        if let Poll::Ready(Err(e)) = server.poll_write(cx) {
            tracing::debug!(client = %conn.peer, error = %e, "writing to a client HTTP/2 connection failed");
            return Poll::Ready(());
        }
        if server.poll_done(cx).is_ready() {
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await;
    if let Some(why) = server.end_reason() {
        tracing::debug!(client = %conn.peer, "client HTTP/2 connection ended: {why}");
    }
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
///
/// Not an `async fn`: the request is handed to the listener at once (routed,
/// rewritten, sent on its way), so the stream's future does not also keep
/// it, and stays small for the connection to hold.
fn serve_stream(
    rt: Arc<Pipeline>,
    conn: Arc<ConnInfo>,
    req: Request<RecvBody>,
    mut respond: Respond,
) -> impl Future<Output = ()> + Send {
    let req = req.map(|body| Received::H2(H2Received::new(body, None)));
    let mut handling = rt.handle(req, conn);
    async move {
        let response = poll_fn(|cx| {
            if let Poll::Ready(resp) = Pin::new(&mut handling).poll(cx) {
                return Poll::Ready(Some(resp));
            }
            // A client that resets the stream cancels the exchange (dropping
            // it resets the upstream stream too).
            respond.poll_reset(cx).map(|_| None)
        })
        .await;
        drop(handling);
        let Some(response) = response else {
            tracing::debug!("the client reset a stream before its response");
            return;
        };
        let (parts, body) = response.into_parts();
        let eos = body.is_end_stream();
        let sent = respond.send_response(&parts, eos);
        crate::http2::maps::give(parts.headers);
        let send = match sent {
            Ok(send) => send,
            Err(e) => {
                tracing::debug!(error = %e, "could not send a response head");
                return;
            }
        };
        if !eos {
            let mut pipe = Pipe::new(body, send, Reason::INTERNAL_ERROR, "client");
            poll_fn(|cx| pipe.poll_pipe(cx)).await;
        }
    }
}
