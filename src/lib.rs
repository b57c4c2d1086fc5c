//! torii: a gRPC-native edge and sidecar proxy.

pub mod config;
pub mod demo;

/// Generated code for the built-in echo service (demo, tests, benchmarks).
pub mod echo_pb {
    tonic::include_proto!("torii.echo.v1");
}
