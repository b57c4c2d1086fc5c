//! `torii lint` on the fixtures in tests/lint_fixtures: every rule found at
//! its exact line and column where the pitfall is, and nowhere in the
//! fixed configs; malformed files reported with a position while the rest
//! is still linted; the command's exit codes, standard input and its JSON
//! output. (The SARIF output is validated against the published schema in
//! tests/blackbox/test_lint_sarif.py.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use torii::lint::{self, Level, Report};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lint_fixtures")
}

/// `(file under lint_fixtures, line, column, code)` of every finding.
fn found(report: &Report) -> Vec<(String, usize, usize, &'static str)> {
    let root = fixtures().display().to_string();
    report
        .findings
        .iter()
        .map(|f| {
            let file = f.file.strip_prefix(&root).unwrap_or(&f.file);
            (
                file.trim_start_matches('/').to_string(),
                f.line,
                f.column,
                f.code,
            )
        })
        .collect()
}

fn lint(paths: &[&str]) -> Report {
    let paths: Vec<PathBuf> = paths.iter().map(|p| fixtures().join(p)).collect();
    lint::lint_paths(&paths)
}

fn at(
    file: &str,
    line: usize,
    column: usize,
    code: &'static str,
) -> (String, usize, usize, &'static str) {
    (file.to_string(), line, column, code)
}

#[test]
fn incident_three_envoy_front_proxy() {
    let report = lint(&["incidents/envoy-front-proxy.yaml"]);
    let f = "incidents/envoy-front-proxy.yaml";
    assert_eq!(
        found(&report),
        [
            // common_tls_context without alpn_protocols
            at(f, 15, 15, "tls-no-alpn"),
            // the route: action, where timeout: 0s belongs
            at(f, 37, 27, "stream-timeout"),
            // the cluster's name: it lacks http2_protocol_options
            at(f, 46, 7, "grpc-upstream-http1"),
        ]
    );
    let alpn = &report.findings[0];
    assert_eq!(alpn.level, Level::Error);
    assert!(
        alpn.message
            .contains("Cannot check peer: missing selected ALPN property"),
        "{}",
        alpn.message
    );
    assert!(
        alpn.help.contains("alpn_protocols: [h2, http/1.1]"),
        "{}",
        alpn.help
    );
    let http1 = &report.findings[2];
    assert!(
        http1.message.contains("reset reason: protocol error")
            && http1.message.contains("grpc_web"),
        "{}",
        http1.message
    );
    assert!(
        http1.help.contains("http2_protocol_options"),
        "{}",
        http1.help
    );
    assert_eq!(report.exit_code(), 1);
}

#[test]
fn incident_two_port_names() {
    let report = lint(&["incidents/mesh-service.yaml"]);
    let f = "incidents/mesh-service.yaml";
    assert_eq!(
        found(&report),
        [
            at(f, 11, 7, "port-name-protocol"), // 443 named http
            at(f, 23, 7, "port-name-protocol"), // 443 named grpc
            at(f, 28, 7, "port-name-protocol"), // appProtocol: http on 443
        ]
    );
    assert!(report.findings[0].message.contains("name \"http\""));
    assert!(report.findings[2].message.contains("appProtocol \"http\""));
    assert!(report.findings[0].help.contains("https"));
}

#[test]
fn incident_one_esp_behind_a_gateway() {
    let report = lint(&["incidents/esp-deployment.yaml"]);
    let f = "incidents/esp-deployment.yaml";
    assert_eq!(
        found(&report),
        [
            at(f, 23, 15, "stream-timeout"), // --client_body_timeout=60s
            at(f, 28, 13, "h2c-probe"),      // httpGet on --http2_port
        ]
    );
    assert!(report.findings[1].message.contains("never becomes Ready"));
    assert!(report.findings[1].help.contains("--http_port"));
}

#[test]
fn fixed_incidents_are_clean() {
    let report = lint(&[
        "incidents/envoy-front-proxy-fixed.yaml",
        "incidents/mesh-service-fixed.yaml",
        "incidents/esp-deployment-fixed.yaml",
    ]);
    assert_eq!(found(&report), []);
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.kinds.values().sum::<usize>(), 4);
}

