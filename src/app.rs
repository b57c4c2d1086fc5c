//! Builds the running proxy from a validated [`Config`]: clusters first,
//! then listeners on top of them, then the admin listener. Owns reloads
//! (a new config applied without dropping what runs) and the drain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::listener::tls_stream::TlsAcceptor;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

pub use crate::admin::Shared;
use crate::admin::{self, AdminState};
use crate::config::{AccessLog, Cluster, Config, Listener};
use crate::drain::Drain;
use crate::listener::{self, Listening};
use crate::proxy::Pipeline;
use crate::server::HttpServers;
use crate::telemetry::access_log::AccessLogger;
use crate::telemetry::log_once::LogOnce;
use crate::telemetry::metrics::ResultLabels;
use crate::telemetry::trace::Tracer;
use crate::telemetry::Metrics;
use crate::upstream::dns::Dns;
use crate::upstream::ClusterRuntime;

/// How long start-up waits for DNS-named endpoints to resolve once.
const FIRST_RESOLVE_WAIT: Duration = Duration::from_secs(5);

pub type Clusters = Arc<HashMap<String, Arc<ClusterRuntime>>>;

/// One bound listener and the means to stop it.
struct Bound {
    config: Listener,
    addr: SocketAddr,
    listening: Arc<ArcSwap<Listening>>,
    drain: Drain,
    task: JoinHandle<()>,
}

/// The admin listener that runs: what the config said, where it is bound.
struct AdminBound {
    configured: SocketAddr,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

struct State {
    listeners: HashMap<String, Bound>,
    /// The file's configuration as loaded (what xDS resources join).
    file: Option<Config>,
    /// What the control plane describes, as last applied.
    xds_parts: crate::xds::Snapshot,
    /// The xDS client, and the `xds:` it was started with.
    xds: Option<(String, JoinHandle<()>)>,
    logger: AccessLogger,
    /// The destination `logger` writes to.
    access_log: AccessLog,
    admin: Option<AdminBound>,
    /// `tracing:` at work (a reload that changes it starts a new one).
    tracer: Option<Tracer>,
}

/// A running torii: its bound addresses and the means to reload and stop it.
pub struct Running {
    /// The admin listener's address at start; a reload may move it (see
    /// [`Running::admin_addr`]).
    pub admin: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    pub shared: Arc<Shared>,
    core: Arc<Core>,
}

/// What applying a configuration needs, shared with the xDS client
/// (which applies what the control plane sends).
struct Core {
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    state: Mutex<State>,
    /// Bound addresses (listeners by name, and the admin listener), kept
    /// apart from `state` so that reading them never waits for a reload.
    addrs: std::sync::Mutex<Addrs>,
    dns: Dns,
    ready: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
}

#[derive(Default, Clone)]
struct Addrs {
    listeners: HashMap<String, SocketAddr>,
    admin: Option<SocketAddr>,
}

impl Running {
    /// The bound address of listener `name` (useful with port 0). During a
    /// reload it is the address in effect until the reload is applied.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.try_addr(name)
            .unwrap_or_else(|| panic!("no listener named {name}"))
    }

    pub fn try_addr(&self, name: &str) -> Option<SocketAddr> {
        self.read_addrs().listeners.get(name).copied()
    }

    /// Every listener's bound address.
    pub async fn addrs(&self) -> HashMap<String, SocketAddr> {
        self.read_addrs().listeners
    }

