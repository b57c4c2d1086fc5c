//! `xds:`: the control plane torii takes listeners, routes, clusters and
//! endpoints from (src/xds/ speaks to it).

use super::context::Ctx;
use super::locate::join;
use super::model::XdsSource;
use super::raw::RawXds;

/// Checks `xds:`. With it, `listeners:` may be left out: the control
/// plane's listeners join the file's (names must not collide).
pub fn xds(cx: &mut Ctx, raw: RawXds) -> Option<XdsSource> {
    let server = cx
        .required(
            "xds.server",
            &raw.server,
            "write the xDS server's address, like 127.0.0.1:15010 (h2c) or https://istiod.istio-system.svc:15012",
        )
        .and_then(|text| server(cx, text));
    let node = raw.node.unwrap_or_default();
    let id = cx.required(
        "xds.node.id",
        &node.id,
        "give this torii an id the control plane knows it by, like torii-0 (Istio: sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local)",
    );
    let tls = raw
        .tls
        .map(|t| super::cluster::upstream_tls(cx, "xds.tls", t));
    let (address, https) = server?;
    let tls = match (https, tls) {
        (true, Some(t)) => Some(t?),
        (true, None) => {
            cx.error(
                "xds.server",
                "xds.server is https:// but xds has no tls:; add tls: {ca: ...} with the CA that \
                 signed the server's certificate (cert and key too for mutual TLS)",
            );
            return None;
        }
        (false, Some(_)) => {
            cx.error(
                "xds.tls",
                format!(
                    "xds.tls is set but xds.server {address:?} is plaintext; write \
                     https://{address} to use TLS, or remove tls:"
                ),
            );
            return None;
        }
        (false, None) => None,
    };
    Some(XdsSource {
        server: address,
        tls,
        node_id: id?.to_string(),
        node_cluster: node.cluster.unwrap_or_default().trim().to_string(),
    })
}

/// `host:port`, `http://host:port` or `https://host:port` → (host:port, TLS).
fn server(cx: &mut Ctx, text: &str) -> Option<(String, bool)> {
    let (rest, https) = if let Some(rest) = text.strip_prefix("https://") {
        (rest, true)
    } else if let Some(rest) = text.strip_prefix("http://") {
        (rest, false)
    } else if let Some((scheme, _)) = text.split_once("://") {
        cx.error(
            "xds.server",
            format!(
                "xds.server {text:?}: scheme {scheme:?} is not supported; write host:port (h2c), \
                 http://host:port (h2c) or https://host:port (TLS)"
            ),
        );
        return None;
    } else {
        (text, false)
    };
    let rest = rest.trim_end_matches('/');
    match super::cluster::endpoint(rest) {
        Ok(_) => Some((rest.to_string(), https)),
        Err(why) => {
            let at = join("xds", "server");
            cx.error(&at, format!("{at} {text:?}: {why}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn load(yaml: &str) -> Result<crate::config::Config, Vec<String>> {
        crate::config::load_str(yaml, Path::new("t.yaml"))
            .map(|l| l.config)
            .map_err(|ps| ps.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn xds_alone_is_a_whole_configuration() {
        let c = load("xds:\n  server: 127.0.0.1:15010\n  node: { id: torii-0, cluster: edge }\n")
            .unwrap();
        let x = c.xds.unwrap();
        assert_eq!(x.server, "127.0.0.1:15010");
        assert_eq!(
            (x.node_id.as_str(), x.node_cluster.as_str()),
            ("torii-0", "edge")
        );
        assert!(x.tls.is_none());
        assert!(c.listeners.is_empty());
        let c = load("xds:\n  server: http://cp.internal:18000\n  node: { id: a }\n").unwrap();
        assert_eq!(c.xds.unwrap().server, "cp.internal:18000");
    }

    #[test]
    fn xds_problems_point_at_the_field() {
        let p = load("xds:\n  server: 127.0.0.1\n  node: { cluster: edge }\n").unwrap_err();
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].starts_with("t.yaml:2:11: error: xds.server"), "{p:#?}");
        assert!(p[0].contains("add the port"), "{p:#?}");
        assert!(p[1].starts_with("t.yaml:3:"), "{p:#?}");
        assert!(p[1].contains("xds.node.id is missing"), "{p:#?}");

        let p = load("xds:\n  server: https://cp:15012\n  node: { id: a }\n").unwrap_err();
        assert!(p[0].contains("no tls:"), "{p:#?}");
        let p = load("xds:\n  server: grpc://cp:15012\n  node: { id: a }\n").unwrap_err();
        assert!(p[0].contains("scheme \"grpc\""), "{p:#?}");
        let p = load("xds:\n  server: cp:1\n  node: { id: a }\n  nodes: 1\n").unwrap_err();
        assert!(p[0].starts_with("t.yaml:4:3:"), "{p:#?}");
    }

    #[test]
    fn without_xds_listeners_are_still_required() {
        let p = load("clusters: []\n").unwrap_err();
        assert!(p[0].contains("no listeners are defined"), "{p:#?}");
    }
}
