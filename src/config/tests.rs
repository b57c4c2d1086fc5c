//! One test per validation rule, through the public `load_str`, checking
//! the message and where it points.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

fn load(yaml: &str) -> Result<Config, Vec<String>> {
    load_in(Path::new("t.yaml"), yaml)
}

fn load_in(file: &Path, yaml: &str) -> Result<Config, Vec<String>> {
    load_str(yaml, file)
        .map(|l| l.config)
        .map_err(|ps| ps.iter().map(|p| p.to_string()).collect())
}

fn problems(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => Vec::new(),
        Err(p) => p,
    }
}

/// The only problem in `yaml`, which must contain `part` and be at `at`.
#[track_caller]
fn only(yaml: &str, at: &str, part: &str) {
    let p = problems(yaml);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].starts_with(&format!("t.yaml:{at}: error: ")), "{p:#?}");
    assert!(p[0].contains(part), "{p:#?}");
}

/// A listener with the given routes (indented for `routes:`), and two clusters.
fn with_routes(routes: &str) -> String {
    format!(
        "listeners:\n  - name: edge\n    address: 127.0.0.1:8080\n    routes:\n{routes}\
         clusters:\n  - name: hello\n    endpoints: [app:9090]\n  - name: web\n    endpoints: [web:80]\n"
    )
}

const MINIMAL: &str = "\
listeners:
  - name: edge
    address: 127.0.0.1:8080
    routes:
      - cluster: hello
clusters:
  - name: hello
    endpoints: [app:9090]
";

#[test]
fn minimal_config_gets_the_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    assert!(c.admin.is_none());
    let l = &c.listeners[0];
    assert_eq!(l.protocol, ListenerProtocol::Auto);
    assert_eq!(l.health_path, DEFAULT_HEALTH_PATH);
    assert_eq!(l.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
    assert!(!l.allow_encoded_slashes && l.tls.is_none());
    let r = &l.routes[0];
    assert!(r.matcher.path.is_none() && r.matcher.host.is_none() && r.timeout.is_none());
    assert!(matches!(&r.action, RouteAction::Cluster(c) if c.name == "hello"));
    let k = &c.clusters[0];
    assert_eq!(k.protocol, UpstreamProtocol::Auto);
    assert_eq!(k.lb, LbPolicy::RoundRobin);
    assert_eq!(k.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(
        k.max_streams_per_connection,
        DEFAULT_MAX_STREAMS_PER_CONNECTION
    );
    assert_eq!(
        k.max_connections_per_endpoint,
        DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT
    );
    assert_eq!(c.source.as_deref(), Some(Path::new("t.yaml")));
}

#[test]
fn at_least_one_listener() {
    only("clusters: []\n", "1:1", "no listeners are defined");
    only("", "1:1", "no listeners are defined");
    only("listeners: []\n", "1:12", "no listeners are defined");
}

#[test]
fn listener_names() {
    let yaml = "listeners:\n  - address: 127.0.0.1:1\n  - name: ''\n    address: 127.0.0.1:2\n";
    let p = problems(yaml);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].starts_with("t.yaml:2:5: error: listeners[0].name is missing"),
        "{p:#?}"
    );
    assert!(
        p[1].starts_with("t.yaml:3:11: error: listeners[1].name is empty"),
        "{p:#?}"
    );
    let yaml = "listeners:\n  - name: a\n    address: 127.0.0.1:1\n  - name: a\n    address: 127.0.0.1:2\n";
    only(yaml, "4:11", "listener name \"a\" is used twice");
}

#[test]
fn listener_addresses() {
    let listener = |addr: &str| format!("listeners:\n  - name: a\n    address: {addr}\n");
    assert!(load(&listener("0.0.0.0:8443")).is_ok());
    assert!(load(&listener("\"[::]:8443\"")).is_ok());
    only(
        &listener("localhost:8080"),
        "3:14",
        "write 127.0.0.1:8080 for local only",
    );
    only(&listener("8080"), "3:14", "needs a port");
    only(&listener("::1:8080"), "3:14", "in brackets");
    only(&listener("1.2.3.4:99999"), "3:14", "invalid port");
    only(
        "listeners:\n  - name: a\n",
        "2:5",
        "listeners[0].address is missing",
    );
    let two = "listeners:\n  - name: a\n    address: 127.0.0.1:80\n  - name: b\n    address: 127.0.0.1:80\n";
    only(two, "5:14", "already used by listener \"a\"");
    let zero = "listeners:\n  - name: a\n    address: 127.0.0.1:0\n  - name: b\n    address: 127.0.0.1:0\n";
    assert!(load(zero).is_ok(), "port 0 (any free port) may repeat");
}