#[test]
fn envoy_rules() {
    let report = lint(&["envoy"]);
    assert_eq!(
        found(&report),
        [
            // no gRPC filter: the cluster's gRPC health check tells
            at("envoy/grpc-health-cluster.yaml", 20, 27, "stream-timeout"),
            at(
                "envoy/grpc-health-cluster.yaml",
                26,
                7,
                "grpc-upstream-http1"
            ),
            at("envoy/hcm-timeouts.yaml", 14, 17, "stream-timeout"), // request_timeout
            at("envoy/hcm-timeouts.yaml", 15, 17, "stream-timeout"), // stream_idle_timeout
            // ALPN without h2, on a standalone Listener resource
            at("envoy/rds-listener.yaml", 13, 11, "tls-no-alpn"),
            // the routes come by RDS from a JSON file (tab-indented): timeout 30s
            at("envoy/rds-routes.json", 11, 38, "stream-timeout"),
        ]
    );
    // clean.yaml (every pitfall avoided, a reverse bridge to HTTP/1.1 on
    // purpose) and rds-clusters.yaml (HTTP/2 to orders) yield nothing.
    assert!(report
        .findings
        .iter()
        .all(|f| !f.file.ends_with("clean.yaml")));
    assert_eq!(report.kinds.get("Envoy Cluster"), Some(&2));
    assert_eq!(report.kinds.get("Envoy RouteConfiguration"), Some(&1));
    assert_eq!(report.kinds.get("Envoy bootstrap"), Some(&3));
}

#[test]
fn kubernetes_rules() {
    let report = lint(&["kube"]);
    assert_eq!(
        found(&report),
        [
            // backend-protocol GRPC without timeouts; proxy-read-timeout 30
            at("kube/ingress-grpc.yaml", 6, 5, "stream-timeout"),
            at("kube/ingress-grpc.yaml", 21, 5, "stream-timeout"),
            // httpGet to a port named grpc; a grpc probe on an HTTP port
            at("kube/probes.yaml", 15, 13, "h2c-probe"),
            at("kube/probes.yaml", 17, 13, "grpc-probe-no-health"),
            // ESP in a CronJob: no --client_body_timeout; probe on --http2_port
            at("kube/probes.yaml", 49, 15, "stream-timeout"),
            at("kube/probes.yaml", 51, 17, "h2c-probe"),
            at("kube/service-names.yaml", 7, 7, "port-protocol-undeclared"),
            at("kube/service-names.yaml", 13, 7, "port-name-protocol"), // 80 named https
        ]
    );
    // The fixed Pod, the Ingress with long timeouts, the HTTP Ingress, and
    // well-named ports yield nothing (the lines are all above).
    let undeclared = &report.findings[6];
    assert!(
        undeclared.help.contains("\"grpc-api\""),
        "{}",
        undeclared.help
    );
    assert!(report.findings[1].message.contains("30s"));
    assert!(
        report.findings[5].help.contains("port 8001"),
        "{}",
        report.findings[5].help
    );
}

#[test]
fn istio_rules() {
    let report = lint(&["istio"]);
    let f = "istio/mesh.yaml";
    let g = "istio/http-port-grpc.yaml";
    assert_eq!(
        found(&report),
        [
            // Service ports declared http in front of gRPC: a targetPort
            // named grpc-api, a name saying grpc, a targetPort number that a
            // Deployment names grpc. payments (DestinationRule UPGRADE),
            // http-web and http-ui (web container ports) are fine.
            at(g, 9, 7, "grpc-upstream-http1"),
            at(g, 12, 7, "grpc-upstream-http1"),
            at(g, 57, 9, "grpc-upstream-http1"),
            at(f, 12, 7, "port-name-protocol"), // ServiceEntry 443 HTTP
            at(f, 33, 40, "port-name-protocol"), // Gateway 443 HTTP without tls
            at(f, 45, 28, "port-name-protocol"), // Sidecar egress 443 HTTP2
            at(f, 66, 7, "stream-timeout"),     // VirtualService timeout to a gRPC Service
        ]
    );
    assert!(report.findings[0].help.contains("h2UpgradePolicy: UPGRADE"));
}

#[test]
fn a_malformed_file_is_reported_and_the_others_still_linted() {
    let report = lint(&["malformed"]);
    let root = fixtures().display().to_string();
    let bad: Vec<(String, usize, usize)> = report
        .unreadable
        .iter()
        .map(|u| (u.file.replace(&root, ""), u.line, u.column))
        .collect();
    assert_eq!(
        bad,
        [
            ("/malformed/bad-indent.yaml".to_string(), 5, 2),
            ("/malformed/missing-comma.json".to_string(), 5, 5),
        ]
    );
    assert!(
        report.unreadable[0].message.contains("not valid YAML"),
        "{}",
        report.unreadable[0].message
    );
    assert_eq!(
        report.findings.len(),
        3,
        "the good neighbour is still linted"
    );
    assert_eq!(report.exit_code(), 2);
}

#[test]
fn a_directory_of_mixed_kinds() {
    let report = lint(&["mixed"]);
    assert_eq!(
        found(&report),
        [at("mixed/k8s/app.yml", 14, 13, "port-name-protocol")]
    );
    let kinds: Vec<(&str, usize)> = report.kinds.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(
        kinds,
        [
            ("Envoy Listener", 1),
            ("Istio DestinationRule", 1),
            ("Kubernetes DaemonSet", 1),
            ("Kubernetes Service", 1),
        ]
    );
    let skipped: Vec<(&str, usize)> = report
        .skipped
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    assert_eq!(skipped, [("ConfigMap", 1), ("PeerAuthentication", 1)]);
    assert_eq!(report.files, 3, "notes.txt is not read");
}

