//! Metrics (Prometheus) and the access log.

pub mod access_log;
pub mod json_line;
pub mod log_once;
pub mod metrics;
pub mod process;
pub mod resilience;
pub mod trace;

pub use metrics::Metrics;
