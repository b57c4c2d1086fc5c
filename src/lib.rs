//! torii: a gRPC-native edge and sidecar proxy.

pub(crate) mod admin;
pub mod app;
pub mod auth;
pub(crate) mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod doctor;
pub(crate) mod drain;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub(crate) mod heap;
pub mod http2;
pub(crate) mod limits;
pub mod lint;
pub mod listener;
pub(crate) mod net;
pub mod proxy;
pub mod rate_limit;
pub(crate) mod route;
pub(crate) mod server;
pub(crate) mod tcp;
pub mod telemetry;
pub mod transcode;
pub mod upstream;
pub mod xds;

use std::sync::{Arc, OnceLock};

/// Generated code for the built-in echo service (demo, tests, benchmarks).
pub mod echo_pb {
    tonic::include_proto!("torii.echo.v1");
}

/// The TLS crypto provider torii uses everywhere (ring).
pub fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
