//! Kubernetes manifests (Services, workloads' containers and probes,
//! Ingresses) and Istio resources (ServiceEntry, Gateway, Sidecar,
//! VirtualService).

use std::collections::HashMap;

use super::tree::{Node, Pos};
use super::{finding, human, seconds_text, Doc, Finding, Kind};

/// What a port's declared protocol means on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Plaintext HTTP/1.1 or HTTP/2 (gRPC included).
    Plain,
    /// TLS.
    Tls,
    /// Anything else Istio knows (tcp, mongo, redis…).
    Other,
}

/// A protocol name as Istio reads it from a port name prefix, an
/// `appProtocol` or a `protocol` field.
fn family(protocol: &str) -> Option<Family> {
    match protocol.to_ascii_lowercase().as_str() {
        "http" | "http2" | "grpc" | "grpc-web" | "h2c" | "kubernetes.io/h2c"
        | "kubernetes.io/ws" => Some(Family::Plain),
        "https" | "tls" | "kubernetes.io/wss" => Some(Family::Tls),
        "tcp" | "udp" | "mongo" | "mysql" | "redis" | "sctp" => Some(Family::Other),
        _ => None,
    }
}

/// The protocol a port name declares: `http`, or `http-…` (Istio's rule).
fn name_protocol(name: &str) -> Option<&str> {
    let prefix = name.split('-').next().unwrap_or(name);
    let prefix = if prefix == "grpc" && name.starts_with("grpc-web") {
        "grpc-web"
    } else {
        prefix
    };
    family(prefix).map(|_| prefix)
}

/// 443 is TLS by convention, 80 plaintext HTTP.
fn port_family(port: i64) -> Option<Family> {
    match port {
        443 => Some(Family::Tls),
        80 => Some(Family::Plain),
        _ => None,
    }
}

const MESH_EFFECT: &str = "a mesh (Istio, Anthos Service Mesh) decides a port's protocol from this declaration, \
    so TLS on this port is parsed as plaintext HTTP and breaks ('SSL routines … unknown protocol' / 'wrong version number'); \
    older Istio applied it to every outbound connection to port 443 in the mesh, not only to this Service";

pub fn check(docs: &[Doc], out: &mut Vec<Finding>) {
    let services: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind == Kind::Kube("Service".into()))
        .collect();
    let mesh = Mesh::of(docs);
    for doc in docs {
        let file = doc.file.as_str();
        match &doc.kind {
            Kind::Kube(k) if k == "Service" => {
                service(file, &doc.node, out);
                http_port_for_grpc(file, &doc.node, &mesh, out);
            }
            Kind::Kube(k) if k == "Ingress" => ingress(file, &doc.node, out),
            Kind::Kube(_) => {
                if let Some(pod) = pod_spec(&doc.node) {
                    workload(file, pod, out);
                }
            }
            Kind::Istio(k) if k == "ServiceEntry" => {
                for p in spec_items(&doc.node, &["ports"]) {
                    istio_port(file, p, "ServiceEntry", out);
                }
            }
            Kind::Istio(k) if k == "Gateway" => {
                for server in spec_items(&doc.node, &["servers"]) {
                    if server.get("tls").is_none() {
                        if let Some(p) = server.get("port") {
                            istio_port(file, p, "Gateway server", out);
                        }
                    }
                }
            }
            Kind::Istio(k) if k == "Sidecar" => {
                for e in spec_items(&doc.node, &["egress"]) {
                    if let Some(p) = e.get("port") {
                        istio_port(file, p, "Sidecar egress", out);
                    }
                }
                for e in spec_items(&doc.node, &["ingress"]) {
                    if let Some(p) = e.get("port") {
                        istio_port(file, p, "Sidecar ingress", out);
                    }
                }
            }
            Kind::Istio(k) if k == "VirtualService" => {
                virtual_service(file, &doc.node, &services, out)
            }
            _ => {}
        }
    }
}

