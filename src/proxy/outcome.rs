//! What happened to one request, recorded once when it ends: the metrics
//! and the access log read the same facts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::body::grpc_web::InvalidSlot;
use crate::error::ErrorCode;
use crate::grpc::status::code_name;
use crate::grpc::GrpcName;
use crate::telemetry::access_log::{AccessLogger, Line};
use crate::telemetry::json_line::key;
use crate::telemetry::metrics::RequestKey;
use crate::telemetry::trace::{Finish, RequestTrace};
use crate::telemetry::Metrics;

pub struct Outcome {
    pub metrics: Arc<Metrics>,
    pub listener: Arc<str>,
    pub cluster: Option<Arc<str>>,
    /// Service and method of a gRPC request.
    pub grpc: Option<GrpcName>,
    pub start: Instant,
    pub http_status: u16,
    pub grpc_status: Option<i32>,
    pub error: Option<ErrorCode>,
    pub upstream: Option<SocketAddr>,
    /// The request came as gRPC (also when its path names no method).
    pub grpc_request: bool,
    /// A route (or torii's own health service, or the original
    /// destination) took the request: its gRPC names are not just
    /// whatever a client sent to no avail.
    pub routed: bool,
    /// The name of the route that took the request.
    pub route: Option<Arc<str>>,
    /// Who the caller is, once an authentication phase says so (a JWT's
    /// `sub`, an API key's consumer). None: the mTLS client certificate's
    /// SAN stands for it (`ConnInfo::identity`), if there is one.
    pub identity: Option<Arc<str>>,
    /// Why it failed, in words (access log only; set only when logging).
    pub message: Option<String>,
    pub bytes_out: u64,
    /// Request body bytes, counted as they stream (access log only).
    pub bytes_in: Option<Arc<AtomicU64>>,
    /// A JSON-transcoded unary call, or a server stream answered
    /// Trailers-Only: the client's HTTP status is the one its gRPC status
    /// maps to (google/rpc/code.proto), not the upstream's.
    pub json_unary: bool,
    /// The request's access-log line, its head filled in by `identify`;
    /// None when the log is off.
    pub log: Option<Line>,
    /// What the client spoke: the `protocol` label.
    pub protocol: Protocol,
    /// The client's HTTP version (the access log's `protocol` for plain
    /// HTTP and native gRPC).
    pub version: http::Version,
    /// A browser's request (gRPC-Web, CORS): what answering it needs.
    pub browser: Option<Box<Browser>>,
    /// Under a retry policy: each attempt's endpoint and outcome (empty
    /// without one).
    pub attempts: super::retry::Notes,
    /// A route with `auth:`: who the caller is and what was decided
    /// (access log only; set only when logging).
    pub auth: Option<Box<AuthNote>>,
    /// The request's trace, when `tracing:` is on and there is one (its
    /// spans are queued when the request is recorded).
    pub trace: Option<Box<RequestTrace>>,
    logger: AccessLogger,
    recorded: bool,
}

impl Outcome {
    pub fn new(
        metrics: Arc<Metrics>,
        listener: Arc<str>,
        start: Instant,
        logger: &AccessLogger,
    ) -> Self {
        Outcome {
            metrics,
            listener,
            cluster: None,
            grpc: None,
            start,
            http_status: 0,
            grpc_status: None,
            error: None,
            upstream: None,
            grpc_request: false,
            routed: false,
            route: None,
            identity: None,
            json_unary: false,
            message: None,
            bytes_out: 0,
            bytes_in: None,
            log: logger.line(),
            protocol: Protocol::Http1,
            version: http::Version::HTTP_11,
            browser: None,
            attempts: Default::default(),
            auth: None,
            trace: None,
            logger: logger.clone(),
            recorded: false,
        }
    }