#[test]
fn listener_options() {
    let yaml = "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    protocol: htp\n";
    only(
        yaml,
        "4:15",
        "write one of: auto, http, tcp (did you mean \"http\"?)",
    );
    let yaml = "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    health: {path: healthz}\n";
    only(yaml, "4:20", "must be a path starting with /");
    let yaml = "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    protocol: tcp\n";
    only(yaml, "4:15", "tcp needs a place to send the bytes");
    let yaml = "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    protocol: http\n    allow_encoded_slashes: true\n    health: {path: /h}\n";
    let l = &load(yaml).unwrap().listeners[0];
    assert_eq!(
        (l.protocol, l.allow_encoded_slashes, l.health_path.as_str()),
        (ListenerProtocol::Http, true, "/h")
    );
}

#[test]
fn admin_address() {
    let yaml = |a: &str| {
        format!("admin:\n  address: {a}\nlisteners:\n  - name: a\n    address: 127.0.0.1:1\n")
    };
    let c = load(&yaml("127.0.0.1:9901")).unwrap();
    assert_eq!(c.admin.unwrap().address.port(), 9901);
    only(&yaml("localhost:9901"), "2:12", "not an IP address");
    only(
        "admin: {}\nlisteners:\n  - name: a\n    address: 127.0.0.1:1\n",
        "1:1",
        "admin.address is missing",
    );
}

#[test]
fn durations() {
    let yaml = |d: &str| {
        format!("drain_timeout: {d}\nlisteners:\n  - name: a\n    address: 127.0.0.1:1\n")
    };
    assert_eq!(load(&yaml("1.5s")).unwrap().drain_timeout.as_millis(), 1500);
    assert!(
        load(&yaml("0s")).unwrap().drain_timeout.is_zero(),
        "no drain is allowed"
    );
    only(&yaml("30"), "1:16", "\"30\" has no unit: write 30s");
    only(&yaml("30 seconds"), "1:16", "is not a duration");
    let yaml = "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    header_read_timeout: 0ms\n";
    only(yaml, "4:26", "listeners[0].header_read_timeout is zero");
    let yaml = "listeners:\n  - name: a\n    address: 127.0.0.1:1\nclusters:\n  - name: c\n    endpoints: [a:1]\n    connect_timeout: 0s\n";
    only(yaml, "7:22", "clusters[0].connect_timeout is zero");
    only(
        &with_routes("      - cluster: hello\n        timeout: 0s\n"),
        "6:18",
        "timeout is zero",
    );
}

#[test]
fn route_actions() {
    only(
        &with_routes("      - match: {prefix: /}\n"),
        "5:9",
        "has no action; write one of cluster",
    );
    let both = "      - cluster: hello\n        direct_response: {status: 200}\n";
    only(
        &with_routes(both),
        "5:9",
        "has cluster and direct_response; a route takes exactly one",
    );
    let direct = "      - direct_response: {status: 404, body: nope}\n";
    let c = load(&with_routes(direct)).unwrap();
    assert!(
        matches!(&c.listeners[0].routes[0].action, RouteAction::Direct { status: 404, body } if body == "nope")
    );
    only(
        &with_routes("      - direct_response: {status: 600}\n"),
        "5:35",
        "600 is not an HTTP status",
    );
    only(
        &with_routes("      - direct_response: {}\n"),
        "5:9",
        "status is missing",
    );
}

