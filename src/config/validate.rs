//! Raw file structs → validated [`Config`]. Every check runs even after an
//! earlier one failed, so one run reports every problem in the file.
//! Listeners and the top level live here; clusters, routes and TLS have
//! their own modules.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use super::context::{one_of, Ctx};
use super::locate::join;
use super::model::*;
use super::raw::{RawAdmin, RawConfig, RawListener};
use super::{cluster, route, tls, traffic, transcoding};

/// Checks the whole file. `None` if any error was reported.
pub fn config(raw: RawConfig, cx: &mut Ctx, source: Option<PathBuf>) -> Option<Config> {
    let drain_timeout = cx.duration(
        "drain_timeout",
        &raw.drain_timeout,
        Some(DEFAULT_DRAIN_TIMEOUT),
        false,
    );
    let admin = raw.admin.as_ref().map(|a| admin(cx, a));
    let access_log = access_log(cx, raw.access_log.as_deref());
    let clusters = cluster::clusters(cx, raw.clusters.unwrap_or_default());
    let auth = super::auth::registry(cx, raw.jwt_providers, raw.api_keys);
    let xds = raw.xds.map(|x| super::control_plane::xds(cx, x));
    let listeners = listeners(cx, raw.listeners, &clusters, &auth, xds.is_some());
    let tracing = raw.tracing.as_ref().map(|t| super::trace::tracing(cx, t));
    let config = Config {
        source,
        admin: match admin {
            Some(a) => Some(a?),
            None => None,
        },
        listeners: listeners?,
        clusters: clusters.into_valid()?,
        drain_timeout: drain_timeout??,
        access_log,
        files: std::mem::take(&mut cx.files),
        jwt_providers: auth.providers,
        api_keys: auth.key_sets,
        tracing: match tracing {
            Some(t) => Some(t?),
            None => None,
        },
        xds: match xds {
            Some(x) => Some(x?),
            None => None,
        },
    };
    (!cx.findings.has_errors()).then_some(config)
}

fn admin(cx: &mut Ctx, raw: &RawAdmin) -> Option<Admin> {
    let text = cx.required(
        "admin.address",
        &raw.address,
        "write one like 127.0.0.1:9901",
    )?;
    Some(Admin {
        address: socket_addr(cx, "admin.address", text)?,
    })
}

fn listeners(
    cx: &mut Ctx,
    raw: Option<Vec<RawListener>>,
    clusters: &cluster::Clusters,
    auth: &super::auth::Registry,
    xds: bool,
) -> Option<Vec<Listener>> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() && !xds {
        cx.error(
            "listeners",
            "no listeners are defined; add at least one under listeners: \
             (a name and an address, like 0.0.0.0:8443)",
        );
        return None;
    }
    unique_names(cx, &raw);
    let out: Vec<Option<Listener>> = raw
        .into_iter()
        .enumerate()
        .map(|(i, raw)| listener(cx, &format!("listeners[{i}]"), raw, clusters, auth))
        .collect();
    out.into_iter().collect()
}

/// Names and (non-zero) addresses are checked on what was written, so a
/// duplicate is reported even when the listener has other problems.
fn unique_names(cx: &mut Ctx, raw: &[RawListener]) {
    let mut names = HashSet::new();
    let mut addresses = HashMap::new();
    for (i, l) in raw.iter().enumerate() {
        if let Some(name) = l.name.as_deref().filter(|n| !n.trim().is_empty()) {
            if !names.insert(name) {
                let at = format!("listeners[{i}].name");
                cx.error(
                    &at,
                    format!("listener name {name:?} is used twice; names must be unique"),
                );
            }
        }
        let addr = l
            .address
            .as_deref()
            .and_then(|a| a.trim().parse::<SocketAddr>().ok());
        let Some(addr) = addr.filter(|a| a.port() != 0) else {
            continue;
        };
        let name = l.name.as_deref().unwrap_or("?");
        if let Some(first) = addresses.insert(addr, name) {
            let at = format!("listeners[{i}].address");
            cx.error(
                &at,
                format!("address {addr} is already used by listener {first:?}; each listener needs its own port"),
            );
        }
    }
}