    /// The admin listener's bound address now (a reload may have moved it).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.read_addrs().admin
    }

    fn read_addrs(&self) -> Addrs {
        self.core
            .addrs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn clusters(&self) -> Clusters {
        self.shared.clusters.load_full()
    }

    /// Loads `path` with the same code as `torii check` and applies it.
    /// On any problem the running configuration stays as it is.
    pub async fn reload_file(&self, path: &std::path::Path) -> Result<(), String> {
        let result = match crate::config::load_file(path) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    tracing::warn!("{}", w.with_help());
                }
                self.apply(loaded.config).await
            }
            Err(problems) => Err(crate::config::problems_text(&problems)),
        };
        self.count_reload(&result);
        result
    }

    /// Applies a new configuration (the file's; what xDS sent joins it).
    /// Unchanged clusters keep their connections and health state;
    /// listeners whose address did not change keep their socket and
    /// connections (new requests see the new routes); new listeners are
    /// bound first, so a port that cannot be bound leaves everything as
    /// it was.
    pub async fn apply(&self, config: Config) -> Result<(), String> {
        self.core.apply_file(config).await
    }

    fn count_reload(&self, result: &Result<(), String>) {
        let label = if result.is_ok() { "success" } else { "error" };
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabels {
                result: label.to_string(),
            })
            .inc();
    }

    /// Drains: readiness turns false, listeners stop accepting (new
    /// connections are refused), HTTP/2 clients get GOAWAY and HTTP/1.1
    /// `connection: close`; in-flight requests get until the drain timeout.
    /// The admin listener answers until the end.
    pub async fn shutdown(self) {
        let core = &self.core;
        core.ready.send_replace(false);
        let timeout = self.shared.config.load().drain_timeout;
        let mut state = core.state.lock().await;
        if let Some((_, task)) = state.xds.take() {
            task.abort();
        }
        let admin = state.admin.take();
        let listeners = std::mem::take(&mut state.listeners);
        let logger = state.logger.clone();
        drop(state);
        let open: usize = listeners.values().map(|b| b.drain.count()).sum();
        tracing::info!(connections = open, timeout = %crate::config::duration::display(timeout), "draining");
        let drains = listeners.into_values().map(|b| b.drain.drain());
        if tokio::time::timeout(timeout, futures_util::future::join_all(drains))
            .await
            .is_err()
        {
            tracing::warn!(timeout = %crate::config::duration::display(timeout), "drain timeout reached; closing the remaining connections");
        }
        core.stop_admin.send_replace(true);
        if let Some(a) = admin {
            a.task.abort();
        }
        // The access log's last lines, written before the process ends.
        let _ = tokio::task::spawn_blocking(move || logger.flush(Duration::from_secs(2))).await;
    }
}

impl Core {
    /// The file's configuration, with what xDS sent; starts, restarts or
    /// stops the xDS client as `xds:` says.
    async fn apply_file(self: &Arc<Self>, config: Config) -> Result<(), String> {
        let mut state = self.state.lock().await;
        let source = config.xds.as_ref().map(|x| format!("{x:?}"));
        let parts = if source.is_some() {
            state.xds_parts.clone()
        } else {
            crate::xds::Snapshot::default()
        };
        let merged = merge(&config, &parts)?;
        self.apply_locked(&mut state, merged).await?;
        state.file = Some(config.clone());
        state.xds_parts = parts;
        if state.xds.as_ref().map(|(s, _)| s) != source.as_ref() {
            if let Some((_, task)) = state.xds.take() {
                tracing::info!("xds: changed or removed; stopping the client");
                task.abort();
                self.shared.xds.store(None);
            }
            if let (Some(x), Some(text)) = (&config.xds, source) {
                let core = Arc::downgrade(self);
                let apply: crate::xds::Apply = Arc::new(move |snapshot| {
                    let core = core.clone();
                    Box::pin(async move {
                        match core.upgrade() {
                            Some(core) => core.apply_xds(snapshot).await,
                            None => Err("torii is stopping".into()),
                        }
                    })
                });
                let (task, status) = crate::xds::spawn(x.clone(), self.metrics.clone(), apply);
                tracing::info!(server = %x.server, node = %x.node_id, "xDS: starting the client");
                self.shared.xds.store(Some(status));
                state.xds = Some((text, task));
            }
        }
        Ok(())
    }

    /// What the control plane describes now, with the file's configuration.
    async fn apply_xds(&self, parts: crate::xds::Snapshot) -> Result<(), String> {
        let mut state = self.state.lock().await;
        let file = state
            .file
            .clone()
            .ok_or("torii has not applied its configuration file yet")?;
        let merged = merge(&file, &parts)?;
        self.apply_locked(&mut state, merged).await?;
        state.xds_parts = parts;
        Ok(())
    }

