//! A route's retry policy (`retry:`), part of phase 10 (forward): the
//! request is sent again, to the cluster's next pick, when an attempt
//! fails in a way the policy names and nothing of the answer reached the
//! client yet (gRPC's rule, proposal A6).
//!
//! To see a status that comes in trailers, torii holds a gRPC response's
//! head until its first message or its trailers, at most [`HOLD`] (or the
//! per-try timeout, if shorter); a message, or the time running out,
//! commits the attempt: its head goes to the client and it is never
//! retried. The request is not copied to be sent again: over HTTP/2 the
//! upstream transport keeps what it sent (the head, the body's chunks
//! refcounted, at most 64 KiB of body; a longer one is not retried) and
//! gives it back ([`crate::upstream::send::Kept`]). Over HTTP/1.1, and
//! with a per-try timeout (which abandons an attempt, request and all),
//! the head is copied and the body replayed from what the first attempt
//! read ([`crate::body::replay`], the same 64 KiB).
//! Between attempts: the upstream's `grpc-retry-pushback-ms` (negative:
//! stop), else exponential backoff with full jitter. The request's own
//! deadline (`grpc-timeout`, the route's `timeout`) bounds all attempts
//! together (the caller's timeout), and the cluster's retry budget each
//! retry.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body::Body as _;

use super::Pipeline;
use crate::body::h2::H2Received;
use crate::body::replay::Replayable;
use crate::body::{Body, Held, Received};
use crate::config::RetryPolicy;
use crate::error::{ErrorCode, ProxyError};
use crate::grpc;
use crate::http2::Peek;
use crate::telemetry::trace::AttemptEnd;
use crate::upstream::send::Failed;
use crate::upstream::{ClusterRuntime, ExchangeGuard, Wire};

/// The longest a gRPC response head is held to learn the attempt's
/// outcome, when the policy has no shorter per-try timeout.
pub const HOLD: Duration = Duration::from_secs(1);

const PUSHBACK: &str = "grpc-retry-pushback-ms";

type Exchange = (Response<Received>, ExchangeGuard);

