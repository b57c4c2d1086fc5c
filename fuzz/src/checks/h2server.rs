//! torii's client-facing HTTP/2 connection (`http2::server`) against a
//! fuzzed client: raw bytes after a valid preface, or a structured client
//! (frame kinds, application actions, a client that stops reading, time
//! passing). A strict observer re-reads all of torii's output.

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use torii::http2::frame::{self, flag, kind, setting};
use torii::http2::server::{Config, Respond, Server};
use torii::http2::{Reason, RecvBody, SendBody};

use super::input::Input;
use super::wire::{literal, put, Pipe, Role, Watcher};
use super::{alloc, runtime, MAX_HEAP_BASE};

/// Pump iterations without quiescence taken for a livelock.
const LIVELOCK: usize = 20_000;

fn config(small: bool) -> Config {
    Config {
        max_concurrent_streams: if small { 4 } else { 1024 },
        max_header_list_size: if small { 4096 } else { 64 * 1024 },
        stream_window: if small { 65_535 } else { 1 << 20 },
        connection_window: if small { 65_535 } else { 4 << 20 },
        keepalive_interval: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(20),
        keepalive_while_idle: true,
        handshake_timeout: Duration::from_secs(10),
    }
}

/// One request as the application holds it.
#[derive(Default)]
struct AppStream {
    body: Option<RecvBody>,
    body_done: bool,
    respond: Option<Respond>,
    send: Option<SendBody>,
    /// Bytes still to stream (sent as the stream is ready).
    to_send: usize,
    end_after: bool,
}

/// What the application does by itself (the raw-bytes target).
#[derive(Clone, Copy, PartialEq)]
enum Auto {
    /// Only what the structured client's actions say.
    Off,
    /// Reads every body, answers every request: some at once, some after
    /// the body, some streaming a long response.
    On,
}

struct Harness {
    server: Option<Server<Pipe>>,
    pipe: Pipe,
    watcher: Watcher,
    app: Vec<AppStream>,
    auto: Auto,
    reading: bool,
    over: bool,
}

fn head(status: u16, grpc: bool) -> http::response::Parts {
    let mut r = Response::builder().status(status);
    if grpc {
        r = r.header("content-type", "application/grpc");
    }
    r.body(()).expect("valid").into_parts().0
}

fn trailers(sensitive: bool) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static("0"));
    let mut v = HeaderValue::from_static("secret");
    v.set_sensitive(sensitive);
    t.insert("x-token", v);
    t
}

impl Harness {
    fn new(small: bool, max_read: usize, out_cap: usize, auto: Auto) -> Harness {
        let pipe = Pipe::new(max_read, out_cap);
        let server = Server::new(pipe.clone(), config(small));
        Harness {
            server: Some(server),
            pipe,
            watcher: Watcher::new(Role::Server),
            app: Vec::new(),
            auto,
            reading: true,
            over: false,
        }
    }

    /// The client sends `bytes`.
    fn send(&mut self, bytes: &[u8]) {
        self.watcher.peer_sent(bytes);
        self.pipe.0.borrow_mut().to_torii.extend(bytes);
    }

    fn client_reads(&mut self) -> bool {
        if !self.reading {
            return false;
        }
        let out = std::mem::take(&mut self.pipe.0.borrow_mut().from_torii);
        if out.is_empty() {
            return false;
        }
        self.watcher.torii_wrote(&out);
        true
    }

