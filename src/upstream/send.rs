//! Sending a request to a cluster: pick an endpoint, lease a connection,
//! send; try again where that is safe — another endpoint when connecting
//! fails, another connection when a pooled one turns out closed, and the
//! same request again when the upstream did not process it.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};

use super::connect::{self, Wire};
use super::h2client::{H2Client, SendError};
use super::pool::{CountGuard, Endpoint, Lease};
use super::{ClusterRuntime, ExchangeGuard, MAX_CONNECT_ATTEMPTS};
use crate::body::h2::RECORD_LIMIT;
use crate::body::{Body, Received};
use crate::error::{ErrorCode, ProxyError};
use crate::http2::{Error as H2Error, Reason};
use crate::telemetry::metrics::UpstreamErrorLabels;

/// How often a request refused unprocessed by upstreams (REFUSED_STREAM,
/// GOAWAY) is sent again: as often as connecting is tried, so a cluster
/// where one endpoint restarts still answers.
const MAX_REFUSED_RETRIES: u32 = 2;

/// Pooled connections found closed give the request back unsent; those
/// retries do not count as attempts, but are bounded too.
const MAX_STALE_RETRIES: u32 = 4;

type Exchange = Result<(Response<Received>, ExchangeGuard), ProxyError>;

/// An exchange sent for a retry policy: a failure gives the request back
/// when it can be sent again.
pub type Kept = Result<(Response<Received>, ExchangeGuard), Failed>;

/// A failed exchange, and the request when it came back whole.
pub struct Failed {
    pub error: ProxyError,
    pub request: Option<Box<Request<Body>>>,
}

impl Failed {
    fn of(error: ProxyError, request: Option<Box<Request<Body>>>) -> Failed {
        Failed { error, request }
    }
}

/// How one attempt on a leased connection ended. Returned by value: a
/// box would cost an allocation per request on the hot path.
#[allow(clippy::large_enum_variant)]
enum Attempt {
    Done(Kept),
    /// The connection was closed before anything was sent.
    Stale(Box<Request<Body>>),
    /// The upstream did not process the request (the retry's `reason`).
    Refused(Box<Request<Body>>, &'static str),
}

/// What an attempt may do when it fails.
#[derive(Clone, Copy)]
struct Budget {
    stale: bool,
    refused: bool,
    /// A retry policy's request: kept to be given back (`send_keeping`).
    keep: bool,
}

impl ClusterRuntime {
    /// Sends `req` to an endpoint, trying others when connecting fails.
    /// Returns the response head with a guard that must live as long as the
    /// response body. The request is boxed: it passes through several
    /// futures, and each would otherwise hold a copy of it.
    pub async fn send(self: &Arc<Self>, req: Box<Request<Body>>, wire: Wire) -> Exchange {
        self.send_noting(req, wire, &mut None).await
    }

    /// [`send`](Self::send), noting in `endpoint` the endpoint it tried
    /// last: where a failed request went (the access log's `upstream`).
    pub async fn send_noting(
        self: &Arc<Self>,
        req: Box<Request<Body>>,
        wire: Wire,
        endpoint: &mut Option<SocketAddr>,
    ) -> Exchange {
        self.send_keeping(req, wire, endpoint, false)
            .await
            .map_err(|f| f.error)
    }

    /// [`send_noting`](Self::send_noting) for a retry policy: with
    /// `keep`, the request comes back in a failure, or from the response
    /// body ([`crate::body::h2::H2Received::take_request`]) on HTTP/2,
    /// whenever it can be sent whole again — no copy of it is made to
    /// keep it. Without `keep`, only a request certainly not sent comes
    /// back.
    pub async fn send_keeping(
        self: &Arc<Self>,
        req: Box<Request<Body>>,
        wire: Wire,
        endpoint: &mut Option<SocketAddr>,
        keep: bool,
    ) -> Kept {
        // One of the cluster's max_requests places, kept by the exchange's
        // guard until the response body ends.
        let admitted = match self.connector.load.admit() {
            Ok(a) => a,
            Err(e) => return Err(Failed::of(e, Some(req))),
        };
        let mut exchange = self.send_admitted(req, wire, endpoint, keep).await;
        if let Ok((_, guard)) = &mut exchange {
            admitted.keep();
            guard.admitted = true;
        }
        exchange
    }

