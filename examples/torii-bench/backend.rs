//! `torii-bench backend`: the smallest tonic echo service that answers the
//! benchmark's calls, so the backend costs as little as it can and costs the
//! same whichever proxy is in front. (`torii echo` also reports every request
//! header back in each response, so its replies would grow with whatever
//! headers a proxy adds.) The same server is the traced targets' OTLP
//! collector: it takes every export and keeps nothing.

use std::net::SocketAddr;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};
use torii::echo_pb::echo_server::{Echo, EchoServer};
use torii::echo_pb::{EchoRequest, EchoResponse};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::Error;

/// Large enough for the 64 KiB case and then some.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

#[derive(Default)]
struct MinimalEcho;

type Replies = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

fn reply(req: EchoRequest) -> EchoResponse {
    EchoResponse {
        payload: req.payload,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Echo for MinimalEcho {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(reply(request.into_inner())))
    }

    type ServerStreamStream = Replies;

    async fn server_stream(
        &self,
        _request: Request<EchoRequest>,
    ) -> Result<Response<Replies>, Status> {
        Err(Status::unimplemented(
            "the bench backend answers Unary and Bidi",
        ))
    }

    async fn client_stream(
        &self,
        _request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        Err(Status::unimplemented(
            "the bench backend answers Unary and Bidi",
        ))
    }

    type BidiStream = Replies;

    async fn bidi(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Replies>, Status> {
        let replies = request.into_inner().map(|msg| msg.map(reply));
        Ok(Response::new(Box::pin(replies)))
    }
}

/// The OTLP collector the traced targets export to: every batch accepted
/// (decoded, as a collector must) and dropped.
struct SpanSink;

#[tonic::async_trait]
impl TraceService for SpanSink {
    async fn export(
        &self,
        _request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

pub fn run(address: SocketAddr, workers: Option<usize>) -> Result<(), Error> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all().build()?.block_on(async move {
        let listener = TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        // Nagle plus delayed ACKs would stall small frames by 40 ms.
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            if let Ok(tcp) = &conn {
                let _ = tcp.set_nodelay(true);
            }
            conn
        });
        let service = EchoServer::new(MinimalEcho)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        println!("backend listening address={local}");
        tonic::transport::Server::builder()
            .max_concurrent_streams(1000)
            .add_service(service)
            .add_service(TraceServiceServer::new(SpanSink))
            .serve_with_incoming_shutdown(incoming, stop_signal())
            .await?;
        Ok(())
    })
}

/// The REST scenario's upstream: HTTP/1.1 keep-alive, every request's body
/// read whole, every answer `size` bytes with a content-length.
pub fn run_http1(address: SocketAddr, size: usize, workers: Option<usize>) -> Result<(), Error> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        rt.worker_threads(n.max(1));
    }
    let answer = Bytes::from(vec![b'x'; size]);
    rt.enable_all().build()?.block_on(async move {
        let listener = TcpListener::bind(address).await?;
        println!("backend listening address={}", listener.local_addr()?);
        let accept = async {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let answer = answer.clone();
                            async move {
                                // Read the request body whole, as a REST service would.
                                let _ = req.into_body().collect().await;
                                let mut resp = hyper::Response::new(Full::new(answer));
                                resp.headers_mut().insert(
                                    hyper::header::CONTENT_TYPE,
                                    hyper::header::HeaderValue::from_static("text/plain"),
                                );
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = stop_signal() => {}
        }
        Ok(())
    })
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
