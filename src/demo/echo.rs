//! The built-in echo service (`torii.echo.v1.Echo`) and a server for it.
//!
//! Used by `torii demo`, `torii echo`, every proxy test and the benchmark. It
//! echoes what it is sent, answers with whatever status, delay or size a
//! request asks for, reports the request headers it saw (so tests can check
//! what a proxy forwarded), echoes `x-echo-*` headers and the
//! `x-echo-trailer-bin` trailer, and counts what happened on its side in
//! [`EchoStats`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tonic::codegen::Service;
use tonic::service::Routes;
use tonic::{Code, Status, Streaming};

use super::{accept_loop, serve_h2};
use crate::echo_pb::echo_server::{Echo, EchoServer as EchoGrpcServer};
use crate::echo_pb::{EchoRequest, EchoResponse};

/// Messages up to this size are accepted and sent (the gRPC default of 4 MiB
/// is too small for the large-message tests).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Request headers echoed back as response trailers (binary, same name).
/// The second is the name the gRPC interop `custom_metadata` case uses.
const TRAILER_ECHO: [&str; 2] = ["x-echo-trailer-bin", "x-grpc-test-echo-trailing-bin"];
/// Request headers echoed back as response headers: any starting with
/// `x-echo-` (except the trailer above), and the interop case's name.
const HEADER_ECHO_PREFIX: &str = "x-echo-";
const INTEROP_HEADER_ECHO: &str = "x-grpc-test-echo-initial";

/// What the echo server observed, shared with tests via `Arc`.
#[derive(Debug, Default)]
pub struct EchoStats {
    started: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    messages_received: AtomicU64,
    connections: AtomicU64,
    changed: Notify,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Calls whose handler started.
    pub started: u64,
    /// Calls whose handler finished (with OK or with a requested status).
    pub completed: u64,
    /// Calls dropped before their handler finished: client cancel, stream
    /// reset, connection lost, or a broken request stream.
    pub cancelled: u64,
    /// Request messages read, over all calls.
    pub messages_received: u64,
    /// TCP connections accepted.
    pub connections: u64,
}

impl EchoStats {
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }
    pub fn messages_received(&self) -> u64 {
        self.messages_received.load(Ordering::SeqCst)
    }
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            started: self.started(),
            completed: self.completed(),
            cancelled: self.cancelled(),
            messages_received: self.messages_received(),
            connections: self.connections(),
        }
    }

    /// Waits until `pred` holds for the counters, or `timeout` passes.
    /// `Ok` with the snapshot that satisfied it, `Err` with the last one seen.
    /// Lets tests wait for server-side effects (a cancel arriving) without
    /// sleeping.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&StatsSnapshot) -> bool,
    ) -> Result<StatsSnapshot, StatsSnapshot> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.snapshot();
            if pred(&now) {
                return Ok(now);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let last = self.snapshot();
                return if pred(&last) { Ok(last) } else { Err(last) };
            }
        }
    }

    fn bump(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) fn connection_accepted(&self) {
        self.bump(&self.connections);
    }

    fn message_received(&self) {
        self.bump(&self.messages_received);
    }
}

/// Counts a call as started, then as completed or — if dropped before
/// [`CallGuard::finish`] — cancelled. Dropping is how a cancel shows up:
/// hyper drops the handler's future or response stream when the stream is
/// reset or the connection goes away.
struct CallGuard {
    stats: Arc<EchoStats>,
    finished: bool,
}

impl CallGuard {
    fn start(stats: &Arc<EchoStats>) -> Self {
        stats.bump(&stats.started);
        CallGuard {
            stats: stats.clone(),
            finished: false,
        }
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.stats.bump(&self.stats.completed);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.stats.bump(&self.stats.cancelled);
        }
    }
}

/// The echo service. Cheap to clone; clones share their stats.
#[derive(Clone, Debug, Default)]
pub struct EchoService {
    stats: Arc<EchoStats>,
}

impl EchoService {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_stats(stats: Arc<EchoStats>) -> Self {
        EchoService { stats }
    }

    pub fn stats(&self) -> &Arc<EchoStats> {
        &self.stats
    }

    /// The tonic service with the message size limits raised.
    pub fn into_server(self) -> EchoGrpcServer<EchoService> {
        EchoGrpcServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }
}

/// Facts about the HTTP request that tonic's `Request` does not carry,
/// inserted as an extension by the server before tonic sees the request.
#[derive(Clone, Debug)]
struct RequestInfo {
    authority: Option<String>,
    path: String,
    scheme: Option<String>,
}

/// The request's ASCII metadata, plus `:authority`, `:path` and `:scheme`
/// when known. Repeated headers are joined with ", ".
fn seen_headers<T>(req: &tonic::Request<T>) -> HashMap<String, String> {
    let mut seen: HashMap<String, String> = HashMap::new();
    for entry in req.metadata().iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry {
            let Ok(value) = value.to_str() else { continue };
            seen.entry(key.as_str().to_string())
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(value);
                })
                .or_insert_with(|| value.to_string());
        }
    }
    if let Some(info) = req.extensions().get::<RequestInfo>() {
        if let Some(authority) = &info.authority {
            seen.insert(":authority".into(), authority.clone());
        }
        if let Some(scheme) = &info.scheme {
            seen.insert(":scheme".into(), scheme.clone());
        }
        seen.insert(":path".into(), info.path.clone());
    }
    seen
}