#[test]
fn unknown_clusters() {
    only(
        &with_routes("      - cluster: helo\n"),
        "5:18",
        "names cluster \"helo\", which is not defined; defined clusters: hello, web; did you mean \"hello\"?",
    );
    let yaml = "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    routes: [{cluster: x}]\n";
    only(yaml, "4:24", "no clusters are defined");
    // A cluster with problems of its own is not "unknown" too.
    let yaml = "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    routes: [{cluster: x}]\nclusters:\n  - name: x\n";
    only(yaml, "6:5", "clusters[0].endpoints is empty or missing");
}

#[test]
fn weighted_clusters() {
    let ok =
        "      - weighted_clusters: [{cluster: hello, weight: 90}, {cluster: web, weight: 10}]\n";
    let c = load(&with_routes(ok)).unwrap();
    let RouteAction::Weighted(w) = &c.listeners[0].routes[0].action else {
        panic!()
    };
    assert_eq!(
        w.iter()
            .map(|(c, n)| (c.name.as_str(), *n))
            .collect::<Vec<_>>(),
        [("hello", 90), ("web", 10)]
    );
    let bad = "      - weighted_clusters: [{cluster: hello, weight: 0}, {cluster: nope, weight: 1}, {cluster: web}]\n";
    let p = problems(&with_routes(bad));
    assert_eq!(p.len(), 3, "{p:#?}");
    assert!(
        p[0].contains("weight is 0; weights must be 1 or more"),
        "{p:#?}"
    );
    assert!(p[1].contains("names cluster \"nope\""), "{p:#?}");
    assert!(
        p[2].contains("weighted_clusters[2].weight is missing"),
        "{p:#?}"
    );
    only(
        &with_routes("      - weighted_clusters: []\n"),
        "5:28",
        "weighted_clusters is empty",
    );
}

#[test]
fn path_matches() {
    let route = |m: &str| with_routes(&format!("      - match: {m}\n        cluster: hello\n"));
    let c = load(&route("{prefix: /api/}")).unwrap();
    assert!(
        matches!(&c.listeners[0].routes[0].matcher.path, Some(PathMatch::Prefix(p)) if p == "/api/")
    );
    let c = load(&route("{path: /x}")).unwrap();
    assert!(
        matches!(&c.listeners[0].routes[0].matcher.path, Some(PathMatch::Exact(p)) if p == "/x")
    );
    let c = load(&route("{regex: \"^/v[0-9]+/\"}")).unwrap();
    assert!(
        matches!(&c.listeners[0].routes[0].matcher.path, Some(PathMatch::Regex(r)) if r.is_match("/v2/x"))
    );
    only(
        &route("{prefix: /, path: /x}"),
        "5:16",
        "has prefix and path; write at most one",
    );
    only(
        &route("{prefix: api}"),
        "5:25",
        "must start with /, like /api",
    );
    only(
        &route("{regex: \"^/v[0-9+/\"}"),
        "5:24",
        "not a valid regular expression: unclosed character class",
    );
}

#[test]
fn host_and_grpc_matches() {
    let route = |m: &str| with_routes(&format!("      - match: {m}\n        cluster: hello\n"));
    let c = load(&route("{host: \"API.example.com:443\"}")).unwrap();
    assert_eq!(
        c.listeners[0].routes[0].matcher.host,
        Some(HostMatch::Exact("api.example.com".into()))
    );
    let c = load(&route("{host: \"*.Example.com\"}")).unwrap();
    assert_eq!(
        c.listeners[0].routes[0].matcher.host,
        Some(HostMatch::Suffix(".example.com".into()))
    );
    only(
        &route("{host: \"a.*.com\"}"),
        "5:23",
        "wildcard must be the whole first label",
    );
    let m = &load(&route(
        "{grpc_service: hello.HelloService, grpc_method: SayHello}",
    ))
    .unwrap()
    .listeners[0]
        .routes[0]
        .matcher;
    assert_eq!(
        (m.grpc_service.as_deref(), m.grpc_method.as_deref()),
        (Some("hello.HelloService"), Some("SayHello"))
    );
    let m = &load(&route("{grpc_method: hello.HelloService/SayHello}"))
        .unwrap()
        .listeners[0]
        .routes[0]
        .matcher;
    assert_eq!(
        (m.grpc_service.as_deref(), m.grpc_method.as_deref()),
        (Some("hello.HelloService"), Some("SayHello"))
    );
    only(
        &route("{grpc_service: hello/HelloService}"),
        "5:31",
        "like hello.HelloService",
    );
    only(
        &route("{grpc_method: Say.Hello}"),
        "5:30",
        "must be a method name like SayHello",
    );
    only(
        &route("{grpc_service: a.B, grpc_method: c.D/M}"),
        "5:49",
        "names service \"c.D\" but grpc_service is \"a.B\"",
    );
}

