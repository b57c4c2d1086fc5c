//! The pitfall codes: stable names users grep for, alert on and suppress.
//! `torii lint`, `torii check` and `torii doctor` share them.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Clients or probes will fail.
    Error,
    /// Probably not what was meant; fails only in some cases.
    Warning,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pitfall code, its level in `torii lint`, and what it finds.
pub struct Rule {
    pub code: &'static str,
    pub level: Level,
    pub summary: &'static str,
}

/// Every code `torii lint` reports.
pub const RULES: &[Rule] = &[
    Rule {
        code: "grpc-upstream-http1",
        level: Level::Error,
        summary: "gRPC is sent to an upstream over HTTP/1.1; gRPC needs HTTP/2, so every call fails with a protocol error",
    },
    Rule {
        code: "tls-no-alpn",
        level: Level::Error,
        summary: "a TLS listener advertises no ALPN, or none with h2; C-core gRPC clients (Python, C++, Ruby) refuse the connection",
    },
    Rule {
        code: "stream-timeout",
        level: Level::Warning,
        summary: "a timeout that cuts long-lived gRPC streams",
    },
    Rule {
        code: "port-name-protocol",
        level: Level::Error,
        summary: "a port whose name, appProtocol or protocol declares a protocol its number contradicts (443 declared as plaintext HTTP)",
    },
    Rule {
        code: "h2c-probe",
        level: Level::Error,
        summary: "an HTTP/1.1 probe (httpGet) aimed at a port that speaks HTTP/2 cleartext only; the pod never becomes Ready",
    },
    Rule {
        code: "port-protocol-undeclared",
        level: Level::Warning,
        summary: "a Service port whose name does not start with a protocol Istio knows and has no appProtocol; the mesh treats it as opaque TCP",
    },
    Rule {
        code: "grpc-probe-no-health",
        level: Level::Warning,
        summary: "a Kubernetes grpc probe aimed at a port that does not serve grpc.health.v1",
    },
];

/// The level `code` is reported at by `torii lint`.
pub fn level(code: &str) -> Level {
    RULES
        .iter()
        .find(|r| r.code == code)
        .map_or(Level::Warning, |r| r.level)
}
