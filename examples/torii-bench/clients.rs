//! The load clients: probe, bidi, handshakes, idle, streams. Each runs on a
//! current-thread runtime and bounds every loop in time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use h2::client::SendRequest;
use h2::RecvStream;
use http::{HeaderMap, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::cpu::{self, Groups};
use crate::setup::grpc_frame;
use crate::{tls, Error, Target};

/// No single connect, handshake or call waits longer than this.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

pub fn single_thread<F: Future<Output = Result<(), Error>>>(f: F) -> Result<(), Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

async fn timed<T, F: Future<Output = Result<T, Error>>>(what: &str, f: F) -> Result<T, Error> {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(r) => r,
        Err(_) => Err(format!("{what}: no answer within {STEP_TIMEOUT:?}").into()),
    }
}

async fn tcp(target: &Target) -> Result<TcpStream, Error> {
    let tcp = TcpStream::connect(target.address).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// An HTTP/2 connection to the target (TLS + ALPN h2, or h2c). Its receive
/// windows are large (as h2load's are) so the client never throttles.
async fn h2_connect(
    target: &Target,
    connector: Option<&TlsConnector>,
) -> Result<SendRequest<Bytes>, Error> {
    let tcp = tcp(target).await?;
    match connector {
        Some(c) => h2_over(tls::handshake(c, tcp).await?).await,
        None => h2_over(tcp).await,
    }
}

async fn h2_over<T>(io: T) -> Result<SendRequest<Bytes>, Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(1 << 24)
        .initial_connection_window_size(1 << 26)
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

fn grpc_request(target: &Target, method: &str) -> Result<Request<()>, Error> {
    let scheme = if target.tls { "https" } else { "http" };
    let mut req = Request::post(format!(
        "{scheme}://{}/torii.echo.v1.Echo/{method}",
        target.address
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers");
    for h in &target.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: expected NAME: VALUE"))?;
        req = req.header(name.trim(), value.trim());
    }
    Ok(req.body(())?)
}

fn check_grpc_status(headers: &HeaderMap, where_: &str) -> Result<(), Error> {
    match headers.get("grpc-status").map(|v| v.as_bytes()) {
        None | Some(b"0") => Ok(()),
        Some(code) => Err(format!(
            "grpc-status {} in the {where_}: {:?}",
            String::from_utf8_lossy(code),
            headers.get("grpc-message")
        )
        .into()),
    }
}

/// Reads gRPC messages (whole frames, header included) off a response body.
struct Messages {
    body: RecvStream,
    buf: BytesMut,
}

impl Messages {
    fn new(body: RecvStream) -> Self {
        Messages {
            body,
            buf: BytesMut::new(),
        }
    }

    async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = 5 + len as usize;
                if self.buf.len() >= total {
                    return Ok(Some(self.buf.split_to(total).freeze()));
                }
            }
            match self.body.data().await {
                Some(Ok(chunk)) => {
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.buf.extend_from_slice(chunk.chunk());
                }
                Some(Err(e)) => return Err(e.into()),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err("the response body ended inside a message".into()),
            }
        }
    }

    /// Reads to the end; the trailers must say grpc-status 0.
    async fn finish(mut self) -> Result<(), Error> {
        while self.next().await?.is_some() {}
        match self.body.trailers().await? {
            Some(t) if t.contains_key("grpc-status") => check_grpc_status(&t, "trailers"),
            _ => Err("the response has no grpc-status trailer".into()),
        }
    }
}

fn print_json(v: serde_json::Value) {
    println!("{v}");
}

// ---------------------------------------------------------------- probe

pub async fn probe(target: Target, payload: usize) -> Result<(), Error> {
    let connector = target.tls.then(tls::connector).transpose()?;
    let frame = Bytes::from(grpc_frame(payload));
    timed("the probe call", async {
        let mut send = h2_connect(&target, connector.as_ref())
            .await?
            .ready()
            .await?;
        let (resp, mut tx) = send.send_request(grpc_request(&target, "Unary")?, false)?;
        tx.send_data(frame.clone(), true)?;
        let resp = resp.await?;
        if resp.status() != 200 {
            return Err(format!("HTTP status {}", resp.status()).into());
        }
        check_grpc_status(resp.headers(), "headers")?;
        let mut messages = Messages::new(resp.into_body());
        let msg = messages.next().await?.ok_or("no response message")?;
        // EchoResponse.payload has EchoRequest.payload's field number, so
        // the echo is the request frame byte for byte.
        if msg != frame {
            return Err(format!(
                "the reply is not the echo ({} bytes, expected {})",
                msg.len(),
                frame.len()
            )
            .into());
        }
        messages.finish().await?;
        print_json(serde_json::json!({"ok": true, "bytes": msg.len()}));
        Ok(())
    })
    .await
}

// ------------------------------------------------------- measured window

