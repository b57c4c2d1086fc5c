//! The validated, runtime form of the configuration. Everything here has
//! been checked: addresses parse, certificates load, every route names a
//! cluster that exists. The rest of torii only ever sees these types.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use super::san::SanPattern;
use regex::Regex;

/// ALPN a TLS listener advertises unless told otherwise. Both, because
/// C-core clients (Python, C++, Ruby grpcio) refuse a TLS connection that
/// negotiates no ALPN, and HTTP/1.1 clients (curl, probes) need http/1.1.
pub const DEFAULT_ALPN: [&str; 2] = ["h2", "http/1.1"];
/// How long to wait for a TCP (and TLS) connection to an upstream. Short,
/// because a refused or silent endpoint should fail over quickly.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Streams per upstream HTTP/2 connection before torii opens another one to
/// the same endpoint: most gRPC servers handle a connection in one place
/// (h2's lock, grpc-go's writer), so a busy endpoint over a few connections
/// uses more of its cores (docs/configuration.md, "Why these defaults").
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: usize = 32;
/// Upper bound of HTTP/2 connections per endpoint.
pub const DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT: usize = 8;
/// Health path answered on every listener unless configured otherwise.
pub const DEFAULT_HEALTH_PATH: &str = "/healthz";
/// Time a client has to send its HTTP/1.1 request headers (slowloris guard).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Smallest and largest time a resolved DNS answer is kept, whatever its TTL.
pub const DNS_MIN_TTL: Duration = Duration::from_secs(1);
pub const DNS_MAX_TTL: Duration = Duration::from_secs(300);
/// How long `protocol: auto` waits for a client's first bytes before it
/// treats the connection as a server-first protocol (opaque TCP).
/// Client-first protocols (TLS, HTTP, gRPC, Postgres, Redis) send their
/// first bytes right behind the TCP handshake, so only server-first ones
/// (SMTP, MySQL, FTP) ever wait, and their greeting is late by this much.
/// 200ms is invisible to them yet leaves room for a slow client on a busy
/// host; linkerd's 10 s made such clients time out instead.
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_millis(200);
/// Above this a detect timeout is reported as a warning: every connection of
/// a server-first protocol waits this long for its greeting.
pub const DETECT_TIMEOUT_WARN_ABOVE: Duration = Duration::from_secs(1);
/// An opaque TCP or TLS passthrough connection with no byte moving either
/// way for this long is closed. One hour, as Envoy's tcp_proxy: database
/// and message-queue pools keep quiet connections open for many minutes,
/// while connections whose peer vanished must not pile up forever.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from (for messages and reloads).
    pub source: Option<PathBuf>,
    pub admin: Option<Admin>,
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Arc<Cluster>>,
    pub drain_timeout: Duration,
    pub access_log: AccessLog,
    /// Every file the configuration read besides itself (certificates,
    /// keys, CAs), resolved: a change to one reloads the configuration.
    pub files: Vec<PathBuf>,
    /// `jwt_providers:` (their key sets fetched once the proxy runs).
    pub jwt_providers: Vec<Arc<crate::auth::JwtProvider>>,
    /// `api_keys:`, their files read.
    pub api_keys: Vec<Arc<crate::auth::ApiKeySet>>,
    /// `tracing:` (None: torii traces nothing, and passes `traceparent`
    /// on as it came).
    pub tracing: Option<super::Tracing>,
    /// `xds:`: listeners, routes, clusters and endpoints from a control plane.
    pub xds: Option<XdsSource>,
}

/// The xDS server torii asks for configuration (`xds:`), over ADS.
#[derive(Debug, Clone)]
pub struct XdsSource {
    /// `host:port`, as written without its scheme.
    pub server: String,
    /// Set for `https://` (with `tls:`); plaintext h2c otherwise.
    pub tls: Option<UpstreamTls>,
    pub node_id: String,
    pub node_cluster: String,
}

/// Where the access log goes: one JSON object per request and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout,
    File(PathBuf),
}