/// What other documents say about Services: container ports named for
/// gRPC, and hosts whose DestinationRule upgrades HTTP/1.1 to HTTP/2.
struct Mesh<'a> {
    grpc_container_ports: Vec<i64>,
    upgraded_hosts: Vec<&'a str>,
}

impl<'a> Mesh<'a> {
    fn of(docs: &'a [Doc]) -> Self {
        let mut m = Mesh {
            grpc_container_ports: Vec::new(),
            upgraded_hosts: Vec::new(),
        };
        for doc in docs {
            match &doc.kind {
                Kind::Istio(k) if k == "DestinationRule" => {
                    let spec = doc.node.get("spec");
                    let upgrade = spec
                        .and_then(|s| {
                            s.at(&["trafficPolicy", "connectionPool", "http", "h2UpgradePolicy"])
                        })
                        .and_then(Node::str)
                        == Some("UPGRADE");
                    if let (true, Some(host)) = (upgrade, spec.and_then(|s| s.str_at("host"))) {
                        m.upgraded_hosts
                            .push(host.split('.').next().unwrap_or(host));
                    }
                }
                Kind::Kube(_) => {
                    let containers = pod_spec(&doc.node).and_then(|p| p.get("containers"));
                    for c in containers.map_or(&[][..], Node::items) {
                        for p in c.get("ports").map_or(&[][..], Node::items) {
                            let grpc = p
                                .str_at("name")
                                .is_some_and(|n| n.to_ascii_lowercase().starts_with("grpc"));
                            if let (true, Some(n)) =
                                (grpc, p.get("containerPort").and_then(Node::int))
                            {
                                m.grpc_container_ports.push(n);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        m
    }
}

/// A Service port declared `http` (HTTP/1.1) in front of a gRPC server:
/// the sidecars speak HTTP/1.1 to it, which a gRPC server cannot answer.
fn http_port_for_grpc(file: &str, svc: &Node, mesh: &Mesh, out: &mut Vec<Finding>) {
    let svc_name = svc
        .get("metadata")
        .and_then(|m| m.str_at("name"))
        .unwrap_or("?");
    if mesh.upgraded_hosts.contains(&svc_name) {
        return;
    }
    for port in spec_items(svc, &["ports"]) {
        let name = port.str_at("name").unwrap_or_default();
        let (declared, at) = match port.entry("appProtocol") {
            Some((k, v)) => (v.str().unwrap_or_default().to_ascii_lowercase(), k.pos),
            None => (
                name_protocol(name).unwrap_or_default().to_ascii_lowercase(),
                port.key_pos("name").unwrap_or(port.pos),
            ),
        };
        if declared != "http" {
            continue;
        }
        let target = port.get("targetPort");
        let evidence = if name.to_ascii_lowercase().contains("grpc") {
            Some(format!("its name {name:?} says gRPC"))
        } else if let Some(n) = target.and_then(Node::int) {
            mesh.grpc_container_ports
                .contains(&n)
                .then(|| format!("its targetPort {n} is a container port named for gRPC"))
        } else {
            target
                .and_then(Node::str)
                .filter(|t| t.to_ascii_lowercase().starts_with("grpc"))
                .map(|t| format!("its targetPort is the container port {t:?}"))
        };
        let Some(evidence) = evidence else { continue };
        let number = port.get("port").and_then(Node::int).unwrap_or(0);
        out.push(finding(
            file,
            at,
            "grpc-upstream-http1",
            format!(
                "Service {svc_name:?} port {number} is declared http (HTTP/1.1), but {evidence}: Istio's sidecars then send HTTP/1.1 to a gRPC server, \
                 and calls fail with 'upstream connect error or disconnect/reset before headers. reset reason: protocol error'"
            ),
            "declare the port as gRPC (a name starting with grpc-, or appProtocol: grpc), or set \
             trafficPolicy.connectionPool.http.h2UpgradePolicy: UPGRADE in a DestinationRule for this host"
                .into(),
        ));
    }
}

fn spec_items<'a>(node: &'a Node, path: &[&str]) -> &'a [Node] {
    let mut n = match node.get("spec") {
        Some(s) => s,
        None => return &[],
    };
    for key in path {
        match n.get(key) {
            Some(next) => n = next,
            None => return &[],
        }
    }
    n.items()
}

fn service(file: &str, svc: &Node, out: &mut Vec<Finding>) {
    let svc_name = svc
        .get("metadata")
        .and_then(|m| m.str_at("name"))
        .unwrap_or("?");
    for port in spec_items(svc, &["ports"]) {
        let Some(number) = port.get("port").and_then(Node::int) else {
            continue;
        };
        let expected = port_family(number);
        if let Some((key, value)) = port.entry("appProtocol") {
            // appProtocol wins over the name in Istio.
            let declared = value.str().unwrap_or_default();
            if let (Some(f), Some(e)) = (family(declared), expected) {
                if f != e && f != Family::Other {
                    out.push(contradiction(
                        file,
                        key.pos,
                        svc_name,
                        number,
                        &format!("appProtocol {declared:?}"),
                        f,
                    ));
                }
            }
            continue;
        }
        let name = port.str_at("name").unwrap_or_default();
        let name_pos = port.key_pos("name").unwrap_or(port.pos);
        match name_protocol(name) {
            Some(p) => {
                if let (Some(f), Some(e)) = (family(p), expected) {
                    if f != e && f != Family::Other {
                        out.push(contradiction(
                            file,
                            name_pos,
                            svc_name,
                            number,
                            &format!("name {name:?}"),
                            f,
                        ));
                    }
                }
            }
            None => {
                let lower = name.to_ascii_lowercase();
                if ["grpc", "http", "h2c", "web"]
                    .iter()
                    .any(|h| lower.contains(h))
                {
                    out.push(finding(
                        file,
                        name_pos,
                        "port-protocol-undeclared",
                        format!(
                            "Service {svc_name:?} port {number} is named {name:?}, which does not start with a protocol Istio knows \
                             (http, http2, grpc, grpc-web, https, tls, tcp…) and has no appProtocol: the mesh treats it as opaque TCP, \
                             so gRPC on it is balanced per connection instead of per call, and gets no retries or request metrics"
                        ),
                        format!(
                            "name it with the protocol first, like {:?}, or add appProtocol: {}",
                            suggested_name(&lower),
                            if lower.contains("grpc") { "grpc" } else { "http" }
                        ),
                    ));
                }
            }
        }
    }
}

fn suggested_name(name: &str) -> String {
    let proto = if name.contains("grpc") {
        "grpc"
    } else if name.contains("h2c") {
        "http2"
    } else {
        "http"
    };
    let rest: Vec<&str> = name
        .split(['-', '_'])
        .filter(|p| !p.is_empty() && !p.contains(proto) && *p != "port")
        .collect();
    if rest.is_empty() {
        proto.to_string()
    } else {
        format!("{proto}-{}", rest.join("-"))
    }
}

fn contradiction(file: &str, pos: Pos, svc: &str, port: i64, declared: &str, f: Family) -> Finding {
    let (message, help) = if f == Family::Plain {
        (
            format!("Service {svc:?} declares port {port} as plaintext HTTP ({declared}), but port {port} carries TLS: {MESH_EFFECT}"),
            "name the port https (or tls), or set appProtocol: https; if plaintext really travels on this port, move it off 443".to_string(),
        )
    } else {
        (
            format!("Service {svc:?} declares port {port} as TLS ({declared}), but port {port} carries plaintext HTTP: the mesh forwards it as opaque TLS, with no HTTP routing, retries or metrics"),
            "name the port http (or http2/grpc), or set appProtocol: http".to_string(),
        )
    };
    finding(file, pos, "port-name-protocol", message, help)
}

/// An Istio `port: {number, protocol, name}` that declares plaintext HTTP on 443.
fn istio_port(file: &str, port: &Node, what: &str, out: &mut Vec<Finding>) {
    let Some(number) = port.get("number").and_then(Node::int) else {
        return;
    };
    let Some((key, value)) = port.entry("protocol") else {
        return;
    };
    let declared = value.str().unwrap_or_default();
    if port_family(number) == Some(Family::Tls) && family(declared) == Some(Family::Plain) {
        out.push(finding(
            file,
            key.pos,
            "port-name-protocol",
            format!(
                "this {what} declares port {number} as {declared}, but port {number} carries TLS: the sidecars parse every TLS \
                 ClientHello to it as HTTP, and clients see 'SSL routines … unknown protocol' or 'wrong version number'"
            ),
            "set protocol: TLS (or HTTPS) for port 443; declare HTTP only on the port the plaintext really uses".into(),
        ));
    }
}

/// The pod template (or the Pod's own spec) of a workload.
fn pod_spec(node: &Node) -> Option<&Node> {
    let spec = node.get("spec")?;
    match node.str_at("kind")? {
        "Pod" => Some(spec),
        "CronJob" => spec.at(&["jobTemplate", "spec", "template", "spec"]),
        _ => spec.at(&["template", "spec"]),
    }
}

/// ESP's (Extensible Service Proxy) ports and its client body timeout,
/// read from a container's command line.
struct Esp<'a> {
    args_key: Pos,
    http2_port: Option<i64>,
    http_port: Option<i64>,
    body_timeout: Option<(&'a Node, f64)>,
}

fn flags(container: &Node) -> Vec<(&Node, &str, Option<&str>)> {
    // (node of the flag, name, value): `--x=1` or `--x 1`.
    let words: Vec<&Node> = ["command", "args"]
        .iter()
        .flat_map(|k| container.get(k).map_or(&[][..], Node::items))
        .collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let Some(text) = w.str() else { continue };
        let Some(flag) = text.strip_prefix("--") else {
            continue;
        };
        match flag.split_once('=') {
            Some((name, value)) => out.push((*w, name, Some(value))),
            None => {
                let next = words
                    .get(i + 1)
                    .and_then(|n| n.str())
                    .filter(|n| !n.starts_with('-'));
                out.push((*w, flag, next));
            }
        }
    }
    out
}

fn esp(container: &Node) -> Option<Esp<'_>> {
    let flags = flags(container);
    let image = container.str_at("image").unwrap_or_default();
    let is_esp = image.contains("endpoints-runtime")
        || image.contains("/esp")
        || flags
            .iter()
            .any(|(_, n, _)| *n == "http2_port" || *n == "backend" && image.contains("esp"));
    if !is_esp {
        return None;
    }
    let port = |name: &str| {
        flags
            .iter()
            .find(|(_, n, _)| *n == name)
            .and_then(|(_, _, v)| v.and_then(|v| v.parse().ok()))
    };
    let body_timeout = flags
        .iter()
        .find(|(_, n, _)| *n == "client_body_timeout")
        .and_then(|(node, _, v)| Some((*node, seconds_text(v.as_ref()?)?)));
    Some(Esp {
        args_key: container
            .key_pos("args")
            .or(container.key_pos("command"))
            .unwrap_or(container.pos),
        http2_port: port("http2_port"),
        http_port: port("http_port"),
        body_timeout,
    })
}

fn workload(file: &str, pod: &Node, out: &mut Vec<Finding>) {
    let containers = pod.get("containers").map_or(&[][..], Node::items);
    // Named container ports, for probes that name theirs; and their names by number.
    let mut named: HashMap<&str, i64> = HashMap::new();
    let mut names: HashMap<i64, &str> = HashMap::new();
    for c in containers {
        for p in c.get("ports").map_or(&[][..], Node::items) {
            if let (Some(name), Some(n)) =
                (p.str_at("name"), p.get("containerPort").and_then(Node::int))
            {
                named.insert(name, n);
                names.insert(n, name);
            }
        }
    }
    let esps: Vec<Esp> = containers.iter().filter_map(esp).collect();
    for e in &esps {
        if e.http2_port.is_none() {
            continue;
        }
        match e.body_timeout {
            None => out.push(finding(
                file,
                e.args_key,
                "stream-timeout",
                "ESP serves gRPC here (--http2_port) without --client_body_timeout: ESP is NGINX, which closes a request body \
                 (a client or bidirectional stream) that sends nothing for 60s by default, so quiet streams are cut"
                    .into(),
                "add --client_body_timeout=1h (longer than your longest quiet stream)".into(),
            )),
            Some((node, secs)) if secs > 0.0 && secs < 3600.0 => out.push(finding(
                file,
                node.pos,
                "stream-timeout",
                format!(
                    "--client_body_timeout is {}: ESP (NGINX) cuts any client or bidirectional stream that sends nothing for that long",
                    human(secs)
                ),
                "raise it above your longest quiet stream, like --client_body_timeout=1h".into(),
            )),
            Some(_) => {}
        }
    }
    for c in containers {
        for probe_kind in ["readinessProbe", "livenessProbe", "startupProbe"] {
            let Some(probe) = c.get(probe_kind) else {
                continue;
            };
            let resolve = |n: &Node| -> Option<i64> {
                n.int()
                    .or_else(|| n.str().and_then(|s| named.get(s).copied()))
            };
            if let Some((key, http)) = probe.entry("httpGet") {
                let https = http
                    .str_at("scheme")
                    .is_some_and(|s| s.eq_ignore_ascii_case("https"));
                let Some(port) = http.get("port").and_then(resolve) else {
                    continue;
                };
                if https {
                    continue;
                }
                if let Some(e) = esps.iter().find(|e| e.http2_port == Some(port)) {
                    let help = match e.http_port {
                        Some(h) => format!("point the probe at port {h}, ESP's --http_port (HTTP/1.1)"),
                        None => "give ESP a second, HTTP/1.1 port (--http_port=8001, declared in ports) and point the probe there; \
                                 or use a tcpSocket or grpc probe"
                            .to_string(),
                    };
                    out.push(finding(
                        file,
                        key.pos,
                        "h2c-probe",
                        format!(
                            "this {probe_kind} sends HTTP/1.1 to port {port}, which ESP serves as HTTP/2 cleartext only (--http2_port): \
                             NGINX before 1.25.1 cannot take HTTP/1.1 and h2c on one port, so the probe always fails and the pod never becomes Ready"
                        ),
                        help,
                    ));
                } else if let Some(name) = names.get(&port).filter(|n| {
                    let n = n.to_ascii_lowercase();
                    (n.starts_with("grpc") && !n.starts_with("grpc-web")) || n.starts_with("h2c")
                }) {
                    out.push(finding(
                        file,
                        key.pos,
                        "h2c-probe",
                        format!(
                            "this {probe_kind} sends HTTP/1.1 to port {port} ({name:?}), which is declared for gRPC: most gRPC servers \
                             speak HTTP/2 only and close an HTTP/1.1 request, so the probe fails"
                        ),
                        format!("use a grpc probe instead (grpc: {{port: {port}}}), which calls grpc.health.v1.Health/Check"),
                    ));
                }
            }
            if let Some((key, grpc)) = probe.entry("grpc") {
                let Some(port) = grpc.get("port").and_then(Node::int) else {
                    continue;
                };
                let esp_http = esps.iter().any(|e| e.http_port == Some(port));
                let http_name = names.get(&port).filter(|n| {
                    let n = n.to_ascii_lowercase();
                    (n.starts_with("http") && !n.starts_with("http2")) || n.starts_with("metrics")
                });
                if esp_http || http_name.is_some() {
                    let what = match http_name {
                        Some(n) => format!("named {n:?}"),
                        None => "ESP's --http_port".to_string(),
                    };
                    out.push(finding(
                        file,
                        key.pos,
                        "grpc-probe-no-health",
                        format!(
                            "this {probe_kind} calls grpc.health.v1.Health/Check on port {port} ({what}), which serves HTTP/1.1, not gRPC: \
                             the probe always fails"
                        ),
                        "aim the grpc probe at the gRPC port, or use an httpGet probe on this one".into(),
                    ));
                }
            }
        }
    }
}

const NGINX: &str = "nginx.ingress.kubernetes.io/";

/// ingress-nginx with a gRPC backend: its read and send timeouts (60 s by
/// default) end quiet streams.
fn ingress(file: &str, node: &Node, out: &mut Vec<Finding>) {
    let Some(annotations) = node.get("metadata").and_then(|m| m.get("annotations")) else {
        return;
    };
    let Some((proto_key, proto)) = annotations.entry(&format!("{NGINX}backend-protocol")) else {
        return;
    };
    if !proto
        .str()
        .is_some_and(|p| p.eq_ignore_ascii_case("grpc") || p.eq_ignore_ascii_case("grpcs"))
    {
        return;
    }
    let mut missing = Vec::new();
    for which in ["proxy-read-timeout", "proxy-send-timeout"] {
        let direction = if which == "proxy-read-timeout" {
            "the server sends nothing"
        } else {
            "the client sends nothing"
        };
        match annotations.entry(&format!("{NGINX}{which}")) {
            None => missing.push(which),
            Some((key, value)) => {
                if let Some(secs) = value
                    .str()
                    .and_then(seconds_text)
                    .filter(|s| *s > 0.0 && *s < 3600.0)
                {
                    out.push(finding(
                        file,
                        key.pos,
                        "stream-timeout",
                        format!(
                            "{which} is {}: NGINX cuts a gRPC stream in which {direction} for that long",
                            human(secs)
                        ),
                        format!("raise {NGINX}{which} above your quietest stream, like \"3600\""),
                    ));
                }
            }
        }
    }
    if !missing.is_empty() {
        out.push(finding(
            file,
            proto_key.pos,
            "stream-timeout",
            format!(
                "this Ingress sends gRPC through NGINX without {}: a stream that is quiet for 60s (NGINX's default) is cut, \
                 and clients see UNAVAILABLE or 'stream terminated by RST_STREAM'",
                missing.join(" and ")
            ),
            format!(
                "add {} (seconds; longer than your quietest stream)",
                missing.iter().map(|m| format!("{NGINX}{m}: \"3600\"")).collect::<Vec<_>>().join(" and ")
            ),
        ));
    }
}

/// Whether a mesh host names a Service (read in this run) with a port
/// declared gRPC, or says gRPC itself.
fn grpc_host(host: &str, services: &[&Doc]) -> bool {
    let short = host.split('.').next().unwrap_or(host);
    host.contains("grpc")
        || services.iter().any(|s| {
            s.node.get("metadata").and_then(|m| m.str_at("name")) == Some(short)
                && spec_items(&s.node, &["ports"]).iter().any(|p| {
                    p.str_at("appProtocol")
                        .or_else(|| p.str_at("name").and_then(name_protocol))
                        .is_some_and(|proto| proto.to_ascii_lowercase().starts_with("grpc"))
                })
        })
}

fn virtual_service(file: &str, vs: &Node, services: &[&Doc], out: &mut Vec<Finding>) {
    for http in spec_items(vs, &["http"]) {
        let Some((key, value)) = http.entry("timeout") else {
            continue;
        };
        let Some(secs) = value.str().and_then(seconds_text).filter(|s| *s > 0.0) else {
            continue;
        };
        let hosts: Vec<&str> = http
            .get("route")
            .map_or(&[][..], Node::items)
            .iter()
            .filter_map(|r| r.get("destination").and_then(|d| d.str_at("host")))
            .collect();
        if let Some(host) = hosts.iter().find(|h| grpc_host(h, services)) {
            out.push(finding(
                file,
                key.pos,
                "stream-timeout",
                format!(
                    "this route's timeout {} applies to gRPC calls to {host:?}: every stream longer than that is reset and clients see \
                     DEADLINE_EXCEEDED or UNAVAILABLE ('upstream request timeout')",
                    human(secs)
                ),
                "remove timeout from routes that carry gRPC streams (Istio sets none by default); gRPC calls carry their own deadline".into(),
            ));
        }
    }
}