fn requested_status(req: &EchoRequest) -> Result<(), Status> {
    match req.status_code {
        0 => Ok(()),
        code => Err(Status::new(
            Code::from_i32(code),
            req.status_message.clone(),
        )),
    }
}

fn response_payload(req: &EchoRequest) -> Vec<u8> {
    match req.response_size {
        0 => req.payload.clone(),
        n => vec![0; n as usize],
    }
}

fn echo_of(req: &EchoRequest, received: u64, headers: HashMap<String, String>) -> EchoResponse {
    EchoResponse {
        message: req.message.clone(),
        payload: response_payload(req),
        received,
        headers,
    }
}

async fn sleep_ms(ms: u32) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms.into())).await;
    }
}

type EchoStream = BoxStream<'static, Result<EchoResponse, Status>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, Status> {
        let mut guard = CallGuard::start(&self.stats);
        self.stats.message_received();
        let headers = seen_headers(&request);
        let req = request.into_inner();
        sleep_ms(req.sleep_ms).await;
        guard.finish();
        requested_status(&req)?;
        Ok(tonic::Response::new(echo_of(&req, 1, headers)))
    }

    type ServerStreamStream = EchoStream;

    /// `count` echoes, `sleep_ms` apart, then `status_code` (if any).
    async fn server_stream(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoStream>, Status> {
        let guard = CallGuard::start(&self.stats);
        self.stats.message_received();
        let headers = seen_headers(&request);
        let state = Streamed::new(guard, headers, request.into_inner());
        let replies = stream::unfold(state, next_server_stream_reply);
        Ok(tonic::Response::new(replies.boxed()))
    }

    /// Reads everything; answers with the message count in `received` and the
    /// total payload bytes, in decimal, in `message`.
    async fn client_stream(
        &self,
        request: tonic::Request<Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<EchoResponse>, Status> {
        let mut guard = CallGuard::start(&self.stats);
        let headers = seen_headers(&request);
        let mut inbound = request.into_inner();
        let (mut count, mut bytes, mut status) = (0u64, 0u64, Ok(()));
        // An inbound error returns early with the guard unfinished: cancelled.
        while let Some(msg) = inbound.message().await? {
            self.stats.message_received();
            count += 1;
            bytes += msg.payload.len() as u64;
            sleep_ms(msg.sleep_ms).await;
            if msg.status_code != 0 {
                status = requested_status(&msg);
            }
        }
        guard.finish();
        status?;
        Ok(tonic::Response::new(EchoResponse {
            message: bytes.to_string(),
            payload: Vec::new(),
            received: count,
            headers,
        }))
    }

    type BidiStream = EchoStream;

    /// Answers each message as it arrives; a message with a status ends the
    /// call with it.
    async fn bidi(
        &self,
        request: tonic::Request<Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<EchoStream>, Status> {
        let guard = CallGuard::start(&self.stats);
        let headers = seen_headers(&request);
        let state = Streamed::new(guard, headers, request.into_inner());
        let replies = stream::unfold(state, next_bidi_reply);
        Ok(tonic::Response::new(replies.boxed()))
    }
}

/// The state of a streamed reply between two messages. Owning the guard is
/// what makes a dropped stream count as cancelled.
struct Streamed<S> {
    guard: CallGuard,
    /// The request (ServerStream) or the request stream (Bidi).
    source: S,
    /// The request headers, sent with the first reply only.
    headers: Option<HashMap<String, String>>,
    /// Replies sent (ServerStream) or messages received (Bidi).
    count: u64,
    done: bool,
}

impl<S> Streamed<S> {
    fn new(guard: CallGuard, headers: HashMap<String, String>, source: S) -> Self {
        Streamed {
            guard,
            source,
            headers: Some(headers),
            count: 0,
            done: false,
        }
    }

    fn first_headers(&mut self) -> HashMap<String, String> {
        self.headers.take().unwrap_or_default()
    }

    /// Ends the call with `status` (or OK when `None`), counted as completed.
    fn finish(mut self, status: Option<Status>) -> Option<(Result<EchoResponse, Status>, Self)> {
        self.guard.finish();
        self.done = true;
        status.map(|s| (Err(s), self))
    }
}

type Step<S> = Option<(Result<EchoResponse, Status>, Streamed<S>)>;

async fn next_server_stream_reply(mut st: Streamed<EchoRequest>) -> Step<EchoRequest> {
    if st.done {
        return None;
    }
    if st.count >= u64::from(st.source.count) {
        let end = requested_status(&st.source).err();
        return st.finish(end);
    }
    if st.count > 0 {
        sleep_ms(st.source.sleep_ms).await;
    }
    st.count += 1;
    let headers = st.first_headers();
    let reply = echo_of(&st.source, st.count, headers);
    Some((Ok(reply), st))
}

async fn next_bidi_reply(mut st: Streamed<Streaming<EchoRequest>>) -> Step<Streaming<EchoRequest>> {
    if st.done {
        return None;
    }
    let msg = match st.source.message().await {
        Ok(Some(msg)) => msg,
        Ok(None) => return st.finish(None),
        Err(status) => {
            // Not finished: the guard counts the call as cancelled when the
            // stream is dropped.
            st.done = true;
            return Some((Err(status), st));
        }
    };
    st.guard.stats.message_received();
    st.count += 1;
    sleep_ms(msg.sleep_ms).await;
    if let Err(status) = requested_status(&msg) {
        return st.finish(Some(status));
    }
    let headers = st.first_headers();
    let reply = echo_of(&msg, st.count, headers);
    Some((Ok(reply), st))
}

/// The HTTP layer in front of the tonic routes: records [`RequestInfo`] and
/// echoes `x-echo-*` headers and the binary trailer, for every method and for
/// errors too.
#[derive(Clone)]
pub(crate) struct EchoHttp {
    routes: Routes,
}

impl EchoHttp {
    pub(crate) fn new(routes: Routes) -> Self {
        EchoHttp { routes }
    }
}

fn echoed_headers(headers: &HeaderMap) -> (Vec<(HeaderName, HeaderValue)>, HeaderMap) {
    let mut initial = Vec::new();
    let mut trailers = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if TRAILER_ECHO.contains(&n) {
            trailers.append(name.clone(), value.clone());
        } else if n.starts_with(HEADER_ECHO_PREFIX) || n == INTEROP_HEADER_ECHO {
            initial.push((name.clone(), value.clone()));
        }
    }
    (initial, trailers)
}

impl hyper::service::Service<Request<Incoming>> for EchoHttp {
    type Response = Response<EchoBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let (initial, trailers) = echoed_headers(req.headers());
        let info = RequestInfo {
            authority: req.uri().authority().map(|a| a.to_string()),
            path: req.uri().path().to_string(),
            scheme: req.uri().scheme_str().map(str::to_string),
        };
        req.extensions_mut().insert(info);
        let mut routes = self.routes.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| Service::<Request<Incoming>>::poll_ready(&mut routes, cx))
                .await?;
            let (mut parts, body) = routes.call(req).await?.into_parts();
            for (name, value) in initial {
                parts.headers.append(name, value);
            }
            // A trailers-only response (an error before any message) carries
            // its trailers in the headers.
            let extra = if trailers.is_empty() {
                None
            } else if parts.headers.contains_key("grpc-status") {
                parts.headers.extend(trailers);
                None
            } else {
                Some(trailers)
            };
            Ok(Response::from_parts(parts, EchoBody { inner: body, extra }))
        })
    }
}

