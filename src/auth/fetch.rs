//! One HTTP GET of a JWKS: `http://` or `https://` (rustls; the system's
//! trusted roots plus an optional `ca:`), HTTP/1.1, a body of at most
//! [`MAX_BODY`] bytes, and the answer's `Cache-Control: max-age`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};

/// The largest JWKS document torii reads.
pub const MAX_BODY: usize = 1 << 20;

/// The body of a 200 answer, and its `max-age` if it has one.
pub async fn get(
    uri: &str,
    ca: &[CertificateDer<'static>],
) -> Result<(Bytes, Option<Duration>), String> {
    let parsed: http::Uri = uri.parse().map_err(|e| format!("bad URI: {e}"))?;
    let https = match parsed.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the URI must start with http:// or https://".into()),
    };
    let host = parsed.host().ok_or("the URI has no host")?.to_string();
    let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = tokio::net::TcpStream::connect((bare.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let authority = parsed
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or(host.clone());
    let path = parsed
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(
            http::header::ACCEPT,
            "application/json, application/jwk-set+json",
        )
        .header(http::header::USER_AGENT, "torii")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = if https {
        let connector = tls(ca)?;
        let name = ServerName::try_from(bare).map_err(|e| format!("server name: {e}"))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}:{port} failed: {e}"))?;
        send(TokioIo::new(stream), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    let status = resp.status();
    let max_age = resp
        .headers()
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|d| {
            let (k, v) = d.trim().split_once('=')?;
            k.eq_ignore_ascii_case("max-age")
                .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .map(Duration::from_secs);
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?
        .to_bytes();
    if status != http::StatusCode::OK {
        let excerpt: String = String::from_utf8_lossy(&body[..body.len().min(80)])
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        return Err(format!("HTTP {status} ({excerpt:?})"));
    }
    Ok((body, max_age))
}

async fn send<I>(
    io: I,
    req: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("the request failed: {e}"))
}

fn tls(ca: &[CertificateDer<'static>]) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        let _ = roots.add(c);
    }
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| format!("bad CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no trusted roots: the system has none and no ca: is set".into());
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(crate::tls_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}
