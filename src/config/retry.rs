//! Resilience settings: a route's `retry:` policy, a cluster's
//! `retry_budget` and `limits` (circuit breaking). Read from the raw
//! structs like every other section, each problem at its line and column.

use std::time::Duration;

use serde::Deserialize;

use super::context::{one_of, Ctx};
use super::locate::join;

#[derive(Debug, Default, Deserialize)]
pub struct RawRetry {
    pub on: Option<Vec<String>>,
    pub attempts: Option<i64>,
    pub per_try_timeout: Option<String>,
    pub backoff: Option<RawBackoff>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawBackoff {
    pub base: Option<String>,
    pub max: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRetryBudget {
    pub ratio: Option<f64>,
    pub min_per_second: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    pub max_connections: Option<i64>,
    pub max_pending_requests: Option<i64>,
    pub max_requests: Option<i64>,
}

/// The gRPC statuses a policy may retry on, by their snake_case names.
pub const RETRY_STATUSES: &[(&str, i32)] = &[
    ("cancelled", 1),
    ("unknown", 2),
    ("deadline_exceeded", 4),
    ("resource_exhausted", 8),
    ("aborted", 10),
    ("internal", 13),
    ("unavailable", 14),
];

/// The failures a policy retries on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// Bit `n`: gRPC status code `n`.
    pub grpc: u32,
    pub connect_failure: bool,
    pub reset: bool,
    /// Any HTTP 5xx (non-gRPC requests).
    pub http_5xx: bool,
    /// HTTP 502, 503, 504 (non-gRPC requests).
    pub gateway_error: bool,
}

impl RetryOn {
    /// The name of gRPC status `code` when the policy retries on it.
    pub fn grpc_status(&self, code: i32) -> Option<&'static str> {
        if !(0..32).contains(&code) || self.grpc & (1 << code) == 0 {
            return None;
        }
        RETRY_STATUSES
            .iter()
            .find(|(_, c)| *c == code)
            .map(|(n, _)| *n)
    }

    /// The reason an HTTP `status` is retried for, if it is.
    pub fn http_status(&self, status: u16) -> Option<&'static str> {
        if self.gateway_error && matches!(status, 502..=504) {
            Some("gateway_error")
        } else if self.http_5xx && (500..=599).contains(&status) {
            Some("5xx")
        } else {
            None
        }
    }
}

/// A route's retry policy (`retry:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub on: RetryOn,
    /// In total, the first included (2 to 10).
    pub attempts: u32,
    /// Each attempt's time until torii commits to its answer.
    pub per_try_timeout: Option<Duration>,
    /// Exponential backoff with full jitter: attempt n waits a random time
    /// up to min(max, base × 2^(n-1)).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

pub const DEFAULT_RETRY_ATTEMPTS: u32 = 3;
pub const MAX_RETRY_ATTEMPTS: u32 = 10;
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// How much retries may add to a cluster's load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// Retries per second at most this share of the requests per second.
    pub ratio: f64,
    /// Retries per second always allowed, however few the requests.
    pub min_per_second: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: 0.2,
            min_per_second: 10,
        }
    }
}

/// Circuit breaking: what a cluster takes at once; overflow is refused at
/// once with `overloaded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections to all of the cluster's endpoints together.
    pub max_connections: usize,
    /// Requests waiting for a connection.
    pub max_pending_requests: usize,
    /// Requests in flight to the cluster.
    pub max_requests: usize,
}

/// High enough that no working deployment meets them by accident: each is
/// far above what one torii sends one cluster unless the cluster is stuck.
pub const DEFAULT_LIMIT: usize = 100_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_LIMIT,
            max_pending_requests: DEFAULT_LIMIT,
            max_requests: DEFAULT_LIMIT,
        }
    }
}

const ON_WORDS: &[&str] = &[
    "cancelled",
    "unknown",
    "deadline_exceeded",
    "resource_exhausted",
    "aborted",
    "internal",
    "unavailable",
    "connect_failure",
    "reset",
    "5xx",
    "gateway_error",
];

pub fn retry(cx: &mut Ctx, path: &str, raw: RawRetry) -> Option<RetryPolicy> {
    let mut ok = true;
    let mut on = RetryOn::default();
    let on_at = join(path, "on");
    match raw.on {
        None => {
            cx.error(
                &on_at,
                format!(
                    "{on_at} is missing; say what to retry on, like [unavailable, connect_failure, reset]"
                ),
            );
            ok = false;
        }
        Some(words) if words.is_empty() => {
            cx.error(
                &on_at,
                format!("{on_at} is empty; name at least one failure to retry on"),
            );
            ok = false;
        }
        Some(words) => {
            for (i, word) in words.iter().enumerate() {
                let w = word.trim();
                match w {
                    "connect_failure" => on.connect_failure = true,
                    "reset" => on.reset = true,
                    "5xx" => on.http_5xx = true,
                    "gateway_error" => on.gateway_error = true,
                    _ => match RETRY_STATUSES.iter().find(|(n, _)| *n == w) {
                        Some((_, code)) => on.grpc |= 1 << code,
                        None => {
                            let at = format!("{on_at}[{i}]");
                            cx.error(&at, one_of(&at, w, ON_WORDS));
                            ok = false;
                        }
                    },
                }
            }
        }
    }
    let attempts = match raw.attempts {
        None => Some(DEFAULT_RETRY_ATTEMPTS),
        Some(n) if (2..=i64::from(MAX_RETRY_ATTEMPTS)).contains(&n) => Some(n as u32),
        Some(n) => {
            let at = join(path, "attempts");
            cx.error(
                &at,
                format!(
                    "{at} is {n}; it counts every attempt, the first included: write 2 to {MAX_RETRY_ATTEMPTS} (default {DEFAULT_RETRY_ATTEMPTS})"
                ),
            );
            None
        }
    };
    let per_try = cx.duration(
        &join(path, "per_try_timeout"),
        &raw.per_try_timeout,
        None,
        true,
    );
    let backoff_at = join(path, "backoff");
    let backoff = raw.backoff.unwrap_or_default();
    let base = cx.duration(
        &join(&backoff_at, "base"),
        &backoff.base,
        Some(DEFAULT_BACKOFF_BASE),
        true,
    );
    let max = cx.duration(
        &join(&backoff_at, "max"),
        &backoff.max,
        Some(DEFAULT_BACKOFF_MAX),
        true,
    );
    let (base, max) = (base??, max??);
    if max < base {
        let at = join(&backoff_at, "max");
        cx.error(&at, format!("{at} is shorter than backoff.base"));
        return None;
    }
    if !ok {
        return None;
    }
    Some(RetryPolicy {
        on,
        attempts: attempts?,
        per_try_timeout: per_try?,
        backoff_base: base,
        backoff_max: max,
    })
}