    async fn send_admitted(
        self: &Arc<Self>,
        mut req: Box<Request<Body>>,
        wire: Wire,
        endpoint: &mut Option<SocketAddr>,
        keep: bool,
    ) -> Kept {
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut last_err = None;
        let attempts = MAX_CONNECT_ATTEMPTS.min(self.endpoints.load().len().max(1));
        let mut stale_left = MAX_STALE_RETRIES;
        let mut refused_left = MAX_REFUSED_RETRIES;
        // The endpoints that refused the request, for the final error.
        let mut refused: Vec<SocketAddr> = Vec::new();
        while tried.len() < attempts {
            let Some(ep) = self.pick(&tried) else { break };
            *endpoint = Some(ep.addr);
            let active = CountGuard::new(&ep.active);
            let lease = match ep.lease(&self.connector, wire).await {
                Ok(l) => l,
                // A cluster limit: refused at once, the endpoint not at fault.
                Err(e) if e.code == ErrorCode::Overloaded => return Err(Failed::of(e, Some(req))),
                Err(e) => {
                    tracing::debug!(cluster = %self.config.name, endpoint = %ep.addr, error = %e, "connect failed; trying another endpoint");
                    self.report(&ep, false, e.code.as_str());
                    tried.push(ep.addr);
                    last_err = Some(e);
                    continue;
                }
            };
            let budget = Budget {
                stale: stale_left > 0,
                refused: refused_left > 0,
                keep,
            };
            let attempt = match lease {
                Lease::H2 { send, first, guard } => {
                    let guard = self.guard(&ep, active, Some(guard), None);
                    self.attempt_h2(send, req, guard, budget, &refused, &first)
                        .await
                }
                Lease::H1(mut send, first) => match send.try_send_request(*req).await {
                    Ok(resp) => {
                        let guard = self.guard(&ep, active, None, Some((send, first)));
                        Attempt::Done(Ok((resp.map(Received::H1), guard)))
                    }
                    Err(mut e) => match e.take_message() {
                        Some(back) if budget.stale => Attempt::Stale(Box::new(back)),
                        back => {
                            let err = connect::explain_h1_failure(
                                e.error(),
                                &first,
                                ep.addr,
                                &self.config.name,
                            );
                            self.log_failure(ep.addr, &err);
                            Attempt::Done(Err(Failed::of(err, back.map(Box::new))))
                        }
                    },
                },
            };
            match attempt {
                Attempt::Done(exchange) => return exchange,
                Attempt::Stale(back) => {
                    stale_left -= 1;
                    req = back;
                }
                Attempt::Refused(back, why) => {
                    refused_left -= 1;
                    self.count_retry(why);
                    refused.push(ep.addr);
                    // Another endpoint next, when there is one to try.
                    if tried.len() + 1 < attempts {
                        tried.push(ep.addr);
                    }
                    req = back;
                }
            }
        }
        let error = last_err.unwrap_or_else(|| self.no_endpoint_error());
        Err(Failed::of(error, Some(req)))
    }

    fn guard(
        self: &Arc<Self>,
        ep: &Arc<Endpoint>,
        active: CountGuard,
        stream: Option<CountGuard>,
        h1: Option<(
            hyper::client::conn::http1::SendRequest<Body>,
            connect::FirstBytes,
        )>,
    ) -> ExchangeGuard {
        ExchangeGuard {
            _active: active,
            ep: ep.clone(),
            cluster: self.clone(),
            _stream: stream,
            h1,
            admitted: false,
        }
    }

