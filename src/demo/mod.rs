//! The built-in echo service, the certificates `torii demo` and the tests
//! use, misbehaving upstreams for proxy tests, and the `torii echo` entry
//! point.
//!
//! The small serving helpers at the bottom are shared by the echo server and
//! the test backends: every connection runs in a task owned by its server's
//! accept task, so aborting a server closes all of its connections.

#[cfg(feature = "test-util")]
pub mod backends;
pub mod certs;
pub mod connector;
pub mod echo;
mod run;

pub use run::run_demo;

use std::error::Error;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use echo::{serve_echo, EchoServer, EchoService, EchoStats, StatsSnapshot};

/// How long a graceful shutdown lets in-flight calls finish before the
/// remaining connections are closed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A TLS handshake that takes longer than this is abandoned, so a client that
/// connects and sends nothing cannot hold a task forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `torii echo`: serves the echo service on `addr` (TLS when `tls` names a
/// certificate and key file), prints `echo listening address=IP:PORT` on
/// stdout once it accepts connections, and runs until SIGINT or SIGTERM.
pub async fn run_echo(
    addr: SocketAddr,
    tls: Option<(PathBuf, PathBuf)>,
) -> Result<(), Box<dyn Error>> {
    let tls = match tls {
        Some((cert, key)) => {
            Some(certs::server_config_from_files(&cert, &key).map_err(|e| e as Box<dyn Error>)?)
        }
        None => None,
    };
    // Handlers first: a test may send SIGTERM the moment it reads the
    // "listening" line, and the default action would kill the process.
    let stop = crate::drain::stop_signal()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let server = serve_echo(listener, tls).await;
    let mut out = std::io::stdout().lock();
    writeln!(out, "echo listening address={}", server.addr)?;
    out.flush()?;
    drop(out);
    stop.await;
    server.shutdown().await;
    Ok(())
}

/// Accepts connections until `shutdown` turns true (or its sender is gone),
/// running `serve` for each in a task owned by this future: dropping or
/// aborting it closes every connection. After a shutdown it waits up to
/// [`DRAIN_TIMEOUT`] for the connections to finish.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Nagle plus delayed ACKs stalls small gRPC frames by 40 ms.
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(serve(tcp, peer, shutdown.clone()));
                }
                // Out of file descriptors and the like: back off briefly
                // instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
}

/// Serves one connection over HTTP/2 (after a TLS handshake when `tls` is
/// set) until it ends; on shutdown sends GOAWAY and lets it finish.
pub(crate) async fn serve_h2<S, B>(
    tcp: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: S,
    shutdown: watch::Receiver<bool>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    match tls {
        None => serve_h2_io(tcp, service, shutdown).await,
        Some(acceptor) => {
            // A failed or stalled handshake just closes the connection.
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            if let Ok(Ok(stream)) = handshake {
                serve_h2_io(stream, service, shutdown).await;
            }
        }
    }
}

async fn serve_h2_io<I, S, B>(io: I, service: S, mut shutdown: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    // hyper's defaults (1 MiB stream and connection windows, 200 concurrent
    // streams) suit a test backend; 64 MiB messages just take more round trips.
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(1000)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = wait_true(&mut shutdown) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Resolves once the flag is true or its sender is gone.
async fn wait_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}