impl AccessLog {
    /// As written in the file: `off`, `stdout` or the path.
    pub fn describe(&self) -> String {
        match self {
            AccessLog::Off => "off".into(),
            AccessLog::Stdout => "stdout".into(),
            AccessLog::File(p) => p.display().to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// Look at the first bytes (TLS, HTTP/2 preface, HTTP/1.x).
    Auto,
    /// HTTP only: HTTP/1.1 and h2c on the same port.
    Http,
    /// Opaque TCP.
    Tcp,
}

impl ListenerProtocol {
    /// As written in the file (and in metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerProtocol::Auto => "auto",
            ListenerProtocol::Http => "http",
            ListenerProtocol::Tcp => "tcp",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub protocol: ListenerProtocol,
    pub tls: Option<ServerTls>,
    pub health_path: String,
    /// Accept `%2F` / `%5C` in paths (decoded before routing). Off by default:
    /// an encoded slash lets a client reach a path the routes did not mean.
    pub allow_encoded_slashes: bool,
    pub header_read_timeout: Duration,
    pub routes: Vec<Route>,
    /// Detection, TLS passthrough, opaque TCP, original destination.
    pub traffic: Traffic,
    /// `json_transcoding:`: HTTP/JSON requests mapped to gRPC methods.
    pub json_transcoding: Option<std::sync::Arc<crate::transcode::Transcoder>>,
    /// gRPC-Web requests are translated to gRPC (on by default).
    pub grpc_web: bool,
    /// CORS for browsers on other origins; None: no CORS headers.
    pub cors: Option<Arc<Cors>>,
}

/// Headers every CORS policy allows: what gRPC-Web clients send.
pub const CORS_GRPC_WEB_HEADERS: [&str; 5] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "authorization",
];
/// Headers every CORS policy exposes: without them a browser hides the
/// gRPC status of a cross-origin response from the page.
pub const CORS_EXPOSED_HEADERS: [&str; 3] =
    ["grpc-status", "grpc-message", "grpc-status-details-bin"];
/// How long a browser may cache a preflight's answer unless told otherwise.
pub const DEFAULT_CORS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A CORS policy (listener-wide, or a route's own).
#[derive(Debug, Clone)]
pub struct Cors {
    pub allow_origins: Vec<OriginMatch>,
    pub allow_credentials: bool,
    /// Lower-cased; the gRPC-Web set included.
    pub allow_headers: Vec<String>,
    /// Comma-separated, the gRPC status headers included.
    pub expose_headers: http::HeaderValue,
    /// Seconds, as the preflight answer says it.
    pub max_age: http::HeaderValue,
}

/// An allowed origin, as written in `allow_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginMatch {
    /// `"*"`: any origin.
    Any,
    /// `https://app.example.com[:port]`, lower-cased.
    Exact(String),
    /// `https://*.example.com`: the scheme and `.example.com`, lower-cased;
    /// a port, when written, is part of the suffix.
    Suffix { scheme: String, suffix: String },
}

/// What a listener does with connections that are not (only) HTTP for it:
/// how long it waits to classify them, where TLS it does not terminate and
/// opaque TCP go, and whether it is a transparent (iptables) listener.
#[derive(Debug, Clone)]
pub struct Traffic {
    pub detect_timeout: Duration,
    /// Forward each connection to where it was headed before iptables
    /// redirected it here (SO_ORIGINAL_DST).
    pub original_destination: bool,
    /// Hints by destination port, like a mesh's port names. Used only when
    /// the bytes agree.
    pub destination_protocols: BTreeMap<u16, DeclaredProtocol>,
    /// First match wins.
    pub tls_passthrough: Vec<TlsPassthrough>,
    pub tcp: TcpProxy,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            detect_timeout: DEFAULT_DETECT_TIMEOUT,
            original_destination: false,
            destination_protocols: BTreeMap::new(),
            tls_passthrough: Vec::new(),
            tcp: TcpProxy::default(),
        }
    }
}

/// A protocol declared for a destination port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredProtocol {
    /// HTTP/1.x or HTTP/2 (gRPC included), in plaintext.
    Http,
    Tls,
    /// Opaque: forwarded at once, without waiting for the client's bytes.
    Tcp,
}

impl DeclaredProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclaredProtocol::Http => "http",
            DeclaredProtocol::Tls => "tls",
            DeclaredProtocol::Tcp => "tcp",
        }
    }
}

