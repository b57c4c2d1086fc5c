//! Listener (with an HttpConnectionManager, inline route configuration or
//! RDS) → what torii needs to build a [`crate::config::Listener`]: its
//! address, its routes or the name of the RouteConfiguration that holds
//! them, and its TLS (the filter chain's `DownstreamTlsContext`).

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::config::listener::v3::{filter, FilterChain, FilterChainMatch, Listener as PbListener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;

use super::decode;
use super::translate_route::{route_configuration, XRoute};
use super::translate_tls::downstream_tls;
use crate::config::ServerTls;

const HCM: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
/// HTTP filters whose work torii does by itself, or whose absence only
/// withholds something (no CORS headers: browsers refuse, as without it).
const BUILT_IN: [&str; 2] = [
    "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
    "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
];

/// Where a listener's routes are.
#[derive(Debug, Clone)]
pub enum Routes {
    Inline(Vec<XRoute>),
    /// The RouteConfiguration's name (RDS).
    Rds(String),
}

#[derive(Debug, Clone)]
pub struct XListener {
    pub name: String,
    pub address: SocketAddr,
    pub routes: Routes,
    /// From the filter chain's `DownstreamTlsContext`; None: plaintext.
    /// (Boxed: most listeners have none, and the cache holds many.)
    pub tls: Option<Box<ServerTls>>,
}

pub fn listener(l: &PbListener, ignored: &mut Vec<String>) -> Result<XListener, String> {
    if l.name.is_empty() {
        return Err("name is empty; every listener needs a name".into());
    }
    if l.api_listener.is_some() {
        return Err(
            "api_listener: torii serves listeners on a socket address, not API \
                    listeners (those are for proxyless gRPC clients)"
                .into(),
        );
    }
    let address = socket(l)?;
    let chain = match (l.filter_chains.as_slice(), &l.default_filter_chain) {
        ([only], None) => only,
        ([], Some(default)) => default,
        ([], None) => {
            return Err(
                "filter_chains is empty; torii needs one with an http_connection_manager".into(),
            )
        }
        (chains, _) => {
            return Err(format!(
                "filter_chains: torii serves one filter chain per listener (no \
                 filter_chain_match), and {} were sent",
                chains.len() + usize::from(l.default_filter_chain.is_some())
            ))
        }
    };
    let routes = chain_routes(chain, ignored).map_err(|e| format!("filter_chains[0].{e}"))?;
    let tls = match &chain.transport_socket {
        Some(ts) => downstream_tls(ts, &l.name, ignored)
            .map_err(|e| format!("filter_chains[0].{e}"))?
            .map(Box::new),
        None => None,
    };
    if !l.listener_filters.is_empty() {
        ignored.push(
            "listener_filters (torii detects TLS and HTTP from the first bytes by itself)".into(),
        );
    }
    if l.use_original_dst.is_some_and(|b| b.value) {
        return Err(
            "use_original_dst: torii does not hand connections to other listeners; \
                    leave it unset"
                .into(),
        );
    }
    Ok(XListener {
        name: l.name.clone(),
        address,
        routes,
        tls,
    })
}

fn socket(l: &PbListener) -> Result<SocketAddr, String> {
    let sa = match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(_) => return Err("address: torii listens on socket addresses only".into()),
        None => return Err("address is missing; torii needs an IP and a port to listen on".into()),
    };
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        format!(
            "address.socket_address.address {:?} is not an IP address; torii listens on IPs",
            sa.address
        )
    })?;
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => {
            u16::try_from(p).map_err(|_| format!("address port {p} is above 65535"))?
        }
        _ => return Err("address.socket_address needs port_value".into()),
    };
    Ok(SocketAddr::new(ip, port))
}

fn chain_routes(chain: &FilterChain, ignored: &mut Vec<String>) -> Result<Routes, String> {
    if chain
        .filter_chain_match
        .as_ref()
        .is_some_and(|m| *m != FilterChainMatch::default())
    {
        return Err(
            "filter_chain_match: torii does not pick filter chains by connection; \
                    ignoring the match would serve connections it excludes"
                .into(),
        );
    }
    let [only] = chain.filters.as_slice() else {
        return Err(format!(
            "filters: torii needs exactly one network filter, the http_connection_manager ({} sent)",
            chain.filters.len()
        ));
    };
    let any = match &only.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => any,
        _ => return Err("filters[0] needs a typed_config (an HttpConnectionManager)".into()),
    };
    let hcm: HttpConnectionManager =
        decode(any, HCM).map_err(|e| format!("filters[0].typed_config {e}"))?;
    http_filters(&hcm, ignored)?;
    match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) if !rds.route_config_name.is_empty() => {
            Ok(Routes::Rds(rds.route_config_name.clone()))
        }
        Some(RouteSpecifier::Rds(_)) => {
            Err("filters[0] (http_connection_manager).rds.route_config_name is empty".into())
        }
        Some(RouteSpecifier::RouteConfig(rc)) => Ok(Routes::Inline(
            route_configuration(rc, ignored)
                .map_err(|e| format!("filters[0] (http_connection_manager).route_config.{e}"))?,
        )),
        Some(_) => Err(
            "filters[0] (http_connection_manager): scoped_routes are not supported; \
                        use rds or route_config"
                .into(),
        ),
        None => Err(
            "filters[0] (http_connection_manager) has no routes: set rds or route_config".into(),
        ),
    }
}

/// The router must be there (last); a filter torii does not have is
/// skipped when optional or disabled, and refuses the listener otherwise
/// (its work — auth, rate limits — would silently not be done).
fn http_filters(hcm: &HttpConnectionManager, ignored: &mut Vec<String>) -> Result<(), String> {
    let mut router = false;
    for (i, f) in hcm.http_filters.iter().enumerate() {
        let url = match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => any.type_url.as_str(),
            _ => "",
        };
        if url == ROUTER {
            router = true;
            continue;
        }
        if BUILT_IN.contains(&url) {
            continue;
        }
        if f.is_optional || f.disabled {
            ignored.push(format!("http_filters[{i}] {:?} ({url}), optional", f.name));
            continue;
        }
        return Err(format!(
            "filters[0] (http_connection_manager).http_filters[{i}] {:?}: torii does not have \
             the filter {}; mark it is_optional if the listener may run without it",
            f.name,
            if url.is_empty() {
                "(no typed_config)"
            } else {
                url
            }
        ));
    }
    if !router {
        return Err(format!(
            "filters[0] (http_connection_manager).http_filters has no router ({ROUTER}); \
             torii needs it to forward requests"
        ));
    }
    Ok(())
}
