//! Starting torii in-process for integration tests: from YAML, on
//! `127.0.0.1:0`, with certificates written to a per-test directory.
#![allow(dead_code)]

use std::net::SocketAddr;

use torii::app::Running;

use crate::support::TempDir;

pub struct Proxy {
    pub running: Running,
    pub dir: TempDir,
}

impl Proxy {
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.running.addr(listener)
    }

    pub fn metrics(&self) -> String {
        self.running.metrics.encode()
    }

    /// The value of the first metric line that starts with `prefix` and
    /// contains every one of `labels` (e.g. `reason="no_client_cert"`).
    pub fn metric(&self, prefix: &str, labels: &[&str]) -> Option<f64> {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .find(|l| labels.iter().all(|want| l.contains(want)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// Starts torii from `yaml` (written as `torii.yaml` in `dir`, so relative
/// certificate paths resolve there).
pub async fn start(yaml: &str, dir: TempDir) -> Proxy {
    // Tests read the access log from a file when they care; stdout stays quiet.
    let yaml = if yaml.contains("access_log:") {
        yaml.to_string()
    } else {
        format!("access_log: off\n{yaml}")
    };
    let yaml = yaml.as_str();
    let file = dir.path().join("torii.yaml");
    std::fs::write(&file, yaml).expect("write torii.yaml");
    let running = torii::app::start_yaml(yaml, &file)
        .await
        .unwrap_or_else(|e| panic!("torii did not start:\n{e}\nconfig:\n{yaml}"));
    Proxy { running, dir }
}

/// A plaintext listener `plain` sending everything to cluster `up` with
/// these endpoints (written as given: `127.0.0.1:1234`, `localhost:1234`).
pub async fn front(endpoints: &[String]) -> Proxy {
    front_with(endpoints, "").await
}

/// Like [`front`], with extra lines for the cluster (indented 4 spaces).
pub async fn front_with(endpoints: &[String], cluster_extra: &str) -> Proxy {
    start(&front_yaml(endpoints, cluster_extra), TempDir::new("front")).await
}

/// The config of [`front_with`].
fn front_yaml(endpoints: &[String], cluster_extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: up
clusters:
  - name: up
    endpoints: [{}]
{cluster_extra}
"#,
        eps.join(", ")
    )
}

/// Like [`front`], with the one endpoint `upstream` reached over TLS
/// trusting `pki_for_ca`'s CA; `tls_lines` follow `ca:` (indented 6 spaces
/// for `tls`, 4 for the cluster).
pub async fn tls_front(
    upstream: SocketAddr,
    tls_lines: &str,
    pki_for_ca: &crate::support::TestPki,
) -> Proxy {
    let dir = TempDir::new("upstream-tls");
    pki_for_ca.write_ca(dir.path(), "upstream-ca").unwrap();
    let tls = format!("    tls:\n      ca: upstream-ca.crt\n{tls_lines}");
    start(&front_yaml(&[upstream.to_string()], &tls), dir).await
}