    async fn apply_locked(&self, state: &mut State, config: Config) -> Result<(), String> {
        let old_clusters = self.shared.clusters.load_full();
        let clusters = build_clusters(&config, &old_clusters, &self.dns, &self.metrics).await?;
        let old_config = self.shared.config.load_full();
        start_jwks(&config, &old_config).await;

        // Prepare everything that can fail before changing anything.
        // A new access log destination is opened (and the old one closed
        // once the requests that hold it end); a log file is opened again
        // on every reload, so that a SIGHUP after logrotate moved it
        // writes to the new file. The admin listener moves.
        let reopen = matches!(config.access_log, AccessLog::File(_));
        let new_logger = if config.access_log != state.access_log || reopen {
            Some(AccessLogger::start(
                &config.access_log,
                self.metrics.clone(),
            )?)
        } else {
            None
        };
        let logger = new_logger.as_ref().unwrap_or(&state.logger).clone();
        let tracer = match (&config.tracing, &state.tracer) {
            (Some(t), Some(old)) if old.config() == t => Some(old.clone()),
            (Some(t), _) => Some(Tracer::start(t, self.metrics.clone())?),
            (None, _) => None,
        };
        let admin_configured = state.admin.as_ref().map(|a| a.configured);
        let new_admin = match &config.admin {
            Some(a) if Some(a.address) != admin_configured => {
                Some(Some(bind_admin(a.address).await?))
            }
            Some(_) => None,
            None if admin_configured.is_some() => Some(None),
            None => None,
        };
        let mut prepared = Vec::new();
        for l in &config.listeners {
            let tls = tls_acceptor(l)?;
            let old = state
                .listeners
                .get(&l.name)
                .map(|b| b.listening.load_full());
            let runtime = self.listener_runtime(
                l,
                &clusters,
                (&logger, &tracer),
                old.as_ref().map(|o| &*o.rt),
            );
            let socket = match state.listeners.get(&l.name) {
                Some(b) if b.config.address == l.address => None,
                _ => Some(bind(l).await?),
            };
            prepared.push((l.clone(), tls, runtime, socket));
        }

        let mut keep = HashMap::new();
        for (l, tls, runtime, socket) in prepared {
            match socket {
                None => {
                    let mut b = state.listeners.remove(&l.name).expect("checked above");
                    let old = b.listening.load_full();
                    old.live.store(runtime.clone());
                    b.listening.store(Arc::new(Listening {
                        rt: runtime,
                        tls,
                        servers: HttpServers::new(l.header_read_timeout),
                        log_once: old.log_once.clone(),
                        live: old.live.clone(),
                    }));
                    b.config = l.clone();
                    keep.insert(l.name.clone(), b);
                }
                Some((tcp, addr)) => {
                    tracing::info!(listener = %l.name, address = %addr, tls = l.tls.is_some(), "listening");
                    keep.insert(
                        l.name.clone(),
                        spawn_listener(l.clone(), tcp, addr, runtime, tls),
                    );
                }
            }
        }
        // What is left was removed or moved: stop accepting, let its
        // connections finish (GOAWAY / connection: close).
        let drain_timeout = config.drain_timeout;
        for (name, b) in state.listeners.drain() {
            tracing::info!(listener = %name, address = %b.addr, "listener removed or moved; draining its connections");
            b.task.abort();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(drain_timeout, b.drain.drain()).await;
            });
        }
        state.listeners = keep;
        if state.tracer.as_ref().map(Tracer::config) != tracer.as_ref().map(Tracer::config) {
            match &tracer {
                Some(t) => {
                    tracing::info!(endpoint = %t.config().endpoint, sample_ratio = t.config().sample_ratio, "tracing: spans go to the OTLP collector")
                }
                None => tracing::info!("tracing off"),
            }
        }
        state.tracer = tracer;
        if let Some(logger) = new_logger {
            if config.access_log != state.access_log {
                tracing::info!(access_log = %config.access_log.describe(), "access log destination changed");
            }
            state.logger = logger;
            state.access_log = config.access_log.clone();
        }
        if let Some(admin) = new_admin {
            if let Some(old) = state.admin.take() {
                tracing::info!(address = %old.addr, "admin listener moved or removed; closing it");
                old.task.abort();
                // Its socket is closed once the aborted task is gone.
                let _ = old.task.await;
            }
            state.admin = admin.map(|(tcp, configured, addr)| {
                tracing::info!(address = %addr, "admin listening");
                let st = AdminState {
                    shared: self.shared.clone(),
                };
                AdminBound {
                    configured,
                    addr,
                    task: tokio::spawn(admin::serve(tcp, st, self.stop_admin.subscribe())),
                }
            });
        }
        *self.addrs.lock().unwrap_or_else(|p| p.into_inner()) = Addrs {
            listeners: state
                .listeners
                .iter()
                .map(|(n, b)| (n.clone(), b.addr))
                .collect(),
            admin: state.admin.as_ref().map(|a| a.addr),
        };
        self.metrics.set_certificates(&config);
        self.shared.clusters.store(clusters);
        for old in &old_config.jwt_providers {
            if !config.jwt_providers.iter().any(|p| p.jwks.same(&old.jwks)) {
                old.jwks.stop();
            }
        }
        self.shared.config.store(Arc::new(config));
        tracing::info!("configuration applied");
        Ok(())
    }

    fn listener_runtime(
        &self,
        l: &Listener,
        clusters: &Clusters,
        (logger, tracer): (&AccessLogger, &Option<Tracer>),
        old: Option<&Pipeline>,
    ) -> Arc<Pipeline> {
        let mut p = Pipeline::new(
            l.clone(),
            clusters.clone(),
            self.metrics.clone(),
            self.shared.ready.clone(),
            logger.clone(),
        );
        p.tracer = tracer.clone();
        // Rate-limit buckets of unchanged routes outlive the reload.
        if let Some(old) = old {
            p.keep_rate_limits(old);
        }
        Arc::new(p)
    }
}

