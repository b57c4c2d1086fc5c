//! The gRPC channel to the xDS server: h2c, or TLS (ALPN h2, the CA and
//! optional client certificate of `xds.tls`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::config::{UpstreamTls, XdsSource};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// PINGs on an idle stream find a control plane that vanished without a
/// word; xDS servers (grpc-go, go-control-plane) allow one per 30 s.
const KEEPALIVE: Duration = Duration::from_secs(30);

pub async fn channel(source: &XdsSource) -> Result<Channel, String> {
    // The scheme stays http: TLS, when asked for, is the connector's.
    let endpoint = Endpoint::from_shared(format!("http://{}", source.server))
        .map_err(|e| format!("xds.server {:?}: {e}", source.server))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let connected = match &source.tls {
        None => endpoint.connect().await,
        Some(tls) => {
            let connector = TlsConnect::new(source, tls)?;
            endpoint.connect_with_connector(connector).await
        }
    };
    connected.map_err(|e| {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            text += &format!(": {c}");
            cause = c.source();
        }
        format!("cannot connect to {}: {text}", source.server)
    })
}

#[derive(Clone)]
struct TlsConnect {
    addr: String,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

impl TlsConnect {
    fn new(source: &XdsSource, tls: &UpstreamTls) -> Result<TlsConnect, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in &tls.roots {
            roots
                .add(c.clone())
                .map_err(|e| format!("xds.tls.ca: {e}"))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = match &tls.client_cert {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("xds.tls.cert: {e}"))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let host = tls.server_name.clone().unwrap_or_else(|| {
            let host = source
                .server
                .rsplit_once(':')
                .map_or(&*source.server, |(h, _)| h);
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        });
        let name = ServerName::try_from(host.clone())
            .map_err(|_| format!("xds: {host:?} is not a valid server name for TLS"))?;
        Ok(TlsConnect {
            addr: source.server.clone(),
            name,
            config: Arc::new(config),
        })
    }
}

type Tls = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tonic::codegen::Service<http::Uri> for TlsConnect {
    type Response = Tls;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Tls, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&this.addr).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(this.name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}
