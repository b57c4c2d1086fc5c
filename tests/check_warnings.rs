//! `torii check` warnings with pitfall codes (the codes `torii lint` uses):
//! every case at its exact line and column, a clean config without any,
//! and `--strict` turning warnings into a failing exit code.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{CertificateParams, KeyPair};
use torii::config::{self, Problem, Severity};

static DIRS: AtomicUsize = AtomicUsize::new(0);

struct Workdir(PathBuf);

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory with certificates valid for a year (`good`), expiring
/// in 5 days (`soon`) and expired (`old`), each `NAME.crt` + `NAME.key`.
fn workdir() -> Workdir {
    let n = DIRS.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("torii-check-warnings-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let now = time::OffsetDateTime::now_utc();
    for (name, from, to) in [
        (
            "good",
            now - time::Duration::days(1),
            now + time::Duration::days(365),
        ),
        (
            "soon",
            now - time::Duration::days(80),
            now + time::Duration::days(5),
        ),
        (
            "old",
            now - time::Duration::days(400),
            now - time::Duration::days(35),
        ),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["api.example.com".to_string()]).unwrap();
        params.not_before = from;
        params.not_after = to;
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    Workdir(dir)
}

fn write(dir: &Workdir, yaml: &str) -> PathBuf {
    let path = dir.0.join("torii.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// `(line, column, code)` of every coded warning; fails on errors.
fn warnings(path: &Path) -> Vec<(usize, usize, &'static str)> {
    let loaded = match config::load_file(path) {
        Ok(l) => l,
        Err(problems) => panic!(
            "the config should load:\n{}",
            config::problems_text(&problems)
        ),
    };
    loaded
        .warnings
        .iter()
        .filter_map(|w: &Problem| {
            assert_eq!(w.severity, Severity::Warning);
            w.code.map(|c| (w.line, w.column, c))
        })
        .collect()
}

const CLUSTERS: &str = "\
clusters:
  - name: app
    endpoints: [127.0.0.1:50051]
  - name: legacy
    endpoints: [127.0.0.1:8080]
    protocol: http1
";

#[test]
fn a_grpc_route_to_an_http1_cluster() {
    let dir = workdir();
    let path = write(
        &dir,
        &format!(
            "\
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ grpc_service: shop.v1.Orders }}
        cluster: legacy
      - match: {{ grpc_method: shop.v1.Carts/Get }}
        weighted_clusters: [{{ cluster: app, weight: 1 }}, {{ cluster: legacy, weight: 1 }}]
      - match: {{ prefix: / }}
        cluster: legacy
{CLUSTERS}"
        ),
    );
    // The catch-all to legacy is a web route: no warning.
    assert_eq!(
        warnings(&path),
        [
            (6, 18, "grpc-upstream-http1"),
            (8, 69, "grpc-upstream-http1")
        ]
    );
    let loaded = config::load_file(&path).unwrap();
    let w = &loaded.warnings[0];
    assert!(
        w.message.contains("protocol: http1 (clusters[1].protocol)"),
        "{}",
        w.message
    );
    assert!(w.help.as_deref().unwrap().contains("h2c"));
    assert!(
        w.to_string().contains(": warning[grpc-upstream-http1]: "),
        "{w}"
    );
}

#[test]
fn a_timeout_on_a_grpc_route() {
    let dir = workdir();
    let path = write(
        &dir,
        &format!(
            "\
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ grpc_service: chat.v1.Chat }}
        cluster: app
        timeout: 30s
      - match: {{ headers: [{{ name: content-type, value: application/grpc }}] }}
        cluster: app
        timeout: 5s
      - match: {{ prefix: / }}
        cluster: legacy
        timeout: 30s
{CLUSTERS}"
        ),
    );
    assert_eq!(
        warnings(&path),
        [(7, 9, "stream-timeout"), (10, 9, "stream-timeout")]
    );
}

#[test]
fn alpn_without_h2_and_certificates_near_or_past_expiry() {
    let dir = workdir();
    let path = write(
        &dir,
        &format!(
            "\
listeners:
  - name: edge
    address: 127.0.0.1:0
    tls:
      certificates:
        - {{ cert: good.crt, key: good.key }}
        - {{ cert: soon.crt, key: soon.key, server_names: [soon.example.com] }}
        - {{ cert: old.crt, key: old.key, server_names: [old.example.com] }}
      alpn: [http/1.1]
    routes:
      - match: {{ prefix: / }}
        cluster: app
{CLUSTERS}"
        ),
    );
    assert_eq!(
        warnings(&path),
        [
            (7, 19, "cert-expiry"),
            (8, 19, "cert-expiry"),
            (9, 13, "tls-no-alpn")
        ]
    );
    let loaded = config::load_file(&path).unwrap();
    assert!(
        loaded.warnings[0].message.contains("expires in 4 days")
            || loaded.warnings[0].message.contains("expires in 5 days"),
        "{}",
        loaded.warnings[0].message
    );
    assert!(
        loaded.warnings[1].message.contains("expired on"),
        "{}",
        loaded.warnings[1].message
    );
    assert!(loaded.warnings[2]
        .message
        .contains("missing selected ALPN property"));
}

#[test]
fn shadowed_routes_health_path_and_passthrough_rules() {
    let dir = workdir();
    let path = write(
        &dir,
        &format!(
            "\
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ path: /healthz }}
        cluster: app
      - match: {{ prefix: /api/ }}
        cluster: app
      - match: {{ prefix: /api/v2/ }}
        cluster: legacy
      - match: {{ prefix: / }}
        cluster: app
      - match: {{ grpc_service: shop.v1.Orders }}
        cluster: app
    tls_passthrough:
      - {{ sni: \"*.example.com\", cluster: app }}
      - {{ sni: db.example.com, cluster: legacy }}
      - {{ sni: other.org, cluster: legacy }}
{CLUSTERS}"
        ),
    );
    assert_eq!(
        warnings(&path),
        [
            (5, 24, "health-path-shadowed"),
            (9, 9, "route-shadowed"),  // /api/v2/ after /api/
            (13, 9, "route-shadowed"), // anything after prefix: /
            (17, 16, "passthrough-shadowed"),
        ]
    );
}

#[test]
fn a_clean_config_has_no_warnings() {
    let dir = workdir();
    let path = write(
        &dir,
        &format!(
            "\
listeners:
  - name: edge
    address: 127.0.0.1:0
    tls:
      certificates: [{{ cert: good.crt, key: good.key }}]
    routes:
      - match: {{ grpc_service: shop.v1.Orders }}
        cluster: app
      - match: {{ prefix: /api/v2/ }}
        cluster: legacy
      - match: {{ prefix: /api/ }}
        cluster: legacy
        timeout: 30s
      - match: {{ prefix: / }}
        cluster: app
    tls_passthrough:
      - {{ sni: db.example.com, cluster: legacy }}
      - {{ sni: \"*.example.com\", cluster: app }}
{CLUSTERS}"
        ),
    );
    assert_eq!(warnings(&path), []);
}

#[test]
fn weights_that_sum_to_zero_are_an_error_already() {
    let dir = workdir();
    let path = write(
        &dir,
        &format!(
            "\
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        weighted_clusters: [{{ cluster: app, weight: 0 }}, {{ cluster: legacy, weight: 0 }}]
{CLUSTERS}"
        ),
    );
    let problems = config::load_file(&path).unwrap_err();
    assert!(problems.iter().all(|p| p.severity == Severity::Error));
    assert!(
        problems[0].message.contains("weights must be 1 or more"),
        "{}",
        problems[0].message
    );
}

fn torii_check(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_torii"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn strict_makes_warnings_fail() {
    let dir = workdir();
    let path = write(
        &dir,
        &format!(
            "\
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ grpc_service: shop.v1.Orders }}
        cluster: legacy
{CLUSTERS}"
        ),
    );
    let file = path.display().to_string();
    let (code, out) = torii_check(&["check", "-c", &file]);
    assert_eq!(code, 0, "warnings alone pass:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{file}:6:18: warning[grpc-upstream-http1]: ")),
        "{out}"
    );
    assert!(lines[1].starts_with("help: "), "{out}");
    assert!(
        lines[2].ends_with("OK (1 listener, 2 clusters, 1 route), 1 warning"),
        "{out}"
    );

    let (code, out) = torii_check(&["check", "--strict", "-c", &file]);
    assert_eq!(code, 1, "--strict fails on warnings:\n{out}");
    assert!(out.contains("(--strict: warnings fail the check)"), "{out}");

    let clean = write(
        &dir,
        &format!(
            "\
listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - match: {{ grpc_service: shop.v1.Orders }}
        cluster: app
{CLUSTERS}"
        ),
    );
    let (code, out) = torii_check(&["check", "--strict", "-c", &clean.display().to_string()]);
    assert_eq!(code, 0, "{out}");
}
