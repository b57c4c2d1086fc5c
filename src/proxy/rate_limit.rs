//! Rate limits (after route, after authentication and authorization,
//! before direct response): a route's `rate_limit:` token bucket, for the
//! whole route, per client IP or per caller identity. An empty bucket
//! refuses the request with `rate_limited` (RESOURCE_EXHAUSTED / 429) and
//! says when to retry; `src/proxy/respond.rs` adds `retry-after` and
//! `grpc-retry-pushback-ms`. The buckets are `src/rate_limit.rs`; they
//! belong to the pipeline, and a reload keeps those of every route whose
//! name and policy did not change ([`Pipeline::keep_rate_limits`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::Pipeline;
use crate::config::{Listener, RateLimit, RateLimitPer};
use crate::error::{ErrorCode, ProxyError};
use crate::rate_limit::{self as buckets, Bucket, KeyedBuckets, Rate};
use crate::telemetry::metrics::RouteLabels;
use crate::telemetry::Metrics;

/// One route's limit: its policy, its buckets, its refusal counter.
pub struct RouteLimit {
    policy: RateLimit,
    rate: Rate,
    buckets: Buckets,
    route: Arc<str>,
    /// `torii_rate_limited_total{listener,route}`, looked up once.
    refused: Counter,
}

enum Buckets {
    Route(Bucket),
    /// Per client IP, or per identity (and client IP for requests without
    /// one): one bounded map either way.
    Keyed(KeyedBuckets),
}

/// A key of a keyed bucket. The variant is hashed too: an identity that
/// reads like an address is not that address's bucket.
#[derive(Hash)]
enum Key<'a> {
    Ip(IpAddr),
    Identity(&'a str),
}

impl RouteLimit {
    fn new(policy: &RateLimit, route: &Arc<str>, listener: &str, metrics: &Metrics) -> Self {
        let buckets = match policy.per {
            RateLimitPer::Route => Buckets::Route(Bucket::default()),
            RateLimitPer::ClientIp | RateLimitPer::Identity => {
                Buckets::Keyed(KeyedBuckets::new(policy.max_keys))
            }
        };
        let refused = metrics
            .rate_limited
            .get_or_create(&RouteLabels {
                listener: listener.to_string(),
                route: route.to_string(),
            })
            .clone();
        RouteLimit {
            rate: Rate::new(policy.requests_per_second, policy.burst),
            policy: policy.clone(),
            buckets,
            route: route.clone(),
            refused,
        }
    }

    /// Takes a token at `now` for the caller (`identity`, else `ip`).
    #[inline]
    fn check(&self, identity: Option<&str>, ip: IpAddr, now: u64) -> Result<(), ProxyError> {
        let result = match &self.buckets {
            Buckets::Route(b) => b.check(&self.rate, now),
            Buckets::Keyed(k) => match (self.policy.per, identity) {
                (RateLimitPer::Identity, Some(id)) => k.check(Key::Identity(id), &self.rate, now),
                _ => k.check(Key::Ip(ip), &self.rate, now),
            },
        };
        result.map_err(|wait| self.refuse(identity, ip, wait))
    }

    #[cold]
    fn refuse(&self, identity: Option<&str>, ip: IpAddr, wait: Duration) -> ProxyError {
        self.refused.inc();
        let p = &self.policy;
        let limit = format!(
            "rate limit of {} requests per second (burst {})",
            p.requests_per_second, p.burst
        );
        let route = &self.route;
        let message = match (p.per, identity) {
            (RateLimitPer::Route, _) => format!("route {route} is over its {limit}"),
            (RateLimitPer::ClientIp, _) => {
                format!("client {ip} is over route {route}'s {limit} per client IP")
            }
            (RateLimitPer::Identity, Some(id)) => {
                format!("caller {id} is over route {route}'s {limit} per identity")
            }
            (RateLimitPer::Identity, None) => format!(
                "client {ip} (no identity, so its address counts) is over route {route}'s {limit} per identity"
            ),
        };
        ProxyError::new(
            ErrorCode::RateLimited,
            format!("{message}; retry in {}", in_words(wait)),
        )
        .retry_after(wait)
    }
}

