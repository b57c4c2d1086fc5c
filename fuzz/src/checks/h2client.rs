//! torii's upstream HTTP/2 connection (`http2::client`) fed by a fuzzed
//! upstream: raw bytes, and frames built to reach deep states (responses on
//! the streams torii opened, resets, GOAWAY, windows, PINGs), with torii
//! opening, streaming, resetting and dropping requests meanwhile. A strict
//! observer re-reads everything torii sends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use torii::http2::client::{handshake, Client, Config, ResponseFuture};
use torii::http2::frame::{flag, kind, setting};
use torii::http2::{Reason, RecvBody, SendBody};

use super::input::Input;
use super::wire::{literal, put, Pipe, Role, Violation, Watcher};
use super::{alloc, runtime, MAX_HEAP_BASE};

const LIVELOCK: usize = 20_000;

#[derive(Default)]
struct Req {
    response: Option<ResponseFuture>,
    send: Option<SendBody>,
    body: Option<RecvBody>,
    done: bool,
    to_send: usize,
}

struct Harness {
    client: Option<Client>,
    drive: Option<Pin<Box<dyn Future<Output = Option<String>>>>>,
    pipe: Pipe,
    watcher: Watcher,
    reqs: Vec<Req>,
    reading: bool,
}

fn config() -> Config {
    Config {
        max_concurrent_streams: 0,
        max_header_list_size: 256 * 1024,
        stream_window: 1 << 20,
        connection_window: 4 << 20,
        keepalive_interval: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(20),
        keepalive_while_idle: true,
        handshake_timeout: Duration::from_secs(20),
    }
}

impl Harness {
    fn send(&mut self, bytes: &[u8]) {
        self.watcher.peer_sent(bytes);
        self.pipe.0.borrow_mut().to_torii.extend(bytes);
    }

