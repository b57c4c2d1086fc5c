//! Misbehaving upstreams for proxy tests.
//!
//! Each `spawn_*` binds `127.0.0.1:0` and returns the address and a handle;
//! dropping the handle stops the backend and closes its connections.
//!
//! # Panics
//! The `spawn_*` functions panic if `127.0.0.1:0` cannot be bound: they are
//! test fixtures, and a test cannot go on without its backend.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures_util::stream::{self, FuturesUnordered, StreamExt};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::codegen::Service;
use tonic::service::Routes;
use tonic::{Status, Streaming};

use super::accept_loop;
use super::certs::{self, TestPki};
use super::echo::{serve_echo, EchoServer};
use crate::echo_pb::echo_server::{Echo, EchoServer as EchoGrpcServer};
use crate::echo_pb::{EchoRequest, EchoResponse};

/// The greeting the HTTP/1.1-only backend answers every request with.
pub const HTTP1_GREETING: &str = "hello from http/1.1";

/// Keeps a backend running; dropping it aborts the backend and every
/// connection it holds.
#[derive(Debug)]
pub struct BackendHandle {
    connections: Arc<watch::Sender<u64>>,
    task: Option<JoinHandle<()>>,
    _shutdown: Option<watch::Sender<bool>>,
    /// A refusing address's bound, never listening socket.
    _reserved: Option<tokio::net::TcpSocket>,
}

impl BackendHandle {
    /// TCP connections the backend has accepted.
    pub fn connections(&self) -> u64 {
        *self.connections.borrow()
    }

    /// Waits until the backend has accepted at least `n` connections, at
    /// most `timeout`; false if it had not by then.
    pub async fn wait_connections(&self, n: u64, timeout: std::time::Duration) -> bool {
        let mut rx = self.connections.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|&c| c >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding a test backend on 127.0.0.1:0");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    (listener, addr)
}

fn spawn_accepting<F, Fut>(listener: TcpListener, serve: F) -> BackendHandle
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let connections = Arc::new(watch::Sender::new(0));
    let counter = connections.clone();
    let (shutdown, stop) = watch::channel(false);
    let task = tokio::spawn(accept_loop(listener, stop, move |tcp, _peer, _stop| {
        counter.send_modify(|c| *c += 1);
        serve(tcp)
    }));
    BackendHandle {
        connections,
        task: Some(task),
        _shutdown: Some(shutdown),
        _reserved: None,
    }
}

/// A real hyper HTTP/1.1-only server. Every request gets `200` with a JSON
/// body: `{"message": "hello from http/1.1", "method", "path", "version",
/// "headers": {name: value}}`. An HTTP/2 preface (h2c prior knowledge) gets
/// `HTTP/1.1 400 Bad Request` and a close, as from real HTTP/1.1 servers.
pub async fn spawn_http1_only() -> (SocketAddr, BackendHandle) {
    let (listener, addr) = bind().await;
    let handle = spawn_accepting(listener, serve_http1);
    (addr, handle)
}

async fn serve_http1(tcp: TcpStream) {
    let mut io = BufReader::new(tcp);
    // hyper closes the connection without a word when it sees the full
    // HTTP/2 preface; nginx, Apache and most real HTTP/1.1 servers answer
    // `PRI * HTTP/2.0` with a 400, which is the case a proxy must explain.
    if let Ok(first) = io.fill_buf().await {
        if first.starts_with(b"PRI * HTTP/2") {
            let _ = io.write_all(PREFACE_ANSWER).await;
            let _ = io.shutdown().await;
            return;
        }
    }
    let service = hyper::service::service_fn(http1_answer);
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

const PREFACE_ANSWER: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 12\r\nconnection: close\r\n\r\nBad Request\n";

async fn http1_answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value.into())
        })
        .collect();
    let body = serde_json::json!({
        "message": HTTP1_GREETING,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    let response = Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!("{body}\n"))))
        .expect("a static response is valid");
    Ok(response)
}

