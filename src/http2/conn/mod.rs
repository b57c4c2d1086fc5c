//! One HTTP/2 connection: frames in, frames out, streams, flow control,
//! settings, keepalive, and the defences RFC 9113 §10.5 and the known
//! attacks call for.
//!
//! Two halves. [`Connection`] belongs to the task that drives the socket:
//! it reads and handles frames and writes what is queued. [`Inner`],
//! behind one mutex shared with the stream handles, holds everything both
//! touch: the streams, the flow-control windows, the HPACK encoder and the
//! bytes waiting to be written. A handle that sends encodes its frames
//! straight into that buffer; the connection writes them out in one go.
//!
//! When the connection's task polls the streams itself (torii's
//! single-threaded mode) the lock is never contended and handles need not
//! wake the task: it writes after polling them anyway (`inline_poll`).
//!
//! Frames in: `recv.rs` splits the bytes read into frames (with
//! `frame::read`) and dispatches each by type to its handler. A handler
//! returns what the peer did wrong as a `Fault`; one driver,
//! `Connection::answer`, turns it into RST_STREAM (a stream error) or
//! GOAWAY and the end of the connection (a connection error), RFC 9113
//! §5.4. A stream's place in §5.1's lifecycle is `stream::State` (the
//! diagram is in `stream.rs`).
//!
//! | RFC 9113 | where |
//! |---|---|
//! | §3.4 preface; §4.1, §4.2 frame layout and size | `frame/read.rs`, `frame/write.rs`; `recv.rs` (`received`) |
//! | §4.3 header compression | `../hpack/`; `recv.rs` (`decode`) |
//! | §5.1 stream states | `stream.rs` (`State`); `recv.rs` (`frame_on_closed`, `headers_on_closed`); `shared.rs` (`RecentClosed`) |
//! | §5.1.1 stream ids, §5.1.2 concurrency | `recv.rs` (`request_head`, `is_idle`); `client.rs` (`open_stream`, `write_heads`) |
//! | §5.2, §6.9 flow control, WINDOW_UPDATE | `shared.rs` (`release_stream`, `release_connection`, `flush_stream`, `flush_blocked`); `control.rs` (`on_window_update`, INITIAL_WINDOW_SIZE); `recv.rs` (`on_data`) |
//! | §5.3 priority, §6.3 PRIORITY | `control.rs` (`on_priority`); `recv.rs` (a HEADERS frame depending on itself) |
//! | §5.4 error handling | `recv.rs` (`Fault`, `Connection::answer`); `mod.rs` (`connection_error`) |
//! | §6.1 DATA | `recv.rs` (`on_data`) |
//! | §6.2 HEADERS, §6.10 CONTINUATION | `recv.rs` (`on_headers`, `on_continuation`, `header_block`) |
//! | §6.4 RST_STREAM | `control.rs` (`on_rst_stream`); `shared.rs` (`reset_stream`, `reset_untracked`, `cancel_stream`) |
//! | §6.5 SETTINGS | `control.rs` (`on_settings`); `mod.rs` (torii's own, in `Connection::server` and `client`) |
//! | §6.7 PING | `control.rs` (`on_ping`); `mod.rs` (`poll_timer`: keepalive) |
//! | §6.8 GOAWAY | `control.rs` (`on_goaway`); `mod.rs` (`graceful_shutdown`, `connection_error`) |
//! | §8.1 messages and trailers, §8.2, §8.3 fields | `../fields.rs`; `recv.rs` (`request_head`, `trailers`); `client.rs` (`response_head`); `handles.rs` (`send_head`, `SendBody`, `RecvBody`) |
//! | §8.7 requests not processed | `client.rs` (`take_unprocessed`); `stream.rs` (`Stream::unprocessed`); `control.rs` (`on_goaway`) |
//! | §10.5 denial of service | `defences.rs` (budgets, the reset bucket); `recv.rs` (where they are spent) |