/// Lets `warmup` pass, then counts `counter` and the processes' CPU over
/// exactly `seconds`; prints the result as JSON with `extra` merged in.
async fn measure(
    counter: &AtomicU64,
    groups: &Groups,
    warmup: f64,
    seconds: f64,
    unit: &str,
    errors: &AtomicU64,
) -> serde_json::Value {
    tokio::time::sleep(Duration::from_secs_f64(warmup)).await;
    let (c0, t0, e0, i0) = (
        counter.load(Ordering::Relaxed),
        groups.ticks(),
        errors.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let (c1, t1, e1, elapsed) = (
        counter.load(Ordering::Relaxed),
        groups.ticks(),
        errors.load(Ordering::Relaxed),
        i0.elapsed().as_secs_f64(),
    );
    let count = c1 - c0;
    serde_json::json!({
        unit: count,
        "seconds": elapsed,
        "rate": count as f64 / elapsed,
        "errors": e1 - e0,
        "cpu_ticks": cpu::delta(&t0, &t1),
    })
}

// ----------------------------------------------------------------- bidi

pub struct BidiOpts {
    pub connections: usize,
    pub streams: usize,
    pub payload: usize,
    pub seconds: f64,
    pub warmup: f64,
}

pub async fn bidi(target: Target, opts: BidiOpts) -> Result<(), Error> {
    let groups = Groups::parse(&target.cpu)?;
    let connector = target.tls.then(tls::connector).transpose()?;
    let frame = Bytes::from(grpc_frame(opts.payload));
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        conns.push(timed("connecting", h2_connect(&target, connector.as_ref())).await?);
    }
    let end = Instant::now() + Duration::from_secs_f64(opts.warmup + opts.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for send in conns {
        for _ in 0..opts.streams {
            let (send, req) = (send.clone(), grpc_request(&target, "Bidi")?);
            let (frame, counter, errors) = (frame.clone(), counter.clone(), errors.clone());
            tasks.spawn(async move {
                let r = ping_pong(send, req, frame, end, &counter).await;
                if r.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                r
            });
        }
    }
    let mut result = measure(
        &counter,
        &groups,
        opts.warmup,
        opts.seconds,
        "messages",
        &errors,
    )
    .await;
    // Every stream stops at `end`; give them a bounded while to close.
    let mut first_error = None;
    let drained = tokio::time::timeout(STEP_TIMEOUT, async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Err(e)) = joined {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    })
    .await;
    tasks.abort_all();
    result["streams"] = (opts.connections * opts.streams).into();
    result["stream_errors"] = errors.load(Ordering::Relaxed).into();
    result["first_error"] = first_error.clone().into();
    result["closed_cleanly"] = drained.is_ok().into();
    print_json(result);
    match first_error {
        Some(e) if errors.load(Ordering::Relaxed) as usize == opts.connections * opts.streams => {
            Err(format!("every stream failed; the first: {e}").into())
        }
        _ => Ok(()),
    }
}

async fn ping_pong(
    send: SendRequest<Bytes>,
    req: Request<()>,
    frame: Bytes,
    end: Instant,
    counter: &AtomicU64,
) -> Result<(), Error> {
    let mut send = timed("opening a stream", async { Ok(send.ready().await?) }).await?;
    let (resp, mut tx) = send.send_request(req, false)?;
    tx.send_data(frame.clone(), false)?;
    let resp = timed("the response headers", async { Ok(resp.await?) }).await?;
    if resp.status() != 200 {
        return Err(format!("HTTP status {}", resp.status()).into());
    }
    check_grpc_status(resp.headers(), "headers")?;
    let mut messages = Messages::new(resp.into_body());
    loop {
        let msg = timed("a reply", messages.next())
            .await?
            .ok_or("the stream ended early")?;
        if msg.len() != frame.len() {
            return Err(format!(
                "a {}-byte reply to a {}-byte message",
                msg.len(),
                frame.len()
            )
            .into());
        }
        counter.fetch_add(1, Ordering::Relaxed);
        if Instant::now() >= end {
            break;
        }
        tx.send_data(frame.clone(), false)?;
    }
    tx.send_data(Bytes::new(), true)?;
    timed("the end of the stream", messages.finish()).await
}

// ----------------------------------------------------------- handshakes

