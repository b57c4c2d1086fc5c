//! Upstreams that fail on cue, for the retry, circuit-breaking and outlier
//! tests: a gRPC server (raw HTTP/2, so each way of failing is exact:
//! Trailers-Only, a status in trailers after the head, a message then a
//! status, a reset, no answer, pushback) and an HTTP/1.1 server that holds
//! every request until a gate opens.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the scripted upstream does with one request.
#[derive(Clone, Copy, Debug)]
pub enum Act {
    /// Head, one (empty) message, `grpc-status: 0`.
    Ok,
    /// One HEADERS frame with the status (and pushback, if any).
    TrailersOnly(i32, Option<&'static str>),
    /// The head, then trailers with the status: no message.
    Trailers(i32, Option<&'static str>),
    /// The head, one message, then trailers with the status.
    MessageThen(i32),
    /// RST_STREAM before any head.
    Reset,
    /// Never answers.
    Hang,
    /// Answers Trailers-Only with the status at once, before reading the
    /// request body (which may still be arriving).
    EarlyTrailersOnly(i32),
    /// Waits until the gate opens, then answers like `Ok`.
    Gate,
}

type Script = dyn Fn(&http::request::Parts, u64) -> Act + Send + Sync;

/// A running scripted upstream.
pub struct Scripted {
    pub addr: SocketAddr,
    /// Requests received.
    pub hits: Arc<AtomicU64>,
    /// Each request's body size, in arrival order.
    pub bodies: Arc<Mutex<Vec<usize>>>,
    /// Requests waiting at the gate now.
    pub waiting: Arc<AtomicUsize>,
    gate: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Starts a gRPC upstream; `script(head, n)` says what to do with a request,
/// `n` counting the requests with the same `x-call` header (1 for the first).
pub async fn spawn_scripted(
    script: impl Fn(&http::request::Parts, u64) -> Act + Send + Sync + 'static,
) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let script: Arc<Script> = Arc::new(script);
    let hits = Arc::new(AtomicU64::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let waiting = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
    let (gate, gate_rx) = watch::channel(false);
    let (h, b, w) = (hits.clone(), bodies.clone(), waiting.clone());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (script, hits, bodies, waiting, calls, gate) = (
                script.clone(),
                h.clone(),
                b.clone(),
                w.clone(),
                calls.clone(),
                gate_rx.clone(),
            );
            conns.spawn(async move {
                let mut builder = h2::server::Builder::new();
                builder.max_concurrent_streams(10_000);
                let Ok(mut conn) = builder.handshake::<_, Bytes>(tcp).await else {
                    return;
                };
                let mut streams = tokio::task::JoinSet::new();
                while let Some(Ok((req, respond))) = conn.accept().await {
                    let (parts, body) = req.into_parts();
                    let call = parts
                        .headers
                        .get("x-call")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let n = {
                        let mut c = calls.lock().unwrap();
                        let n = c.entry(call).or_insert(0);
                        *n += 1;
                        *n
                    };
                    hits.fetch_add(1, Ordering::SeqCst);
                    let act = script(&parts, n);
                    let (bodies, waiting, gate) = (bodies.clone(), waiting.clone(), gate.clone());
                    streams.spawn(answer(act, body, respond, bodies, waiting, gate));
                }
            });
        }
    });
    Scripted {
        addr,
        hits,
        bodies,
        waiting,
        gate,
        task,
    }
}

fn head(extra: &[(&'static str, String)], end: bool) -> http::Response<()> {
    let mut b = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    if end {
        for (k, v) in extra {
            b = b.header(*k, v.as_str());
        }
    }
    b.body(()).unwrap()
}

fn status_fields(code: i32, pushback: Option<&str>) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("grpc-status", code.to_string()),
        ("grpc-message", format!("scripted status {code}")),
    ];
    if let Some(p) = pushback {
        f.push(("grpc-retry-pushback-ms", p.to_string()));
    }
    f
}

fn trailers(fields: &[(&'static str, String)]) -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    for (k, v) in fields {
        t.insert(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    t
}

const EMPTY_MESSAGE: &[u8] = &[0, 0, 0, 0, 0];

async fn answer(
    act: Act,
    mut body: h2::RecvStream,
    mut respond: h2::server::SendResponse<Bytes>,
    bodies: Arc<Mutex<Vec<usize>>>,
    waiting: Arc<AtomicUsize>,
    mut gate: watch::Receiver<bool>,
) {
    if let Act::EarlyTrailersOnly(code) = act {
        let _ = respond.send_response(head(&status_fields(code, None), true), true);
        return;
    }
    let mut size = 0;
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        size += chunk.len();
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    bodies.lock().unwrap().push(size);
    let ok = status_fields(0, None);
    match act {
        Act::Ok | Act::Gate => {
            if let Act::Gate = act {
                waiting.fetch_add(1, Ordering::SeqCst);
                let _ = gate.wait_for(|open| *open).await;
                waiting.fetch_sub(1, Ordering::SeqCst);
            }
            let Ok(mut send) = respond.send_response(head(&[], false), false) else {
                return;
            };
            let _ = send.send_data(Bytes::from_static(EMPTY_MESSAGE), false);
            let _ = send.send_trailers(trailers(&ok));
        }
        Act::TrailersOnly(code, pushback) => {
            let _ = respond.send_response(head(&status_fields(code, pushback), true), true);
        }
        Act::Trailers(code, pushback) => {
            let Ok(mut send) = respond.send_response(head(&[], false), false) else {
                return;
            };
            let _ = send.send_trailers(trailers(&status_fields(code, pushback)));
        }
        Act::MessageThen(code) => {
            let Ok(mut send) = respond.send_response(head(&[], false), false) else {
                return;
            };
            let _ = send.send_data(Bytes::from_static(EMPTY_MESSAGE), false);
            let _ = send.send_trailers(trailers(&status_fields(code, None)));
        }
        Act::Reset => respond.send_reset(h2::Reason::INTERNAL_ERROR),
        Act::EarlyTrailersOnly(_) => unreachable!("answered above"),
        Act::Hang => {
            // Until torii gives up on the stream.
            let _ = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
        }
    }
}

/// An HTTP/1.1 upstream that holds every request until its gate opens,
/// then answers `200 ok`; it counts the connections open at once.
pub struct GatedHttp1 {
    pub addr: SocketAddr,
    /// Requests waiting at the gate now.
    pub waiting: Arc<AtomicUsize>,
    /// The most connections that were open at once.
    pub max_connections: Arc<AtomicUsize>,
    /// Connections open now (as the upstream sees them: a connection
    /// torii closed counts until its end of it closes too).
    pub open: Arc<AtomicUsize>,
    gate: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GatedHttp1 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GatedHttp1 {
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }
}

pub async fn spawn_gated_http1() -> GatedHttp1 {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let waiting = Arc::new(AtomicUsize::new(0));
    let max_connections = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let open_count = open.clone();
    let (gate, gate_rx) = watch::channel(false);
    let (w, m) = (waiting.clone(), max_connections.clone());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            let (waiting, gate, open) = (w.clone(), gate_rx.clone(), open.clone());
            conns.spawn(async move {
                let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let (waiting, mut gate) = (waiting.clone(), gate.clone());
                    async move {
                        waiting.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        waiting.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    GatedHttp1 {
        addr,
        waiting,
        max_connections,
        open: open_count,
        gate,
        task,
    }
}

/// Waits (bounded by `within`) until `cond` holds, checking every 10 ms.
pub async fn eventually(within: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    cond()
}