impl Core {
    fn read_admin(&self) -> Option<SocketAddr> {
        self.addrs.lock().unwrap_or_else(|p| p.into_inner()).admin
    }
}

/// The file's configuration with the control plane's listeners and
/// clusters; a name both use is an error that says so.
fn merge(file: &Config, xds: &crate::xds::Snapshot) -> Result<Config, String> {
    let listeners = file.listeners.iter().map(|l| &*l.name);
    clash(
        "listener",
        listeners,
        xds.listeners.iter().map(|l| &*l.name),
    )?;
    let clusters = file.clusters.iter().map(|c| &*c.name);
    clash("cluster", clusters, xds.clusters.iter().map(|c| &*c.name))?;
    let mut config = file.clone();
    config.listeners.extend(xds.listeners.iter().cloned());
    config.clusters.extend(xds.clusters.iter().cloned());
    Ok(config)
}

/// The first name the xDS server sent that the file also uses, as an error.
fn clash<'a>(
    kind: &str,
    file: impl Iterator<Item = &'a str> + Clone,
    mut xds: impl Iterator<Item = &'a str>,
) -> Result<(), String> {
    match xds.find(|x| file.clone().any(|f| f == *x)) {
        Some(name) => Err(format!(
            "the xDS server sent {kind} {name:?}, and the configuration file has a {kind} \
             of that name; rename one of them (names must be unique across the file and xDS)"
        )),
        None => Ok(()),
    }
}

/// How long applying a configuration waits for new JWKS to be fetched.
const FIRST_JWKS_WAIT: Duration = Duration::from_secs(5);

/// Starts fetching the key sets of `config`'s JWT providers; one with the
/// same name and URI as before a reload starts with the keys it had.
/// Waits (a bounded time) for the first fetch of the others: `/ready`
/// says which provider has no keys yet.
async fn start_jwks(config: &Config, old: &Config) {
    for p in &config.jwt_providers {
        if let Some(o) = old.jwt_providers.iter().find(|o| o.name == p.name) {
            p.jwks.adopt(&o.jwks);
        }
        p.jwks.start();
    }
    let firsts = config
        .jwt_providers
        .iter()
        .map(|p| p.jwks.first_fetch(FIRST_JWKS_WAIT));
    futures_util::future::join_all(firsts).await;
}

