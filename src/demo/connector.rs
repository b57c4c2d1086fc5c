//! A tonic channel connector that sends every connection to one address
//! over TLS, whatever the URI says (the URI only sets `:authority`). Used by
//! `torii demo` and the tests to call a TLS listener with their own CA.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
pub struct FixedTlsConnector {
    addr: SocketAddr,
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl FixedTlsConnector {
    /// Connects to `addr`, with SNI and certificate name `name`.
    pub fn new(addr: SocketAddr, connector: TlsConnector, name: ServerName<'static>) -> Self {
        FixedTlsConnector {
            addr,
            connector,
            name,
        }
    }
}

impl tonic::codegen::Service<Uri> for FixedTlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.addr).await?;
            tcp.set_nodelay(true)?;
            let tls = this.connector.connect(this.name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
