//! A listener's non-HTTP traffic: `detect_timeout`, `original_destination`,
//! `destination_protocols`, `tls_passthrough` and `tcp`, checked together
//! because they constrain each other (and `protocol`, `tls`, `routes`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::cluster::Clusters;
use super::context::{one_of, Ctx};
use super::locate::join;
use super::model::*;
use super::patterns::valid_hostname;
use super::raw::{RawListener, RawPassthrough, RawPortMap, RawTcp};

/// Checks the traffic keys of the listener at `path`. `protocol` is the
/// validated `protocol:` (None when it was invalid: cross-checks that need
/// it are skipped, the problem is already reported).
pub fn traffic(
    cx: &mut Ctx,
    path: &str,
    raw: &RawListener,
    protocol: Option<ListenerProtocol>,
    clusters: &Clusters,
) -> Option<Traffic> {
    let original = raw.original_destination.unwrap_or(false);
    let detect_timeout = detect_timeout(cx, path, raw, protocol);
    let destination_protocols = match &raw.destination_protocols {
        Some(map) => destination_protocols(cx, &join(path, "destination_protocols"), map, original),
        None => Some(BTreeMap::new()),
    };
    let tls_passthrough = match &raw.tls_passthrough {
        Some(rules) => passthrough(cx, &join(path, "tls_passthrough"), rules, clusters),
        None => Some(Vec::new()),
    };
    let tcp = match &raw.tcp {
        Some(t) => tcp(cx, &join(path, "tcp"), t, original, clusters),
        None => Some(TcpProxy::default()),
    };
    if let Some(protocol) = protocol {
        cross_checks(cx, path, raw, protocol);
    }
    Some(Traffic {
        detect_timeout: detect_timeout?,
        original_destination: original,
        destination_protocols: destination_protocols?,
        tls_passthrough: tls_passthrough?,
        tcp: tcp?,
    })
}

fn detect_timeout(
    cx: &mut Ctx,
    path: &str,
    raw: &RawListener,
    protocol: Option<ListenerProtocol>,
) -> Option<std::time::Duration> {
    let at = join(path, "detect_timeout");
    let d = cx.duration(&at, &raw.detect_timeout, Some(DEFAULT_DETECT_TIMEOUT), true)??;
    if raw.detect_timeout.is_some() {
        if let Some(p @ (ListenerProtocol::Http | ListenerProtocol::Tcp)) = protocol {
            let p = p.as_str();
            cx.warning(
                &at,
                format!("{at} is not used: protocol: {p} never waits to detect a protocol; remove it or use protocol: auto"),
            );
        } else if d > DETECT_TIMEOUT_WARN_ABOVE {
            cx.warning(
                &at,
                format!(
                    "{at} is {}: every connection of a server-first protocol (SMTP, MySQL) \
                     waits this long for its greeting; keep it under {}",
                    super::duration::display(d),
                    super::duration::display(DETECT_TIMEOUT_WARN_ABOVE)
                ),
            );
        }
    }
    Some(d)
}

