//! Metrics (Prometheus) and the access log.

pub mod access_log;
pub mod metrics;
pub mod process;

pub use metrics::Metrics;
