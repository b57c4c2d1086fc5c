//! Cluster health settings: active checks and passive outlier detection;
//! and the access log destination.

use super::context::{one_of, Ctx};
use super::locate::join;
use super::model::*;
use super::raw::{RawHealthCheck, RawOutlierDetection};

pub fn health_check(cx: &mut Ctx, path: &str, raw: RawHealthCheck) -> Option<HealthCheck> {
    let kind_path = join(path, "type");
    let kind = match raw.kind.as_deref().map(str::trim) {
        Some("grpc") => Some(HealthCheckType::Grpc),
        Some("http") => Some(HealthCheckType::Http),
        Some("tcp") => Some(HealthCheckType::Tcp),
        None => {
            cx.error(
                &kind_path,
                format!("{kind_path} is missing; write grpc, http or tcp"),
            );
            None
        }
        Some(other) => {
            cx.error(
                &kind_path,
                one_of(&kind_path, other, &["grpc", "http", "tcp"]),
            );
            None
        }
    };
    let interval = cx.duration(
        &join(path, "interval"),
        &raw.interval,
        Some(DEFAULT_HEALTH_INTERVAL),
        true,
    );
    let timeout = cx.duration(
        &join(path, "timeout"),
        &raw.timeout,
        Some(DEFAULT_HEALTH_TIMEOUT),
        true,
    );
    let jitter = cx.duration(&join(path, "jitter"), &raw.jitter, None, false);
    let healthy = threshold(
        cx,
        &join(path, "healthy_threshold"),
        raw.healthy_threshold,
        DEFAULT_HEALTHY_THRESHOLD,
    );
    let unhealthy = threshold(
        cx,
        &join(path, "unhealthy_threshold"),
        raw.unhealthy_threshold,
        DEFAULT_UNHEALTHY_THRESHOLD,
    );
    let hc_path = raw.path.clone().unwrap_or_else(|| "/healthz".to_string());
    if !hc_path.starts_with('/') {
        let at = join(path, "path");
        cx.error(
            &at,
            format!("{at} must be a path starting with /, like /healthz"),
        );
    }
    let mut statuses = Vec::new();
    for (i, s) in raw
        .expected_statuses
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        match u16::try_from(s) {
            Ok(code) if (100..=599).contains(&code) => statuses.push(code),
            _ => {
                let at = format!("{}[{i}]", join(path, "expected_statuses"));
                cx.error(
                    &at,
                    format!("{at} is {s}; an HTTP status is a number from 100 to 599"),
                );
            }
        }
    }
    if let (Some(HealthCheckType::Grpc | HealthCheckType::Tcp), true) = (kind, raw.path.is_some()) {
        cx.warning(
            &join(path, "path"),
            format!("{path}.path is only used by type: http"),
        );
    }
    if let (Some(HealthCheckType::Http | HealthCheckType::Tcp), true) =
        (kind, raw.service.is_some())
    {
        cx.warning(
            &join(path, "service"),
            format!("{path}.service is only used by type: grpc"),
        );
    }
    let interval = interval??;
    let timeout = timeout??;
    if timeout > interval {
        cx.warning(
            &join(path, "timeout"),
            format!(
                "{path}.timeout is longer than its interval; probes will overlap the next interval"
            ),
        );
    }
    Some(HealthCheck {
        kind: kind?,
        interval,
        timeout,
        jitter: jitter?.unwrap_or(interval / 10),
        service: raw.service.unwrap_or_default(),
        path: hc_path,
        expected_statuses: statuses,
        healthy_threshold: healthy?,
        unhealthy_threshold: unhealthy?,
    })
}

fn threshold(cx: &mut Ctx, path: &str, value: Option<i64>, default: u32) -> Option<u32> {
    match value {
        None => Some(default),
        Some(n) if (1..=1000).contains(&n) => Some(n as u32),
        Some(n) => {
            cx.error(
                path,
                format!("{path} is {n}; it must be from 1 to 1000 (default {default})"),
            );
            None
        }
    }
}

pub fn outlier_detection(
    cx: &mut Ctx,
    path: &str,
    raw: Option<RawOutlierDetection>,
) -> Option<OutlierDetection> {
    let Some(raw) = raw else {
        return Some(OutlierDetection::default());
    };
    let failures = match raw.consecutive_failures {
        None => Some(DEFAULT_CONSECUTIVE_FAILURES),
        Some(n) if (0..=10_000).contains(&n) => Some(n as u32),
        Some(n) => {
            let at = join(path, "consecutive_failures");
            cx.error(
                &at,
                format!("{at} is {n}; write 0 (off) or a number of failures in a row, like 5"),
            );
            None
        }
    };
    let base = cx.duration(
        &join(path, "base_ejection_time"),
        &raw.base_ejection_time,
        Some(DEFAULT_BASE_EJECTION_TIME),
        true,
    );
    let max = cx.duration(
        &join(path, "max_ejection_time"),
        &raw.max_ejection_time,
        Some(DEFAULT_MAX_EJECTION_TIME),
        true,
    );
    let interval = cx.duration(
        &join(path, "interval"),
        &raw.interval,
        Some(DEFAULT_OUTLIER_INTERVAL),
        true,
    );
    let mut number = |key: &str, value: Option<i64>, range: (i64, i64), default: u32| match value {
        None => Some(default),
        Some(n) if (range.0..=range.1).contains(&n) => Some(n as u32),
        Some(n) => {
            let at = join(path, key);
            cx.error(
                &at,
                format!(
                    "{at} is {n}; write {} to {} (default {default})",
                    range.0, range.1
                ),
            );
            None
        }
    };
    let percent = number(
        "max_ejection_percent",
        raw.max_ejection_percent,
        (0, 100),
        DEFAULT_MAX_EJECTION_PERCENT,
    );
    let min_requests = number(
        "success_rate_min_requests",
        raw.success_rate_min_requests,
        (0, 1_000_000),
        DEFAULT_SUCCESS_RATE_MIN_REQUESTS,
    );
    let min_endpoints = number(
        "success_rate_min_endpoints",
        raw.success_rate_min_endpoints,
        (2, 10_000),
        DEFAULT_SUCCESS_RATE_MIN_ENDPOINTS,
    );
    let factor = match raw.success_rate_stdev_factor {
        None => Some(DEFAULT_SUCCESS_RATE_STDEV_FACTOR),
        Some(f) if (0.0..=100.0).contains(&f) => Some((f * 1000.0).round() as u32),
        Some(f) => {
            let at = join(path, "success_rate_stdev_factor");
            cx.error(&at, format!("{at} is {f}; write 0 to 100, like 1.9"));
            None
        }
    };
    let (base, max) = (base??, max??);
    if max < base {
        let at = join(path, "max_ejection_time");
        cx.error(&at, format!("{at} is shorter than base_ejection_time"));
        return None;
    }
    Some(OutlierDetection {
        consecutive_failures: failures?,
        base_ejection_time: base,
        max_ejection_time: max,
        max_ejection_percent: percent?,
        interval: interval??,
        success_rate_min_requests: min_requests?,
        success_rate_min_endpoints: min_endpoints?,
        success_rate_stdev_factor: factor?,
    })
}