    fn upstream_reads(&mut self) -> bool {
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

    fn pump(&mut self) {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..LIVELOCK {
            let before = self.pipe.0.borrow().to_torii.len();
            let mut progress = false;
            if let Some(drive) = self.drive.as_mut() {
                if drive.as_mut().poll(&mut cx).is_ready() {
                    self.drive = None;
                    progress = true;
                }
            }
            for r in &mut self.reqs {
                if let Some(fut) = r.response.as_mut() {
                    match Pin::new(fut).poll(&mut cx) {
                        Poll::Ready(Ok(resp)) => {
                            r.body = Some(resp.into_body());
                            r.response = None;
                            progress = true;
                        }
                        Poll::Ready(Err(_)) => {
                            if let Some(fut) = r.response.as_mut() {
                                let _ = fut.take_unprocessed();
                            }
                            r.response = None;
                            r.done = true;
                            progress = true;
                        }
                        Poll::Pending => {}
                    }
                }
                if let Some(body) = r.body.as_mut() {
                    for _ in 0..64 {
                        if r.done {
                            break;
                        }
                        match body.poll_frame(&mut cx) {
                            Poll::Ready(Some(Ok(_))) => progress = true,
                            Poll::Ready(_) => {
                                r.done = true;
                                progress = true;
                            }
                            Poll::Pending => break,
                        }
                    }
                }
                if let Some(send) = r.send.as_mut() {
                    if r.to_send > 0 {
                        match send.poll_ready(&mut cx) {
                            Poll::Ready(Ok(())) => {
                                let n = r.to_send.min(16_000);
                                r.to_send -= n;
                                progress = true;
                                let _ = send.send_data(Bytes::from(vec![1u8; n]), false);
                            }
                            Poll::Ready(Err(_)) => {
                                r.to_send = 0;
                                r.send = None;
                            }
                            Poll::Pending => {}
                        }
                    }
                }
            }
            progress |= self.upstream_reads();
            progress |= self.pipe.0.borrow().to_torii.len() != before;
            if !progress {
                return;
            }
        }
        self.watcher.violations.push(Violation {
            kind: "livelock",
            detail: format!("no rest after {LIVELOCK} rounds of polling"),
        });
        self.drive = None;
    }

    fn open(&mut self, end_stream: bool, to_send: usize) {
        let Some(client) = self.client.as_ref() else {
            return;
        };
        let head = Request::builder()
            .method("POST")
            .uri("http://upstream/pkg.Svc/Method")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("valid")
            .into_parts()
            .0;
        if let Ok((response, send)) = client.send_request(head, end_stream) {
            self.reqs.push(Req {
                response: Some(response),
                send,
                to_send,
                ..Req::default()
            });
        }
    }
}

/// A stream id for the upstream to use: one torii opened, or anything.
fn pick_stream(h: &Harness, input: &mut Input<'_>) -> u32 {
    let opened = &h.watcher.torii_streams;
    match input.pick(6) {
        0..=3 if !opened.is_empty() => opened[input.pick(opened.len())],
        4 => input.u8() as u32,
        5 => input.u32() & 0x7fff_ffff,
        _ => 1,
    }
}

fn response_block(input: &mut Input<'_>, b: &mut Vec<u8>) {
    match input.pick(5) {
        // :status 200 (static index 8).
        0 | 1 => {
            b.push(0x88);
            literal(b, b"content-type", b"application/grpc");
        }
        // Trailers(-only) style fields.
        2 => {
            if input.bool() {
                b.push(0x88);
            }
            literal(b, b"grpc-status", b"14");
            literal(b, b"grpc-message", b"unavailable");
        }
        3 => {
            b.push(0x88);
            literal(b, b"content-length", input.u8().to_string().as_bytes());
        }
        _ => b.extend_from_slice(input.chunk()),
    }
}

/// Byte 0: options (skip the valid SETTINGS, a peer that does not read),
/// byte 1: read size; then a program of upstream frames, raw bytes and
/// torii's own actions.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let opts = input.u8();
    let max_read = 1 + input.u8() as usize * 32;
    let (h, heap) = alloc::peak_during(|| {
        runtime().block_on(async {
            let pipe = Pipe::new(max_read, if opts & 2 != 0 { 4096 } else { 64 << 10 });
            let (client, conn) = handshake(pipe.clone(), config());
            let mut h = Harness {
                client: Some(client),
                drive: Some(Box::pin(conn.drive())),
                pipe,
                watcher: Watcher::new(Role::Client),
                reqs: Vec::new(),
                reading: opts & 2 == 0,
            };
            if opts & 1 == 0 {
                let mut s = Vec::new();
                put(&mut s, kind::SETTINGS, 0, 0, &[]);
                h.send(&s);
            }
            h.open(true, 0);
            h.pump();
            let mut steps = 0;
            while !input.is_empty() && steps < 2000 {
                steps += 1;
                step(&mut h, &mut input).await;
                h.pump();
            }
            h.reading = true;
            h.pump();
            h
        })
    });
    // torii holds up to one 16 KB chunk per request body being sent.
    let app_bytes = h.reqs.len() * 24 * 1024;
    let Harness {
        client,
        drive,
        pipe,
        mut watcher,
        reqs,
        ..
    } = h;
    drop((client, reqs, drive));
    let rest = std::mem::take(&mut pipe.0.borrow_mut().from_torii);
    watcher.torii_wrote(&rest);
    let bound = MAX_HEAP_BASE + 8 * data.len() + app_bytes;
    if std::env::var_os("TORII_FUZZ_TRACE").is_some() {
        eprintln!("heap peak {heap} bytes, bound {bound}");
    }
    if heap > bound {
        watcher.violations.push(Violation {
            kind: "memory",
            detail: format!("{heap} bytes of heap at the peak, bound {bound}"),
        });
    }
    let bad = watcher.unexpected();
    assert!(bad.is_empty(), "torii broke HTTP/2 rules: {bad:#?}");
}