    /// Records the request in the metrics and the access log. Called once;
    /// later calls do nothing.
    pub fn record(&mut self) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        if let (true, Some(code)) = (self.json_unary, self.grpc_status) {
            self.http_status = crate::transcode::response::http_status(code);
        }
        let elapsed = self.start.elapsed();
        let cluster = self.cluster.clone().unwrap_or_else(empty);
        let grpc_status = match (self.grpc_status, self.grpc.is_some()) {
            (Some(code), _) => code_name(code),
            (None, true) => "NONE",
            (None, false) => "",
        };
        // Label values clients choose are bounded (see metrics_names).
        let (service, method) = self.metrics_names();
        self.metrics.record_request(
            RequestKey {
                listener: &self.listener,
                cluster: &cluster,
                grpc_service: service,
                grpc_method: method,
                grpc_status,
                http_status: self.http_status,
                error: self.error.map(ErrorCode::as_str).unwrap_or(""),
                protocol: self.protocol.as_str(),
            },
            elapsed.as_secs_f64(),
        );
        if let Some(line) = self.log.take() {
            let bytes_in = self
                .bytes_in
                .as_ref()
                .map_or(0, |b| b.load(Ordering::Relaxed));
            // The fields known now, between the line's head (the request
            // as it arrived) and its tail (`request_id`); names and order
            // are the access log's (docs/metrics.md).
            self.logger.finish(line, |j| {
                j.str(key!("protocol"), self.log_protocol());
                if let Some(g) = &self.grpc {
                    j.str(key!("grpc_service"), g.service());
                    j.str(key!("grpc_method"), g.method());
                }
                j.u64(key!("http_status"), self.http_status.into());
                if let Some(s) = self.grpc_status {
                    j.i64(key!("grpc_status"), s.into());
                }
                j.u64(key!("bytes_in"), bytes_in);
                j.u64(key!("bytes_out"), self.bytes_out);
                j.f64(key!("duration_ms"), elapsed.as_secs_f64() * 1000.0);
                if let Some(r) = &self.route {
                    j.str(key!("route"), r);
                }
                if let Some(a) = &self.auth {
                    j.str(key!("identity"), &a.identity);
                    j.str(key!("auth"), a.decision);
                    j.str(key!("auth_reason"), a.reason);
                }
                if let Some(c) = &self.cluster {
                    j.str(key!("cluster"), c);
                }
                if let Some(u) = self.upstream {
                    j.addr(key!("upstream"), u);
                }
                if !self.attempts.is_empty() {
                    let a = &self.attempts;
                    j.u64(key!("attempts"), a.len() as u64);
                    let each: Vec<String> = a
                        .iter()
                        .map(|(ep, what)| match ep {
                            Some(ep) => format!("{ep} {what}"),
                            None => (*what).to_string(),
                        })
                        .collect();
                    j.strs_nonempty(key!("tries"), &each);
                }
                if let Some(e) = self.error {
                    j.str(key!("error"), e.as_str());
                }
                if let Some(m) = &self.message {
                    j.str(key!("error_message"), m);
                }
                if let Some(t) = &self.trace {
                    let hex = t.trace_id_hex();
                    j.str(
                        key!("trace_id"),
                        std::str::from_utf8(&hex).unwrap_or_default(),
                    );
                }
            });
        }
        if let Some(t) = self.trace.take() {
            t.finish(Finish {
                listener: self.listener.clone(),
                grpc: self.grpc.take(),
                route: self.route.clone(),
                cluster: self.cluster.clone(),
                upstream: self.upstream,
                http_status: self.http_status,
                grpc_status: self.grpc_status,
                error: self.error,
            });
        }
    }

    /// The access log's `protocol`: the HTTP version as the client spoke
    /// it, or what torii translated (`grpc-web`, `grpc-web-text`, `json`).
    fn log_protocol(&self) -> &'static str {
        match self.protocol {
            Protocol::GrpcWeb | Protocol::GrpcWebText | Protocol::Json => self.protocol.as_str(),
            Protocol::Http1 | Protocol::Http2 | Protocol::Grpc => match self.version {
                http::Version::HTTP_09 => "HTTP/0.9",
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_11 => "HTTP/1.1",
                http::Version::HTTP_2 => "HTTP/2.0",
                http::Version::HTTP_3 => "HTTP/3.0",
                _ => "HTTP/?",
            },
        }
    }

    /// The `grpc_service` and `grpc_method` labels: the request's names
    /// when a route took it and the method exists; `unrouted` when no
    /// route did (a scanner's every path would otherwise be a series);
    /// `unknown` when the answer was UNIMPLEMENTED (the names are not a
    /// real method). The metrics cap how many distinct names get series
    /// (past it: `other`).
    fn metrics_names(&self) -> (&str, &str) {
        let Some(g) = &self.grpc else {
            return ("", "");
        };
        if !self.routed {
            ("unrouted", "unrouted")
        } else if self.grpc_status == Some(12) {
            ("unknown", "unknown")
        } else {
            (g.service(), g.method())
        }
    }
}