/// TLS routed by SNI to a cluster, bytes untouched.
#[derive(Debug, Clone)]
pub struct TlsPassthrough {
    pub sni: SniMatch,
    pub cluster: Arc<Cluster>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SniMatch {
    /// `*`: every ClientHello, with or without SNI.
    Any,
    /// Lower-cased, without a trailing dot.
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

impl SniMatch {
    /// Whether a ClientHello with this SNI (lower-cased) matches.
    pub fn matches(&self, sni: Option<&str>) -> bool {
        match (self, sni) {
            (SniMatch::Any, _) => true,
            (SniMatch::Exact(name), Some(sni)) => name == sni,
            (SniMatch::Suffix(suffix), Some(sni)) => {
                sni.len() > suffix.len() && sni.ends_with(suffix.as_str())
            }
            (_, None) => false,
        }
    }
}

/// Opaque TCP: where it goes (None on an original-destination listener,
/// which sends it where it was headed) and when a quiet one is closed.
#[derive(Debug, Clone)]
pub struct TcpProxy {
    pub cluster: Option<Arc<Cluster>>,
    pub idle_timeout: Duration,
}

impl Default for TcpProxy {
    fn default() -> Self {
        TcpProxy {
            cluster: None,
            idle_timeout: DEFAULT_TCP_IDLE_TIMEOUT,
        }
    }
}

/// Certificates, keys and client-auth settings, already read and parsed.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub certificates: Vec<CertifiedKeySource>,
    pub alpn: Vec<Vec<u8>>,
    pub client_auth: Option<ClientAuth>,
}

/// One certificate chain with its key, as PEM read from disk.
#[derive(Debug, Clone)]
pub struct CertifiedKeySource {
    pub cert_path: PathBuf,
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub key: Arc<rustls_pki_types::PrivateKeyDer<'static>>,
    /// Lower-cased names, exact (`api.example.com`) or wildcard (`*.example.com`).
    /// Empty: the default certificate.
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub ca_path: PathBuf,
    pub roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub required: bool,
    /// DNS names and URIs (e.g. SPIFFE IDs), exact or patterns (see
    /// [`SanPattern`]). Empty: any certificate the CA signed.
    pub allowed_sans: Vec<String>,
    /// `allowed_sans`, parsed.
    pub san_patterns: Vec<SanPattern>,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// What metrics and logs call the route: its `name:`, or `LISTENER/INDEX`.
    pub name: Arc<str>,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    pub prefix_rewrite: Option<String>,
    pub request_headers: HeaderEdits,
    pub response_headers: HeaderEdits,
    /// Total time for a non-streaming (non-gRPC) request. None: no limit.
    pub timeout: Option<Duration>,
    /// The route's own CORS policy, in place of the listener's.
    pub cors: Option<Arc<Cors>>,
    /// The route's token bucket (src/config/rate_limit.rs).
    pub rate_limit: Option<super::rate_limit::RateLimit>,
    /// The route's retry policy; None: only the built-in resends.
    pub retry: Option<Arc<super::retry::RetryPolicy>>,
    /// `auth:`: who may call (None: anyone).
    pub auth: Option<Arc<crate::auth::Policy>>,
}

impl Route {
    /// A route that answers `status` with `body` itself, with every option
    /// off (no rewrite, header edits, timeout, CORS, rate limit, retry or
    /// auth): the base the xDS translation and torii's own built-in routes
    /// start from.
    pub fn direct(name: &str, matcher: RouteMatch, status: u16, body: String) -> Route {
        Route {
            name: Arc::from(name),
            matcher,
            action: RouteAction::Direct { status, body },
            prefix_rewrite: None,
            request_headers: HeaderEdits::default(),
            response_headers: HeaderEdits::default(),
            timeout: None,
            cors: None,
            rate_limit: None,
            retry: None,
            auth: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    pub host: Option<HostMatch>,
    pub path: Option<PathMatch>,
    /// Fully-qualified service name, like `hello.HelloService`.
    pub grpc_service: Option<String>,
    /// Bare method name, like `SayHello`: a `pkg.Service/Method` written in
    /// the file is split into `grpc_service` and this.
    pub grpc_method: Option<String>,
    pub headers: Vec<HeaderMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// Lower-cased, without port.
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    /// Lower-cased.
    pub name: String,
    pub value: HeaderValueMatch,
    /// Match when the header does NOT satisfy `value`.
    pub invert: bool,
}

#[derive(Debug, Clone)]
pub enum HeaderValueMatch {
    Present,
    Exact(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub enum RouteAction {
    Cluster(Arc<Cluster>),
    Weighted(Vec<(Arc<Cluster>, u32)>),
    Direct { status: u16, body: String },
}

#[derive(Debug, Clone, Default)]
pub struct HeaderEdits {
    /// Lower-cased names; values set (replacing any existing value).
    pub add: Vec<(http::HeaderName, http::HeaderValue)>,
    pub remove: Vec<http::HeaderName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/2 for gRPC (h2c, or ALPN h2 over TLS); otherwise what the client spoke.
    Auto,
    Http1,
    H2c,
    H2,
}

impl UpstreamProtocol {
    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Auto => "auto",
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::H2 => "h2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
}

impl LbPolicy {
    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::LeastRequest => "least_request",
            LbPolicy::Random => "random",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAddr {
    /// As written: an IP literal or a DNS name. An IPv6 literal is stored
    /// without its brackets (`[::1]:9090` → `::1`), so it parses as an IpAddr.
    pub host: String,
    pub port: u16,
    /// Its share of the cluster's traffic relative to the others' (1–128;
    /// 1 for all: an even split).
    pub weight: u32,
}

/// The highest endpoint weight.
pub const MAX_ENDPOINT_WEIGHT: u32 = 128;

#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: String,
    pub endpoints: Vec<EndpointAddr>,
    pub protocol: UpstreamProtocol,
    pub tls: Option<UpstreamTls>,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub max_streams_per_connection: usize,
    pub max_connections_per_endpoint: usize,
    pub health_check: Option<HealthCheck>,
    pub outlier_detection: OutlierDetection,
    pub http2_keepalive: Keepalive,
    pub retry_budget: super::retry::RetryBudget,
    pub limits: super::retry::Limits,
}

/// HTTP/2 PINGs on upstream connections, to find a connection that died
/// without a word (a NAT or firewall that dropped it) before a request
/// waits on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// A PING this long after the last one was answered.
    pub interval: Duration,
    /// The connection is closed when a PING goes unanswered this long.
    pub timeout: Duration,
    /// Also PING connections with no stream open.
    pub while_idle: bool,
}

/// gRPC servers enforce a keepalive policy and close connections that ping
/// more often with GOAWAY ENHANCE_YOUR_CALM "too_many_pings": C-core
/// (Python, C++, Ruby, PHP), grpc-go and grpc-java all allow one PING per
/// 5 minutes by default, and none while no call is open. torii's defaults
/// stay inside that policy: a PING 5 minutes after the last one was
/// answered, only while streams are open.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            interval: DEFAULT_KEEPALIVE_INTERVAL,
            timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            while_idle: false,
        }
    }
}

/// Active health checking of every endpoint of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckType {
    /// `grpc.health.v1.Health/Check` over the cluster's HTTP/2.
    Grpc,
    /// An HTTP GET of `path`.
    Http,
    /// A TCP connect.
    Tcp,
}