mod client;
mod control;
mod defences;
mod fault;
mod handles;
mod recv;
mod shared;
mod stream;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use slab::Slab;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub(in crate::http2) use client::{
    client_gone, client_is_closed, client_poll_ready, open_stream, peer_max_streams, poll_response,
    take_unprocessed,
};
pub(in crate::http2) use handles::{poll_reset, send_head, send_reset, StreamRef};
pub use handles::{Peek, RecvBody, SendBody};
pub(in crate::http2) use shared::Inner;

use super::chunk::Chunk;
use super::frame;
use super::frame::setting;
use super::hpack::Decoder;
use super::{Error, Reason};
use defences::{Bucket, EMPTY_DATA_BUDGET, WRITE_HIGH};
use shared::{lock, register, IdMap, OnDemand, RecentClosed, Role};

/// Reads handled in one poll before the task yields to others.
const READS_PER_POLL: usize = 16;
/// The highest stream id (RFC 9113 §5.1.1).
const MAX_STREAM_ID: u32 = (1 << 31) - 1;
/// How long a closing connection may take to write its last frames.
const LINGER: Duration = Duration::from_secs(1);
/// Read size (a thread-local buffer; see `SCRATCH`).
const READ_SIZE: usize = 32 * 1024;

/// Settings of a connection.
#[derive(Clone, Debug)]
pub struct Config {
    /// SETTINGS_MAX_CONCURRENT_STREAMS torii announces.
    pub max_concurrent_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE torii announces and enforces.
    pub max_header_list_size: u32,
    /// Receive windows torii gives the peer, per stream and in all.
    pub stream_window: u32,
    pub connection_window: u32,
    /// PING the peer this often; close when one goes unanswered this long.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// PING also while no stream is open (servers such as gRPC's refuse
    /// that: GOAWAY "too_many_pings").
    pub keepalive_while_idle: bool,
    /// The peer must send its preface (and SETTINGS) within this.
    pub handshake_timeout: Duration,
}

thread_local! {
    /// The buffer a connection reads into. One per thread, not one per
    /// connection: an idle connection holds no read buffer, and only an
    /// incomplete frame is kept (copied) between reads.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; READ_SIZE]);
}

/// How the connection is doing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Waiting for the client's preface (server side): bytes still to come.
    Preface(usize),
    /// Waiting for the peer's first SETTINGS.
    Settings,
    Open,
    /// GOAWAY sent or received: no new streams; ends when none are left.
    Draining,
    /// Over: write what is queued (GOAWAY), then close.
    Closing,
}

/// A header block being collected across CONTINUATION frames.
struct Continuation {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
    frames: u32,
}

enum Ping {
    /// The next PING is due at the timer.
    Idle,
    /// Sent; the answer is due at the timer.
    Sent([u8; 8]),
}

/// A new stream opened by the peer: its request head and body, and the
/// handle to answer it.
pub(in crate::http2) struct Opened {
    pub request: Request<RecvBody>,
    pub stream: StreamRef,
}