fn destination_protocols(
    cx: &mut Ctx,
    path: &str,
    map: &RawPortMap,
    original: bool,
) -> Option<BTreeMap<u16, DeclaredProtocol>> {
    if !original {
        cx.error(
            path,
            format!(
                "{path} are hints for original destinations; \
                 add original_destination: true to the listener, or remove them"
            ),
        );
        return None;
    }
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (port, protocol) in &map.0 {
        let at = join(path, port);
        let port_num = match port.trim().parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                cx.key_error(
                    &at,
                    format!("{path}: {port:?} is not a port; write a port number from 1 to 65535, like \"443\""),
                );
                None
            }
        };
        let declared = match protocol.trim() {
            "http" => Some(DeclaredProtocol::Http),
            "tls" => Some(DeclaredProtocol::Tls),
            "tcp" => Some(DeclaredProtocol::Tcp),
            other => {
                let mut message = one_of(&at, other, &["http", "tls", "tcp"]);
                message += " (gRPC and h2c are http; HTTPS is tls)";
                cx.error(&at, message);
                None
            }
        };
        match (port_num, declared) {
            (Some(p), Some(d)) => {
                out.insert(p, d);
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn passthrough(
    cx: &mut Ctx,
    path: &str,
    rules: &[RawPassthrough],
    clusters: &Clusters,
) -> Option<Vec<TlsPassthrough>> {
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen = HashSet::new();
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let sni_at = join(&at, "sni");
        let sni = cx
            .required(
                &sni_at,
                &rule.sni,
                "write the server name to match, like api.example.com or \"*.example.com\"",
            )
            .and_then(|text| match sni_match(text) {
                Ok(m) => Some(m),
                Err(e) => {
                    cx.error(&sni_at, format!("{sni_at} {text:?} {e}"));
                    None
                }
            });
        if let Some(m) = &sni {
            if !seen.insert(m.clone()) {
                cx.warning(
                    &sni_at,
                    format!(
                        "{sni_at}: an earlier rule has the same sni, so this one never matches"
                    ),
                );
            }
        }
        let cluster = passthrough_cluster(cx, &join(&at, "cluster"), &rule.cluster, clusters);
        match (sni, cluster) {
            (Some(sni), Some(cluster)) => out.push(TlsPassthrough { sni, cluster }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// A cluster that receives bytes torii does not interpret: it must not
/// wrap them in torii's own TLS.
fn passthrough_cluster(
    cx: &mut Ctx,
    at: &str,
    name: &Option<String>,
    clusters: &Clusters,
) -> Option<Arc<Cluster>> {
    let name = cx.required(at, name, "write the name of a cluster")?;
    let cluster = clusters.resolve(cx, at, name)?;
    if cluster.tls.is_some() {
        cx.error(
            at,
            format!(
                "{at}: cluster {name:?} has tls:, but these bytes are forwarded as they are \
                 (the client's own TLS, or opaque TCP); use a cluster without tls:"
            ),
        );
        return None;
    }
    Some(cluster)
}

/// `*`, `*.example.com` or `api.example.com`.
pub fn sni_match(text: &str) -> Result<SniMatch, String> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('.').unwrap_or(&lower);
    if lower == "*" {
        return Ok(SniMatch::Any);
    }
    let (suffix, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower),
    };
    if name.contains('*') {
        return Err("may have a wildcard only as its first label, like \"*.example.com\", or be \"*\" for every ClientHello".into());
    }
    if name.contains(':') {
        return Err("is a server name: write it without a port".into());
    }
    if !valid_hostname(name) {
        return Err("is not a valid server name; write one like api.example.com".into());
    }
    Ok(if suffix {
        SniMatch::Suffix(format!(".{name}"))
    } else {
        SniMatch::Exact(name.to_string())
    })
}

fn tcp(
    cx: &mut Ctx,
    path: &str,
    raw: &RawTcp,
    original: bool,
    clusters: &Clusters,
) -> Option<TcpProxy> {
    let idle_timeout = cx.duration(
        &join(path, "idle_timeout"),
        &raw.idle_timeout,
        Some(DEFAULT_TCP_IDLE_TIMEOUT),
        true,
    );
    let cluster_at = join(path, "cluster");
    let cluster = match &raw.cluster {
        None => Some(None),
        Some(_) if original => {
            cx.error(
                &cluster_at,
                format!(
                    "{cluster_at}: an original_destination listener sends opaque TCP where it was headed; \
                     remove tcp.cluster (or use a listener without original_destination)"
                ),
            );
            None
        }
        Some(_) => passthrough_cluster(cx, &cluster_at, &raw.cluster, clusters).map(Some),
    };
    Some(TcpProxy {
        cluster: cluster?,
        idle_timeout: idle_timeout??,
    })
}

/// Rules between `protocol`, `tls`, `routes` and the traffic keys, on what
/// was written (so they are reported even when a value has its own problem).
fn cross_checks(cx: &mut Ctx, path: &str, raw: &RawListener, protocol: ListenerProtocol) {
    let at = join(path, "protocol");
    let routes = raw.routes.as_ref().is_some_and(|r| !r.is_empty());
    let tcp_cluster = raw.tcp.as_ref().is_some_and(|t| t.cluster.is_some());
    let original = raw.original_destination.unwrap_or(false);
    let passthrough = raw.tls_passthrough.as_ref().is_some_and(|r| !r.is_empty());
    match protocol {
        ListenerProtocol::Tcp => {
            if !tcp_cluster && !original {
                cx.error(
                    &at,
                    format!("{at}: tcp needs a place to send the bytes: add tcp: {{cluster: NAME}}, or original_destination: true"),
                );
            }
            if raw.tls.is_some() {
                cx.error(
                    &join(path, "tls"),
                    format!("{path}: protocol: tcp forwards bytes as they are, so it cannot terminate TLS; remove tls: or use protocol: auto"),
                );
            }
            if passthrough {
                cx.error(
                    &join(path, "tls_passthrough"),
                    format!("{path}: protocol: tcp never reads the ClientHello, so tls_passthrough cannot route by SNI; use protocol: auto"),
                );
            }
            if routes {
                cx.warning(
                    &join(path, "routes"),
                    format!("{path}.routes are not used: protocol: tcp never reads HTTP; remove them or use protocol: auto"),
                );
            }
        }
        ListenerProtocol::Http => {
            if tcp_cluster {
                cx.warning(
                    &join(path, "tcp.cluster"),
                    format!("{path}.tcp.cluster is not used: protocol: http never forwards opaque TCP; use protocol: auto"),
                );
            }
        }
        ListenerProtocol::Auto => {}
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::load_str;

    fn load(yaml: &str) -> Result<Config, Vec<String>> {
        load_str(yaml, Path::new("t.yaml"))
            .map(|l| l.config)
            .map_err(|ps| ps.iter().map(|p| p.to_string()).collect())
    }

    fn warnings(yaml: &str) -> Vec<String> {
        load_str(yaml, Path::new("t.yaml"))
            .expect("loads")
            .warnings
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    /// The only problem in `yaml`, which must contain `part` and be at `at`.
    #[track_caller]
    fn only(yaml: &str, at: &str, part: &str) {
        let p = load(yaml).err().unwrap_or_default();
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].starts_with(&format!("t.yaml:{at}: error: ")), "{p:#?}");
        assert!(p[0].contains(part), "{p:#?}");
    }

    /// One listener with `extra` lines (indented 4), and a cluster `plain`.
    fn listener(extra: &str) -> String {
        format!(
            "listeners:\n  - name: out\n    address: 127.0.0.1:15001\n{extra}\
             clusters:\n  - name: plain\n    endpoints: [\"127.0.0.1:9\"]\n"
        )
    }

    #[test]
    fn defaults() {
        let c = load(&listener("")).unwrap();
        let t = &c.listeners[0].traffic;
        assert_eq!(t.detect_timeout, DEFAULT_DETECT_TIMEOUT);
        assert!(!t.original_destination);
        assert!(t.destination_protocols.is_empty() && t.tls_passthrough.is_empty());
        assert!(t.tcp.cluster.is_none());
        assert_eq!(t.tcp.idle_timeout, DEFAULT_TCP_IDLE_TIMEOUT);
    }

    #[test]
    fn the_sidecar_example_loads() {
        let yaml = listener(
            "    protocol: auto\n    detect_timeout: 100ms\n    original_destination: true\n    \
             destination_protocols: { \"443\": http, 5432: tcp, \"8443\": tls }\n    \
             tls_passthrough:\n      - sni: \"*.Example.com.\"\n        cluster: plain\n      \
             - { sni: api.test, cluster: plain }\n      - { sni: \"*\", cluster: plain }\n    \
             tcp: { idle_timeout: 10m }\n",
        );
        let c = load(&yaml).unwrap();
        let t = &c.listeners[0].traffic;
        assert_eq!(t.detect_timeout, Duration::from_millis(100));
        assert!(t.original_destination);
        assert_eq!(t.destination_protocols[&443], DeclaredProtocol::Http);
        assert_eq!(t.destination_protocols[&5432], DeclaredProtocol::Tcp);
        assert_eq!(t.destination_protocols[&8443], DeclaredProtocol::Tls);
        assert_eq!(
            t.tls_passthrough[0].sni,
            SniMatch::Suffix(".example.com".into())
        );
        assert_eq!(t.tls_passthrough[1].sni, SniMatch::Exact("api.test".into()));
        assert_eq!(t.tls_passthrough[2].sni, SniMatch::Any);
        assert_eq!(t.tls_passthrough[0].cluster.name, "plain");
        assert_eq!(t.tcp.idle_timeout, Duration::from_secs(600));
    }

    #[test]
    fn an_opaque_tcp_listener() {
        let yaml = listener("    protocol: tcp\n    tcp: { cluster: plain, idle_timeout: 1h }\n");
        let c = load(&yaml).unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.protocol, ListenerProtocol::Tcp);
        assert_eq!(l.traffic.tcp.cluster.as_ref().unwrap().name, "plain");
        only(
            &listener("    protocol: tcp\n"),
            "4:15",
            "tcp needs a place to send the bytes",
        );
        assert!(load(&listener(
            "    protocol: tcp\n    original_destination: true\n"
        ))
        .is_ok());
        only(
            &listener("    protocol: tcp\n    tcp: {cluster: plain}\n    tls_passthrough: [{sni: a.test, cluster: plain}]\n"),
            "6:22",
            "never reads the ClientHello",
        );
        let w = warnings(&listener(
            "    protocol: tcp\n    tcp: {cluster: plain}\n    routes: [{cluster: plain}]\n",
        ));
        assert!(w[0].contains("routes are not used"), "{w:?}");
    }

    #[test]
    fn every_traffic_problem_at_once() {
        let yaml = listener(
            "    protocol: tcp\n    detect_timeout: 5s\n    destination_protocols: { \"443\": https }\n    \
             tls_passthrough: [{sni: a.test, cluster: nope}]\n",
        );
        let p = load(&yaml).unwrap_err();
        let errors: Vec<_> = p.iter().filter(|p| p.contains(": error: ")).collect();
        assert_eq!(errors.len(), 4, "{p:#?}");
        for part in [
            "tcp needs a place",
            "add original_destination",
            "never reads the ClientHello",
            "\"nope\", which is not defined",
        ] {
            assert!(p.iter().any(|l| l.contains(part)), "{part}: {p:#?}");
        }
        let warnings: Vec<_> = p.iter().filter(|p| p.contains(": warning: ")).collect();
        assert_eq!(warnings.len(), 1, "one warning for detect_timeout: {p:#?}");
    }

    #[test]
    fn detect_timeouts() {
        only(
            &listener("    detect_timeout: 0s\n"),
            "4:21",
            "detect_timeout is zero",
        );
        only(
            &listener("    detect_timeout: fast\n"),
            "4:21",
            "is not a duration",
        );
        let w = warnings(&listener("    detect_timeout: 10s\n"));
        assert!(
            w.len() == 1 && w[0].starts_with("t.yaml:4:21: warning:") && w[0].contains("greeting"),
            "{w:?}"
        );
        let w = warnings(&listener("    protocol: http\n    detect_timeout: 100ms\n"));
        assert!(w[0].contains("is not used"), "{w:?}");
    }

    #[test]
    fn destination_protocol_hints() {
        only(
            &listener("    destination_protocols: {\"443\": http}\n"),
            "4:28",
            "add original_destination: true",
        );
        let od = |m: &str| {
            listener(&format!(
                "    original_destination: true\n    destination_protocols: {m}\n"
            ))
        };
        only(&od("{\"https\": tls}"), "5:29", "\"https\" is not a port");
        only(&od("{\"0\": tls}"), "5:29", "is not a port");
        only(
            &od("{\"443\": https}"),
            "5:36",
            "write one of: http, tls, tcp (did you mean \"http\"?) (gRPC and h2c are http; HTTPS is tls)",
        );
        only(&od("[443]"), "5:28", "must be a mapping");
    }

    #[test]
    fn passthrough_rules() {
        let rule = |r: &str| listener(&format!("    tls_passthrough:\n      - {r}\n"));
        only(&rule("{cluster: plain}"), "5:9", "sni is missing");
        only(
            &rule("{sni: \"a.*.test\", cluster: plain}"),
            "5:15",
            "wildcard only as its first label",
        );
        only(
            &rule("{sni: \"a.test:443\", cluster: plain}"),
            "5:15",
            "without a port",
        );
        only(
            &rule("{sni: \"a b\", cluster: plain}"),
            "5:15",
            "not a valid server name",
        );
        only(
            &rule("{sni: a.test, cluster: nope}"),
            "5:32",
            "names cluster \"nope\", which is not defined",
        );
        only(&rule("{sni: a.test}"), "5:9", "cluster is missing");
        let twice = listener("    tls_passthrough:\n      - {sni: a.test, cluster: plain}\n      - {sni: A.test, cluster: plain}\n");
        let w = warnings(&twice);
        assert!(
            w[0].starts_with("t.yaml:6:15: warning:") && w[0].contains("never matches"),
            "{w:?}"
        );
        only(
            &rule("{sni: a.test, cluster: plain, port: 1}"),
            "5:39",
            "unknown key \"port\"",
        );
    }

    #[test]
    fn tcp_targets() {
        only(
            &listener("    original_destination: true\n    tcp: {cluster: plain}\n"),
            "5:20",
            "remove tcp.cluster",
        );
        only(
            &listener("    tcp: {cluster: none}\n"),
            "4:20",
            "not defined",
        );
        only(
            &listener("    tcp: {idle_timeout: 0s}\n"),
            "4:25",
            "is zero",
        );
        only(
            &listener("    tcp: {cluster: plain, idle_timout: 1h}\n"),
            "4:27",
            "did you mean \"idle_timeout\"",
        );
        let w = warnings(&listener("    protocol: http\n    tcp: {cluster: plain}\n"));
        assert!(w[0].contains("tcp.cluster is not used"), "{w:?}");
    }

    #[test]
    fn clusters_with_tls_cannot_take_raw_bytes() {
        let dir = std::env::temp_dir().join(format!("torii-traffic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = crate::demo::certs::TestPki::new("traffic test CA");
        let ca = pki.write_ca(&dir, "ca").unwrap();
        let yaml = format!(
            "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    tcp: {{cluster: secure}}\n\
             clusters:\n  - name: secure\n    endpoints: [\"127.0.0.1:9\"]\n    tls: {{ca: \"{}\"}}\n",
            ca.display()
        );
        let p = load(&yaml).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("t.yaml:4:20: error:") && p[0].contains("has tls:"),
            "{p:?}"
        );
    }

    #[test]
    fn sni_matching() {
        let m = |s: &str| sni_match(s).unwrap();
        assert!(m("*").matches(None));
        assert!(m("*").matches(Some("x.test")));
        assert!(m("a.test").matches(Some("a.test")));
        assert!(!m("a.test").matches(Some("b.a.test")));
        assert!(!m("a.test").matches(None));
        assert!(m("*.a.test").matches(Some("b.a.test")));
        assert!(m("*.a.test").matches(Some("c.b.a.test")));
        assert!(!m("*.a.test").matches(Some("a.test")));
        assert!(!m("*.a.test").matches(Some("xa.test")));
    }
}
