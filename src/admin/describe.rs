//! JSON views for the admin listener. The config view shows file paths,
//! never key material.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::*;
use crate::upstream::ClusterRuntime;

fn dur(d: std::time::Duration) -> String {
    crate::config::duration::display(d)
}

/// A header condition as the config file would say it.
fn header_match(h: &HeaderMatch) -> Value {
    let mut v = json!({ "name": h.name });
    match &h.value {
        HeaderValueMatch::Present => v["present"] = json!(!h.invert),
        HeaderValueMatch::Exact(e) => v["value"] = json!(e),
        HeaderValueMatch::Regex(r) => v["regex"] = json!(r.as_str()),
    }
    if h.invert && !matches!(h.value, HeaderValueMatch::Present) {
        v["invert"] = json!(true);
    }
    v
}

pub fn config(c: &Config) -> Value {
    json!({
        "source": c.source.as_ref().map(|p| p.display().to_string()),
        "admin": c.admin.as_ref().map(|a| a.address.to_string()),
        "drain_timeout": dur(c.drain_timeout),
        "access_log": c.access_log.describe(),
        "listeners": c.listeners.iter().map(listener).collect::<Vec<_>>(),
        "clusters": c.clusters.iter().map(|c| cluster(c)).collect::<Vec<_>>(),
        "jwt_providers": c.jwt_providers.iter().map(|p| jwt_provider(p)).collect::<Vec<_>>(),
        "api_keys": c.api_keys.iter().map(|s| json!({
            "name": s.name,
            "file": s.file.display().to_string(),
            "consumers": s.consumers(),
        })).collect::<Vec<_>>(),
    })
}

/// A JWT provider and the state of its key set: key ids, never keys.
fn jwt_provider(p: &crate::auth::JwtProvider) -> Value {
    let state = p.jwks.current();
    json!({
        "name": p.name,
        "issuer": p.issuer,
        "audiences": p.audiences,
        "jwks": p.jwks.source.describe(),
        "key_ids": state.set.as_ref().map(|s| s.keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>()),
        "fetches": p.jwks.fetches(),
        "error": state.error.as_ref().map(|(_, why)| why.clone()),
    })
}

/// Every listener's JSON transcoding table: HTTP rule → gRPC method.
pub fn transcoding(c: &Config) -> Value {
    let listeners: Vec<Value> = c
        .listeners
        .iter()
        .filter_map(|l| {
            let t = l.json_transcoding.as_ref()?;
            let rules: Vec<Value> = t
                .bindings
                .iter()
                .map(|b| {
                    json!({
                        "http_method": b.http_method.as_str(),
                        "path": b.template.text,
                        "grpc_method": b.grpc_path,
                        "body": b.body,
                        "response_body": b.response_body,
                        "server_streaming": b.server_streaming(),
                    })
                })
                .collect();
            Some(json!({
                "listener": l.name,
                "print": {
                    "emit_defaults": t.print.emit_defaults,
                    "proto_field_names": t.print.proto_field_names,
                },
                "rules": rules,
            }))
        })
        .collect();
    json!({ "listeners": listeners })
}

fn listener(l: &Listener) -> Value {
    json!({
        "name": l.name,
        "address": l.address.to_string(),
        "protocol": l.protocol.as_str(),
        "health_path": l.health_path,
        "allow_encoded_slashes": l.allow_encoded_slashes,
        "header_read_timeout": dur(l.header_read_timeout),
        "json_transcoding": l.json_transcoding.as_ref().map(|t| t.bindings.len()),
        "tls": l.tls.as_ref().map(|t| json!({
            "certificates": t.certificates.iter().map(|c| json!({
                "cert": c.cert_path.display().to_string(),
                "key": "[redacted]",
                "server_names": c.server_names,
            })).collect::<Vec<_>>(),
            "alpn": t.alpn.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>(),
            "client_auth": t.client_auth.as_ref().map(|a| json!({
                "ca": a.ca_path.display().to_string(),
                "required": a.required,
                "allowed_sans": a.allowed_sans,
            })),
        })),
        "routes": l.routes.iter().map(route).collect::<Vec<_>>(),
    })
}

