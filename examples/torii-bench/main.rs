//! `torii-bench`: the Rust half of the benchmark harness (`bench/run`).
//!
//! An example of the torii crate rather than a crate of its own, so it reuses
//! torii's dependencies (tokio, h2, rustls, tonic), its generated echo
//! protobuf types and its release build: nothing extra to compile or lock.
//! It is not installed with torii.
//!
//! Subcommands (each prints one JSON object on stdout):
//! - `setup`: the ECDSA P-256 certificate every proxy serves, and the
//!   pre-encoded gRPC request bodies h2load posts;
//! - `backend`: a minimal tonic echo service (Unary, Bidi) on h2c;
//! - `http-backend`: a minimal HTTP/1.1 server (GET and POST, 1 KiB
//!   answers, keep-alive) for the REST scenario;
//! - `probe`: one unary call through a target, checked end to end;
//! - `bidi`: N ping-pong bidi streams for a while: messages/s;
//! - `handshakes`: TLS 1.3 full handshakes for a while: handshakes/s;
//! - `idle`: open and hold N idle TLS + HTTP/2 connections;
//! - `streams`: open and hold C connections × S open bidi streams.
//!
//! Clients run on one thread (as h2load -t1 does), leaving the other core
//! to the proxy and the backend. Every loop is bounded in time.

mod backend;
mod clients;
mod cpu;
mod setup;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "torii-bench", about = "Load clients and backend for bench/run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a client connects: TLS (ALPN h2) to a proxy, or h2c to the backend.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// IP:PORT to connect to.
    #[arg(long)]
    pub address: SocketAddr,
    /// Speak TLS 1.3 with ALPN h2 (a proxy); without it, h2c (the backend).
    #[arg(long)]
    pub tls: bool,
    /// Processes whose CPU time to report as NAME=PID[,PID...] (repeatable):
    /// read from /proc over exactly the measured window.
    #[arg(long = "cpu", value_name = "NAME=PIDS")]
    pub cpu: Vec<String>,
    /// A header every request carries, as `NAME: VALUE` (repeatable): the
    /// authenticated target's `authorization`.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write server.crt/server.key (ECDSA P-256, SANs localhost and
    /// 127.0.0.1), server.pem (both, for HAProxy) and unary-SIZE.bin (one
    /// gRPC-framed EchoRequest with a SIZE-byte payload) for each size.
    Setup {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "100,1024,65536")]
        sizes: Vec<usize>,
    },
    /// Serve a minimal echo service (Unary and Bidi only), and an OTLP
    /// trace collector that drops what it gets, on h2c and print
    /// `backend listening address=IP:PORT`; runs until SIGTERM/SIGINT.
    Backend {
        #[arg(long, default_value = "127.0.0.1:0")]
        address: SocketAddr,
        /// Worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Serve HTTP/1.1 with keep-alive: every request's body is read and
    /// answered with `size` bytes (200, text/plain); prints `backend
    /// listening address=IP:PORT`; runs until SIGTERM/SIGINT.
    HttpBackend {
        #[arg(long, default_value = "127.0.0.1:0")]
        address: SocketAddr,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// One unary call through the target: HTTP 200, grpc-status 0 and the
    /// payload echoed back, else exit 1.
    Probe {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 100)]
        payload: usize,
    },
    /// Ping-pong on `connections` x `streams` bidi streams for `seconds`.
    Bidi {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 16)]
        streams: usize,
        #[arg(long, default_value_t = 100)]
        payload: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Untimed ping-pong before the measured window.
        #[arg(long, default_value_t = 0.5)]
        warmup: f64,
    },
    /// TLS 1.3 full handshakes (no resumption) from `concurrency` loops for
    /// `seconds`: connect, handshake, close_notify, wait for the close.
    Handshakes {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Open `connections` TLS connections, complete the HTTP/2 preface and
    /// SETTINGS exchange on each, print a JSON line, then hold them until
    /// stdin closes (or `hold` seconds pass).
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 2000)]
        connections: usize,
        /// Connections being opened at once.
        #[arg(long, default_value_t = 32)]
        parallel: usize,
        /// Upper bound on the hold, in seconds.
        #[arg(long, default_value_t = 60.0)]
        hold: f64,
    },
    /// Open `connections` connections with `streams` bidi streams each
    /// (every stream echoes one 100 B message, then stays open), print a
    /// JSON line, then hold them until stdin closes (or `hold` seconds).
    Streams {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 100)]
        connections: usize,
        #[arg(long, default_value_t = 100)]
        streams: usize,
        #[arg(long, default_value_t = 120.0)]
        hold: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup { dir, sizes } => setup::run(&dir, &sizes),
        Command::Backend { address, workers } => backend::run(address, workers),
        Command::HttpBackend {
            address,
            size,
            workers,
        } => backend::run_http1(address, size, workers),
        Command::Probe { target, payload } => {
            clients::single_thread(clients::probe(target, payload))
        }
        Command::Bidi {
            target,
            connections,
            streams,
            payload,
            seconds,
            warmup,
        } => clients::single_thread(clients::bidi(
            target,
            clients::BidiOpts {
                connections,
                streams,
                payload,
                seconds,
                warmup,
            },
        )),
        Command::Handshakes {
            target,
            concurrency,
            seconds,
        } => clients::single_thread(clients::handshakes(target, concurrency, seconds)),
        Command::Idle {
            target,
            connections,
            parallel,
            hold,
        } => clients::single_thread(clients::idle(target, connections, parallel, hold)),
        Command::Streams {
            target,
            connections,
            streams,
            hold,
        } => clients::single_thread(clients::streams(target, connections, streams, hold)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("torii-bench: {e}");
            ExitCode::from(1)
        }
    }
}

pub type Error = Box<dyn std::error::Error + Send + Sync>;
