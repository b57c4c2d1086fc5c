//! `rate_limit:` on a route: a token bucket (`requests_per_second`,
//! `burst`) for the whole route, per client IP, or per caller identity,
//! local to this process. Checked here with every problem's place; the
//! buckets themselves are `src/rate_limit.rs`, the phase
//! `src/proxy/rate_limit.rs`.

use super::context::{one_of, Ctx};
use super::locate::join;
use super::raw::RawRateLimit;

/// Keys a route keeps buckets for, unless `max_keys` says otherwise.
pub const DEFAULT_MAX_KEYS: usize = crate::rate_limit::DEFAULT_MAX_KEYS;
const MAX_RATE: f64 = 1e9;
const MAX_BURST: i64 = 1_000_000_000;
const MAX_KEYS: i64 = 100_000_000;

/// A route's rate limit, as the file says it (defaults filled in). Two
/// equal policies on the same route keep their buckets across a reload.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    pub requests_per_second: f64,
    /// Requests that may come at once after a quiet spell (default: one
    /// second's worth, at least 1).
    pub burst: u32,
    pub per: RateLimitPer,
    /// Per client IP or identity: the most keys with a bucket at once.
    pub max_keys: usize,
}

/// Whose bucket a request takes a token from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitPer {
    /// One bucket for the whole route.
    Route,
    /// One per client IP address (the connection's peer).
    ClientIp,
    /// One per caller identity (the mTLS client certificate's SAN today);
    /// a request without one takes its client IP's.
    Identity,
}

impl RateLimitPer {
    const NAMES: [&'static str; 3] = ["route", "client_ip", "identity"];

    pub fn as_str(self) -> &'static str {
        match self {
            RateLimitPer::Route => "route",
            RateLimitPer::ClientIp => "client_ip",
            RateLimitPer::Identity => "identity",
        }
    }
}

/// `Some(None)`: no rate limit; `None`: a problem was reported.
pub fn rate_limit(
    cx: &mut Ctx,
    path: &str,
    raw: Option<RawRateLimit>,
) -> Option<Option<RateLimit>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    let rate_at = join(path, "requests_per_second");
    let rate = match raw.requests_per_second {
        None => {
            cx.error(
                path,
                format!("{rate_at} is missing; write how many requests a second the route takes, like 100"),
            );
            None
        }
        Some(r) if !(r > 0.0 && r <= MAX_RATE) => {
            cx.error(
                &rate_at,
                format!("{rate_at} is {r}; it must be more than 0 and at most 1000000000 (0.5 is one request every 2 seconds)"),
            );
            None
        }
        Some(r) => Some(r),
    };
    let burst_at = join(path, "burst");
    let burst = match raw.burst {
        None => Some(rate.map_or(1, |r: f64| r.ceil().max(1.0) as u32)),
        Some(b) if (1..=MAX_BURST).contains(&b) => Some(b as u32),
        Some(b) => {
            cx.error(
                &burst_at,
                format!("{burst_at} is {b}; it must be at least 1 (how many requests may come at once) and at most {MAX_BURST}"),
            );
            None
        }
    };
    let per_at = join(path, "per");
    let per = match raw.per.as_deref().map(str::trim) {
        None | Some("route") => Some(RateLimitPer::Route),
        Some("client_ip") => Some(RateLimitPer::ClientIp),
        Some("identity") => Some(RateLimitPer::Identity),
        Some(other) => {
            cx.error(&per_at, one_of(&per_at, other, &RateLimitPer::NAMES));
            None
        }
    };
    let keys_at = join(path, "max_keys");
    let max_keys = match raw.max_keys {
        None => Some(DEFAULT_MAX_KEYS),
        Some(n) if (1..=MAX_KEYS).contains(&n) => Some(n as usize),
        Some(n) => {
            cx.error(
                &keys_at,
                format!("{keys_at} is {n}; it must be at least 1 and at most {MAX_KEYS} (each key takes about 70 bytes)"),
            );
            None
        }
    };
    let limit = RateLimit {
        requests_per_second: rate?,
        burst: burst?,
        per: per?,
        max_keys: max_keys?,
    };
    if raw.burst.is_some() && f64::from(limit.burst) < limit.requests_per_second {
        cx.warning(
            &burst_at,
            format!(
                "{burst_at} {} is below {rate_at} {}: requests that arrive together are refused even while the route is well under its rate (write a burst of at least {}, one second's worth)",
                limit.burst,
                limit.requests_per_second,
                limit.requests_per_second.ceil()
            ),
        );
    }
    if raw.max_keys.is_some() && limit.per == RateLimitPer::Route {
        cx.warning(
            &keys_at,
            format!("{keys_at} has no effect with per: route (one bucket); it bounds the buckets of per: client_ip or identity"),
        );
    }
    Some(Some(limit))
}
