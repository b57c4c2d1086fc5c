//! Builds the running proxy from a validated [`Config`]: clusters first,
//! then listeners on top of them, then the admin listener. Owns shutdown
//! and drain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::drain::Drain;
use crate::http::proxy::ListenerRuntime;
use crate::http::server::HttpServers;
use crate::listener::{self, Listening, LogOnce};
use crate::telemetry::Metrics;
use crate::upstream::dns::Dns;
use crate::upstream::ClusterRuntime;

/// A running torii: its bound addresses and the means to stop it.
pub struct Running {
    pub listeners: HashMap<String, SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub clusters: Arc<HashMap<String, Arc<ClusterRuntime>>>,
    drain_timeout: Duration,
    stop_admin: watch::Sender<bool>,
    ready: watch::Sender<bool>,
    drain: Drain,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The bound address of listener `name` (useful with port 0).
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener named {name}"))
    }

    /// Drains: readiness turns false, listeners stop accepting, HTTP/2
    /// clients get GOAWAY and HTTP/1.1 `connection: close`; in-flight
    /// requests get until the drain timeout.
    pub async fn shutdown(self) {
        self.ready.send_replace(false);
        let open = self.drain.count();
        if open > 0 {
            tracing::info!(connections = open, timeout = ?self.drain_timeout, "draining");
        }
        if tokio::time::timeout(self.drain_timeout, self.drain.drain())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?self.drain_timeout, "drain timeout reached; closing the remaining connections");
        }
        self.stop_admin.send_replace(true);
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Everything that can fail while turning a valid config into sockets.
pub async fn start(config: Config) -> Result<Running, String> {
    let metrics = Arc::new(Metrics::new());
    let dns = Dns::system();

    let mut clusters = HashMap::new();
    for c in &config.clusters {
        let rt =
            ClusterRuntime::new(c.clone(), &dns).map_err(|e| format!("cluster {}: {e}", c.name))?;
        clusters.insert(c.name.clone(), rt);
    }
    for c in clusters.values() {
        c.wait_resolved(Duration::from_secs(5)).await;
    }
    let clusters = Arc::new(clusters);

    let (ready, ready_rx) = watch::channel(false);
    let (stop_admin, stop_admin_rx) = watch::channel(false);
    let drain = Drain::new();
    let mut tasks = Vec::new();
    let mut bound = HashMap::new();

    for l in &config.listeners {
        let tls = match &l.tls {
            Some(t) => Some(TlsAcceptor::from(
                crate::listener::tls::server_config(t, &l.name)
                    .map_err(|e| format!("listener {}: {e}", l.name))?,
            )),
            None => None,
        };
        let tcp = TcpListener::bind(l.address)
            .await
            .map_err(|e| format!("listener {}: cannot listen on {}: {e}", l.name, l.address))?;
        let addr = tcp.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(listener = ?l.name, address = %addr, tls = l.tls.is_some(), "listening");
        bound.insert(l.name.clone(), addr);
        let listening = Arc::new(Listening {
            rt: Arc::new(ListenerRuntime::new(
                l.clone(),
                clusters.clone(),
                metrics.clone(),
            )),
            tls,
            servers: HttpServers::new(l.header_read_timeout),
            log_once: Arc::new(LogOnce::default()),
        });
        tasks.push(tokio::spawn(listener::accept_loop(
            tcp,
            listening,
            drain.watch(),
        )));
    }

    let mut admin_addr = None;
    if let Some(a) = &config.admin {
        let tcp = TcpListener::bind(a.address)
            .await
            .map_err(|e| format!("admin: cannot listen on {}: {e}", a.address))?;
        let addr = tcp.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(address = %addr, "admin listening");
        admin_addr = Some(addr);
        let state = AdminState {
            metrics: metrics.clone(),
            ready: ready_rx,
        };
        tasks.push(tokio::spawn(admin::serve(tcp, state, stop_admin_rx)));
    }
    ready.send_replace(true);

    Ok(Running {
        listeners: bound,
        admin: admin_addr,
        metrics,
        clusters,
        drain_timeout: config.drain_timeout,
        stop_admin,
        ready,
        drain,
        tasks,
    })
}

/// Loads `yaml` as if it were the file `file` (relative paths resolve
/// against its directory) and starts it. For embedding and tests.
pub async fn start_yaml(yaml: &str, file: &std::path::Path) -> Result<Running, String> {
    let loaded = crate::config::load_str(yaml, file).map_err(|problems| {
        problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    start(loaded.config).await
}
