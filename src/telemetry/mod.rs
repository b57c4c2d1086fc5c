//! Metrics (Prometheus) and the access log.

pub mod access_log;
pub mod metrics;

pub use metrics::Metrics;
