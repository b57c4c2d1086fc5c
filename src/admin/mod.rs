//! The admin listener: `/live`, `/ready`, `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::http::body::{self, Body};
use crate::respond::text_response;
use crate::telemetry::Metrics;

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// True while serving; false while starting or draining.
    pub ready: watch::Receiver<bool>,
}

pub async fn serve(listener: TcpListener, state: AdminState, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(req, &state)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(req: Request<Incoming>, state: &AdminState) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text_response(405, "admin endpoints answer GET");
    }
    match req.uri().path() {
        "/live" => text_response(200, "live"),
        "/ready" => {
            if *state.ready.borrow() {
                text_response(200, "ready")
            } else {
                text_response(503, "not ready (starting or draining)")
            }
        }
        "/metrics" => {
            let mut resp = Response::new(body::full(state.metrics.encode()));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        _ => text_response(404, "admin endpoints: /live /ready /metrics"),
    }
}