/// Reuses the runtime of every cluster whose configuration did not change.
async fn build_clusters(
    config: &Config,
    old: &Clusters,
    dns: &Dns,
    metrics: &Arc<Metrics>,
) -> Result<Clusters, String> {
    let mut clusters = HashMap::new();
    let mut fresh = Vec::new();
    for c in &config.clusters {
        let reuse = old.get(&c.name).filter(|rt| same_cluster(&rt.config, c));
        let rt = match reuse {
            Some(rt) => rt.clone(),
            None => {
                let rt = ClusterRuntime::new(c.clone(), dns, metrics.clone())
                    .map_err(|e| format!("cluster {}: {e}", c.name))?;
                if let Some(before) = old
                    .get(&c.name)
                    .filter(|o| same_but_endpoints(&o.config, c))
                {
                    rt.adopt_endpoints(before);
                }
                fresh.push(rt.clone());
                rt
            }
        };
        clusters.insert(c.name.clone(), rt);
    }
    for c in fresh {
        c.wait_resolved(FIRST_RESOLVE_WAIT).await;
    }
    Ok(Arc::new(clusters))
}

/// Equal settings but for the endpoint list.
fn same_but_endpoints(a: &Cluster, b: &Cluster) -> bool {
    let bare = |c: &Cluster| Cluster {
        endpoints: Vec::new(),
        ..c.clone()
    };
    same_cluster(&bare(a), &bare(b))
}

/// Equal settings, including key material (which `Debug` redacts).
fn same_cluster(a: &Cluster, b: &Cluster) -> bool {
    let keys = |c: &Cluster| {
        c.tls
            .as_ref()
            .and_then(|t| t.client_cert.as_ref())
            .map(|(_, k)| k.secret_der().to_vec())
    };
    format!("{a:?}") == format!("{b:?}") && keys(a) == keys(b)
}

fn tls_acceptor(l: &Listener) -> Result<Option<TlsAcceptor>, String> {
    l.tls
        .as_ref()
        .map(|t| {
            listener::tls::server_config(t, &l.name)
                .map(TlsAcceptor::from)
                .map_err(|e| format!("listener {}: {e}", l.name))
        })
        .transpose()
}

async fn bind_admin(address: SocketAddr) -> Result<(TcpListener, SocketAddr, SocketAddr), String> {
    let tcp = TcpListener::bind(address)
        .await
        .map_err(|e| format!("admin: cannot listen on {address}: {e}"))?;
    let addr = tcp.local_addr().map_err(|e| e.to_string())?;
    Ok((tcp, address, addr))
}

async fn bind(l: &Listener) -> Result<(TcpListener, SocketAddr), String> {
    let tcp = TcpListener::bind(l.address)
        .await
        .map_err(|e| format!("listener {}: cannot listen on {}: {e}", l.name, l.address))?;
    let addr = tcp.local_addr().map_err(|e| e.to_string())?;
    Ok((tcp, addr))
}

fn spawn_listener(
    config: Listener,
    tcp: TcpListener,
    addr: SocketAddr,
    runtime: Arc<Pipeline>,
    tls: Option<TlsAcceptor>,
) -> Bound {
    let listening = Arc::new(ArcSwap::from_pointee(Listening {
        rt: runtime.clone(),
        tls,
        servers: HttpServers::new(config.header_read_timeout),
        log_once: Arc::new(LogOnce::default()),
        live: Arc::new(ArcSwap::new(runtime)),
    }));
    let drain = Drain::new();
    let task = tokio::spawn(listener::accept_loop(tcp, listening.clone(), drain.watch()));
    Bound {
        config,
        addr,
        listening,
        drain,
        task,
    }
}