/// A route's `auth:` decision, for the access log.
pub struct AuthNote {
    /// `jwt:PROVIDER/SUB`, `api_key:SET/CONSUMER`, `mtls:SAN` (space
    /// separated when several), or `anonymous`.
    pub identity: String,
    /// `allowed`, `unauthenticated`, `denied`; `audit_…` for what audit
    /// mode let through.
    pub decision: &'static str,
    /// `ok`, or which check failed.
    pub reason: &'static str,
}

/// What the client spoke, as the metrics' and access log's `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Grpc,
    GrpcWeb,
    GrpcWebText,
    /// HTTP/JSON, transcoded to a gRPC call.
    Json,
}

impl Protocol {
    /// gRPC, natively or as gRPC-Web.
    #[inline]
    pub fn is_grpc(self) -> bool {
        matches!(
            self,
            Protocol::Grpc | Protocol::GrpcWeb | Protocol::GrpcWebText
        )
    }

    /// For gRPC-Web: whether it came base64 (`-text`).
    #[inline]
    pub fn web_text(self) -> Option<bool> {
        match self {
            Protocol::GrpcWeb => Some(false),
            Protocol::GrpcWebText => Some(true),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Grpc => "grpc",
            Protocol::GrpcWeb => "grpc-web",
            Protocol::GrpcWebText => "grpc-web-text",
            Protocol::Json => "json",
        }
    }
}

/// A gRPC-Web call: how its answer is encoded, and where a malformed body
/// leaves its reason.
pub struct WebCall {
    /// Answer in base64 (`application/grpc-web-text`).
    pub text_out: bool,
    /// Where the request body leaves why it is malformed.
    pub invalid: InvalidSlot,
}

/// What answering a browser's request needs: its gRPC-Web shape, and the
/// CORS headers its origin gets.
#[derive(Default)]
pub struct Browser {
    pub web: Option<WebCall>,
    /// Added to every answer, torii's own and the upstream's.
    pub cors: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// What a request that ends without a response head was: the client
/// cancelled it (reset the stream, closed the connection) while torii or
/// the upstream worked on it.
pub const CLIENT_CLOSED: u16 = 499;

/// The empty label value, allocated once.
fn empty() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.recorded && self.http_status == 0 {
            // Every answer sets its status before the outcome is dropped;
            // none means the request's future was dropped first: the
            // client cancelled. Counted as nginx does (499) and, for gRPC,
            // as the CANCELLED the client itself reports.
            self.http_status = CLIENT_CLOSED;
            if self.grpc_request || self.grpc.is_some() {
                self.grpc_status = Some(crate::grpc::status::Code::Cancelled.as_i32());
            }
            if self.log.is_some() {
                self.message =
                    Some("the client cancelled the request before the response began".into());
            }
        }
        self.record();
    }
}

#[cfg(test)]
mod tests {
    //! The line written by hand has the shape `serde_json` gave the
    //! access log's record before: the same names, order, omissions and
    //! value forms.
    use super::*;
    use crate::config::AccessLog;
    use crate::proxy::{ConnInfo, TlsFacts};
    use serde::Serialize;

