//! A provider's key set and how it stays current. The request path only
//! reads the current set ([`Jwks::current`], one atomic load); a set from
//! a URI is fetched by one background task per provider, so fetches are
//! single-flight by construction:
//! - first when the provider starts (the listener is not ready until it
//!   has keys: see [`Jwks::missing`]);
//! - again after `refresh`, or sooner when the answer's `Cache-Control:
//!   max-age` says so (never sooner than [`MIN_REFRESH`]);
//! - after a failure, with backoff from 1 s up to [`MAX_RETRY`]; the last
//!   good set stays in use meanwhile;
//! - when a token names a key id the set lacks: one refetch, no sooner
//!   than [`KID_REFETCH_SPACING`] (or `refresh`, if shorter) after the last
//!   fetch, however many requests ask. The request that found the unknown
//!   id fails at once (`unknown key id … torii is fetching the key set
//!   again`); its retry after the refetch succeeds.
//!
//! A set from a file is read with the configuration (and re-read on every
//! reload, which a change to the file triggers).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::fetch;
use super::jwk::KeySet;
use super::Failure;

/// Never refresh sooner than this, whatever `max-age` says.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);
/// The longest wait between retries of a failing fetch.
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// The least time between fetches an unknown key id triggers.
pub const KID_REFETCH_SPACING: Duration = Duration::from_secs(5);
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a key set comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Uri {
        uri: String,
        refresh: Duration,
        /// Extra trust for an https URI (besides the system's roots).
        ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    },
    File(PathBuf),
}

impl Source {
    /// The URI or the file, for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Uri { uri, .. } => uri.clone(),
            Source::File(p) => p.display().to_string(),
        }
    }
}

/// The key set as the request path sees it.
#[derive(Debug, Default)]
pub struct KeyState {
    pub set: Option<Arc<KeySet>>,
    /// Changes with every new set (verified-token caches compare it).
    pub generation: u64,
    /// When the set in use was fetched.
    pub fetched: Option<SystemTime>,
    /// The last failure, and since when fetches fail.
    pub error: Option<(SystemTime, String)>,
    /// A fetch has been tried (succeeded or failed).
    pub attempted: bool,
}

struct Inner {
    state: ArcSwap<KeyState>,
    /// Wakes the fetch task for an unknown key id.
    wake: Arc<Notify>,
    /// A refetch was asked for and has not happened yet.
    pending: AtomicBool,
    /// A newer configuration took this key set over: the task ends.
    stopped: AtomicBool,
    started: AtomicBool,
    /// Fetches made (for tests and `/ready`).
    fetches: AtomicU64,
    /// When the last fetch ended.
    last: std::sync::Mutex<Option<Instant>>,
    /// Tells waiters the first fetch ended.
    first: tokio::sync::watch::Sender<bool>,
}

/// A provider's key set.
pub struct Jwks {
    pub source: Source,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Uri { uri, refresh, ca } => f
                .debug_struct("Jwks")
                .field("uri", uri)
                .field("refresh", refresh)
                .field("ca", &ca.len())
                .finish(),
            Source::File(p) => f.debug_struct("Jwks").field("file", p).finish(),
        }
    }
}

impl Jwks {
    /// A key set fetched from `source` once started; a file's set given.
    pub fn new(source: Source, set: Option<KeySet>) -> Self {
        let file = matches!(source, Source::File(_));
        let state = KeyState {
            generation: u64::from(set.is_some()),
            fetched: set.as_ref().map(|_| SystemTime::now()),
            set: set.map(Arc::new),
            error: None,
            attempted: file,
        };
        Jwks {
            source,
            inner: Arc::new(Inner {
                state: ArcSwap::from_pointee(state),
                wake: Arc::new(Notify::new()),
                pending: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                started: AtomicBool::new(false),
                fetches: AtomicU64::new(0),
                last: std::sync::Mutex::new(None),
                first: tokio::sync::watch::channel(file).0,
            }),
        }
    }

    /// The set in use now.
    pub fn current(&self) -> Arc<KeyState> {
        self.inner.state.load_full()
    }

    /// How many fetches were made.
    pub fn fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// Takes over what `old` (the same source in the configuration before
    /// a reload) has fetched.
    pub fn adopt(&self, old: &Jwks) {
        let (
            Source::Uri {
                uri: a, ca: ca_a, ..
            },
            Source::Uri {
                uri: b, ca: ca_b, ..
            },
        ) = (&self.source, &old.source)
        else {
            return;
        };
        if a != b || ca_a != ca_b || Arc::ptr_eq(&self.inner, &old.inner) {
            return;
        }
        let state = old.inner.state.load_full();
        if state.set.is_some() {
            self.inner.state.store(Arc::new(KeyState {
                set: state.set.clone(),
                generation: state.generation,
                fetched: state.fetched,
                error: state.error.clone(),
                attempted: true,
            }));
            let _ = self.inner.first.send_replace(true);
        }
    }