#[test]
fn header_matches() {
    let route = |h: &str| {
        with_routes(&format!(
            "      - match: {{headers: [{h}]}}\n        cluster: hello\n"
        ))
    };
    let headers = |h: &str| {
        load(&route(h)).unwrap().listeners[0].routes[0]
            .matcher
            .headers
            .clone()
    };
    let h = headers("{name: X-Canary}");
    assert!(
        h[0].name == "x-canary" && matches!(h[0].value, HeaderValueMatch::Present) && !h[0].invert
    );
    let h = headers("{name: x-canary, present: false}");
    assert!(matches!(h[0].value, HeaderValueMatch::Present) && h[0].invert);
    let h = headers("{name: x-canary, value: \"1\", invert: true}");
    assert!(matches!(&h[0].value, HeaderValueMatch::Exact(v) if v == "1") && h[0].invert);
    let h = headers("{name: x-canary, regex: \"^b\"}");
    assert!(matches!(&h[0].value, HeaderValueMatch::Regex(r) if r.is_match("beta")));
    only(
        &route("{name: x, value: a, regex: b}"),
        "5:27",
        "has value and regex; write only one",
    );
    only(
        &route("{name: x, value: a, present: true}"),
        "5:27",
        "present cannot be combined",
    );
    only(&route("{value: a}"), "5:27", "headers[0].name is missing");
    only(&route("{name: \"x y\"}"), "5:34", "not a valid header name");
    only(&route("{name: \":path\"}"), "5:34", "pseudo-header");
}

#[test]
fn header_edits() {
    let route = |e: &str| {
        with_routes(&format!(
            "      - cluster: hello\n        request_headers: {e}\n"
        ))
    };
    let c = load(&route(
        "{add: {X-Env: prod, x-b: \"2\"}, remove: [x-debug]}",
    ))
    .unwrap();
    let e = &c.listeners[0].routes[0].request_headers;
    let added: Vec<_> = e
        .add
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    assert_eq!(added, [("x-env", "prod"), ("x-b", "2")]);
    assert_eq!(e.remove[0].as_str(), "x-debug");
    only(
        &route("{add: {connection: close}}"),
        "6:33",
        "\"connection\" is a hop-by-hop header",
    );
    only(
        &route("{remove: [te]}"),
        "6:36",
        "\"te\" is a hop-by-hop header",
    );
    only(
        &route("{add: {\":authority\": x}}"),
        "6:33",
        "pseudo-header",
    );
    only(
        &route("{add: {\"bad header\": x}}"),
        "6:33",
        "not a valid header name",
    );
    only(
        &route("{add: {x-a: \"a\\nb\"}}"),
        "6:38",
        "not a valid header value",
    );
}

#[test]
fn prefix_rewrite() {
    let ok =
        "      - match: {prefix: /v1/}\n        cluster: hello\n        prefix_rewrite: /v2/\n";
    let c = load(&with_routes(ok)).unwrap();
    assert_eq!(
        c.listeners[0].routes[0].prefix_rewrite.as_deref(),
        Some("/v2/")
    );
    let no_prefix =
        "      - match: {path: /v1}\n        cluster: hello\n        prefix_rewrite: /v2/\n";
    only(&with_routes(no_prefix), "7:25", "needs a prefix match");
    let no_slash =
        "      - match: {prefix: /v1/}\n        cluster: hello\n        prefix_rewrite: v2/\n";
    only(&with_routes(no_slash), "7:25", "must start with /");
}

fn cluster(lines: &str) -> String {
    format!("listeners:\n  - name: a\n    address: 127.0.0.1:1\nclusters:\n  - name: c\n{lines}")
}

