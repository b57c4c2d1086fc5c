//! `xds:`: the control plane torii takes listeners, routes, clusters and
//! endpoints from (src/xds/ speaks to it).

use super::context::Ctx;
use super::locate::join;
use super::model::XdsSource;
use super::raw::RawXds;

/// Checks `xds:`. `listeners_written`: whether the file has `listeners:`
/// too (static and xDS listeners coexist; without them the file needs
/// nothing else).
pub fn xds(cx: &mut Ctx, raw: RawXds, _listeners_written: bool) -> Option<XdsSource> {
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