/// One attempt and how it went: its endpoint and a word (`ok`, the
/// retried status or failure, or the error code that ended it).
pub type Note = (Option<SocketAddr>, &'static str);

/// Each attempt's note, the first inline: most requests make one attempt,
/// and a Vec would allocate for it.
#[derive(Default)]
pub struct Notes {
    first: Option<Note>,
    more: Vec<Note>,
}

impl Notes {
    pub fn push(&mut self, note: Note) {
        match self.first {
            None => self.first = Some(note),
            Some(_) => self.more.push(note),
        }
    }

    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Note> {
        self.first.iter().chain(&self.more)
    }
}

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

/// Where each retry's request comes from.
enum Source {
    /// HTTP/2: the upstream transport keeps the request it sent and gives
    /// it back.
    Lent,
    /// HTTP/1.1 (hyper takes the request whole), or a per-try timeout
    /// (which abandons an attempt, request and all): a copy of the head;
    /// the body replayed from what the first attempt read.
    Copied(Box<http::request::Parts>, Replayable),
}

impl Source {
    /// The source, and the first attempt's request: lent when the
    /// transport keeps what it sends (HTTP/2) and no per-try timeout may
    /// abandon an attempt.
    fn new(
        req: Box<Request<Body>>,
        policy: &RetryPolicy,
        wire: Wire,
    ) -> (Source, Box<Request<Body>>) {
        if wire == Wire::Http2 && policy.per_try_timeout.is_none() {
            return (Source::Lent, req);
        }
        let (parts, body) = (*req).into_parts();
        let replay = Replayable::new(body);
        let body = replay.attempt().unwrap_or_else(crate::body::empty);
        let first = Box::new(Request::from_parts(parts.clone(), body));
        (Source::Copied(Box::new(parts), replay), first)
    }

    /// Whether another attempt could send the request whole, after
    /// `answer` (and `back`, the request a failure gave back).
    fn can_replay(&self, answer: &Result<Exchange, ProxyError>, back: bool) -> bool {
        match self {
            Source::Lent => back || kept_body(answer).is_some_and(|b| b.can_take_request()),
            Source::Copied(_, replay) => replay.can_replay(),
        }
    }

    /// The answer is the client's: nothing will be sent again, so nothing
    /// more of the request is kept.
    fn commit(&self, answer: &mut Result<Exchange, ProxyError>) {
        match self {
            Source::Lent => {
                if let Some(body) = kept_body_mut(answer) {
                    body.release_request();
                }
            }
            Source::Copied(_, replay) => replay.commit(),
        }
    }

    /// The request for the next attempt: a lent one comes back from the
    /// failure (`back`) or from the answer's body (which ends that
    /// exchange). None when it cannot be sent whole (a body still
    /// streaming in went past what is kept): the answer, with what was
    /// read of its body ahead, is then the client's.
    async fn again(
        &self,
        answer: &mut Result<Exchange, ProxyError>,
        back: Option<Box<Request<Body>>>,
    ) -> Option<Box<Request<Body>>> {
        if let Source::Copied(parts, replay) = self {
            let body = replay.attempt()?;
            return Some(Box::new(Request::from_parts((**parts).clone(), body)));
        }
        if back.is_some() {
            return back;
        }
        let (resp, _) = answer.as_mut().ok()?;
        // A lent request's answer is always an HTTP/2 body, looked at in
        // place (never held).
        match std::mem::replace(resp.body_mut(), crate::body::nothing()) {
            Received::H2(body) => body.take_request().await.map(Box::new),
            body => {
                *resp.body_mut() = body;
                None
            }
        }
    }
}

/// The body of an HTTP/2 answer that holds its request (sent keeping it).
fn kept_body(answer: &Result<Exchange, ProxyError>) -> Option<&H2Received> {
    match answer.as_ref().ok()?.0.body() {
        Received::H2(b) => Some(b),
        _ => None,
    }
}

fn kept_body_mut(answer: &mut Result<Exchange, ProxyError>) -> Option<&mut H2Received> {
    match answer.as_mut().ok()?.0.body_mut() {
        Received::H2(b) => Some(b),
        _ => None,
    }
}

/// An attempt the policy wants retried.
struct Retryable {
    /// Its number (1 for the first).
    n: u32,
    ep: Option<SocketAddr>,
    /// Why (the metric's `reason`).
    why: &'static str,
    /// The answer to give if no retry follows.
    answer: Result<Exchange, ProxyError>,
    pushback: Option<Pushback>,
    /// The request, when the failure gave it back.
    back: Option<Box<Request<Body>>>,
}

/// Attempt number `n` under the policy: sent, and its outcome judged.
/// Ok: the answer is final (the request is let go of). Err: the policy
/// wants it retried.
async fn attempt_once(
    r: &mut Retrying<'_>,
    source: &Source,
    mut req: Box<Request<Body>>,
    n: u32,
    endpoint: &mut Option<SocketAddr>,
    notes: &mut Notes,
) -> Result<Result<Exchange, ProxyError>, Box<Retryable>> {
    let policy = r.policy;
    if let Some(t) = r.trace.as_deref_mut() {
        t.attempt(req.headers_mut());
    }
    let mut ep = None;
    let mut back = None;
    let lent = matches!(source, Source::Lent);
    let tried = {
        let back = lent.then_some(&mut back);
        let attempt = attempt(policy, req, r.cluster, r.wire, r.grpc_req, &mut ep, back);
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
    match tried {
        Try::Done(mut result) => {
            notes.push((ep, done_word(&result)));
            source.commit(&mut result);
            with_attempts(&mut result, notes);
            Ok(result)
        }
        Try::Again {
            why,
            answer,
            pushback,
        } => {
            notes.push((ep, why));
            Err(Box::new(Retryable {
                n,
                ep,
                why,
                answer,
                pushback,
                back,
            }))
        }
    }
}

impl Pipeline {
    /// Sends `req` under the route's retry policy, within `limit` (None:
    /// it passed). `endpoint` is the endpoint tried last; `notes` gets
    /// each attempt. The first attempt runs here, as a request without a
    /// policy would; the rest of the loop (boxed: it is large) only when
    /// the policy asks for another attempt.
    pub(super) async fn retrying(
        &self,
        mut r: Retrying<'_>,
        req: Box<Request<Body>>,
        limit: Option<Duration>,
        endpoint: &mut Option<SocketAddr>,
        notes: &mut Notes,
    ) -> Option<Result<Exchange, ProxyError>> {
        let until = limit.map(|d| tokio::time::Instant::now() + d);
        let (source, req) = Source::new(req, r.policy, r.wire);
        let first = attempt_once(&mut r, &source, req, 1, endpoint, notes);
        let first = match until {
            Some(at) => tokio::time::timeout_at(at, first).await.ok()?,
            None => first.await,
        };
        let failed = match first {
            Ok(result) => return Some(result),
            Err(failed) => failed,
        };
        Box::pin(async {
            let rest = self.retry_rest(r, source, failed, endpoint, notes);
            match until {
                Some(at) => tokio::time::timeout_at(at, rest).await.ok(),
                None => Some(rest.await),
            }
        })
        .await
    }

    /// The attempts after `failed`, until one is final or the policy
    /// stops.
    async fn retry_rest(
        &self,
        mut r: Retrying<'_>,
        source: Source,
        mut failed: Box<Retryable>,
        endpoint: &mut Option<SocketAddr>,
        notes: &mut Notes,
    ) -> Result<Exchange, ProxyError> {
        let policy = r.policy;
        loop {
            let Retryable {
                n,
                ep,
                why,
                mut answer,
                pushback,
                back,
            } = *failed;
            let delay = match pushback {
                Some(Pushback::After(d)) => d,
                _ => backoff(policy, n),
            };
            let stop = if n >= policy.attempts {
                Some("attempts")
            } else if pushback == Some(Pushback::Stop) {
                Some("pushback")
            } else if !source.can_replay(&answer, back.is_some()) {
                Some("body_too_large")
            } else if r.deadline.is_some_and(|d| Instant::now() + delay >= d) {
                Some("deadline")
            } else if !r.cluster.budget.allow() {
                Some("budget")
            } else {
                None
            };
            // The attempt as its CLIENT span tells it, read before a lent
            // request is taken back out of the answer's body.
            let end = match (stop, &r.trace) {
                (None, Some(_)) => Some(attempt_end(ep, &answer, why)),
                _ => None,
            };
            // The last check: taking a lent request back from a body still
            // streaming in ends the exchange, and may find it too large.
            let next = match stop {
                Some(stop) => Err(stop),
                None => source
                    .again(&mut answer, back)
                    .await
                    .ok_or("body_too_large"),
            };
            let next = match next {
                Ok(next) => next,
                Err(stop) => {
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
                    source.commit(&mut answer);
                    with_attempts(&mut answer, notes);
                    return answer;
                }
            };
            if let Ok((_, guard)) = &answer {
                // A failure the policy retries may be the endpoint's: the
                // outlier detection hears it like any other.
                if matches!(why, "unavailable" | "gateway_error" | "5xx") {
                    guard.cluster.report(&guard.ep, false, why);
                }
            }
            if let (Some(t), Some(end)) = (r.trace.as_deref_mut(), end) {
                t.attempt_ended(end);
            }
            drop(answer);
            r.cluster.count_retry(why);
            tracing::debug!(cluster = %r.cluster.name, attempt = n, reason = why, delay_ms = delay.as_millis() as u64, "retrying");
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match attempt_once(&mut r, &source, next, n + 1, endpoint, notes).await {
                Ok(result) => return result,
                Err(again) => failed = again,
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
    // Where a failure gives the request back, when the transport keeps it.
    back: Option<&mut Option<Box<Request<Body>>>>,
) -> Try {
    let keep = back.is_some();
    let (mut resp, guard) = match cluster.send_keeping(req, wire, ep, keep).await {
        Ok(ok) => ok,
        Err(Failed { error: e, request }) => {
            if let Some(back) = back {
                *back = request;
            }
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
    if let Received::H2(body) = resp.body_mut() {
        if policy.on.grpc == 0 && !policy.on.reset {
            // No status could make it retried: no need to look.
            return Try::Done(Ok((resp, guard)));
        }
        // HTTP/2: the first frame looked at where it is, not taken out;
        // the head's fields only when the body ended with it
        // (Trailers-Only).
        let first = match poll_fn(|cx| Poll::Ready(body.poll_peek(cx, look))).await {
            Poll::Ready(first) => first,
            Poll::Pending => {
                let waited = tokio::time::timeout(HOLD, poll_fn(|cx| body.poll_peek(cx, look)));
                match waited.await {
                    Ok(first) => first,
                    // Nothing yet: the answer is the client's from here on.
                    Err(_) => return Try::Done(Ok((resp, guard))),
                }
            }
        };
        return match first {
            Look::End => match status_of(resp.headers()) {
                Some(code) => {
                    let pushback = pushback_of(resp.headers());
                    judge(policy, code, pushback, (resp, guard))
                }
                None => Try::Done(Ok((resp, guard))),
            },
            Look::Status(Some(code), pushback) => judge(policy, code, pushback, (resp, guard)),
            Look::Broke if policy.on.reset => Try::Again {
                why: "reset",
                answer: Ok((resp, guard)),
                pushback: None,
            },
            _ => Try::Done(Ok((resp, guard))),
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

/// The first frame of an HTTP/2 answer, looked at.
enum Look {
    /// A message: the answer is final.
    Data,
    /// The body ended without trailers (with the head: Trailers-Only).
    End,
    /// Trailers: their status and pushback.
    Status(Option<i32>, Option<Pushback>),
    /// The stream broke.
    Broke,
}

fn look(p: Peek<'_>) -> Look {
    match p {
        Peek::Trailers(t) => Look::Status(status_of(t), pushback_of(t)),
        Peek::Error => Look::Broke,
        Peek::Data => Look::Data,
        Peek::End => Look::End,
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
                    .and_then(|f| f.trailers_ref())
                    .and_then(status_of),
                Received::H2(body) => body
                    .peek_now(|p| match p {
                        Peek::Trailers(t) => status_of(t),
                        _ => None,
                    })
                    .flatten(),
                _ => None,
            };
            end.grpc_status = status_of(resp.headers()).or(held);
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
/// In place: an answer is large, and moving it costs on every request.
fn with_attempts(result: &mut Result<Exchange, ProxyError>, notes: &Notes) {
    if let Err(e) = result {
        if notes.len() > 1 {
            e.message.push_str(&format!(
                "; torii made {} attempts: {}",
                notes.len(),
                describe(notes)
            ));
        }
    }
}

/// `1: 127.0.0.1:5001 unavailable, 2: ...`
pub fn describe(notes: &Notes) -> String {
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
