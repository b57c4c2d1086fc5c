//! The admin listener: `/live`, `/ready`, `/metrics`, `/config`, `/clusters`,
//! `/transcoding`.

mod describe;

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use arc_swap::ArcSwap;

use crate::body::{self, Body};
use crate::config::Config;
use crate::proxy::respond::text_response;
use crate::telemetry::Metrics;
use crate::upstream::ClusterRuntime;
use std::collections::HashMap;

/// What the admin listener and reloads read: always the current config.
pub struct Shared {
    pub config: ArcSwap<Config>,
    pub clusters: ArcSwap<HashMap<String, Arc<ClusterRuntime>>>,
    pub metrics: Arc<Metrics>,
    pub ready: watch::Receiver<bool>,
    /// The xDS client's state, when `xds:` is configured.
    pub xds: arc_swap::ArcSwapOption<crate::xds::Status>,
}

#[derive(Clone)]
pub struct AdminState {
    pub shared: Arc<Shared>,
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

fn json(value: serde_json::Value) -> Response<Body> {
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    let mut resp = Response::new(body::full(text));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn route(req: Request<Incoming>, state: &AdminState) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text_response(405, "admin endpoints answer GET");
    }
    let shared = &state.shared;
    match req.uri().path() {
        "/live" => text_response(200, "live"),
        "/ready" => {
            let missing: Vec<String> = shared
                .config
                .load()
                .jwt_providers
                .iter()
                .filter_map(|p| {
                    p.jwks
                        .missing()
                        .map(|why| format!("jwt provider {}: {why}", p.name))
                })
                .collect();
            let xds = shared.xds.load_full();
            if !*shared.ready.borrow() {
                text_response(503, "not ready (starting or draining)")
            } else if let Some(why) = xds.as_ref().and_then(|x| x.not_ready()) {
                text_response(503, &format!("not ready: {why}"))
            } else if !missing.is_empty() {
                text_response(503, &format!("not ready: {}", missing.join("; ")))
            } else if let Some(note) = xds.as_ref().and_then(|x| x.degraded()) {
                text_response(200, &format!("ready ({note})"))
            } else {
                text_response(200, "ready")
            }
        }
        "/metrics" => {
            let mut resp = Response::new(body::full(shared.metrics.encode()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        "/config" => {
            let mut view = describe::config(&shared.config.load());
            if let Some(x) = shared.xds.load_full() {
                view["xds"] = x.describe();
            }
            json(view)
        }
        "/clusters" => json(describe::clusters(&shared.clusters.load())),
        "/transcoding" => json(describe::transcoding(&shared.config.load())),
        _ => text_response(
            404,
            "admin endpoints: /live /ready /metrics /config /clusters /transcoding",
        ),
    }
}