fn route(r: &Route) -> Value {
    let m = &r.matcher;
    let action = match &r.action {
        RouteAction::Cluster(c) => json!({ "cluster": c.name }),
        RouteAction::Weighted(list) => json!({
            "weighted_clusters": list.iter().map(|(c, w)| json!({"cluster": c.name, "weight": w})).collect::<Vec<_>>()
        }),
        RouteAction::Direct { status, body } => {
            json!({ "direct_response": {"status": status, "body": body} })
        }
    };
    json!({
        "match": {
            "host": m.host.as_ref().map(|h| match h {
                HostMatch::Exact(e) => e.clone(),
                HostMatch::Suffix(s) => format!("*{s}"),
            }),
            "path": m.path.as_ref().map(|p| match p {
                PathMatch::Exact(e) => format!("path {e}"),
                PathMatch::Prefix(e) => format!("prefix {e}"),
                PathMatch::Regex(e) => format!("regex {}", e.as_str()),
            }),
            "grpc_service": m.grpc_service,
            "grpc_method": m.grpc_method,
            "headers": m.headers.iter().map(header_match).collect::<Vec<_>>(),
        },
        "action": action,
        "prefix_rewrite": r.prefix_rewrite,
        "timeout": r.timeout.map(dur),
        "rate_limit": r.rate_limit.as_ref().map(|l| json!({
            "requests_per_second": l.requests_per_second,
            "burst": l.burst,
            "per": l.per.as_str(),
            "max_keys": (l.per != crate::config::RateLimitPer::Route).then_some(l.max_keys),
        })),
        "retry": r.retry.as_deref().map(|p| json!({
            "attempts": p.attempts,
            "per_try_timeout": p.per_try_timeout.map(dur),
            "backoff": { "base": dur(p.backoff_base), "max": dur(p.backoff_max) },
        })),
        "auth": r.auth.as_ref().map(|a| json!({
            "jwt": a.jwt.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            "api_key": a.api_keys.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            "require": if a.require_all { "all" } else { "any" },
            "allow_rules": a.allow.len(),
            "mode": if a.audit { "audit" } else { "enforce" },
        })),
    })
}

fn cluster(c: &Cluster) -> Value {
    json!({
        "name": c.name,
        // As the file writes them: host:port, with its weight when not 1.
        "endpoints": c.endpoints.iter().map(|e| {
            let address = format!("{}:{}", e.host, e.port);
            if e.weight == 1 { json!(address) } else { json!({"address": address, "weight": e.weight}) }
        }).collect::<Vec<_>>(),
        "protocol": c.protocol.as_str(),
        "lb": c.lb.as_str(),
        "connect_timeout": dur(c.connect_timeout),
        "max_streams_per_connection": c.max_streams_per_connection,
        "max_connections_per_endpoint": c.max_connections_per_endpoint,
        "tls": c.tls.as_ref().map(|t| json!({
            "server_name": t.server_name,
            "client_cert": t.client_cert.is_some(),
            "key": t.client_cert.as_ref().map(|_| "[redacted]"),
        })),
        "health_check": c.health_check.as_ref().map(|h| json!({
            "type": h.kind.as_str(),
            "interval": dur(h.interval),
            "timeout": dur(h.timeout),
            "service": h.service,
            "path": h.path,
            "healthy_threshold": h.healthy_threshold,
            "unhealthy_threshold": h.unhealthy_threshold,
        })),
        "outlier_detection": {
            "consecutive_failures": c.outlier_detection.consecutive_failures,
            "base_ejection_time": dur(c.outlier_detection.base_ejection_time),
            "max_ejection_time": dur(c.outlier_detection.max_ejection_time),
            "max_ejection_percent": c.outlier_detection.max_ejection_percent,
            "interval": dur(c.outlier_detection.interval),
            "success_rate_min_requests": c.outlier_detection.success_rate_min_requests,
            "success_rate_min_endpoints": c.outlier_detection.success_rate_min_endpoints,
            "success_rate_stdev_factor": f64::from(c.outlier_detection.success_rate_stdev_factor) / 1000.0,
        },
        "retry_budget": {
            "ratio": c.retry_budget.ratio,
            "min_per_second": c.retry_budget.min_per_second,
        },
        "limits": {
            "max_connections": c.limits.max_connections,
            "max_pending_requests": c.limits.max_pending_requests,
            "max_requests": c.limits.max_requests,
        },
        "http2_keepalive": {
            "interval": dur(c.http2_keepalive.interval),
            "timeout": dur(c.http2_keepalive.timeout),
            "while_idle": c.http2_keepalive.while_idle,
        },
    })
}

pub fn clusters(clusters: &HashMap<String, Arc<ClusterRuntime>>) -> Value {
    let mut names: Vec<&String> = clusters.keys().collect();
    names.sort();
    let list: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let c = &clusters[name];
            let eps: Vec<Value> = c
                .endpoints()
                .iter()
                .map(|e| {
                    json!({
                        "address": e.addr.to_string(),
                        "host": e.host,
                        "available": e.available(),
                        "health_check_ok": e.active_ok.load(Ordering::Relaxed),
                        "ejected_for_ms": e.ejected_for().map(|d| d.as_millis() as u64),
                        "ejections": e.ejections(),
                        "active_requests": e.active.load(Ordering::Relaxed),
                        "h2_connections": e.h2_connections(),
                    })
                })
                .collect();
            let load = &c.connector().load;
            let use_of = |limit: usize, n: &std::sync::atomic::AtomicUsize| {
                json!({ "limit": limit, "in_use": n.load(Ordering::Relaxed) })
            };
            let limits = json!({
                "max_requests": use_of(load.limits.max_requests, &load.requests),
                "max_pending_requests": use_of(load.limits.max_pending_requests, &load.pending),
                "max_connections": use_of(load.limits.max_connections, &load.connections),
            });
            json!({ "name": name, "endpoints": eps, "limits": limits })
        })
        .collect();
    json!({ "clusters": list })
}
