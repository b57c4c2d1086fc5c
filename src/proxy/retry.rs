//! A route's retry policy (`retry:`), part of phase 10 (forward): the
//! request is sent again, to the cluster's next pick, when an attempt
//! fails in a way the policy names and nothing of the answer reached the
//! client yet (gRPC's rule, proposal A6).
//!
//! To see a status that comes in trailers, torii holds a gRPC response's
//! head until its first message or its trailers, at most [`HOLD`] (or the
//! per-try timeout, if shorter); a message, or the time running out,
//! commits the attempt: its head goes to the client and it is never
//! retried. The request body is replayed from what the first attempt read
//! ([`crate::body::replay`], at most 64 KiB; a longer one is not retried).
//! Between attempts: the upstream's `grpc-retry-pushback-ms` (negative:
//! stop), else exponential backoff with full jitter. The request's own
//! deadline (`grpc-timeout`, the route's `timeout`) bounds all attempts
//! together (the caller's timeout), and the cluster's retry budget each
//! retry.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body::Body as _;

use super::Pipeline;
use crate::body::replay::Replayable;
use crate::body::{Body, Held, Received};
use crate::config::RetryPolicy;
use crate::error::{ErrorCode, ProxyError};
use crate::grpc;
use crate::telemetry::trace::AttemptEnd;
use crate::upstream::{ClusterRuntime, ExchangeGuard, Wire};

/// The longest a gRPC response head is held to learn the attempt's
/// outcome, when the policy has no shorter per-try timeout.
pub const HOLD: Duration = Duration::from_secs(1);

const PUSHBACK: &str = "grpc-retry-pushback-ms";

type Exchange = (Response<Received>, ExchangeGuard);