impl HealthCheckType {
    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthCheckType::Grpc => "grpc",
            HealthCheckType::Http => "http",
            HealthCheckType::Tcp => "tcp",
        }
    }
}

/// How often a health check runs unless configured.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// How long one probe may take.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed probes in a row before an endpoint gets no new requests: one lost
/// probe is noise, three are a pattern.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Passed probes in a row before it gets traffic again.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;

#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub kind: HealthCheckType,
    pub interval: Duration,
    pub timeout: Duration,
    /// Random extra delay up to this much per probe, so endpoints checked by
    /// many proxies are not probed in lock-step. Default: interval / 10.
    pub jitter: Duration,
    /// gRPC: the service name asked ("" = the server as a whole).
    pub service: String,
    /// HTTP: the path probed.
    pub path: String,
    /// HTTP: statuses that count as healthy (empty: any 2xx).
    pub expected_statuses: Vec<u16>,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// Passive health: endpoints that fail requests in a row (connect failures,
/// resets, UNAVAILABLE, 502/503/504) are ejected for a while, longer each
/// time. On by default, as in linkerd: a dead endpoint should not cost
/// every Nth request a failover.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    /// 0 turns passive ejection off.
    pub consecutive_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// Never more than this share (percent) of the endpoints ejected.
    pub max_ejection_percent: u32,
    /// How often success rates are compared.
    pub interval: Duration,
    /// Requests an endpoint needs in an interval for its success rate to
    /// count; 0 turns success-rate ejection off.
    pub success_rate_min_requests: u32,
    /// Endpoints with enough requests needed to compare them at all.
    pub success_rate_min_endpoints: u32,
    /// Ejected below mean − factor × stdev; in thousandths (1900 = 1.9).
    pub success_rate_stdev_factor: u32,
}

pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 50;
pub const DEFAULT_OUTLIER_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_SUCCESS_RATE_MIN_REQUESTS: u32 = 100;
pub const DEFAULT_SUCCESS_RATE_MIN_ENDPOINTS: u32 = 5;
pub const DEFAULT_SUCCESS_RATE_STDEV_FACTOR: u32 = 1900;

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection_time: DEFAULT_BASE_EJECTION_TIME,
            max_ejection_time: DEFAULT_MAX_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
            interval: DEFAULT_OUTLIER_INTERVAL,
            success_rate_min_requests: DEFAULT_SUCCESS_RATE_MIN_REQUESTS,
            success_rate_min_endpoints: DEFAULT_SUCCESS_RATE_MIN_ENDPOINTS,
            success_rate_stdev_factor: DEFAULT_SUCCESS_RATE_STDEV_FACTOR,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// None: the platform's web PKI roots are not bundled; a CA is required.
    pub roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub server_name: Option<String>,
    /// Where the CA and the client certificate were read from.
    pub ca_path: Option<PathBuf>,
    pub cert_path: Option<PathBuf>,
    pub client_cert: Option<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        Arc<rustls_pki_types::PrivateKeyDer<'static>>,
    )>,
}
