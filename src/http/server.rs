//! Serving HTTP on an accepted (and possibly TLS-terminated) connection:
//! HTTP/1.1 and h2c on one port by looking at the preface, or the protocol
//! ALPN chose.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use super::proxy::{ConnInfo, ListenerRuntime};
use crate::coalesce;
use crate::drain;
use crate::upstream::connect::{H2_CONNECTION_WINDOW, H2_STREAM_WINDOW};

/// Concurrent streams one client connection may open. gRPC clients
/// multiplex everything over one connection, so this is generous; a
/// client above it gets REFUSED_STREAM for the extra stream only.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Largest request header block accepted (HTTP/2 SETTINGS and HTTP/1.1).
pub const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// HTTP/2 PINGs to clients, so connections to vanished clients are closed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Which protocol to serve on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// Look at the preface: `PRI * HTTP/2.0` means h2, anything else HTTP/1.1.
    Auto,
    Http1,
    Http2,
}

#[derive(Clone)]
pub struct HttpServers {
    auto: auto::Builder<TokioExecutor>,
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl HttpServers {
    pub fn new(header_read_timeout: Duration) -> Self {
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(MAX_HEADER_LIST_SIZE as usize * 2);
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
        HttpServers {
            auto: b.clone(),
            h1: b.clone().http1_only(),
            h2: b.http2_only(),
        }
    }

    /// Serves `io` until the client closes it or the listener drains.
    pub async fn serve<I>(
        &self,
        io: I,
        mode: Serve,
        rt: Arc<arc_swap::ArcSwap<ListenerRuntime>>,
        conn: Arc<ConnInfo>,
        mut drain: drain::Watch,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let builder = match mode {
            Serve::Auto => &self.auto,
            Serve::Http1 => &self.h1,
            Serve::Http2 => &self.h2,
        };
        let svc = service_fn(move |req| {
            // The listener's current routes: a reload applies to the next
            // request, even on a connection opened before it.
            let rt = rt.load_full();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(rt.handle(req, conn).await) }
        });
        // Whatever the connection writes in one poll leaves in one write.
        let (io, flusher) = coalesce::split(io);
        let connection = builder.serve_connection(TokioIo::new(io), svc);
        let result = flusher
            .run(async move {
                tokio::pin!(connection);
                tokio::select! {
                    r = connection.as_mut() => r,
                    _ = drain.signaled() => {
                        // GOAWAY for HTTP/2, `connection: close` for HTTP/1.1;
                        // then let in-flight requests finish.
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                }
            })
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "client connection ended with an error");
        }
    }
}