/// The connection, as its task sees it.
pub(in crate::http2) struct Connection<IO> {
    io: IO,
    shared: Arc<Mutex<Inner>>,
    config: Config,
    decoder: OnDemand<Decoder>,
    state: State,
    role: Role,
    /// Bytes being written (swapped out of `Inner::wbuf`).
    out: Vec<u8>,
    out_pos: usize,
    /// An incomplete frame kept between reads.
    partial: frame::Partial,
    /// Where the first DATA of streams is copied (short ones share it).
    data_chunk: Chunk,
    continuation: Option<Box<Continuation>>,
    /// Highest stream id the peer has opened.
    last_peer_stream: u32,
    /// The last stream id of the GOAWAY torii sent, if it sent one: a
    /// later GOAWAY may not name a higher one (RFC 9113 §6.8), though
    /// streams opened meanwhile raise `last_peer_stream`.
    goaway_last: Option<u32>,
    opened: VecDeque<Opened>,
    timer: Pin<Box<Sleep>>,
    ping: Ping,
    empty_data_budget: u32,
    resets: Bucket,
    /// Reading stopped because too much was waiting to be written.
    read_paused: bool,
    /// Everything written has been flushed (TLS buffers its records).
    flushed: bool,
    /// Why the connection ended, for the log.
    end: Option<String>,
    /// The header block being received came in a HEADERS frame that made
    /// its stream depend on itself (RFC 9113 §5.3.1: a stream error).
    self_dependent: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Connection<IO> {
    /// A server-side connection: the client's preface is expected first.
    pub(in crate::http2) fn server(io: IO, config: Config) -> Self {
        let mut wbuf = Vec::with_capacity(64);
        frame::put_settings(
            &mut wbuf,
            &[
                (
                    setting::MAX_CONCURRENT_STREAMS,
                    config.max_concurrent_streams,
                ),
                (setting::INITIAL_WINDOW_SIZE, config.stream_window),
                (setting::MAX_HEADER_LIST_SIZE, config.max_header_list_size),
                (setting::ENABLE_PUSH, 0),
            ],
        );
        let state = State::Preface(frame::PREFACE.len());
        Self::new(io, config, Role::Server, wbuf, state)
    }

    /// A client-side connection: torii's preface and SETTINGS are queued;
    /// requests may follow at once.
    pub(in crate::http2) fn client(io: IO, config: Config) -> Self {
        let mut wbuf = Vec::with_capacity(128);
        wbuf.extend_from_slice(frame::PREFACE);
        frame::put_settings(
            &mut wbuf,
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::INITIAL_WINDOW_SIZE, config.stream_window),
                (setting::MAX_HEADER_LIST_SIZE, config.max_header_list_size),
            ],
        );
        Self::new(io, config, Role::Client, wbuf, State::Settings)
    }

    fn new(io: IO, config: Config, role: Role, mut wbuf: Vec<u8>, state: State) -> Self {
        if config.connection_window > frame::DEFAULT_WINDOW {
            frame::put_window_update(
                &mut wbuf,
                0,
                config.connection_window - frame::DEFAULT_WINDOW,
            );
        }
        let inner = Inner {
            streams: Slab::new(),
            ids: IdMap::default(),
            wbuf,
            wbuf_hint: 0,
            send_window: frame::DEFAULT_WINDOW.into(),
            recv_window: config.connection_window.into(),
            recv_released: 0,
            peer_initial_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME as usize,
            our_stream_window: config.stream_window,
            our_connection_window: config.connection_window,
            encoder: OnDemand::default(),
            blocked: VecDeque::new(),
            conn_waker: None,
            inline_poll: false,
            error: None,
            active: 0,
            role,
            next_stream_id: 1,
            peer_max_concurrent: u32::MAX,
            peer_max_seen: Arc::new(std::sync::atomic::AtomicU32::new(u32::MAX)),
            open_waiters: Vec::new(),
            heads: VecDeque::new(),
            goaway_received: false,
            client_gone: false,
            lingering: 0,
            draining: false,
            peer_resets: 0,
            recent: RecentClosed::default(),
        };
        let timer = Box::pin(tokio::time::sleep(config.handshake_timeout));
        Connection {
            io,
            shared: Arc::new(Mutex::new(inner)),
            decoder: OnDemand::default(),
            state,
            role,
            out: Vec::new(),
            out_pos: 0,
            partial: frame::Partial::default(),
            data_chunk: Chunk::new(),
            continuation: None,
            last_peer_stream: 0,
            goaway_last: None,
            opened: VecDeque::new(),
            timer,
            ping: Ping::Idle,
            empty_data_budget: EMPTY_DATA_BUDGET,
            resets: Bucket::new(),
            read_paused: false,
            flushed: false,
            end: None,
            self_dependent: false,
            config,
        }
    }

    /// The state shared with stream handles (client side: for the handle
    /// that opens streams).
    pub(in crate::http2) fn shared(&self) -> &Arc<Mutex<Inner>> {
        &self.shared
    }

    /// A stream the peer opened, if one is waiting.
    pub(in crate::http2) fn accept(&mut self) -> Option<Opened> {
        self.opened.pop_front()
    }

    /// Why the connection ended (once it has).
    pub(in crate::http2) fn end_reason(&self) -> Option<&str> {
        self.end.as_deref()
    }

    /// Starts a poll of the connection's task. `inline`: the task polls the
    /// streams itself, so handles need not wake it.
    pub(in crate::http2) fn begin_poll(&mut self, cx: &Context<'_>, inline: bool) {
        let mut inner = lock(&self.shared);
        inner.inline_poll = inline;
        register(&mut inner.conn_waker, cx);
    }

    pub(in crate::http2) fn end_poll(&mut self) {
        lock(&self.shared).inline_poll = false;
    }

    /// GOAWAY: no new streams; the connection ends when the open ones have.
    pub(in crate::http2) fn graceful_shutdown(&mut self) {
        if matches!(self.state, State::Draining | State::Closing) {
            return;
        }
        let mut guard = lock(&self.shared);
        let inner = &mut *guard;
        let last = *self.goaway_last.get_or_insert(self.last_peer_stream);
        frame::put_goaway(inner.wbuf(), last, Reason::NO_ERROR, b"");
        inner.draining = true;
        // Requests answered in full and still arriving are not waited for.
        let lingering: Vec<usize> = inner
            .streams
            .iter()
            .filter(|(_, s)| s.lingering)
            .map(|(key, _)| key)
            .collect();
        for key in lingering {
            inner.cancel_stream(key, Reason::NO_ERROR);
        }
        drop(guard);
        if matches!(self.state, State::Preface(_) | State::Settings) {
            self.close("drained before the HTTP/2 preface".into(), Error::Closed);
        } else {
            self.state = State::Draining;
        }
    }

    /// Ends the connection with a connection error: GOAWAY with `reason`
    /// and words on what the peer did.
    fn connection_error(&mut self, reason: Reason, what: String) {
        if self.state == State::Closing {
            return;
        }
        {
            let mut inner = lock(&self.shared);
            let debug = what.as_bytes();
            let debug = &debug[..debug.len().min(256)];
            let last = *self.goaway_last.get_or_insert(self.last_peer_stream);
            frame::put_goaway(inner.wbuf(), last, reason, debug);
        }
        self.close(
            format!("{what}: GOAWAY {reason}"),
            Error::GoAway {
                reason,
                remote: false,
            },
        );
    }

    fn close(&mut self, why: String, error: Error) {
        self.state = State::Closing;
        // What is queued (a GOAWAY) gets this long to leave.
        self.timer.as_mut().reset(Instant::now() + LINGER);
        self.end.get_or_insert(why);
        lock(&self.shared).fail_all(error);
    }

    /// Records a failed write (the connection is over).
    pub(in crate::http2) fn failed_write(&mut self, e: io::Error) {
        let why = format!("write failed: {e}");
        self.state = State::Closing;
        self.end.get_or_insert(why);
        lock(&self.shared).fail_all(Error::Io(Arc::new(e)));
    }

    /// True when the connection is over and everything queued was written.
    pub(in crate::http2) fn is_finished(&self) -> bool {
        let inner = lock(&self.shared);
        let flushed = self.flushed && self.out_pos >= self.out.len() && inner.wbuf.is_empty();
        match self.state {
            State::Closing => flushed,
            State::Draining => flushed && inner.active == 0,
            _ => inner.client_gone && inner.active == 0 && inner.heads.is_empty() && flushed,
        }
    }

    /// Reads what the peer sent and handles it. True if anything arrived
    /// (streams may have been opened or woken: poll them, then call again).
    pub(in crate::http2) fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        for _ in 0..READS_PER_POLL {
            if self.state == State::Closing {
                return progress;
            }
            if lock(&self.shared).wbuf.len() >= WRITE_HIGH {
                // Written out first (`poll_write` asks for a poll when
                // there is room again).
                self.read_paused = true;
                return progress;
            }
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut buf = ReadBuf::new(&mut scratch[..]);
                match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {
                        let n = buf.filled().len();
                        if n > 0 {
                            self.received(&scratch[..n]);
                        }
                        Poll::Ready(Ok(n))
                    }
                }
            });
            match read {
                Poll::Pending => return progress,
                Poll::Ready(Ok(0)) => {
                    let why = match self.state {
                        State::Preface(_) | State::Settings => {
                            "the client closed the connection before its HTTP/2 preface"
                        }
                        _ => "the peer closed the connection",
                    };
                    self.close(why.into(), Error::Closed);
                    return true;
                }
                Poll::Ready(Ok(_)) => progress = true,
                Poll::Ready(Err(e)) => {
                    self.close(format!("read failed: {e}"), Error::Io(Arc::new(e)));
                    return true;
                }
            }
        }
        // More may be waiting; let other tasks run first.
        cx.waker().wake_by_ref();
        progress
    }

    /// Writes what is queued. Ready(Err) if the socket failed.
    pub(in crate::http2) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.out_pos >= self.out.len() {
                self.out.clear();
                self.out_pos = 0;
                let mut inner = lock(&self.shared);
                inner.write_heads();
                inner.flush_blocked();
                if inner.wbuf.is_empty() {
                    if inner.active == 0 {
                        // Idle connections hold no buffers.
                        inner.wbuf = Vec::new();
                        self.out = Vec::new();
                    }
                    break;
                }
                // Capped below glibc's 128 KiB mmap threshold.
                let keep = inner.wbuf_hint - inner.wbuf_hint / 4;
                inner.wbuf_hint = inner.wbuf.len().max(keep).min(WRITE_HIGH + 16 * 1024);
                std::mem::swap(&mut inner.wbuf, &mut self.out);
                if self.read_paused {
                    self.read_paused = false;
                    cx.waker().wake_by_ref();
                }
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.out_pos += n;
                    self.flushed = false;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.flushed {
            return Poll::Ready(Ok(()));
        }
        let flushed = std::task::ready!(Pin::new(&mut self.io).poll_flush(cx));
        self.flushed = flushed.is_ok();
        Poll::Ready(flushed)
    }

    /// Ready once the connection is over, everything queued was written
    /// and flushed, and the stream was shut down (TLS close_notify). A
    /// peer that never reads does not hold it longer than `LINGER`: see
    /// [`poll_timer`](Self::poll_timer).
    pub(in crate::http2) fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_finished() {
            return Poll::Pending;
        }
        if self.state != State::Closing {
            self.state = State::Closing;
            self.timer.as_mut().reset(Instant::now() + LINGER);
        }
        Pin::new(&mut self.io).poll_shutdown(cx).map(|_| ())
    }

    /// The handshake deadline and keepalive PINGs. True when the
    /// connection must end now (a closing connection had its time to
    /// write its last frames).
    pub(in crate::http2) fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            match (self.state, &self.ping) {
                (State::Preface(_) | State::Settings, _) => {
                    let t = self.config.handshake_timeout;
                    self.close(
                        format!("no HTTP/2 connection preface within {t:?}"),
                        Error::Closed,
                    );
                    return true;
                }
                (State::Closing, _) => return true,
                (_, Ping::Idle)
                    if !self.config.keepalive_while_idle && lock(&self.shared).active == 0 =>
                {
                    // Nothing open: nothing to keep alive. Looked at again
                    // an interval later.
                    self.timer
                        .as_mut()
                        .reset(Instant::now() + self.config.keepalive_interval);
                }
                (_, Ping::Idle) => {
                    let payload = rand::random::<[u8; 8]>();
                    frame::put_ping(lock(&self.shared).wbuf(), false, payload);
                    self.ping = Ping::Sent(payload);
                    self.timer
                        .as_mut()
                        .reset(Instant::now() + self.config.keepalive_timeout);
                }
                (_, Ping::Sent(_)) => {
                    let t = self.config.keepalive_timeout;
                    self.close(format!("no answer to a PING within {t:?}"), Error::Closed);
                    return true;
                }
            }
        }
        false
    }
}

impl<IO> Drop for Connection<IO> {
    fn drop(&mut self) {
        lock(&self.shared).fail_all(Error::Closed);
    }
}

#[cfg(test)]
mod tests;