#[test]
fn cluster_rules() {
    let c = load(&cluster("    endpoints: [app:9090, \"[::1]:9090\"]\n    protocol: h2c\n    lb: least_request\n    max_streams_per_connection: 10\n")).unwrap();
    let k = &c.clusters[0];
    assert_eq!(
        k.endpoints[1],
        EndpointAddr {
            host: "::1".into(),
            port: 9090,
            weight: 1,
        }
    );
    assert_eq!(
        (k.protocol, k.lb, k.max_streams_per_connection),
        (UpstreamProtocol::H2c, LbPolicy::LeastRequest, 10)
    );
    only(
        &cluster("    endpoints: [app]\n"),
        "6:17",
        "clusters[0].endpoints[0] \"app\": add the port",
    );
    only(
        &cluster("    endpoints: [a:1]\n    protocol: h3\n"),
        "7:15",
        "write one of: auto, http1, h2c, h2",
    );
    only(
        &cluster("    endpoints: [a:1]\n    lb: roundrobin\n"),
        "7:9",
        "did you mean \"round_robin\"?",
    );
    only(
        &cluster("    endpoints: [a:1]\n    protocol: h2\n"),
        "7:15",
        "h2 means HTTP/2 over TLS, but the cluster has no tls",
    );
    only(
        &cluster("    endpoints: [a:1]\n    max_connections_per_endpoint: 0\n"),
        "7:35",
        "must be at least 1",
    );
    let dup = "listeners:\n  - name: a\n    address: 127.0.0.1:1\nclusters:\n  - name: c\n    endpoints: [a:1]\n  - name: c\n    endpoints: [b:1]\n";
    only(dup, "7:11", "cluster name \"c\" is used twice");
}

#[test]
fn endpoint_weights() {
    let c = load(&cluster(
        "    endpoints: [a:1, { address: b:2, weight: 3 }, { address: \"[::1]:3\" }]\n",
    ))
    .unwrap();
    let weights: Vec<_> = c.clusters[0]
        .endpoints
        .iter()
        .map(|e| (e.host.as_str(), e.port, e.weight))
        .collect();
    assert_eq!(weights, vec![("a", 1, 1), ("b", 2, 3), ("::1", 3, 1)]);
    only(
        &cluster("    endpoints: [{ address: b:2, weight: 0 }]\n"),
        "6:41",
        "clusters[0].endpoints[0].weight is 0; it must be from 1 to 128",
    );
    only(
        &cluster("    endpoints: [{ address: b:2, weight: 129 }]\n"),
        "6:41",
        "must be from 1 to 128",
    );
    only(
        &cluster("    endpoints: [{ weight: 2 }]\n"),
        "6:17",
        "clusters[0].endpoints[0] has no address",
    );
    only(
        &cluster("    endpoints: [{ address: b, weight: 2 }]\n"),
        "6:28",
        "clusters[0].endpoints[0] \"b\": add the port",
    );
    only(
        &cluster("    endpoints: [{ address: b:2, wieght: 2 }]\n"),
        "6:33",
        "unknown key \"wieght\" in clusters[0].endpoints[0]; expected one of: address, weight; did you mean \"weight\"?",
    );
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let yaml = "\
drain_timeout: 5
listeners:
  - name: a
    address: localhost:1
    routes:
      - cluster: nope
clusters:
  - name: c
    endpoints: [a:1]
    lb: best
";
    let p = problems(yaml);
    let places: Vec<&str> = p.iter().map(|p| p.split(": ").next().unwrap()).collect();
    assert_eq!(
        places,
        ["t.yaml:1:16", "t.yaml:4:14", "t.yaml:6:18", "t.yaml:10:9"],
        "{p:#?}"
    );
}

// --- TLS: certificates are generated per test ---

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A temporary directory, removed when dropped.
struct CertDir(PathBuf);