/// Starts everything a valid config describes.
pub async fn start(config: Config) -> Result<Running, String> {
    let metrics = Arc::new(Metrics::new());
    let dns = Dns::system();
    let logger = AccessLogger::start(&config.access_log, metrics.clone())?;
    let (ready, ready_rx) = watch::channel(false);
    let (stop_admin, stop_admin_rx) = watch::channel(false);

    let clusters = build_clusters(&config, &Arc::new(HashMap::new()), &dns, &metrics).await?;
    let shared = Arc::new(Shared {
        config: ArcSwap::from_pointee(config.clone()),
        clusters: ArcSwap::new(clusters),
        metrics: metrics.clone(),
        ready: ready_rx.clone(),
        xds: arc_swap::ArcSwapOption::empty(),
    });

    let mut admin = None;
    if let Some(a) = &config.admin {
        let (tcp, configured, addr) = bind_admin(a.address).await?;
        tracing::info!(address = %addr, "admin listening");
        let state = AdminState {
            shared: shared.clone(),
        };
        admin = Some(AdminBound {
            configured,
            addr,
            task: tokio::spawn(admin::serve(tcp, state, stop_admin_rx)),
        });
    }

    let core = Arc::new(Core {
        metrics: metrics.clone(),
        shared: shared.clone(),
        addrs: std::sync::Mutex::new(Addrs {
            listeners: HashMap::new(),
            admin: admin.as_ref().map(|a| a.addr),
        }),
        state: Mutex::new(State {
            listeners: HashMap::new(),
            file: None,
            xds_parts: crate::xds::Snapshot::default(),
            xds: None,
            logger,
            access_log: config.access_log.clone(),
            admin,
            tracer: None,
        }),
        dns,
        ready,
        stop_admin,
    });
    let running = Running {
        admin: core.read_admin(),
        metrics,
        shared,
        core,
    };
    running.apply(config).await?;
    running.core.ready.send_replace(true);
    Ok(running)
}

/// Loads `yaml` as if it were the file `file` (relative paths resolve
/// against its directory) and starts it. For embedding and tests.
pub async fn start_yaml(yaml: &str, file: &std::path::Path) -> Result<Running, String> {
    let loaded =
        crate::config::load_str(yaml, file).map_err(|p| crate::config::problems_text(&p))?;
    start(loaded.config).await
}

/// How often the config file and the files it names are looked at.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Notices changes to the config file and to every file it names
/// (certificates, keys, CAs), by content, not mtime: Kubernetes ConfigMaps
/// and Secrets change by swapping symlinks, cert-manager and Vault agents
/// by renaming files into place.
pub struct Watcher {
    path: std::path::PathBuf,
    config: Option<u64>,
    files: Option<u64>,
    /// The files `files` covers.
    watched: Vec<std::path::PathBuf>,
}

impl Watcher {
    /// Starts from what `running` uses now.
    pub fn new(path: &std::path::Path, running: &Running) -> Self {
        let mut w = Watcher {
            path: path.to_path_buf(),
            config: None,
            files: None,
            watched: Vec::new(),
        };
        w.look(running);
        w
    }

    /// Why a reload is due since the last call (None: nothing changed).
    /// What it saw is remembered first, so a change made while the reload
    /// reads the files is seen next time; a file that fails to load is
    /// not tried again until something changes again.
    pub fn changed(&mut self, running: &Running) -> Option<&'static str> {
        let (config, files) = (self.config, self.files);
        self.look(running);
        if self.config != config {
            Some("the file changed")
        } else if self.files != files {
            Some("a certificate, key or CA file changed")
        } else {
            None
        }
    }

    /// Call after a reload: a configuration that names other files is
    /// watched on those from now on.
    pub fn reloaded(&mut self, running: &Running) {
        let files = running.shared.config.load().files.clone();
        if files != self.watched {
            self.files = fingerprint(&files);
            self.watched = files;
        }
    }

    fn look(&mut self, running: &Running) {
        self.config = fingerprint(std::slice::from_ref(&self.path));
        self.watched = running.shared.config.load().files.clone();
        self.files = fingerprint(&self.watched);
    }
}

/// A cheap fingerprint of the files' contents (a missing or unreadable
/// file counts as such, so its return is a change too).
fn fingerprint(paths: &[std::path::PathBuf]) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in paths {
        p.hash(&mut h);
        std::fs::read(p).ok().hash(&mut h);
    }
    Some(h.finish())
}
