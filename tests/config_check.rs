//! `torii check`'s loading path on whole files: fixtures from tests/configs
//! are written to a fresh temp directory next to certificates generated for
//! the test, then checked. Positions are asserted exactly.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use torii::config::{
    self, HostMatch, LbPolicy, PathMatch, RouteAction, Severity, UpstreamProtocol,
};

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory, removed when dropped.
struct Workdir(PathBuf);

impl std::ops::Deref for Workdir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory holding `certs/`: ca.crt, server.crt + server.key
/// (signed by the CA), other.key (unrelated), expired.crt + expired.key.
fn workdir() -> Workdir {
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("torii-config-check-{}-{n}", std::process::id()));
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["api.example.com".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let expired_key = KeyPair::generate().unwrap();
    let mut expired = CertificateParams::new(vec!["old.example.com".to_string()]).unwrap();
    expired.not_before = rcgen::date_time_ymd(2001, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2002, 1, 1);
    let expired = expired.signed_by(&expired_key, &ca).unwrap();
    let files = [
        ("ca.crt", ca.pem()),
        ("server.crt", server.pem()),
        ("server.key", server_key.serialize_pem()),
        ("other.key", KeyPair::generate().unwrap().serialize_pem()),
        ("expired.crt", expired.pem()),
        ("expired.key", expired_key.serialize_pem()),
    ];
    for (name, pem) in files {
        std::fs::write(certs.join(name), pem).unwrap();
    }
    Workdir(dir)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `check` and returns (clean, printed lines with the directory cut off).
fn check(path: &Path) -> (bool, Vec<String>) {
    let mut out = Vec::new();
    let ok = config::check(path, &mut out);
    let prefix = format!("{}/", path.parent().unwrap().display());
    let text = String::from_utf8(out).unwrap().replace(&prefix, "");
    (ok, text.lines().map(str::to_string).collect())
}

#[test]
fn a_full_config_loads_clean_with_defaults() {
    let dir = workdir();
    let path = write(&dir, "torii.yaml", include_str!("configs/full.yaml"));
    assert_eq!(
        check(&path),
        (
            true,
            vec!["torii.yaml: OK (2 listeners, 2 clusters, 4 routes)".to_string()]
        )
    );

    let loaded = config::load_file(&path).unwrap();
    assert!(loaded.warnings.is_empty());
    let c = loaded.config;
    assert_eq!(c.source.as_deref(), Some(path.as_path()));
    assert_eq!(c.admin.unwrap().address, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(c.drain_timeout, Duration::from_secs(10));

    let edge = &c.listeners[0];
    assert_eq!(
        edge.header_read_timeout,
        config::DEFAULT_HEADER_READ_TIMEOUT
    );
    assert_eq!(edge.health_path, config::DEFAULT_HEALTH_PATH);
    let tls = edge.tls.as_ref().unwrap();
    assert_eq!(
        tls.alpn,
        config::DEFAULT_ALPN.map(|p| p.as_bytes().to_vec())
    );
    assert_eq!(tls.certificates[0].cert_path, dir.join("certs/server.crt"));
    assert_eq!(
        tls.certificates[0].server_names,
        ["api.example.com", "*.example.com"]
    );
    let auth = tls.client_auth.as_ref().unwrap();
    assert!(auth.required);
    assert_eq!(
        auth.allowed_sans,
        ["spiffe://example.org/ns/default/sa/client"]
    );

    let weighted = &edge.routes[1];
    assert_eq!(
        weighted.matcher.host,
        Some(HostMatch::Suffix(".example.com".into()))
    );
    assert!(matches!(&weighted.matcher.path, Some(PathMatch::Prefix(p)) if p == "/v1/"));
    assert!(matches!(&weighted.action, RouteAction::Weighted(w) if w.len() == 2));
    assert_eq!(weighted.prefix_rewrite.as_deref(), Some("/v2/"));
    assert_eq!(weighted.timeout, Some(Duration::from_secs(30)));
    assert_eq!(weighted.response_headers.remove[0].as_str(), "server");

    let plain = &c.listeners[1];
    assert!(plain.tls.is_none() && plain.allow_encoded_slashes);
    assert_eq!(plain.address, "[::]:8080".parse().unwrap());
    assert_eq!(plain.health_path, "/health");

    let hello = &c.clusters[0];
    assert_eq!(
        (hello.protocol, hello.lb),
        (UpstreamProtocol::H2, LbPolicy::LeastRequest)
    );
    assert_eq!(hello.connect_timeout, Duration::from_millis(250));
    assert_eq!(hello.endpoints[2].host, "::1");
    assert!(hello.tls.as_ref().unwrap().client_cert.is_some());
    let web = &c.clusters[1];
    assert_eq!(
        (web.protocol, web.lb),
        (UpstreamProtocol::Auto, LbPolicy::RoundRobin)
    );
    assert_eq!(web.connect_timeout, config::DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(
        web.max_streams_per_connection,
        config::DEFAULT_MAX_STREAMS_PER_CONNECTION
    );
    assert_eq!(
        web.max_connections_per_endpoint,
        config::DEFAULT_MAX_CONNECTIONS_PER_ENDPOINT
    );
}

#[test]
fn every_problem_in_a_file_is_reported_at_once() {
    let dir = workdir();
    let path = write(
        &dir,
        "torii.yaml",
        include_str!("configs/many_problems.yaml"),
    );
    let (ok, lines) = check(&path);
    assert!(!ok);
    let expected = [
        ("1:16", "drain_timeout: \"30\" has no unit: write 30s"),
        ("4:14", "listeners[0].address \"localhost:8443\": \"localhost\" is not an IP address"),
        ("7:17", "cannot read certificate file \"certs/missing.crt\""),
        ("10:16", "the key in \"certs/other.key\" does not belong to the certificate in \"certs/server.crt\""),
        ("12:13", "listeners[0].tls.alpn is empty: gRPC clients built on C-core"),
        ("13:7", "unknown key \"alpnn\" in listeners[0].tls; expected one of: certificates, alpn, client_auth; did you mean \"alpn\"?"),
        ("15:18", "cluster \"helo\", which is not defined; defined clusters: hello; did you mean \"hello\"?"),
        ("16:11", "listener name \"edge\" is used twice"),
    ];
    assert_eq!(lines.len(), expected.len() + 1, "{lines:#?}");
    for (line, (at, part)) in lines.iter().zip(expected) {
        let head = format!("torii.yaml:{at}: error: ");
        assert!(
            line.starts_with(&head) && line.contains(part),
            "want {head}…{part}\n got {line}"
        );
    }
    assert_eq!(lines.last().unwrap(), "torii.yaml: 8 errors, 0 warnings");
}

#[test]
fn a_type_error_is_one_problem_in_plain_words() {
    let dir = workdir();
    let path = write(&dir, "torii.yaml", include_str!("configs/type_error.yaml"));
    let (ok, lines) = check(&path);
    assert!(!ok);
    assert_eq!(
        lines,
        [
            "torii.yaml:3:5: error: unknown key \"adress\" in listeners[0]; expected one of: name, address, \
             protocol, allow_encoded_slashes, header_read_timeout, tls, health, routes, detect_timeout, \
             original_destination, destination_protocols, tls_passthrough, tcp, json_transcoding, grpc_web, \
             cors; did you mean \"address\"?",
            "torii.yaml:5:21: error: listeners[0].tls.certificates must be a list: write [a, b] or one \"- item\" per line",
            "torii.yaml: 2 errors, 0 warnings",
        ]
    );
}

#[test]
fn a_yaml_syntax_error_has_its_place() {
    let dir = workdir();
    let path = write(
        &dir,
        "torii.yaml",
        include_str!("configs/syntax_error.yaml"),
    );
    let (ok, lines) = check(&path);
    assert!(!ok);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].starts_with("torii.yaml:5:9: error: YAML syntax error: "),
        "{lines:#?}"
    );
    assert_eq!(lines[1], "torii.yaml: 1 error, 0 warnings");
}

#[test]
fn warnings_do_not_fail_the_check() {
    let dir = workdir();
    let yaml = "\
listeners:
  - name: old
    address: 127.0.0.1:0
    tls:
      certificates: [{cert: certs/expired.crt, key: certs/expired.key}]
";
    let path = write(&dir, "torii.yaml", yaml);
    let (ok, lines) = check(&path);
    assert!(ok, "{lines:#?}");
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with(
            "torii.yaml:5:29: warning[cert-expiry]: certificate 1 in \"certs/expired.crt\""
        ),
        "{lines:#?}"
    );
    assert!(lines[0].contains("expired on 2002-01-01"), "{lines:#?}");
    assert_eq!(
        lines[2],
        "torii.yaml: OK (1 listener, 0 clusters, 0 routes), 1 warning"
    );
    assert!(lines[1].starts_with("help: renew it"), "{lines:#?}");
    let loaded = config::load_file(&path).unwrap();
    assert_eq!(loaded.warnings[0].severity, Severity::Warning);
}

#[test]
fn load_str_resolves_files_against_the_named_file() {
    let dir = workdir();
    let yaml = "\
listeners:
  - name: edge
    address: 127.0.0.1:0
    tls:
      certificates: [{cert: certs/server.crt, key: certs/server.key}]
";
    let loaded = config::load_str(yaml, &dir.join("torii.yaml")).unwrap();
    let tls = loaded.config.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.certificates[0].cert_path, dir.join("certs/server.crt"));
    // Relative to somewhere without certs: unreadable, and said where it looked.
    let elsewhere = std::env::temp_dir().join("torii-no-such-dir/torii.yaml");
    let problems = config::load_str(yaml, &elsewhere).unwrap_err();
    assert_eq!((problems[0].line, problems[0].column), (5, 29));
    assert!(
        problems[0]
            .message
            .contains("torii-no-such-dir/certs/server.crt"),
        "{problems:#?}"
    );
}

#[test]
fn an_unreadable_config_file_is_one_problem() {
    let path = std::env::temp_dir().join("torii-no-such-dir/missing.yaml");
    let problems = config::load_file(&path).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!((problems[0].line, problems[0].column), (1, 1));
    assert!(problems[0]
        .to_string()
        .contains("cannot read the configuration file"));
}