pub fn retry_budget(cx: &mut Ctx, path: &str, raw: Option<RawRetryBudget>) -> Option<RetryBudget> {
    let Some(raw) = raw else {
        return Some(RetryBudget::default());
    };
    let default = RetryBudget::default();
    let ratio = match raw.ratio {
        None => Some(default.ratio),
        Some(r) if (0.0..=1.0).contains(&r) => Some(r),
        Some(r) => {
            let at = join(path, "ratio");
            cx.error(
                &at,
                format!("{at} is {r}; write a share from 0 to 1, like 0.2 (retries add at most 20% to the load)"),
            );
            None
        }
    };
    let min = match raw.min_per_second {
        None => Some(default.min_per_second),
        Some(n) if (0..=1_000_000).contains(&n) => Some(n as u32),
        Some(n) => {
            let at = join(path, "min_per_second");
            cx.error(
                &at,
                format!("{at} is {n}; write 0 to 1000000 retries per second (default 10)"),
            );
            None
        }
    };
    Some(RetryBudget {
        ratio: ratio?,
        min_per_second: min?,
    })
}

pub fn limits(cx: &mut Ctx, path: &str, raw: Option<RawLimits>) -> Option<Limits> {
    let raw = raw.unwrap_or_default();
    let mut one = |key: &str, value: Option<i64>, min: i64| -> Option<usize> {
        match value {
            None => Some(DEFAULT_LIMIT),
            Some(n) if n >= min => usize::try_from(n).ok(),
            Some(n) => {
                let at = join(path, key);
                cx.error(
                    &at,
                    format!("{at} is {n}; it must be at least {min} (default {DEFAULT_LIMIT})"),
                );
                None
            }
        }
    };
    let connections = one("max_connections", raw.max_connections, 1);
    let pending = one("max_pending_requests", raw.max_pending_requests, 0);
    let requests = one("max_requests", raw.max_requests, 1);
    Some(Limits {
        max_connections: connections?,
        max_pending_requests: pending?,
        max_requests: requests?,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn problems(yaml: &str) -> Vec<String> {
        match super::super::load_str(yaml, Path::new("t.yaml")) {
            Ok(_) => Vec::new(),
            Err(ps) => ps.iter().map(ToString::to_string).collect(),
        }
    }

    fn config(route: &str, cluster: &str) -> String {
        format!(
            "listeners:\n  - name: edge\n    address: 127.0.0.1:8080\n    routes:\n      - cluster: up\n{route}\
             clusters:\n  - name: up\n    endpoints: [app:9090]\n{cluster}"
        )
    }

    #[test]
    fn a_policy_loads_with_its_defaults() {
        let yaml = config(
            "        retry: { on: [unavailable, connect_failure, 5xx] }\n",
            "",
        );
        let loaded = super::super::load_str(&yaml, Path::new("t.yaml")).expect("loads");
        let route = &loaded.config.listeners[0].routes[0];
        let p = route.retry.as_deref().expect("a policy");
        assert_eq!(p.attempts, super::DEFAULT_RETRY_ATTEMPTS);
        assert_eq!(p.on.grpc_status(14), Some("unavailable"));
        assert_eq!(p.on.grpc_status(13), None);
        assert!(p.on.connect_failure && p.on.http_5xx && !p.on.reset);
        let c = &loaded.config.clusters[0];
        assert_eq!(c.retry_budget, super::RetryBudget::default());
        assert_eq!(c.limits, super::Limits::default());
    }

    #[test]
    fn each_problem_points_at_its_value() {
        let p = problems(&config(
            "        retry:\n          on: [unavailble]\n          attempts: 1\n",
            "    retry_budget: { ratio: 2 }\n    limits: { max_requests: 0 }\n",
        ));
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(
            p[0].starts_with("t.yaml:7:16: error: ")
                && p[0].contains("did you mean \"unavailable\""),
            "{p:#?}"
        );
        assert!(
            p[1].starts_with("t.yaml:8:21: error: ") && p[1].contains("2 to 10"),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|m| m.contains("retry_budget.ratio is 2")),
            "{p:#?}"
        );
        assert!(
            p.iter().any(|m| m.contains("limits.max_requests is 0")),
            "{p:#?}"
        );
    }
}
