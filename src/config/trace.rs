//! `tracing:` — spans over OTLP/gRPC to a collector, W3C trace context.

use serde::Deserialize;

use super::context::Ctx;

#[derive(Debug, Default, Deserialize)]
pub struct RawTracing {
    pub otlp: Option<RawOtlp>,
    pub sample_ratio: Option<f64>,
    pub service_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawOtlp {
    pub endpoint: Option<String>,
}

/// The ratio of new traces started for requests without a sampled
/// `traceparent`. One in a hundred: torii sees every request of the
/// services behind it, so all of them would multiply the collector's
/// load; callers that trace send a sampled `traceparent`, which is always
/// honoured whatever the ratio.
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.01;
pub const DEFAULT_SERVICE_NAME: &str = "torii";

/// `tracing:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// The collector's OTLP/gRPC address, `http://HOST:PORT` (h2c).
    pub endpoint: String,
    /// 0 to 1.
    pub sample_ratio: f64,
    /// The spans' `service.name`.
    pub service_name: String,
}

pub fn tracing(cx: &mut Ctx, raw: &RawTracing) -> Option<Tracing> {
    let endpoint = raw
        .otlp
        .as_ref()
        .map(|o| {
            cx.required(
                "tracing.otlp.endpoint",
                &o.endpoint,
                "write the collector's OTLP/gRPC address, like http://127.0.0.1:4317",
            )
            .and_then(|e| endpoint(cx, e))
        })
        .unwrap_or_else(|| {
            cx.error(
                "tracing",
                "tracing needs otlp.endpoint, the collector's OTLP/gRPC address, \
                 like otlp: { endpoint: http://127.0.0.1:4317 }",
            );
            None
        });
    let sample_ratio = match raw.sample_ratio {
        None => Some(DEFAULT_SAMPLE_RATIO),
        Some(r) if (0.0..=1.0).contains(&r) => Some(r),
        Some(r) => {
            cx.error(
                "tracing.sample_ratio",
                format!(
                    "tracing.sample_ratio {r} is outside 0..1; write the share of new traces \
                     to start, like 0.01 for one request in a hundred"
                ),
            );
            None
        }
    };
    let service_name = match raw.service_name.as_deref().map(str::trim) {
        None => Some(DEFAULT_SERVICE_NAME.to_string()),
        Some("") => {
            cx.error(
                "tracing.service_name",
                "tracing.service_name is empty; leave it out for torii, or name the service",
            );
            None
        }
        Some(s) => Some(s.to_string()),
    };
    Some(Tracing {
        endpoint: endpoint?,
        sample_ratio: sample_ratio?,
        service_name: service_name?,
    })
}

fn endpoint(cx: &mut Ctx, text: &str) -> Option<String> {
    const PATH: &str = "tracing.otlp.endpoint";
    let bad = |why: &str| {
        format!("{PATH} {text:?} {why}; write the collector's OTLP/gRPC address, like http://127.0.0.1:4317")
    };
    let uri: http::Uri = match text.parse() {
        Ok(u) => u,
        Err(e) => {
            cx.error(PATH, bad(&format!("is not an address ({e})")));
            return None;
        }
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            cx.error(
                PATH,
                format!(
                    "{PATH} {text:?}: https is not supported yet; export in plaintext \
                     (http://, HTTP/2 without TLS) to a collector on the same host or network"
                ),
            );
            return None;
        }
        _ => {
            cx.error(PATH, bad("does not start with http://"));
            return None;
        }
    }
    if uri.host().is_none_or(str::is_empty) || uri.port().is_none() {
        cx.error(PATH, bad("needs a host and a port"));
        return None;
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        cx.error(
            PATH,
            bad("has a path; OTLP/gRPC has its own (opentelemetry.proto.collector.trace.v1.TraceService/Export)"),
        );
        return None;
    }
    Some(format!("http://{}", uri.authority().expect("host checked")))
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    const BASE: &str = "listeners:\n  - name: a\n    address: 127.0.0.1:0\n    routes:\n      - match: { prefix: / }\n        cluster: c\nclusters:\n  - name: c\n    endpoints: [127.0.0.1:1]\n";

    fn problems(tracing: &str) -> Vec<String> {
        let text = format!("{BASE}{tracing}");
        match load_str(&text, std::path::Path::new("f.yaml")) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults_and_a_good_block() {
        let text = format!("{BASE}tracing:\n  otlp: {{ endpoint: http://127.0.0.1:4317 }}\n");
        let t = load_str(&text, std::path::Path::new("f.yaml"))
            .unwrap()
            .config
            .tracing
            .unwrap();
        assert_eq!(t.endpoint, "http://127.0.0.1:4317");
        assert_eq!(t.sample_ratio, super::DEFAULT_SAMPLE_RATIO);
        assert_eq!(t.service_name, "torii");
        let none = load_str(BASE, std::path::Path::new("f.yaml")).unwrap();
        assert!(none.config.tracing.is_none());
    }

    #[test]
    fn problems_have_their_place() {
        let p = problems("tracing:\n  otlp: { endpoint: \"grpc://x:1\" }\n  sample_ratio: 1.5\n");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("f.yaml:11:21: error: tracing.otlp.endpoint"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("f.yaml:12:17: error: tracing.sample_ratio 1.5 is outside 0..1"),
            "{p:?}"
        );
        for bad in [
            "http://127.0.0.1",
            "https://c:4317",
            "http://c:4317/v1/traces",
            "nope",
        ] {
            let p = problems(&format!("tracing:\n  otlp: {{ endpoint: \"{bad}\" }}\n"));
            assert!(
                p.len() == 1 && p[0].contains("tracing.otlp.endpoint"),
                "{bad}: {p:?}"
            );
        }
        let p = problems("tracing:\n  sample_ratio: 0.5\n");
        assert!(p.len() == 1 && p[0].contains("otlp.endpoint"), "{p:?}");
    }
}