impl std::ops::Deref for CertDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory with ca.crt, server.crt/.key (signed by the CA, for
/// api.example.com), other.key (unrelated) and expired.crt/.key.
fn cert_dir() -> CertDir {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("torii-config-unit-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["api.example.com".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let old_key = KeyPair::generate().unwrap();
    let mut old = CertificateParams::new(vec!["old.example.com".to_string()]).unwrap();
    old.not_before = rcgen::date_time_ymd(2000, 1, 1);
    old.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let old = old.self_signed(&old_key).unwrap();
    let files = [
        ("ca.crt", ca.pem()),
        ("server.crt", server.pem()),
        ("server.key", key.serialize_pem()),
        ("other.key", KeyPair::generate().unwrap().serialize_pem()),
        ("expired.crt", old.pem()),
        ("expired.key", old_key.serialize_pem()),
    ];
    for (name, pem) in files {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    CertDir(dir)
}

fn tls_listener(tls: &str) -> String {
    format!("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    tls:\n{tls}")
}

fn load_tls(dir: &Path, yaml: &str) -> Result<Config, Vec<String>> {
    load_in(&dir.join("t.yaml"), yaml)
}

#[test]
fn server_tls_loads_with_defaults() {
    let dir = cert_dir();
    let yaml = tls_listener("      certificates:\n        - {cert: server.crt, key: server.key, server_names: [API.example.com, \"*.example.com\"]}\n      client_auth: {ca: ca.crt}\n");
    let c = load_tls(&dir, &yaml).unwrap();
    let tls = c.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert_eq!(
        tls.certificates[0].server_names,
        ["api.example.com", "*.example.com"]
    );
    assert_eq!(tls.certificates[0].cert_path, dir.join("server.crt"));
    let auth = tls.client_auth.as_ref().unwrap();
    assert!(auth.required && auth.allowed_sans.is_empty() && auth.roots.len() == 1);
}

#[test]
fn server_tls_problems() {
    let dir = cert_dir();
    let cert = |c: &str, k: &str| {
        tls_listener(&format!(
            "      certificates:\n        - {{cert: {c}, key: {k}}}\n"
        ))
    };
    let err = |yaml: &str| load_tls(&dir, yaml).unwrap_err();
    let p = err(&cert("server.crt", "other.key"));
    assert!(
        p.len() == 1 && p[0].contains(":6:35: error: the key in \"other.key\" does not belong"),
        "{p:#?}"
    );
    let p = err(&cert("missing.crt", "server.key"));
    assert!(
        p.len() == 1 && p[0].contains(":6:18: error: cannot read certificate file \"missing.crt\""),
        "{p:#?}"
    );
    let p = err(&cert("server.key", "server.key"));
    assert!(
        p.len() == 1
            && p[0].contains("holds no PEM certificate")
            && p[0].contains("are cert and key swapped?"),
        "{p:#?}"
    );
    let p = err(&cert("server.crt", "server.crt"));
    assert!(
        p.len() == 1 && p[0].contains("holds no PEM private key"),
        "{p:#?}"
    );
    let p = err(&tls_listener("      certificates: []\n"));
    assert!(
        p.len() == 1 && p[0].contains("a TLS listener needs at least one certificate"),
        "{p:#?}"
    );
    let p = err(&tls_listener(
        "      certificates: [{cert: server.crt, key: server.key}]\n      alpn: []\n",
    ));
    assert!(
        p.len() == 1
            && p[0].contains(
                ":6:13: error: listeners[0].tls.alpn is empty: gRPC clients built on C-core"
            ),
        "{p:#?}"
    );
    let two = "      certificates:\n        - {cert: server.crt, key: server.key}\n        - {cert: server.crt, key: server.key}\n";
    let p = err(&tls_listener(two));
    assert!(
        p.len() == 1 && p[0].contains("only one certificate can be the default"),
        "{p:#?}"
    );
}

#[test]
fn server_tls_warnings() {
    let dir = cert_dir();
    let yaml = tls_listener(
        "      certificates: [{cert: expired.crt, key: expired.key}]\n      alpn: [http/1.1]\n",
    );
    let loaded = load_str(&yaml, &dir.join("t.yaml")).unwrap();
    let w: Vec<String> = loaded.warnings.iter().map(|p| p.to_string()).collect();
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w[0].contains(":5:29: warning[cert-expiry]: certificate 1 in \"expired.crt\"")
            && w[0].contains("expired on 2001-01-01"),
        "{w:#?}"
    );
    assert!(
        w[1].contains(":6:13: warning[tls-no-alpn]: listeners[0].tls.alpn has no h2"),
        "{w:#?}"
    );
}

#[test]
fn upstream_tls() {
    let dir = cert_dir();
    let cluster = |tls: &str| {
        format!("listeners:\n  - name: a\n    address: 127.0.0.1:1\nclusters:\n  - name: c\n    endpoints: [a:1]\n    protocol: h2\n    tls: {tls}\n")
    };
    let c = load_tls(
        &dir,
        &cluster("{ca: ca.crt, server_name: app.internal, cert: server.crt, key: server.key}"),
    )
    .unwrap();
    let tls = c.clusters[0].tls.as_ref().unwrap();
    assert_eq!(
        (tls.roots.len(), tls.server_name.as_deref()),
        (1, Some("app.internal"))
    );
    assert!(tls.client_cert.is_some());
    let p = load_tls(&dir, &cluster("{server_name: app}")).unwrap_err();
    assert!(
        p.len() == 1 && p[0].contains(":8:5: error: clusters[0].tls needs a ca"),
        "{p:#?}"
    );
    let p = load_tls(&dir, &cluster("{ca: ca.crt, cert: server.crt}")).unwrap_err();
    assert!(
        p.len() == 1 && p[0].contains("has only one of cert and key"),
        "{p:#?}"
    );
    let h2c = cluster("{ca: ca.crt}").replace("protocol: h2", "protocol: h2c");
    let p = load_tls(&dir, &h2c).unwrap_err();
    assert!(
        p.len() == 1 && p[0].contains("h2c means cleartext HTTP/2, but the cluster has tls"),
        "{p:#?}"
    );
}

#[test]
fn odd_documents_are_problems_not_panics() {
    let odd = [
        "listeners:\n  -\n",
        "listeners: [~]\n",
        "? [a, b]\n: c\nlisteners: []\n",
        "listeners:\n  - &l {name: a, address: 127.0.0.1:1}\n  - *l\n",
        "base: &b {endpoints: [a:1]}\nclusters:\n  - <<: *b\n    name: c\n",
        "\u{feff}listeners: []\n",
        "listeners:\n\t- name: a\n",
        "drain_timeout: 340282366920938463463374607431768211455.5h\n",
        "clusters:\n  - name: c\n    endpoints: [\"[\", \"]\", \":\", \"[::1]:\", \"a:-1\"]\n",
        "listeners:\n  - name: a\n    address: \"[\"\n    routes: [{match: {host: \"[\"}, cluster: x}]\n",
        "listeners:\n  - routes: [{weighted_clusters: [{cluster: x, weight: 99999999999}]}]\n",
        "listeners:\n  - routes: [{direct_response: {status: -1}}]\n",
        "listeners:\n  - routes: [{match: {grpc_method: /}, cluster: x}]\n",
        "listeners:\n  - routes: [{match: {grpc_method: \"a/b/c\"}, cluster: x}]\n",
        "listeners:\n  - 7: 8\n",
    ];
    for text in odd {
        match load_str(text, Path::new("t.yaml")) {
            Ok(_) => panic!("{text:?} loaded"),
            Err(p) => assert!(!p.is_empty(), "{text:?}"),
        }
    }
}

#[test]
fn parse_errors_in_plain_words() {
    only(
        "listeners: []\n---\nlisteners: []\n",
        "3:1",
        "more than one YAML document",
    );
    only(
        "? [a, b]\n: c\n",
        "1:3",
        "this must be a single value, not a list or a mapping",
    );
}

#[test]
fn route_names() {
    let c = load(&with_routes(
        "      - name: orders\n        cluster: hello\n      - cluster: web\n",
    ))
    .unwrap();
    assert_eq!(&*c.listeners[0].routes[0].name, "orders");
    assert_eq!(&*c.listeners[0].routes[1].name, "edge/1");
    only(
        &with_routes(
            "      - name: a\n        cluster: hello\n      - name: a\n        cluster: web\n",
        ),
        "7:15",
        "\"a\" is already the name of listeners[0].routes[0]",
    );
    only(
        &with_routes("      - name: two words\n        cluster: hello\n"),
        "5:15",
        "without spaces",
    );
}
