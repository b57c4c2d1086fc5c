//! A Pingora reverse proxy as a peer in torii's benchmark (bench/run):
//! TLS in (Pingora's rustls listener, ALPN h2 and http/1.1), h2c to one
//! backend, one worker thread. What a Rust engineer would write with
//! Pingora for the same job, kept to what the job needs.
//!
//!   torii-bench-pingora LISTEN CERT KEY BACKEND [--access-log]
//!
//! `--access-log` logs one line per request in `logging` as Pingora's own
//! examples do (the `log` crate, env_logger, to stderr).

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Proxy {
    backend: String,
    access_log: bool,
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.backend.as_str(), false, String::new());
        // HTTP/2 only, over plaintext: h2c with prior knowledge.
        peer.options.set_http_version(2, 2);
        // Streams per upstream connection (Pingora's default is 1): the
        // same as torii's default.
        peer.options.max_h2_streams = 32;
        Ok(Box::new(peer))
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, _ctx: &mut ()) {
        if !self.access_log {
            return;
        }
        let status = session
            .response_written()
            .map_or(0, |resp| resp.status.as_u16());
        log::info!("{} response code: {status}", session.request_summary());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: torii-bench-pingora LISTEN CERT KEY BACKEND [--access-log]");
        std::process::exit(2);
    }
    let access_log = args.iter().any(|a| a == "--access-log");
    let level = if access_log { "info" } else { "error" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();

    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let proxy = Proxy {
        backend: args[4].clone(),
        access_log,
    };
    let mut service = http_proxy_service(&server.configuration, proxy);
    let mut tls = TlsSettings::intermediate(&args[2], &args[3]).expect("TLS settings");
    tls.enable_h2();
    service.add_tls_with_settings(&args[1], None, tls);
    server.add_service(service);
    server.run_forever();
}