/// An address where nothing listens: connecting is refused. The port
/// stays bound (a socket that never listens, held by the handle) so that
/// no other test's listener can be given it meanwhile: dropping a
/// listener to free its port let a backend started in parallel take the
/// "dead" address now and then.
pub async fn spawn_refusing() -> (SocketAddr, BackendHandle) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket for a refusing address");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("binding a refusing address on 127.0.0.1:0");
    let addr = socket.local_addr().expect("a bound socket has an address");
    let handle = BackendHandle {
        connections: Arc::new(watch::Sender::new(0)),
        task: None,
        _shutdown: None,
        _reserved: Some(socket),
    };
    (addr, handle)
}

/// Accepts TCP connections and never reads or answers: for connect, TLS
/// handshake and response-headers timeouts.
pub async fn spawn_blackhole() -> (SocketAddr, BackendHandle) {
    let (listener, addr) = bind().await;
    let handle = spawn_accepting(listener, |tcp| async move {
        let _held = tcp;
        std::future::pending::<()>().await
    });
    (addr, handle)
}

/// The echo service over TLS with a server certificate from `pki` for
/// `localhost` and `127.0.0.1`, ALPN `h2`. With `require_client_cert`,
/// clients must present a certificate issued by `pki`.
pub async fn spawn_tls_echo(pki: &TestPki, require_client_cert: bool) -> (SocketAddr, EchoServer) {
    let cert = pki.server_cert(&["localhost", "127.0.0.1"]);
    let client_ca = require_client_cert.then(|| pki.ca_cert_pem());
    let config =
        certs::server_config(&cert, client_ca).expect("a TestPki certificate makes a valid config");
    let (listener, addr) = bind().await;
    (addr, serve_echo(listener, Some(config)).await)
}

/// An HTTP/2 gRPC server (the echo protocol) that dies like a killed process,
/// closing the TCP connection without GOAWAY, RST_STREAM or trailers:
/// - `ServerStream` sends `messages` echoes of the request, then dies;
/// - `Bidi` answers the first `messages` requests, then dies;
/// - `ClientStream` dies after reading `messages` requests;
/// - `Unary` dies before sending response headers.
///
/// Only the connection carrying the call dies; the listener keeps accepting.
/// Whatever was sent before the death has been written to the socket, unless
/// the client's flow-control window held it back.
pub async fn spawn_dies_mid_stream(messages: usize) -> (SocketAddr, BackendHandle) {
    let (listener, addr) = bind().await;
    let handle = spawn_accepting(listener, move |tcp| serve_then_die(tcp, messages));
    (addr, handle)
}

/// Per-connection service: `die` marks the connection for death.
#[derive(Clone)]
struct DyingEcho {
    messages: usize,
    die: Arc<AtomicBool>,
}

type EchoStream = stream::BoxStream<'static, Result<EchoResponse, Status>>;

fn reply(req: &EchoRequest, received: usize) -> EchoResponse {
    EchoResponse {
        message: req.message.clone(),
        payload: req.payload.clone(),
        received: received as u64,
        headers: Default::default(),
    }
}

/// Marks the connection for death and never completes.
async fn die<T>(flag: Arc<AtomicBool>) -> T {
    flag.store(true, Ordering::SeqCst);
    std::future::pending().await
}