/// `120 ms`, `1.5 s`: when to retry, for the message.
fn in_words(wait: Duration) -> String {
    let ms = wait.as_nanos().div_ceil(1_000_000).max(1);
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", wait.as_secs_f64())
    }
}

/// The limits of a listener's routes, by route index; empty when no route
/// has one (the phase then costs one length check).
pub(super) fn build(config: &Listener, metrics: &Metrics) -> Box<[Option<Arc<RouteLimit>>]> {
    if config.routes.iter().all(|r| r.rate_limit.is_none()) {
        return Box::new([]);
    }
    config
        .routes
        .iter()
        .map(|r| {
            r.rate_limit
                .as_ref()
                .map(|p| Arc::new(RouteLimit::new(p, &r.name, &config.name, metrics)))
        })
        .collect()
}

impl Pipeline {
    /// The phase: the route's bucket for this caller, if the route has a
    /// limit. `identity` is the caller's identity once authenticated (the
    /// mTLS client certificate's SAN until JWT and API keys exist); the
    /// time is the request's start (read once for the metrics already).
    #[inline]
    pub(super) fn rate_limit(
        &self,
        index: usize,
        identity: Option<&str>,
        ip: IpAddr,
        start: Instant,
    ) -> Result<(), ProxyError> {
        match self.rate_limits.get(index) {
            Some(Some(limit)) => limit.check(identity, ip, buckets::at(start)),
            _ => Ok(()),
        }
    }

    /// After a reload: every route of `old` with the same name and the
    /// same policy hands its buckets over, so a reload neither refills
    /// them nor forgets who used them up. A changed policy starts with
    /// full buckets.
    pub fn keep_rate_limits(&mut self, old: &Pipeline) {
        for new in self.rate_limits.iter_mut().flatten() {
            let same = old
                .rate_limits
                .iter()
                .flatten()
                .find(|o| o.route == new.route && o.policy == new.policy);
            if let Some(o) = same {
                *new = o.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per: RateLimitPer, burst: u32) -> RouteLimit {
        let policy = RateLimit {
            requests_per_second: 10.0,
            burst,
            per,
            max_keys: 1000,
        };
        RouteLimit::new(&policy, &Arc::from("l/0"), "l", &Metrics::new())
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn per_identity_falls_back_to_the_client_ip() {
        let l = limit(RateLimitPer::Identity, 2);
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        for _ in 0..2 {
            assert!(l.check(Some("spiffe://x/a"), a, S).is_ok());
        }
        // Another identity on the same address has its own bucket; so has
        // the address itself.
        assert!(l.check(Some("spiffe://x/b"), a, S).is_ok());
        assert!(l.check(None, a, S).is_ok());
        assert!(l.check(None, a, S).is_ok());
        let err = l.check(None, a, S).unwrap_err();
        assert_eq!(err.code, ErrorCode::RateLimited);
        assert_eq!(
            err.message,
            "client 127.0.0.2 (no identity, so its address counts) is over route l/0's rate limit of 10 requests per second (burst 2) per identity; retry in 100 ms"
        );
        let err = l.check(Some("spiffe://x/a"), b, S).unwrap_err();
        assert!(
            err.message.starts_with("caller spiffe://x/a is over"),
            "{}",
            err.message
        );
        assert_eq!(err.retry_after_ms.map(|m| m.get()), Some(100));
        assert_eq!(l.refused.get(), 2);
    }

    #[test]
    fn per_route_is_one_bucket_for_everyone() {
        let l = limit(RateLimitPer::Route, 3);
        let ips: [IpAddr; 4] = [
            [10, 0, 0, 1].into(),
            [10, 0, 0, 2].into(),
            [10, 0, 0, 3].into(),
            [10, 0, 0, 4].into(),
        ];
        let ok = ips
            .iter()
            .filter(|ip| l.check(None, **ip, S).is_ok())
            .count();
        assert_eq!(ok, 3);
        assert_eq!(in_words(Duration::from_millis(1500)), "1.5 s");
    }
}