    /// Drives torii and the application until nothing moves.
    fn pump(&mut self) {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..LIVELOCK {
            let Some(server) = self.server.as_mut() else {
                self.client_reads();
                return;
            };
            let before = self.pipe.0.borrow().to_torii.len();
            let mut progress = false;
            server.begin_poll(&cx, false);
            loop {
                let read = server.poll_read(&mut cx);
                let mut accepted = false;
                while let Some((req, respond)) = server.accept() {
                    accepted = true;
                    self.app.push(AppStream {
                        body: Some(req.into_body()),
                        respond: Some(respond),
                        ..AppStream::default()
                    });
                }
                if !read && !accepted {
                    break;
                }
                progress = true;
            }
            server.end_poll();
            progress |= self.app_poll(&mut cx);
            let server = self.server.as_mut().expect("still there");
            let mut over = server.poll_timer(&mut cx);
            if let Poll::Ready(Err(_)) = server.poll_write(&mut cx) {
                over = true;
            }
            if server.poll_done(&mut cx).is_ready() {
                over = true;
            }
            progress |= self.client_reads();
            progress |= self.pipe.0.borrow().to_torii.len() != before;
            if over {
                self.over = true;
                self.server = None;
                self.client_reads();
                return;
            }
            if !progress {
                return;
            }
        }
        self.watcher.violations.push(super::wire::Violation {
            kind: "livelock",
            detail: format!("no rest after {LIVELOCK} rounds of polling"),
        });
        self.over = true;
        self.server = None;
    }

    /// The application's part of a poll round; true if it did anything.
    fn app_poll(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let auto = self.auto == Auto::On;
        for (i, s) in self.app.iter_mut().enumerate() {
            if auto {
                if let Some(body) = s.body.as_mut() {
                    progress |= read_body(body, &mut s.body_done, cx);
                }
                let answer_now = match i % 3 {
                    0 => true,
                    1 => s.body_done,
                    _ => true,
                };
                if answer_now {
                    if let Some(respond) = s.respond.take() {
                        progress = true;
                        let streaming = i % 3 == 2;
                        if let Ok(mut send) = respond.send_response(&head(200, true), false) {
                            if streaming {
                                s.to_send = 100_000;
                                s.end_after = false;
                            } else {
                                let _ = send.send_data(Bytes::from_static(&[0; 100]), false);
                                let _ = send.send_trailers(trailers(i % 2 == 0));
                            }
                            s.send = Some(send);
                        }
                    }
                }
            }
            if let Some(send) = s.send.as_mut() {
                if s.to_send > 0 {
                    match send.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            let n = s.to_send.min(16_000);
                            s.to_send -= n;
                            let end = s.to_send == 0 && s.end_after;
                            progress = true;
                            let _ = send.send_data(Bytes::from(vec![7u8; n]), end);
                            if s.to_send == 0 && !s.end_after {
                                let _ = send.send_trailers(trailers(false));
                            }
                        }
                        Poll::Ready(Err(_)) => {
                            s.to_send = 0;
                            s.send = None;
                        }
                        Poll::Pending => {}
                    }
                }
            }
        }
        progress
    }
}

fn read_body(body: &mut RecvBody, done: &mut bool, cx: &mut Context<'_>) -> bool {
    let mut progress = false;
    for _ in 0..64 {
        if *done {
            break;
        }
        match body.poll_frame(cx) {
            Poll::Ready(Some(Ok(_))) => progress = true,
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                *done = true;
                progress = true;
            }
            Poll::Pending => break,
        }
    }
    progress
}

/// A client's handshake: the preface and an empty SETTINGS.
fn hello(out: &mut Vec<u8>) {
    out.extend_from_slice(frame::PREFACE);
    put(out, kind::SETTINGS, 0, 0, &[]);
}

/// Ends a run: the client reads what is left, then every invariant is
/// checked. Panics with the violations.
fn finish(mut h: Harness, peak: usize, input_len: usize) {
    h.reading = true;
    h.pump();
    h.client_reads();
    // The application holds up to one 16 KB chunk per stream it answers.
    let app_bytes = h.app.len() * 24 * 1024;
    drop(h.app);
    drop(h.server);
    let written = h.pipe.0.borrow().from_torii.clone();
    h.watcher.torii_wrote(&written);
    let bound = MAX_HEAP_BASE + 8 * input_len + app_bytes;
    if std::env::var_os("TORII_FUZZ_TRACE").is_some() {
        eprintln!("heap peak {peak} bytes, bound {bound}");
    }
    if peak > bound {
        h.watcher.violations.push(super::wire::Violation {
            kind: "memory",
            detail: format!("{peak} bytes of heap at the peak, bound {bound}"),
        });
    }
    let bad = h.watcher.unexpected();
    assert!(bad.is_empty(), "torii broke HTTP/2 rules: {bad:#?}");
}