#[tonic::async_trait]
impl Echo for DyingEcho {
    async fn unary(
        &self,
        _: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, Status> {
        die(self.die.clone()).await
    }

    type ServerStreamStream = EchoStream;

    async fn server_stream(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoStream>, Status> {
        let req = request.into_inner();
        let replies: Vec<_> = (1..=self.messages).map(|i| Ok(reply(&req, i))).collect();
        let dead = stream::once(die(self.die.clone()));
        Ok(tonic::Response::new(
            stream::iter(replies).chain(dead).boxed(),
        ))
    }

    async fn client_stream(
        &self,
        request: tonic::Request<Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<EchoResponse>, Status> {
        let mut inbound = request.into_inner();
        for _ in 0..self.messages {
            inbound.message().await?;
        }
        die(self.die.clone()).await
    }

    type BidiStream = EchoStream;

    async fn bidi(
        &self,
        request: tonic::Request<Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<EchoStream>, Status> {
        let inbound = request.into_inner();
        let answered = inbound
            .take(self.messages)
            .enumerate()
            .map(|(i, msg)| msg.map(|msg| reply(&msg, i + 1)));
        let dead = stream::once(die(self.die.clone()));
        Ok(tonic::Response::new(answered.chain(dead).boxed()))
    }
}

/// Serves one connection in a single task (hyper's per-stream tasks run here
/// too, through [`LocalExec`]), so "everything queued has been written" is
/// observable: once a call marks the connection for death, the connection is
/// dropped as soon as nothing is left to do and no write is blocked.
async fn serve_then_die(tcp: TcpStream, messages: usize) {
    let die = Arc::new(AtomicBool::new(false));
    let write_blocked = Arc::new(AtomicBool::new(false));
    let io = TrackedIo {
        inner: tcp,
        write_blocked: write_blocked.clone(),
    };
    let echo = DyingEcho {
        messages,
        die: die.clone(),
    };
    let routes = Routes::new(EchoGrpcServer::new(echo)).prepare();
    let (spawn, mut spawned) = mpsc::unbounded_channel();
    let conn = hyper::server::conn::http2::Builder::new(LocalExec(spawn))
        .serve_connection(TokioIo::new(io), RoutesService(routes));
    tokio::pin!(conn);
    let mut tasks = FuturesUnordered::new();
    let woken = Arc::new(WakeFlag::default());
    let waker = Waker::from(woken.clone());
    std::future::poll_fn(|cx| {
        woken.set_outer(cx.waker());
        let mut inner = Context::from_waker(&waker);
        // Go round until a pass wakes nothing: then every frame that can be
        // written has been.
        for _ in 0..64 {
            woken.woken.store(false, Ordering::SeqCst);
            while let Poll::Ready(Some(task)) = spawned.poll_recv(&mut inner) {
                tasks.push(task);
            }
            while let Poll::Ready(Some(())) = tasks.poll_next_unpin(&mut inner) {}
            if conn.as_mut().poll(&mut inner).is_ready() {
                return Poll::Ready(());
            }
            if !woken.woken.load(Ordering::SeqCst) {
                let quiet = !write_blocked.load(Ordering::SeqCst);
                return if die.load(Ordering::SeqCst) && quiet {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    // Returning drops the connection, its streams and the socket.
}

/// Records that something was woken, and passes the wake on.
#[derive(Default)]
struct WakeFlag {
    woken: AtomicBool,
    outer: Mutex<Option<Waker>>,
}

impl WakeFlag {
    fn set_outer(&self, waker: &Waker) {
        let mut outer = self.outer.lock().unwrap_or_else(|e| e.into_inner());
        if !outer.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *outer = Some(waker.clone());
        }
    }
}

impl Wake for WakeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if let Some(waker) = self
            .outer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            waker.wake_by_ref();
        }
    }
}

type LocalTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A hyper executor that hands tasks back to the connection's own task.
#[derive(Clone)]
struct LocalExec(mpsc::UnboundedSender<LocalTask>);

impl<F: Future<Output = ()> + Send + 'static> hyper::rt::Executor<F> for LocalExec {
    fn execute(&self, fut: F) {
        let _ = self.0.send(Box::pin(fut));
    }
}

/// tonic routes as a hyper service.
#[derive(Clone)]
struct RoutesService(Routes);

impl hyper::service::Service<Request<Incoming>> for RoutesService {
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut routes = self.0.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut routes, cx))
                .await?;
            routes.call(req).await
        })
    }
}

/// A socket that remembers whether its last write or flush was blocked.
struct TrackedIo {
    inner: TcpStream,
    write_blocked: Arc<AtomicBool>,
}

impl TrackedIo {
    fn track<T>(&self, poll: Poll<T>) -> Poll<T> {
        self.write_blocked
            .store(poll.is_pending(), Ordering::SeqCst);
        poll
    }
}

impl AsyncRead for TrackedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