pin_project_lite::pin_project! {
    /// tonic's response body with extra trailers merged into its trailers.
    pub(crate) struct EchoBody {
        #[pin]
        inner: tonic::body::Body,
        extra: Option<HeaderMap>,
    }
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    trailers.extend(this.extra.take().unwrap_or_default());
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            None => Poll::Ready(this.extra.take().map(|t| Ok(Frame::trailers(t)))),
            other => Poll::Ready(other),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.extra.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A running echo server. Dropping it aborts the server and every connection
/// it holds; [`EchoServer::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct EchoServer {
    pub addr: SocketAddr,
    pub stats: Arc<EchoStats>,
    /// `grpc.health.v1` statuses: "" and `torii.echo.v1.Echo` start SERVING.
    pub health: tonic_health::server::HealthReporter,
    /// Whether the listener speaks TLS.
    pub tls: bool,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, sends GOAWAY on every connection, waits for in-flight
    /// calls up to the drain time, then closes what is left.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves [`EchoService`] and `grpc.health.v1` on `listener`: HTTP/2 only,
/// h2c without `tls`, and with it TLS whose ALPN defaults to `h2` when the
/// config names none.
pub async fn serve_echo(listener: TcpListener, tls: Option<rustls::ServerConfig>) -> EchoServer {
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let stats = Arc::new(EchoStats::default());
    let echo = EchoService::with_stats(stats.clone()).into_server();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<EchoGrpcServer<EchoService>>().await;
    let http = EchoHttp::new(Routes::new(echo).add_service(health_service).prepare());
    let acceptor = tls.map(|mut config| {
        if config.alpn_protocols.is_empty() {
            config.alpn_protocols = vec![b"h2".to_vec()];
        }
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let is_tls = acceptor.is_some();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let conn_stats = stats.clone();
    let task = tokio::spawn(accept_loop(
        listener,
        shutdown_rx,
        move |tcp, _peer, stop| {
            conn_stats.connection_accepted();
            serve_h2(tcp, acceptor.clone(), http.clone(), stop)
        },
    ));
    EchoServer {
        addr,
        stats,
        health,
        tls: is_tls,
        shutdown,
        task: Some(task),
    }
}