    /// The access log's record as it was serialised before the lines were
    /// written by hand.
    #[derive(Default, Serialize)]
    pub(super) struct Old {
        pub(super) time: String,
        pub(super) listener: String,
        pub(super) client: String,
        #[serde(skip_serializing_if = "str::is_empty")]
        pub(super) detected: &'static str,
        #[serde(skip_serializing_if = "str::is_empty")]
        pub(super) detect_reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) original_dst: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) tls_version: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) sni: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) alpn: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub(super) client_san: Vec<String>,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub(super) method: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub(super) authority: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub(super) path: String,
        pub(super) protocol: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) grpc_service: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) grpc_method: Option<String>,
        pub(super) http_status: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) grpc_status: Option<i32>,
        pub(super) bytes_in: u64,
        pub(super) bytes_out: u64,
        pub(super) duration_ms: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) cluster: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) upstream: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) error: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub(super) error_message: Option<String>,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub(super) request_id: String,
    }

    /// Logs one request through `Outcome` into a file and returns the line,
    /// and the old record serialised for the same facts.
    fn logged(full: bool) -> (String, String) {
        let dir = std::env::temp_dir().join(format!("torii-outcome-{}-{full}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("access.log");
        let _ = std::fs::remove_file(&file);
        let metrics = Arc::new(Metrics::new());
        let logger = AccessLogger::start(&AccessLog::File(file.clone()), metrics.clone()).unwrap();
        let mut conn = ConnInfo::new("10.1.2.3:40000".parse().unwrap());
        let uri: http::Uri = "https://api.example/pkg.Svc/Do%22it?q=1".parse().unwrap();
        let mut req = http::Request::builder()
            .method("POST")
            .uri(uri.clone())
            .version(http::Version::HTTP_2)
            .header("x-request-id", "abc-123")
            .body(())
            .unwrap();
        if full {
            conn.detected = "tls";
            conn.detect_reason = "TLS ClientHello";
            conn.original_dst = Some("[2001:db8::1]:443".parse().unwrap());
            conn.tls = Some(TlsFacts {
                sni: Some("api.example".into()),
                alpn: Some("h2".into()),
                version: Some("TLSv1.3".into()),
                client_sans: vec!["URI:spiffe://x/y".into(), "DNS:a.example".into()],
                xfcc: None,
            });
        } else {
            *req.version_mut() = http::Version::HTTP_11;
            *req.uri_mut() = "/plain".parse().unwrap();
            req.headers_mut().remove("x-request-id");
            req.headers_mut()
                .insert("host", "h.example:8080".parse().unwrap());
        }
        let (mut parts, ()) = req.into_parts();
        let mut outcome = Outcome::new(metrics, Arc::from("edge"), Instant::now(), &logger);
        outcome.version = parts.version;
        crate::proxy::identify::identify(&mut parts, &conn, &mut outcome);
        let mut old = Old {
            listener: "edge".into(),
            client: "10.1.2.3:40000".into(),
            method: "POST".into(),
            path: parts.uri.path().into(),
            http_status: if full { 200 } else { 404 },
            request_id: parts.headers["x-request-id"].to_str().unwrap().into(),
            ..Default::default()
        };
        outcome.http_status = old.http_status;
        if full {
            let g = GrpcName::new(&uri, uri.path()).unwrap();
            old.grpc_service = Some(g.service().into());
            old.grpc_method = Some(g.method().into());
            outcome.grpc = Some(g);
            outcome.grpc_status = Some(14);
            outcome.bytes_in = Some(Arc::new(AtomicU64::new(17)));
            outcome.bytes_out = 1234;
            outcome.cluster = Some(Arc::from("app"));
            outcome.upstream = Some("127.0.0.1:50051".parse().unwrap());
            outcome.error = Some(ErrorCode::UpstreamConnectRefused);
            outcome.message = Some("the \"upstream\"\trefused\u{1}".into());
            old.detected = "tls";
            old.detect_reason = "TLS ClientHello";
            old.original_dst = Some("[2001:db8::1]:443".into());
            old.tls_version = Some("TLSv1.3".into());
            old.sni = Some("api.example".into());
            old.alpn = Some("h2".into());
            old.client_san = vec!["URI:spiffe://x/y".into(), "DNS:a.example".into()];
            old.authority = "api.example".into();
            old.protocol = "HTTP/2.0".into();
            old.grpc_status = Some(14);
            old.bytes_in = 17;
            old.bytes_out = 1234;
            old.cluster = Some("app".into());
            old.upstream = Some("127.0.0.1:50051".into());
            old.error = Some("upstream_connect_refused");
            old.error_message = outcome.message.clone();
        } else {
            old.authority = "h.example:8080".into();
            old.protocol = "HTTP/1.1".into();
        }
        outcome.record();
        logger.flush(std::time::Duration::from_secs(5));
        let text = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            text.ends_with("}\n") && text.lines().count() == 1,
            "{text:?}"
        );
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        // The time and duration are the line's own; the rest must match.
        let time = line["time"].as_str().unwrap().to_string();
        assert_eq!(time.len(), 24, "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{time}");
        old.time = time;
        // The duration's text as written (parsing it back need not give
        // the same float; json_line's tests compare float forms).
        let d = text.split("\"duration_ms\":").nth(1).unwrap();
        let d = &d[..d.find(',').unwrap()];
        assert!(d.parse::<f64>().unwrap() > 0.0, "{d}");
        let old = serde_json::to_string(&old)
            .unwrap()
            .replace("\"duration_ms\":0.0", &format!("\"duration_ms\":{d}"));
        (text, old + "\n")
    }

    #[test]
    fn the_hand_written_line_has_the_records_shape() {
        for full in [true, false] {
            // Byte for byte: names, order, omissions, value forms.
            let (line, old) = logged(full);
            assert_eq!(line, old);
        }
    }
}