fn listener(
    cx: &mut Ctx,
    path: &str,
    raw: RawListener,
    clusters: &cluster::Clusters,
    auth: &super::auth::Registry,
) -> Option<Listener> {
    let name_path = join(path, "name");
    let name = cx.required(
        &name_path,
        &raw.name,
        "give the listener a unique name, like edge",
    );
    let addr_path = join(path, "address");
    let address = cx
        .required(
            &addr_path,
            &raw.address,
            "write the address to listen on, like 0.0.0.0:8443",
        )
        .and_then(|text| socket_addr(cx, &addr_path, text));
    let protocol = listener_protocol(cx, &join(path, "protocol"), raw.protocol.as_deref());
    let traffic = traffic::traffic(cx, path, &raw, protocol, clusters);
    let header_read_timeout = cx.duration(
        &join(path, "header_read_timeout"),
        &raw.header_read_timeout,
        Some(DEFAULT_HEADER_READ_TIMEOUT),
        true,
    );
    let tls = raw.tls.map(|t| tls::server(cx, &join(path, "tls"), t));
    let health_path = health_path(
        cx,
        &join(path, "health.path"),
        raw.health.and_then(|h| h.path),
    );
    let json_transcoding = raw
        .json_transcoding
        .map(|t| transcoding::transcoding(cx, &join(path, "json_transcoding"), t));
    let cors = super::cors::cors(cx, &join(path, "cors"), raw.cors);
    let routes: Vec<Option<Route>> = raw
        .routes
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let default_name = format!("{}/{i}", name.unwrap_or("?"));
            route::route(
                cx,
                &format!("{path}.routes[{i}]"),
                default_name,
                r,
                clusters,
                auth,
            )
        })
        .collect();
    let mut seen: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
    for (i, r) in routes.iter().enumerate() {
        let Some(r) = r else { continue };
        if let Some(first) = seen.insert(&r.name, i) {
            let at = format!("{path}.routes[{i}].name");
            cx.error(
                &at,
                format!(
                    "{at} {:?} is already the name of {path}.routes[{first}]: route names are unique \
                     within a listener (metrics and logs tell routes apart by them)",
                    r.name
                ),
            );
        }
    }
    Some(Listener {
        name: name?.to_string(),
        address: address?,
        protocol: protocol?,
        tls: match tls {
            Some(t) => Some(t?),
            None => None,
        },
        health_path: health_path?,
        allow_encoded_slashes: raw.allow_encoded_slashes.unwrap_or(false),
        header_read_timeout: header_read_timeout??,
        routes: routes.into_iter().collect::<Option<_>>()?,
        traffic: traffic?,
        json_transcoding: match json_transcoding {
            Some(t) => Some(t?),
            None => None,
        },
        grpc_web: raw.grpc_web.unwrap_or(true),
        cors: cors?,
    })
}

fn listener_protocol(cx: &mut Ctx, path: &str, text: Option<&str>) -> Option<ListenerProtocol> {
    match text.map(str::trim) {
        None | Some("auto") => Some(ListenerProtocol::Auto),
        Some("http") => Some(ListenerProtocol::Http),
        Some("tcp") => Some(ListenerProtocol::Tcp),
        Some(other) => {
            cx.error(path, one_of(path, other, &["auto", "http", "tcp"]));
            None
        }
    }
}

fn health_path(cx: &mut Ctx, path: &str, value: Option<String>) -> Option<String> {
    match value {
        None => Some(DEFAULT_HEALTH_PATH.to_string()),
        Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => Some(p),
        Some(p) => {
            cx.error(
                path,
                format!("{path} {p:?} must be a path starting with /, like /healthz"),
            );
            None
        }
    }
}

/// A listening address: an IP and a port.
pub fn socket_addr(cx: &mut Ctx, path: &str, text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    let message = match text.rsplit_once(':') {
        None => format!(
            "{path} {text:?} needs a port: write an IP and a port, like 0.0.0.0:8443"
        ),
        Some((host, _)) if host.contains(':') && !host.starts_with('[') => format!(
            "{path} {text:?}: write an IPv6 address in brackets, like [::]:8443"
        ),
        Some((_, port)) if port.parse::<u16>().is_err() => format!(
            "{path} {text:?} has an invalid port {port:?}: ports are numbers from 0 to 65535"
        ),
        Some((host, port)) if !host.starts_with('[') => format!(
            "{path} {text:?}: {host:?} is not an IP address; listen addresses must be IPs, \
             not host names: write 127.0.0.1:{port} for local only or 0.0.0.0:{port} for all interfaces"
        ),
        Some(_) => format!(
            "{path} {text:?} is not a valid address; write an IP and a port, like 0.0.0.0:8443 or [::]:8443"
        ),
    };
    cx.error(path, message);
    None
}

/// `access_log: stdout` (default) | `off` | a file path.
pub fn access_log(cx: &mut Ctx, value: Option<&str>) -> AccessLog {
    match value.map(str::trim) {
        None | Some("stdout") | Some("-") => AccessLog::Stdout,
        Some("off") | Some("") => AccessLog::Off,
        Some(path) => {
            let file: PathBuf = cx.file(path);
            AccessLog::File(file)
        }
    }
}