/// One attempt and how it went: its endpoint and a word (`ok`, the
/// retried status or failure, or the error code that ended it).
pub type Note = (Option<SocketAddr>, &'static str);

/// How one attempt ended.
enum Try {
    /// The answer (or failure) is final.
    Done(Result<Exchange, ProxyError>),
    /// The policy retries this: why (the metric's `reason`), the answer
    /// to give if no retry follows, and the upstream's pushback.
    Again {
        why: &'static str,
        answer: Result<Exchange, ProxyError>,
        pushback: Option<Pushback>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pushback {
    After(Duration),
    Stop,
}

/// What the retry loop needs besides the request.
pub(super) struct Retrying<'a> {
    pub policy: &'a RetryPolicy,
    pub cluster: &'a Arc<ClusterRuntime>,
    pub wire: Wire,
    pub grpc_req: bool,
    /// When the request's own deadline runs out.
    pub deadline: Option<Instant>,
    /// The request's trace, when torii records one: each attempt its
    /// CLIENT span.
    pub trace: Option<&'a mut crate::telemetry::trace::RequestTrace>,
}

impl Pipeline {
    /// Sends `req` under the route's retry policy. `endpoint` is the
    /// endpoint tried last; `notes` gets each attempt.
    pub(super) async fn retrying(
        &self,
        mut r: Retrying<'_>,
        req: Box<Request<Body>>,
        endpoint: &mut Option<SocketAddr>,
        notes: &mut Vec<Note>,
    ) -> Result<Exchange, ProxyError> {
        let policy = r.policy;
        let (parts, body) = (*req).into_parts();
        let replay = Replayable::new(body);
        let mut n = 0u32;
        loop {
            n += 1;
            let body = replay.attempt().unwrap_or_else(crate::body::empty);
            let mut req = Box::new(Request::from_parts(parts.clone(), body));
            if let Some(t) = r.trace.as_deref_mut() {
                t.attempt(req.headers_mut());
            }
            let mut ep = None;
            let tried = {
                let attempt = attempt(policy, req, r.cluster, r.wire, r.grpc_req, &mut ep);
                match policy.per_try_timeout {
                    Some(t) => tokio::time::timeout(t, attempt).await.map_err(|_| t),
                    None => Ok(attempt.await),
                }
            };
            let tried = match tried {
                Ok(tried) => tried,
                Err(t) => Try::Again {
                    why: "per_try_timeout",
                    answer: Err(ProxyError::new(
                        ErrorCode::UpstreamTimeout,
                        format!(
                            "upstream {} (cluster {}) did not answer within the route's per_try_timeout ({})",
                            ep.map(|e| e.to_string()).unwrap_or_else(|| "?".into()),
                            r.cluster.name,
                            crate::config::duration::display(t)
                        ),
                    )),
                    pushback: None,
                },
            };
            if ep.is_some() {
                *endpoint = ep;
            }
            let (why, answer, pushback) = match tried {
                Try::Done(result) => {
                    notes.push((ep, done_word(&result)));
                    replay.commit();
                    return with_attempts(result, notes);
                }
                Try::Again {
                    why,
                    answer,
                    pushback,
                } => (why, answer, pushback),
            };
            notes.push((ep, why));
            let delay = match pushback {
                Some(Pushback::After(d)) => d,
                _ => backoff(policy, n),
            };
            let stop = if n >= policy.attempts {
                Some("attempts")
            } else if pushback == Some(Pushback::Stop) {
                Some("pushback")
            } else if !replay.can_replay() {
                Some("body_too_large")
            } else if r.deadline.is_some_and(|d| Instant::now() + delay >= d) {
                Some("deadline")
            } else if !r.cluster.budget.allow() {
                Some("budget")
            } else {
                None
            };
            if let Some(stop) = stop {
                if stop != "attempts" {
                    r.cluster.count_retry_skipped(stop);
                    // Told at info, at most once per endpoint every few
                    // seconds (every one is counted).
                    let sentence = format!(
                        "a request to cluster {} was not retried after attempt {n} ({why}): {}",
                        r.cluster.name,
                        skip_reason(stop)
                    );
                    let at = endpoint.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                    r.cluster.connector().failures.note(
                        &r.cluster.name,
                        at,
                        "retry_skipped",
                        &sentence,
                    );
                }
                replay.commit();
                return with_attempts(answer, notes);
            }
            if let Ok((_, guard)) = &answer {
                // A failure the policy retries may be the endpoint's: the
                // outlier detection hears it like any other.
                if matches!(why, "unavailable" | "gateway_error" | "5xx") {
                    guard.cluster.report(&guard.ep, false, why);
                }
            }
            if let Some(t) = r.trace.as_deref_mut() {
                t.attempt_ended(attempt_end(ep, &answer, why));
            }
            drop(answer);
            r.cluster.count_retry(why);
            tracing::debug!(cluster = %r.cluster.name, attempt = n, reason = why, delay_ms = delay.as_millis() as u64, "retrying");
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One attempt: sent, and held until its outcome is known.
async fn attempt(
    policy: &RetryPolicy,
    req: Box<Request<Body>>,
    cluster: &Arc<ClusterRuntime>,
    wire: Wire,
    grpc_req: bool,
    ep: &mut Option<SocketAddr>,
) -> Try {
    let (resp, guard) = match cluster.send_noting(req, wire, ep).await {
        Ok(ok) => ok,
        Err(e) => {
            let why = match e.code {
                ErrorCode::UpstreamConnectRefused
                | ErrorCode::UpstreamConnectTimeout
                | ErrorCode::UpstreamConnectFailed
                    if policy.on.connect_failure =>
                {
                    "connect_failure"
                }
                ErrorCode::UpstreamReset if policy.on.reset => "reset",
                _ => return Try::Done(Err(e)),
            };
            return Try::Again {
                why,
                answer: Err(e),
                pushback: None,
            };
        }
    };
    if !grpc_req {
        return match policy.on.http_status(resp.status().as_u16()) {
            Some(why) => Try::Again {
                why,
                answer: Ok((resp, guard)),
                pushback: None,
            },
            None => Try::Done(Ok((resp, guard))),
        };
    }
    if let Some(code) = status_of(resp.headers()) {
        // Trailers-Only.
        let pushback = pushback_of(resp.headers());
        return judge(policy, code, pushback, (resp, guard));
    }
    if policy.on.grpc == 0 && !policy.on.reset {
        // Nothing in the trailers could make it retried: no need to hold.
        return Try::Done(Ok((resp, guard)));
    }
    // Hold the head until the first message or the trailers.
    let (parts, mut body) = resp.into_parts();
    let first = tokio::time::timeout(HOLD, poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))).await;
    let first = match first {
        Ok(first) => first,
        // Nothing yet: the answer is the client's from here on.
        Err(_) => return Try::Done(Ok((Response::from_parts(parts, body), guard))),
    };
    let trailers = first
        .as_ref()
        .and_then(|f| f.as_ref().ok())
        .and_then(|f| f.trailers_ref());
    let status = trailers.and_then(status_of);
    let pushback = trailers.and_then(pushback_of);
    let broke = matches!(first, Some(Err(_)));
    let held = Response::from_parts(parts, Received::Held(Box::new(Held { first, rest: body })));
    match status {
        Some(code) => judge(policy, code, pushback, (held, guard)),
        None if broke && policy.on.reset => Try::Again {
            why: "reset",
            answer: Ok((held, guard)),
            pushback: None,
        },
        None => Try::Done(Ok((held, guard))),
    }
}

/// What a retried attempt's answer tells its CLIENT span.
fn attempt_end(
    endpoint: Option<SocketAddr>,
    answer: &Result<Exchange, ProxyError>,
    why: &'static str,
) -> AttemptEnd {
    let mut end = AttemptEnd {
        endpoint,
        retried: Some(why),
        ..Default::default()
    };
    match answer {
        Ok((resp, _)) => {
            end.http_status = Some(resp.status().as_u16());
            // Trailers-Only, or the trailers a held response read ahead.
            let held = match resp.body() {
                Received::Held(h) => h
                    .first
                    .as_ref()
                    .and_then(|f| f.as_ref().ok())
                    .and_then(|f| f.trailers_ref()),
                _ => None,
            };
            end.grpc_status = status_of(resp.headers()).or_else(|| held.and_then(status_of));
        }
        Err(e) => end.error = Some(e.code),
    }
    end
}

fn judge(policy: &RetryPolicy, code: i32, pushback: Option<Pushback>, exchange: Exchange) -> Try {
    match policy.on.grpc_status(code) {
        Some(why) => Try::Again {
            why,
            answer: Ok(exchange),
            pushback,
        },
        None => Try::Done(Ok(exchange)),
    }
}

fn status_of(h: &http::HeaderMap) -> Option<i32> {
    h.get(&grpc::GRPC_STATUS)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `grpc-retry-pushback-ms`: a delay, or stop (negative or not a number).
fn pushback_of(h: &http::HeaderMap) -> Option<Pushback> {
    let v = h.get(PUSHBACK)?;
    match v.to_str().ok().and_then(|v| v.trim().parse::<i64>().ok()) {
        Some(ms) if ms >= 0 => Some(Pushback::After(Duration::from_millis(ms as u64))),
        _ => Some(Pushback::Stop),
    }
}

/// Full jitter: a random time up to min(max, base × 2^(n-1)).
fn backoff(policy: &RetryPolicy, n: u32) -> Duration {
    let ceiling = policy
        .backoff_base
        .saturating_mul(1u32 << (n - 1).min(20))
        .min(policy.backoff_max);
    let ms = ceiling.as_micros() as u64;
    Duration::from_micros(rand::random_range(0..=ms))
}

fn done_word(result: &Result<Exchange, ProxyError>) -> &'static str {
    match result {
        Ok(_) => "answered",
        Err(e) => e.code.as_str(),
    }
}

fn skip_reason(stop: &str) -> &'static str {
    match stop {
        "pushback" => "the upstream said not to (grpc-retry-pushback-ms)",
        "body_too_large" => "the request body is over the 64 KiB torii keeps to send it again",
        "deadline" => "the request's deadline would pass before the next attempt",
        _ => "the cluster's retry_budget is spent",
    }
}

/// A failure after several attempts says what each got.
fn with_attempts(
    result: Result<Exchange, ProxyError>,
    notes: &[Note],
) -> Result<Exchange, ProxyError> {
    result.map_err(|mut e| {
        if notes.len() > 1 {
            e.message.push_str(&format!(
                "; torii made {} attempts: {}",
                notes.len(),
                describe(notes)
            ));
        }
        e
    })
}

/// `1: 127.0.0.1:5001 unavailable, 2: ...`
pub fn describe(notes: &[Note]) -> String {
    notes
        .iter()
        .enumerate()
        .map(|(i, (ep, what))| match ep {
            Some(ep) => format!("{}: {ep} {what}", i + 1),
            None => format!("{}: {what}", i + 1),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
