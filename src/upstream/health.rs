//! Active health checks: every interval (plus jitter) each endpoint of a
//! cluster is probed with `grpc.health.v1.Health/Check`, an HTTP GET, or a
//! TCP connect. Endpoints that fail `unhealthy_threshold` probes in a row
//! get no new requests until they pass `healthy_threshold` in a row.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{header, Request};
use http_body_util::BodyExt;
use prost::Message;
use tonic_health::pb::{
    health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
};

use super::connect::{explain_h1_failure, explain_h2_failure, Wire};
use super::pool::{Endpoint, Lease};
use super::ClusterRuntime;
use crate::body;
use crate::config::{HealthCheck, HealthCheckType, UpstreamProtocol};

/// Consecutive probe results for one endpoint.
#[derive(Default)]
struct Streak {
    passed: u32,
    failed: u32,
}

pub fn spawn(cluster: &Arc<ClusterRuntime>) {
    tokio::spawn(run(Arc::downgrade(cluster)));
}

async fn run(cluster: Weak<ClusterRuntime>) {
    let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let Some(hc) = c.config.health_check.clone() else {
            return;
        };
        let endpoints = c.endpoints();
        let probes = endpoints.iter().map(|ep| {
            let c = c.clone();
            let ep = ep.clone();
            let hc = hc.clone();
            async move {
                let result = match tokio::time::timeout(hc.timeout, probe(&c, &ep, &hc)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "no answer within the health check timeout {}",
                        crate::config::duration::display(hc.timeout)
                    )),
                };
                (ep, result)
            }
        });
        let results = futures_util::future::join_all(probes).await;
        streaks.retain(|addr, _| endpoints.iter().any(|e| e.addr == *addr));
        for (ep, result) in results {
            let s = streaks.entry(ep.addr).or_default();
            match result {
                Ok(()) => {
                    s.passed += 1;
                    s.failed = 0;
                    if !ep.active_ok.load(Ordering::Relaxed) && s.passed >= hc.healthy_threshold {
                        ep.active_ok.store(true, Ordering::Relaxed);
                        c.set_healthy_gauge(&ep, true);
                        tracing::info!(cluster = %c.config.name, endpoint = %ep.addr, "endpoint is healthy again: {} health checks passed in a row", s.passed);
                    }
                }
                Err(why) => {
                    s.failed += 1;
                    s.passed = 0;
                    if ep.active_ok.load(Ordering::Relaxed) && s.failed >= hc.unhealthy_threshold {
                        ep.active_ok.store(false, Ordering::Relaxed);
                        c.set_healthy_gauge(&ep, false);
                        tracing::warn!(cluster = %c.config.name, endpoint = %ep.addr, "endpoint is unhealthy and gets no new requests: {why} ({} health checks failed in a row)", s.failed);
                    } else {
                        tracing::debug!(cluster = %c.config.name, endpoint = %ep.addr, "health check failed: {why}");
                    }
                }
            }
        }
        let wait = hc.interval + jitter(hc.jitter);
        drop(c);
        tokio::time::sleep(wait).await;
    }
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::random_range(0..=max.as_millis() as u64))
}

async fn probe(c: &ClusterRuntime, ep: &Endpoint, hc: &HealthCheck) -> Result<(), String> {
    match hc.kind {
        HealthCheckType::Tcp => tokio::net::TcpStream::connect(ep.addr)
            .await
            .map(|_| ())
            .map_err(|e| format!("TCP connect failed: {e}")),
        HealthCheckType::Grpc => grpc_probe(c, ep, &hc.service).await,
        HealthCheckType::Http => http_probe(c, ep, hc).await,
    }
}