async fn step(h: &mut Harness, input: &mut Input<'_>) {
    let mut out = Vec::new();
    match input.pick(16) {
        0 | 1 => out.extend_from_slice(input.chunk()),
        2 | 3 => {
            let id = pick_stream(h, input);
            let flags = input.u8() & (flag::END_STREAM | flag::END_HEADERS);
            let flags = if input.pick(4) != 0 {
                flags | flag::END_HEADERS
            } else {
                flags
            };
            let mut b = Vec::new();
            response_block(input, &mut b);
            put(&mut out, kind::HEADERS, flags, id, &b);
        }
        4 => {
            let id = pick_stream(h, input);
            let flags = if input.bool() { flag::END_HEADERS } else { 0 };
            let b = input.chunk().to_vec();
            put(&mut out, kind::CONTINUATION, flags, id, &b);
        }
        5 | 6 => {
            let id = pick_stream(h, input);
            let flags = input.u8() & flag::END_STREAM;
            let len = [0usize, 5, 100, 16_384][input.pick(4)];
            put(&mut out, kind::DATA, flags, id, &vec![0; len]);
        }
        7 => {
            let id = pick_stream(h, input);
            let code = [0u32, 1, 7, 8, 0xb][input.pick(5)];
            put(&mut out, kind::RST_STREAM, 0, id, &code.to_be_bytes());
        }
        8 => {
            let mut p = Vec::new();
            for _ in 0..input.pick(3) {
                let id = [
                    setting::HEADER_TABLE_SIZE,
                    setting::MAX_CONCURRENT_STREAMS,
                    setting::INITIAL_WINDOW_SIZE,
                    setting::MAX_FRAME_SIZE,
                    setting::ENABLE_PUSH,
                ][input.pick(5)];
                let v = match input.pick(4) {
                    0 => 0,
                    1 => 1,
                    2 => 16_384,
                    _ => input.u32(),
                };
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&v.to_be_bytes());
            }
            let ack = input.pick(4) == 0;
            put(
                &mut out,
                kind::SETTINGS,
                if ack { flag::ACK } else { 0 },
                0,
                if ack { &[] } else { &p },
            );
        }
        9 => {
            let ack = input.bool();
            let payload = match h.watcher.last_ping {
                Some(p) if ack => p,
                _ => [0; 8],
            };
            put(
                &mut out,
                kind::PING,
                if ack { flag::ACK } else { 0 },
                0,
                &payload,
            );
        }
        10 => {
            let last = pick_stream(h, input);
            let mut p = last.to_be_bytes().to_vec();
            p.extend_from_slice(&[0, 0, 0, [0u8, 2, 0xb][input.pick(3)]]);
            p.extend_from_slice(b"too_many_pings");
            put(&mut out, kind::GOAWAY, 0, 0, &p);
        }
        11 => {
            let id = if input.bool() {
                0
            } else {
                pick_stream(h, input)
            };
            let inc = [0u32, 1, 65_535, 0x7fff_ffff][input.pick(4)];
            put(&mut out, kind::WINDOW_UPDATE, 0, id, &inc.to_be_bytes());
        }
        12 => {
            let end = input.bool();
            let n = [0usize, 100, 70_000][input.pick(3)];
            h.open(end, n);
        }
        13 => {
            if !h.reqs.is_empty() {
                let i = input.pick(h.reqs.len());
                let r = &mut h.reqs[i];
                match input.pick(4) {
                    0 => {
                        if let Some(send) = r.send.as_mut() {
                            let mut t = HeaderMap::new();
                            t.insert("x-end", HeaderValue::from_static("1"));
                            let _ = send.send_trailers(t);
                        }
                    }
                    1 => {
                        if let Some(send) = r.send.as_mut() {
                            send.send_reset(Reason::CANCEL);
                        }
                    }
                    2 => {
                        if let Some(send) = r.send.as_mut() {
                            let _ = send.send_data(Bytes::from_static(b"end"), true);
                        }
                    }
                    _ => *r = Req::default(),
                }
            }
        }
        14 => match input.pick(4) {
            0 => h.reading = !h.reading,
            1 => h.pipe.0.borrow_mut().eof = true,
            2 => h.client = None,
            _ => {}
        },
        _ => {
            let secs = [0.001f64, 1.0, 20.0, 31.0, 300.0][input.pick(5)];
            tokio::time::advance(Duration::from_secs_f64(secs)).await;
        }
    }
    if !out.is_empty() {
        h.send(&out);
    }
}
