//! What the xDS client knows about itself, for `/ready` and `/config`:
//! the connection, whether the first configuration arrived, and each
//! resource's version and last ACK or NACK.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::Kind;
use crate::config::XdsSource;

pub struct Status {
    server: String,
    node: String,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    connected: Option<(SystemTime, &'static str)>,
    /// Since when, and why, the server could not be reached (None while
    /// connected, or before the first attempt ended).
    down: Option<(SystemTime, String)>,
    /// The first complete configuration was applied.
    synced: bool,
    waiting: Vec<String>,
    resources: BTreeMap<(Kind, String), Resource>,
}

struct Resource {
    /// The version in use (None: none valid yet).
    version: Option<String>,
    /// The last version sent, and the error if it was NACKed.
    last: String,
    error: Option<String>,
}

/// RFC 3339, UTC, to the second.
fn time(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

impl Status {
    pub fn new(source: &XdsSource) -> Status {
        Status {
            server: source.server.clone(),
            node: source.node_id.clone(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connected(&self, protocol: &'static str) {
        let mut s = self.lock();
        s.connected = Some((SystemTime::now(), protocol));
        s.down = None;
    }

    pub fn down(&self, why: String) {
        let mut s = self.lock();
        s.connected = None;
        let since = s.down.as_ref().map_or_else(SystemTime::now, |d| d.0);
        s.down = Some((since, why));
    }

    pub fn accepted(&self, kind: Kind, name: &str, version: &str) {
        let mut s = self.lock();
        s.resources.insert(
            (kind, name.to_string()),
            Resource {
                version: Some(version.to_string()),
                last: version.to_string(),
                error: None,
            },
        );
    }

    pub fn rejected(&self, kind: Kind, name: &str, version: &str, why: &str) {
        let mut s = self.lock();
        let r = s
            .resources
            .entry((kind, name.to_string()))
            .or_insert(Resource {
                version: None,
                last: String::new(),
                error: None,
            });
        r.last = version.to_string();
        r.error = Some(why.to_string());
    }

    pub fn removed(&self, kind: Kind, name: &str) {
        self.lock().resources.remove(&(kind, name.to_string()));
    }

    /// After each update: whether everything the listeners need is here.
    pub fn progress(&self, complete: bool, waiting: Vec<String>) {
        let mut s = self.lock();
        s.synced |= complete;
        s.waiting = waiting;
    }

    pub fn synced(&self) -> bool {
        self.lock().synced
    }

    /// Why torii is not ready yet (None once the first configuration is in).
    pub fn not_ready(&self) -> Option<String> {
        let s = self.lock();
        if s.synced {
            return None;
        }
        let mut why = format!(
            "waiting for the first configuration from the xDS server {}",
            self.server
        );
        match (&s.connected, &s.down) {
            (_, Some((since, e))) => {
                why += &format!(", unreachable since {}: {e}", time(*since));
            }
            (Some(_), None) if !s.waiting.is_empty() => {
                why += &format!(" ({})", s.waiting.join("; "));
            }
            (Some(_), None) => why += " (connected)",
            (None, None) => why += " (connecting)",
        }
        Some(why)
    }

    /// Said on `/ready` while ready: the control plane is away and the
    /// last configuration it sent is serving.
    pub fn degraded(&self) -> Option<String> {
        let s = self.lock();
        let (since, e) = s.down.as_ref()?;
        Some(format!(
            "xDS server {} unreachable since {} ({e}); serving the last configuration it sent",
            self.server,
            time(*since)
        ))
    }

    pub fn describe(&self) -> Value {
        let s = self.lock();
        let resources: Vec<Value> = s
            .resources
            .iter()
            .map(|((kind, name), r)| {
                json!({
                    "type": kind.label(),
                    "name": name,
                    "version": r.version,
                    "last_update": if r.error.is_some() { "nack" } else { "ack" },
                    "last_version": r.last,
                    "error": r.error,
                })
            })
            .collect();
        json!({
            "server": self.server,
            "node": self.node,
            "connected": s.connected.map(|(t, p)| json!({"since": time(t), "protocol": p})),
            "unreachable": s.down.as_ref().map(|(t, e)| json!({"since": time(*t), "error": e})),
            "first_configuration_applied": s.synced,
            "waiting": s.waiting,
            "resources": resources,
        })
    }
}