/// Raw bytes after a valid preface. Byte 0: read size, byte 1: options
/// (small limits, client stops reading, end-of-file, time passes at the
/// end); the rest is what the client sends, fed in pieces with polls in
/// between.
pub fn raw(data: &[u8]) {
    let mut input = Input::new(data);
    let max_read = 1 + input.u8() as usize * 64;
    let opts = input.u8();
    let rest = input.rest();
    let (h, heap) = alloc::peak_during(|| {
        runtime().block_on(async {
            let out_cap = if opts & 2 != 0 { 4096 } else { 64 << 10 };
            let mut h = Harness::new(opts & 1 != 0, max_read, out_cap, Auto::On);
            let mut start = Vec::new();
            hello(&mut start);
            h.send(&start);
            h.pump();
            if opts & 2 != 0 {
                h.reading = false;
            }
            for piece in rest.chunks(max_read.max(9)) {
                h.send(piece);
                h.pump();
                if h.over {
                    break;
                }
            }
            if opts & 4 != 0 {
                h.pipe.0.borrow_mut().eof = true;
                h.pump();
            }
            if opts & 8 != 0 {
                tokio::time::advance(Duration::from_secs(61)).await;
                h.pump();
                tokio::time::advance(Duration::from_secs(21)).await;
                h.pump();
            }
            h
        })
    });
    finish(h, heap, data.len());
}

/// A stream id for the client to use: one it opened, the next one, an old
/// one, an even one, 0, or anything.
fn pick_stream(input: &mut Input<'_>, next: u32) -> u32 {
    let last = next.saturating_sub(2).max(1);
    match input.pick(8) {
        0..=2 => last,
        3 => next,
        4 => (input.u8() as u32 * 2 + 1).min(last),
        5 => input.u8() as u32 * 2,
        6 => 0,
        _ => input.u32() & 0x7fff_ffff,
    }
}

/// A request header block.
fn request_block(input: &mut Input<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    match input.pick(6) {
        // POST / http, :authority a.
        0 => b.extend_from_slice(&[0x83, 0x86, 0x84, 0x01, 0x01, b'a']),
        1 | 2 => {
            b.extend_from_slice(&[0x83, 0x86]);
            literal(&mut b, b":path", b"/pkg.Svc/Method");
            literal(&mut b, b":authority", b"upstream");
            literal(&mut b, b"content-type", b"application/grpc");
            literal(&mut b, b"te", b"trailers");
            if input.bool() {
                let n = input.u8().to_string();
                literal(&mut b, b"content-length", n.as_bytes());
            }
        }
        3 => {
            b.extend_from_slice(&[0x82, 0x86, 0x84]);
            literal(&mut b, b":authority", b"a");
            const NAMES: [&[u8]; 10] = [
                b"content-length",
                b"te",
                b"connection",
                b"x-custom",
                b"X-Upper",
                b":path",
                b":weird",
                b"cookie",
                b"grpc-timeout",
                b"",
            ];
            for _ in 0..input.pick(4) {
                let name = NAMES[input.pick(NAMES.len())];
                let value = input.chunk().to_vec();
                literal(&mut b, name, &value);
            }
        }
        _ => b.extend_from_slice(input.chunk()),
    }
    b
}