    /// One attempt on an HTTP/2 connection.
    async fn attempt_h2(
        &self,
        mut send: H2Client,
        req: Box<Request<Body>>,
        guard: ExchangeGuard,
        budget: Budget,
        refused_before: &[SocketAddr],
        first: &connect::FirstBytes,
    ) -> Attempt {
        let sent = match send.ready().await {
            // Closed or going away before anything was sent: another
            // connection (or endpoint) may take it.
            Err(_) if budget.stale => return Attempt::Stale(req),
            Err(error) => Err(SendError {
                error,
                unprocessed: false,
                request: Some(req),
            }),
            Ok(()) => send.send(req, budget.keep).await,
        };
        let e = match sent {
            Ok(resp) => return Attempt::Done(Ok((resp, guard))),
            // Not processed (RFC 9113 §8.7): safe to send again, whatever
            // the method.
            Err(SendError {
                error,
                unprocessed: true,
                request: Some(back),
            }) if budget.refused => {
                let why = refusal(&error);
                tracing::debug!(cluster = %self.config.name, endpoint = %guard.ep.addr, %error, "the upstream did not process the request ({why}); sending it again");
                return Attempt::Refused(back, why);
            }
            Err(e) => e,
        };
        let ep = &guard.ep;
        if let H2Error::Cancelled(_) = e.error {
            // torii cancelled the stream itself: the request body from the
            // client broke off (the client reset its stream or broke a rule
            // on it). Not the upstream's fault: no outlier report.
            let err = client_cancelled(ep.addr, &self.config.name);
            return Attempt::Done(Err(Failed::of(err, e.request)));
        }
        let mut err = connect::explain_h2_failure(&e.error, first, ep.addr, &self.config.name);
        if refused_unprocessed(&e.error) && !(e.unprocessed && e.request.is_some()) {
            err.message.push_str(&format!(
                "; torii could not send it again: it keeps at most {} KiB of a request body for that, and more of this one had gone out (or it broke off)",
                RECORD_LIMIT / 1024
            ));
        }
        if !refused_before.is_empty() {
            let who: Vec<String> = refused_before.iter().map(ToString::to_string).collect();
            err.message.push_str(&format!(
                "; it was the request's attempt {} (earlier ones refused unprocessed by {})",
                refused_before.len() + 1,
                who.join(", ")
            ));
        }
        self.report(ep, false, err.code.as_str());
        self.log_failure(ep.addr, &err);
        Attempt::Done(Err(Failed::of(err, e.request)))
    }

    /// Tells an upstream failure at info (at most once per endpoint and
    /// code every few seconds): its sentence names endpoint and cluster.
    pub fn log_failure(&self, endpoint: SocketAddr, err: &ProxyError) {
        self.connector.failures.note(
            &self.config.name,
            endpoint,
            err.code.as_str(),
            &format!("request failed ({}): {}", err.code, err.message),
        );
    }

    /// Counts a request sent again, by why (`torii_upstream_retries_total`).
    pub fn count_retry(&self, why: &'static str) {
        self.metrics
            .upstream_retries
            .get_or_create(&UpstreamErrorLabels {
                cluster: self.config.name.clone(),
                reason: why.to_string(),
            })
            .inc();
    }
}

impl ClusterRuntime {
    /// Counts a retry a policy wanted but did not send, by why.
    pub fn count_retry_skipped(&self, why: &'static str) {
        self.metrics
            .resilience
            .retries_skipped
            .get_or_create(&crate::telemetry::resilience::SkipLabels {
                cluster: self.config.name.clone(),
                reason: why,
            })
            .inc();
    }
}

/// The error of an exchange torii cancelled because the client's side of
/// it broke off.
pub fn client_cancelled(addr: SocketAddr, cluster: &str) -> ProxyError {
    ProxyError::new(
        crate::error::ErrorCode::ClientCancelled,
        format!("the client abandoned the request before its response ended (it reset its stream, or broke HTTP/2 rules on it), so torii cancelled the stream to upstream {addr} (cluster {cluster}); the upstream is not at fault"),
    )
}

/// The upstream said it did not process the stream (RFC 9113 §8.7).
fn refused_unprocessed(e: &H2Error) -> bool {
    matches!(
        e,
        H2Error::Reset(Reason::REFUSED_STREAM) | H2Error::GoAway { remote: true, .. }
    )
}

/// The `reason` label of a retry: how the upstream refused.
fn refusal(e: &H2Error) -> &'static str {
    match e {
        H2Error::Reset(_) => "refused_stream",
        H2Error::GoAway { remote: true, .. } => "goaway",
        // The connection ended before the request was written.
        _ => "not_sent",
    }
}