    /// Stops fetching (a newer configuration replaced this key set).
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        self.inner.wake.notify_one();
    }

    /// The same key set (not a copy).
    pub fn same(&self, other: &Jwks) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Starts fetching (a URI source; once). Needs a tokio runtime.
    pub fn start(&self) {
        let Source::Uri { uri, refresh, ca } = &self.source else {
            return;
        };
        if self.inner.started.swap(true, Ordering::Relaxed) {
            return;
        }
        let fetched = self.inner.state.load().set.is_some();
        let weak = Arc::downgrade(&self.inner);
        let (uri, refresh, ca) = (uri.clone(), *refresh, ca.clone());
        tokio::spawn(run(weak, uri, refresh, ca, fetched));
    }

    /// Waits until the first fetch ended (or `limit` passed).
    pub async fn first_fetch(&self, limit: Duration) {
        let mut rx = self.inner.first.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|done| *done)).await;
    }

    /// Asks for a refetch (an unknown key id). True when one will happen.
    pub fn refetch_for_unknown_kid(&self) -> bool {
        if !matches!(self.source, Source::Uri { .. }) {
            return false;
        }
        if !self.inner.pending.swap(true, Ordering::AcqRel) {
            self.inner.wake.notify_one();
        }
        true
    }

    /// Why there are no keys yet, or None when there are.
    pub fn missing(&self) -> Option<String> {
        let state = self.inner.state.load();
        if state.set.is_some() {
            return None;
        }
        Some(match (&state.error, state.attempted) {
            (Some((since, why)), _) => format!(
                "no keys from {} (failing since {}: {why})",
                self.source.describe(),
                super::stamp(*since)
            ),
            (None, _) => format!(
                "no keys from {} yet (first fetch under way)",
                self.source.describe()
            ),
        })
    }

    /// The failure a request gets while there are no keys (fail closed).
    pub fn unavailable(&self, provider: &str) -> Failure {
        let why = self.missing().unwrap_or_else(|| "no keys".into());
        Failure::unavailable(format!(
            "provider {provider} cannot verify tokens: {why}; requests fail until a key set is fetched"
        ))
    }
}

async fn run(
    weak: Weak<Inner>,
    uri: String,
    refresh: Duration,
    ca: Vec<rustls_pki_types::CertificateDer<'static>>,
    mut skip_first: bool,
) {
    let mut failures: u32 = 0;
    let mut delay = refresh;
    loop {
        if !skip_first {
            let result = tokio::time::timeout(FETCH_TIMEOUT, fetch::get(&uri, &ca))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {} s", FETCH_TIMEOUT.as_secs())))
                .and_then(|(body, max_age)| super::jwk::parse_set(&body).map(|set| (set, max_age)));
            let Some(inner) = weak.upgrade() else { return };
            inner.fetches.fetch_add(1, Ordering::Relaxed);
            let old = inner.state.load_full();
            match result {
                Ok((set, max_age)) => {
                    for skipped in &set.skipped {
                        tracing::warn!(jwks = %uri, "JWKS key left out: {skipped}");
                    }
                    inner.state.store(Arc::new(KeyState {
                        set: Some(Arc::new(set)),
                        generation: old.generation + 1,
                        fetched: Some(SystemTime::now()),
                        error: None,
                        attempted: true,
                    }));
                    failures = 0;
                    delay = match max_age {
                        Some(m) => m.max(MIN_REFRESH).min(refresh),
                        None => refresh,
                    };
                }
                Err(why) => {
                    tracing::warn!(jwks = %uri, kept = old.set.is_some(), "JWKS fetch failed: {why}");
                    let since = match &old.error {
                        Some((since, _)) => *since,
                        None => SystemTime::now(),
                    };
                    inner.state.store(Arc::new(KeyState {
                        set: old.set.clone(),
                        generation: old.generation,
                        fetched: old.fetched,
                        error: Some((since, why)),
                        attempted: true,
                    }));
                    delay = Duration::from_secs(1 << failures.min(6))
                        .min(MAX_RETRY)
                        .min(refresh.max(Duration::from_secs(1)));
                    failures += 1;
                }
            }
            *inner.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            inner.pending.store(false, Ordering::Release);
            let _ = inner.first.send_replace(true);
        }
        skip_first = false;
        // Wait for the next fetch: its time, or an unknown key id (spaced).
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopped.load(Ordering::Relaxed) {
            return;
        }
        // Not kept alive by this task while it waits.
        let wake = inner.wake.clone();
        drop(inner);
        let woken = tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = wake.notified() => true,
        };
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopped.load(Ordering::Relaxed) {
            return;
        }
        if woken {
            let last = *inner.last.lock().unwrap_or_else(|p| p.into_inner());
            let spacing = KID_REFETCH_SPACING.min(refresh);
            if let Some(wait) =
                last.and_then(|l| (l + spacing).checked_duration_since(Instant::now()))
            {
                drop(inner);
                tokio::time::sleep(wait).await;
            }
        }
    }
}