/// The structured client: a program of frames, application actions,
/// reading and time.
pub fn structured(data: &[u8]) {
    let mut input = Input::new(data);
    let opts = input.u8();
    let max_read = 1 + input.u8() as usize * 32;
    let (h, heap) = alloc::peak_during(|| {
        runtime().block_on(async {
            let mut h = Harness::new(opts & 1 != 0, max_read, 8192, Auto::Off);
            if opts & 2 == 0 {
                let mut start = Vec::new();
                hello(&mut start);
                h.send(&start);
            } else {
                // The preface and SETTINGS in the program's own bytes.
                let first = input.chunk().to_vec();
                let mut start = frame::PREFACE.to_vec();
                start.extend_from_slice(&first);
                h.send(&start);
            }
            h.pump();
            let mut next = 1u32;
            let mut steps = 0;
            while !input.is_empty() && !h.over && steps < 2000 {
                steps += 1;
                step(&mut h, &mut input, &mut next).await;
                h.pump();
            }
            h
        })
    });
    finish(h, heap, data.len());
}

async fn step(h: &mut Harness, input: &mut Input<'_>, next: &mut u32) {
    let mut out = Vec::new();
    match input.pick(20) {
        0 | 1 => {
            let id = pick_stream(input, *next);
            if id >= *next {
                *next = id.saturating_add(2) | 1;
            }
            let flags =
                input.u8() & (flag::END_STREAM | flag::END_HEADERS | flag::PADDED | flag::PRIORITY);
            let flags = if input.pick(4) != 0 {
                flags | flag::END_HEADERS
            } else {
                flags
            };
            let mut payload = Vec::new();
            let pad = input.u8() % 8;
            if flags & flag::PADDED != 0 {
                payload.push(pad);
            }
            if flags & flag::PRIORITY != 0 {
                payload.extend_from_slice(&input.u32().to_be_bytes());
                payload.push(input.u8());
            }
            payload.extend(request_block(input));
            if flags & flag::PADDED != 0 {
                payload.extend(std::iter::repeat_n(0, pad as usize));
            }
            put(&mut out, kind::HEADERS, flags, id, &payload);
        }
        2 => {
            let id = pick_stream(input, *next);
            let flags = if input.bool() { flag::END_HEADERS } else { 0 };
            let block = input.chunk().to_vec();
            put(&mut out, kind::CONTINUATION, flags, id, &block);
        }
        3 | 4 => {
            let id = pick_stream(input, *next);
            let flags = input.u8() & (flag::END_STREAM | flag::PADDED);
            let len = [0usize, 1, 5, 100, 1000, 16_384, 16_385][input.pick(7)];
            let mut payload = Vec::new();
            if flags & flag::PADDED != 0 {
                payload.push(input.u8());
            }
            payload.resize(payload.len() + len, b'd');
            put(
                &mut out,
                kind::DATA,
                flags,
                id,
                &payload[..payload.len().min(16_384)],
            );
        }
        5 => {
            let id = pick_stream(input, *next);
            let code = [0u32, 1, 5, 8, 0x99][input.pick(5)];
            put(&mut out, kind::RST_STREAM, 0, id, &code.to_be_bytes());
        }
        6 => {
            if input.bool() {
                put(&mut out, kind::SETTINGS, flag::ACK, 0, &[]);
            } else {
                let mut p = Vec::new();
                for _ in 0..input.pick(4) {
                    let id = [
                        setting::HEADER_TABLE_SIZE,
                        setting::ENABLE_PUSH,
                        setting::MAX_CONCURRENT_STREAMS,
                        setting::INITIAL_WINDOW_SIZE,
                        setting::MAX_FRAME_SIZE,
                        setting::MAX_HEADER_LIST_SIZE,
                        0x77,
                    ][input.pick(7)];
                    let v = match input.pick(5) {
                        0 => 0,
                        1 => 1,
                        2 => 65_535,
                        3 => 16_384,
                        _ => input.u32(),
                    };
                    p.extend_from_slice(&id.to_be_bytes());
                    p.extend_from_slice(&v.to_be_bytes());
                }
                put(&mut out, kind::SETTINGS, 0, 0, &p);
            }
        }
        7 => {
            let ack = input.bool();
            let payload = match (ack, h.watcher.last_ping) {
                (true, Some(p)) if input.bool() => p,
                _ => input.u32().to_be_bytes().repeat(2).try_into().expect("8"),
            };
            put(
                &mut out,
                kind::PING,
                if ack { flag::ACK } else { 0 },
                0,
                &payload,
            );
        }
        8 => {
            let id = if input.bool() {
                0
            } else {
                pick_stream(input, *next)
            };
            let inc = match input.pick(4) {
                0 => 0,
                1 => 1,
                2 => 0x7fff_ffff,
                _ => u32::from(input.u16()),
            };
            put(&mut out, kind::WINDOW_UPDATE, 0, id, &inc.to_be_bytes());
        }
        9 => {
            let id = pick_stream(input, *next);
            let len = if input.bool() { 5 } else { input.pick(8) };
            put(&mut out, kind::PRIORITY, 0, id, &vec![0; len]);
        }
        10 => {
            let mut p = input.u32().to_be_bytes().to_vec();
            p.extend_from_slice(&u32::from(input.u8()).to_be_bytes());
            put(&mut out, kind::GOAWAY, 0, 0, &p);
        }
        11 => {
            let k = input.u8();
            let f = input.u8();
            let id = pick_stream(input, *next);
            let p = input.chunk().to_vec();
            put(&mut out, k, f, id, &p);
        }
        12 => {
            // The application answers a request.
            if let Some(s) = pick_app(h, input) {
                if let Some(respond) = s.respond.take() {
                    let trailers_only = input.pick(3) == 0;
                    if let Ok(send) = respond.send_response(&head(200, true), trailers_only) {
                        s.send = Some(send);
                    }
                }
            }
        }
        13 => {
            // The application sends (part of) a body.
            let n = [0usize, 10, 16_384, 70_000, 300_000][input.pick(5)];
            let end = input.bool();
            if let Some(s) = pick_app(h, input) {
                s.to_send = n;
                s.end_after = end;
                if n == 0 {
                    if let Some(send) = s.send.as_mut() {
                        let _ = send.send_data(Bytes::new(), end);
                    }
                }
            }
        }
        14 => {
            let sensitive = input.bool();
            if let Some(s) = pick_app(h, input) {
                if let Some(send) = s.send.as_mut() {
                    let _ = send.send_trailers(trailers(sensitive));
                }
            }
        }
        15 => {
            let reason = [Reason::CANCEL, Reason::NO_ERROR, Reason::INTERNAL_ERROR][input.pick(3)];
            if let Some(s) = pick_app(h, input) {
                if let Some(send) = s.send.as_mut() {
                    send.send_reset(reason);
                } else if let Some(respond) = s.respond.take() {
                    respond.send_reset(reason);
                }
            }
        }
        16 => {
            let waker = Waker::noop();
            let mut cx = Context::from_waker(waker);
            for s in h.app.iter_mut() {
                if let Some(body) = s.body.as_mut() {
                    read_body(body, &mut s.body_done, &mut cx);
                }
            }
        }
        17 => {
            // The application lets go of a stream (all its handles).
            if let Some(s) = pick_app(h, input) {
                *s = AppStream::default();
            }
        }
        18 => match input.pick(3) {
            0 => h.reading = !h.reading,
            1 => h.pipe.0.borrow_mut().eof = true,
            _ => {
                if let Some(server) = h.server.as_mut() {
                    server.graceful_shutdown();
                }
            }
        },
        _ => {
            let secs = [0.001f64, 1.0, 10.0, 21.0, 61.0, 300.0][input.pick(6)];
            tokio::time::advance(Duration::from_secs_f64(secs)).await;
        }
    }
    if !out.is_empty() {
        h.send(&out);
    }
}

fn pick_app<'h>(h: &'h mut Harness, input: &mut Input<'_>) -> Option<&'h mut AppStream> {
    let n = h.app.len();
    if n == 0 {
        input.u8();
        return None;
    }
    let i = input.pick(n);
    h.app.get_mut(i)
}