pub async fn handshakes(target: Target, concurrency: usize, seconds: f64) -> Result<(), Error> {
    if !target.tls {
        return Err("handshakes needs --tls".into());
    }
    let groups = Groups::parse(&target.cpu)?;
    let connector = tls::connector()?;
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let warmup = 0.3;
    let end = Instant::now() + Duration::from_secs_f64(warmup + seconds);
    let mut tasks = tokio::task::JoinSet::new();
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    for _ in 0..concurrency {
        let (target, connector) = (target.clone(), connector.clone());
        let (counter, errors, first_error) = (counter.clone(), errors.clone(), first_error.clone());
        tasks.spawn(async move {
            while Instant::now() < end {
                match timed("a handshake", one_handshake(&target, &connector)).await {
                    Ok(()) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e.to_string());
                        // Do not spin on a refusing server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    let mut result = measure(&counter, &groups, warmup, seconds, "handshakes", &errors).await;
    let _ = tokio::time::timeout(STEP_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let first_error = first_error.lock().unwrap().clone();
    result["first_error"] = first_error.clone().into();
    print_json(result);
    if counter.load(Ordering::Relaxed) == 0 {
        return Err(format!(
            "no handshake completed: {}",
            first_error.unwrap_or_default()
        )
        .into());
    }
    Ok(())
}

/// Connect, full handshake, close_notify, then wait for the server to close
/// (so its side of the handshake surely ran to the end).
async fn one_handshake(target: &Target, connector: &TlsConnector) -> Result<(), Error> {
    let mut tls = tls::handshake(connector, tcp(target).await?).await?;
    tls.shutdown().await?;
    let mut sink = [0u8; 4096];
    loop {
        match tls.read(&mut sink).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

// ----------------------------------------------------------------- idle

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS_EMPTY: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];

pub async fn idle(
    target: Target,
    connections: usize,
    parallel: usize,
    hold: f64,
) -> Result<(), Error> {
    if !target.tls {
        return Err("idle needs --tls".into());
    }
    let connector = tls::connector()?;
    let started = Instant::now();
    let opened: Vec<Result<_, Error>> = futures_util::stream::iter(0..connections)
        .map(|_| timed("opening an idle connection", open_idle(&target, &connector)))
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let mut held = Vec::with_capacity(connections);
    let mut first_error = None;
    for r in opened {
        match r {
            Ok(conn) => held.push(conn),
            Err(e) => {
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    print_json(serde_json::json!({
        "opened": held.len(),
        "errors": connections - held.len(),
        "first_error": first_error,
        "seconds": started.elapsed().as_secs_f64(),
    }));
    // Hold until the harness closes our stdin (it has read the RSS), or the bound.
    let _ = tokio::time::timeout(Duration::from_secs_f64(hold), async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    drop(held);
    Ok(())
}

/// TLS, the client preface and SETTINGS, the server's SETTINGS read and
/// acknowledged: an HTTP/2 connection as a gRPC channel leaves it when idle.
async fn open_idle(
    target: &Target,
    connector: &TlsConnector,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let mut tls = tls::handshake(connector, tcp(target).await?).await?;
    tls.write_all(PREFACE).await?;
    tls.write_all(&SETTINGS_EMPTY).await?;
    tls.flush().await?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            let (kind, flags) = (buf[3], buf[4]);
            if buf.len() < 9 + len {
                break;
            }
            buf.advance(9 + len);
            if kind == 4 && flags & 1 == 0 {
                tls.write_all(&SETTINGS_ACK).await?;
                tls.flush().await?;
                return Ok(tls);
            }
        }
        if tls.read_buf(&mut buf).await? == 0 {
            return Err("the server closed before sending SETTINGS".into());
        }
    }
}

// -------------------------------------------------------------- streams

/// Opens `connections` TLS + HTTP/2 connections and `streams` bidi streams
/// on each; every stream sends one message and waits for its echo (so it is
/// open end to end, through the proxy to the backend), then stays open.
/// Prints a JSON line, then holds everything until stdin closes (or `hold`
/// seconds pass).
pub async fn streams(
    target: Target,
    connections: usize,
    streams: usize,
    hold: f64,
) -> Result<(), Error> {
    let connector = target.tls.then(tls::connector).transpose()?;
    let frame = Bytes::from(grpc_frame(100));
    let started = Instant::now();
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        conns.push(timed("connecting", h2_connect(&target, connector.as_ref())).await?);
    }
    let mut opening = tokio::task::JoinSet::new();
    for send in &conns {
        for _ in 0..streams {
            let (send, req, frame) = (send.clone(), grpc_request(&target, "Bidi")?, frame.clone());
            opening.spawn(timed("opening a held stream", async move {
                let mut send = send.ready().await?;
                let (resp, mut tx) = send.send_request(req, false)?;
                tx.send_data(frame, false)?;
                let resp = resp.await?;
                if resp.status() != 200 {
                    return Err(format!("HTTP status {}", resp.status()).into());
                }
                check_grpc_status(resp.headers(), "headers")?;
                let mut messages = Messages::new(resp.into_body());
                messages
                    .next()
                    .await?
                    .ok_or("the stream ended before its echo")?;
                Ok((tx, messages))
            }));
        }
    }
    let mut held = Vec::with_capacity(connections * streams);
    let mut first_error = None;
    let mut errors = 0usize;
    while let Some(joined) = opening.join_next().await {
        match joined {
            Ok(Ok(stream)) => held.push(stream),
            Ok(Err(e)) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    print_json(serde_json::json!({
        "opened": held.len(),
        "errors": errors,
        "first_error": first_error,
        "seconds": started.elapsed().as_secs_f64(),
    }));
    let _ = tokio::time::timeout(Duration::from_secs_f64(hold), async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    drop(held);
    drop(conns);
    Ok(())
}