/// Sends one request on a leased connection; returns status, body and trailers.
async fn exchange(
    c: &ClusterRuntime,
    ep: &Endpoint,
    wire: Wire,
    req: Request<body::Body>,
) -> Result<(http::StatusCode, Bytes, Option<http::HeaderMap>), String> {
    let lease = ep.lease(c.connector(), wire).await.map_err(|e| e.message)?;
    let failed = |e: &dyn std::fmt::Display| format!("the health check request failed: {e}");
    // Failures are explained from what the endpoint sent, as for requests
    // (an HTML page where HTTP/2 was expected is a protocol mismatch).
    let name = c.config.name.as_str();
    let resp = match lease {
        Lease::H2 {
            mut send, first, ..
        } => {
            let explain =
                |e: &crate::http2::Error| failed(&explain_h2_failure(e, &first, ep.addr, name));
            send.ready().await.map_err(|e| explain(&e))?;
            send.send(Box::new(req), false)
                .await
                .map_err(|e| explain(&e.error))?
        }
        Lease::H1(mut send, first) => send
            .send_request(req)
            .await
            .map_err(|e| failed(&explain_h1_failure(&e, &first, ep.addr, name)))?
            .map(crate::body::Received::H1),
    };
    let status = resp.status();
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("the health check response broke off: {e}"))?;
    let trailers = collected.trailers().cloned();
    Ok((status, collected.to_bytes(), trailers))
}

fn authority(c: &ClusterRuntime, ep: &Endpoint) -> String {
    let host = c
        .config
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| ep.host.clone());
    if host.contains(':') {
        format!("[{host}]:{}", ep.addr.port())
    } else {
        format!("{host}:{}", ep.addr.port())
    }
}

async fn grpc_probe(c: &ClusterRuntime, ep: &Endpoint, service: &str) -> Result<(), String> {
    let scheme = if c.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let msg = HealthCheckRequest {
        service: service.to_string(),
    }
    .encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + msg.len());
    frame.put_u8(0);
    frame.put_u32(msg.len() as u32);
    frame.put_slice(&msg);
    let req = Request::post(format!(
        "{scheme}://{}/grpc.health.v1.Health/Check",
        authority(c, ep)
    ))
    .version(http::Version::HTTP_2)
    .header(header::CONTENT_TYPE, "application/grpc")
    .header(header::TE, "trailers")
    .header(header::USER_AGENT, "torii-health-check")
    .body(body::full(frame.freeze()))
    .map_err(|e| e.to_string())?;
    let (status, mut data, trailers) = exchange(c, ep, Wire::Http2, req).await?;
    if status != http::StatusCode::OK {
        return Err(format!("the gRPC health check got HTTP {status}"));
    }
    let code = trailers
        .as_ref()
        .and_then(|t| t.get(&crate::grpc::GRPC_STATUS))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing");
    if code != "0" {
        let message = trailers
            .as_ref()
            .and_then(|t| t.get(&crate::grpc::GRPC_MESSAGE))
            .map(|m| crate::grpc::status::decode_message(m.as_bytes()))
            .unwrap_or_default();
        return Err(format!(
            "the gRPC health check for service {service:?} failed with grpc-status {code} {message}"
        ));
    }
    if data.len() < 5 {
        return Err("the gRPC health check answered no message".into());
    }
    data.advance(5);
    let resp =
        HealthCheckResponse::decode(data).map_err(|e| format!("bad health response: {e}"))?;
    match ServingStatus::try_from(resp.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!(
            "the gRPC health check for service {service:?} answered {}",
            other.as_str_name()
        )),
        Err(_) => Err(format!(
            "the gRPC health check answered status {}",
            resp.status
        )),
    }
}

async fn http_probe(c: &ClusterRuntime, ep: &Endpoint, hc: &HealthCheck) -> Result<(), String> {
    let wire = match c.config.protocol {
        UpstreamProtocol::H2 | UpstreamProtocol::H2c => Wire::Http2,
        _ => Wire::Http1,
    };
    let auth = authority(c, ep);
    let req = match wire {
        Wire::Http2 => {
            let scheme = if c.config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            Request::get(format!("{scheme}://{auth}{}", hc.path)).version(http::Version::HTTP_2)
        }
        Wire::Http1 => Request::get(hc.path.as_str()).header(header::HOST, auth),
    }
    .header(header::USER_AGENT, "torii-health-check")
    .body(body::empty())
    .map_err(|e| e.to_string())?;
    let (status, _, _) = exchange(c, ep, wire, req).await?;
    let ok = if hc.expected_statuses.is_empty() {
        status.is_success()
    } else {
        hc.expected_statuses.contains(&status.as_u16())
    };
    if ok {
        Ok(())
    } else {
        Err(format!("GET {} answered HTTP {status}", hc.path))
    }
}