#[cfg(test)]
mod bench {
    //! What writing one line costs on the request's thread, against what
    //! the record serialised by `serde_json` cost before (its owned
    //! strings built, then serialised: the writer thread's part, which
    //! the process paid too). Timing, so not run by default:
    //! `cargo test --release --lib -- --ignored --nocapture access_log_line_cost`.
    use super::tests::Old;
    use super::*;
    use crate::config::AccessLog;
    use crate::proxy::ConnInfo;

    #[test]
    #[ignore]
    fn access_log_line_cost() {
        const N: u32 = 200_000;
        let metrics = Arc::new(Metrics::new());
        let logger =
            AccessLogger::start(&AccessLog::File("/dev/null".into()), metrics.clone()).unwrap();
        let conn = ConnInfo::new("10.1.2.3:40000".parse().unwrap());
        let uri: http::Uri = "/torii.echo.v1.Echo/Unary".parse().unwrap();
        let req = http::Request::builder()
            .method("POST")
            .uri(uri.clone())
            .version(http::Version::HTTP_2)
            .header("x-request-id", "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9")
            .header("host", "127.0.0.1:8443")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let cluster: Arc<str> = Arc::from("backend");
        let upstream: SocketAddr = "127.0.0.1:50051".parse().unwrap();

        // N requests recorded, with their access-log line or without.
        let run = |log: bool| {
            let t = Instant::now();
            for _ in 0..N {
                let mut parts = parts.clone();
                let mut o =
                    Outcome::new(metrics.clone(), Arc::from("bench"), Instant::now(), &logger);
                if !log {
                    o.log = None;
                }
                crate::proxy::identify::identify(&mut parts, &conn, &mut o);
                o.grpc = GrpcName::new(&uri, uri.path());
                o.routed = true;
                o.http_status = 200;
                o.grpc_status = Some(0);
                o.bytes_out = 100;
                o.cluster = Some(cluster.clone());
                o.upstream = Some(upstream);
                o.record();
            }
            t.elapsed() / N
        };
        let new = run(true);
        logger.flush(std::time::Duration::from_secs(5));
        let off = run(false);

        let mut out = Vec::with_capacity(1 << 20);
        let t = Instant::now();
        for _ in 0..N {
            let g = GrpcName::new(&uri, uri.path()).unwrap();
            let r = Old {
                time: crate::telemetry::access_log::now(),
                listener: "bench".to_string(),
                client: conn.peer.to_string(),
                method: parts.method.to_string(),
                authority: "127.0.0.1:8443".to_string(),
                path: parts.uri.path().to_string(),
                protocol: format!("{:?}", parts.version),
                grpc_service: Some(g.service().to_string()),
                grpc_method: Some(g.method().to_string()),
                http_status: 200,
                grpc_status: Some(0),
                bytes_out: 100,
                duration_ms: 0.25,
                cluster: Some(cluster.to_string()),
                upstream: Some(upstream.to_string()),
                request_id: parts.headers["x-request-id"].to_str().unwrap().to_string(),
                ..Default::default()
            };
            let r = Box::new(r);
            serde_json::to_writer(&mut out, &*r).unwrap();
            out.push(b'\n');
            if out.len() > 1 << 19 {
                out.clear();
            }
        }
        let old = t.elapsed() / N;
        eprintln!(
            "per request: the outcome recorded with the log on {new:?}, off {off:?} \
             (the line: {:?}); the old record built and serialised {old:?}",
            new.saturating_sub(off)
        );
    }
}
