//! Name resolution for cluster endpoints. hickory (reads /etc/resolv.conf
//! and /etc/hosts) with TTLs; when the system has no usable resolver
//! configuration, the libc resolver (getaddrinfo) with a fixed TTL.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;

use crate::config::{DNS_MAX_TTL, DNS_MIN_TTL};

/// TTL assumed for answers from getaddrinfo, which reports none.
const FALLBACK_TTL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Dns {
    resolver: Option<TokioResolver>,
}

impl Dns {
    pub fn system() -> Self {
        let resolver = match TokioResolver::builder_tokio().and_then(|b| b.build()) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::info!(error = %e, "no usable DNS resolver configuration; using the system's getaddrinfo");
                None
            }
        };
        Dns { resolver }
    }

    /// The libc resolver only, without reading any configuration: for
    /// clusters whose endpoints are all IP addresses (never resolved).
    pub fn getaddrinfo() -> Self {
        Dns { resolver: None }
    }

    /// Resolves `host` to addresses with `port`, and how long they may be kept.
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(Vec<SocketAddr>, Duration), String> {
        if let Some(r) = &self.resolver {
            match r.lookup_ip(host).await {
                Ok(lookup) => {
                    let ttl = lookup
                        .valid_until()
                        .saturating_duration_since(std::time::Instant::now())
                        .clamp(DNS_MIN_TTL, DNS_MAX_TTL);
                    let addrs: Vec<SocketAddr> =
                        lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                    if !addrs.is_empty() {
                        return Ok((addrs, ttl));
                    }
                }
                Err(e) => {
                    tracing::debug!(host, error = %e, "hickory lookup failed; trying getaddrinfo");
                }
            }
        }
        match tokio::net::lookup_host((host, port)).await {
            Ok(it) => {
                let mut addrs: Vec<SocketAddr> = it.collect();
                addrs.sort();
                addrs.dedup();
                if addrs.is_empty() {
                    Err(format!("the name {host} has no addresses"))
                } else {
                    Ok((addrs, FALLBACK_TTL))
                }
            }
            Err(e) => Err(format!("the name {host} could not be resolved: {e}")),
        }
    }
}