fn torii(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_torii"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_command_prints_findings_with_help_and_exits_by_outcome() {
    let (code, out, _) = torii(
        &["lint", "tests/lint_fixtures/incidents/mesh-service.yaml"],
        None,
    );
    assert_eq!(code, 1, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(
            "tests/lint_fixtures/incidents/mesh-service.yaml:11:7: error[port-name-protocol]: Service \"frontend\" declares port 443"
        ),
        "{out}"
    );
    assert!(lines[1].starts_with("help: "), "{out}");
    assert!(
        lines
            .last()
            .unwrap()
            .contains("read 2 documents in 1 file (2 Kubernetes Service)"),
        "{out}"
    );

    let (code, out, _) = torii(
        &[
            "lint",
            "tests/lint_fixtures/incidents/mesh-service-fixed.yaml",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no pitfalls found"), "{out}");

    let (code, out, _) = torii(&["lint", "tests/lint_fixtures/malformed"], None);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("bad-indent.yaml:5:2: error: not valid YAML"),
        "{out}"
    );

    let (code, out, _) = torii(&["lint", "tests/lint_fixtures/no-such-file.yaml"], None);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("no-such-file.yaml:1:1: error: cannot read it: no such file or directory"),
        "{out}"
    );
}

#[test]
fn standard_input() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports:\n    - {name: http, port: 443}\n";
    let (code, out, _) = torii(&["lint", "-"], Some(yaml));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("<stdin>:6:8: error[port-name-protocol]:"),
        "{out}"
    );
}

#[test]
fn json_output() {
    let (code, out, err) = torii(
        &[
            "lint",
            "--format",
            "json",
            "tests/lint_fixtures/incidents/esp-deployment.yaml",
        ],
        None,
    );
    assert_eq!(code, 1, "{out}{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("stdout is one JSON document");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let probe = &list[1];
    for key in ["file", "line", "column", "level", "code", "message", "help"] {
        assert!(probe.get(key).is_some(), "{key} missing in {probe}");
    }
    assert_eq!(
        probe["file"],
        "tests/lint_fixtures/incidents/esp-deployment.yaml"
    );
    assert_eq!(probe["line"], 28);
    assert_eq!(probe["column"], 13);
    assert_eq!(probe["level"], "error");
    assert_eq!(probe["code"], "h2c-probe");
    assert!(
        err.contains("2 findings"),
        "the summary goes to stderr: {err}"
    );
}

#[test]
fn sarif_output_shape() {
    let (code, out, _) = torii(
        &[
            "lint",
            "--format",
            "sarif",
            "tests/lint_fixtures/incidents/envoy-front-proxy.yaml",
        ],
        None,
    );
    assert_eq!(code, 1);
    let log: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(log["version"], "2.1.0");
    let run = &log["runs"][0];
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["ruleId"], "tls-no-alpn");
    let region = &results[0]["locations"][0]["physicalLocation"]["region"];
    assert_eq!(region["startLine"], 15);
    assert_eq!(region["startColumn"], 15);
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let index = results[0]["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(rules[index]["id"], "tls-no-alpn");
}

/// Every fixture cut short at many places, and a few odd documents: the
/// linter reports or skips, it never panics.
#[test]
fn truncated_and_odd_inputs_never_panic() {
    let mut files = Vec::new();
    let mut stack = vec![fixtures()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for cut in (0..text.len())
            .step_by(11)
            .filter(|c| text.is_char_boundary(*c))
        {
            let _ = lint::lint_texts(&[("cut.yaml".to_string(), text[..cut].to_string())]);
        }
    }
    for odd in [
        "- 1\n- 2\n",
        "just a string",
        "apiVersion: v1\nkind: Service\nspec: [1, 2]\n",
        "apiVersion: v1\nkind: Service\nspec: {ports: [{port: x}, 443, {name: [1]}]}\n",
        "apiVersion: apps/v1\nkind: Deployment\nspec: {template: {spec: {containers: [{args: [--http2_port], readinessProbe: {httpGet: {port: {a: 1}}}}]}}}\n",
        "static_resources: {listeners: [{filter_chains: [{filters: [{name: envoy.filters.network.http_connection_manager, typed_config: {route_config: {virtual_hosts: [{routes: [{route: {cluster: [x]}}]}]}}}]}]}]}\n",
        "a: &x [*x]\n",
        "? [complex, key]\n: value\n",
        "resources: [1, {\"@type\": x}]\n",
    ] {
        let _ = lint::lint_texts(&[("odd.yaml".to_string(), odd.to_string())]);
    }
}
