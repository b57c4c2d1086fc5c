//! `torii doctor TARGET`: probes an endpoint the way gRPC clients, browsers,
//! curl and Kubernetes probes will meet it, then says in plain words which
//! of them work, which fail, why, and what to change.

pub mod probe;
mod text;

pub use text::text;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

use probe::{Answer, Certificate, FirstBytes, Handshake, Health, Target, Tcp};

/// What the command line gave (`torii doctor --help`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// host:port, https://host[:port] or http://host[:port].
    pub target: String,
    /// PEM CA(s) to verify the server's certificate with (default: the system's).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --key.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS, with --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// The name sent in SNI and checked against the certificate (default: the target's host).
    #[arg(long)]
    pub sni: Option<String>,
    /// The service asked in the grpc.health.v1 Check ("" = the server as a whole).
    #[arg(long, default_value = "")]
    pub service: String,
    /// The path the HTTP/1.1 probes GET (as a Kubernetes httpGet probe would).
    #[arg(long, default_value = "/healthz")]
    pub path: String,
    /// How long each probe may take, like 3s or 500ms.
    #[arg(long, default_value = "3s", value_parser = crate::config::duration::parse)]
    pub timeout: Duration,
    /// One JSON object instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// How clients are meant to reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Tls,
    Plaintext,
}

/// One kind of client, and whether it works against the target.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub client: &'static str,
    /// None: does not apply (a Kubernetes grpc probe cannot use TLS).
    pub works: Option<bool>,
    pub why: String,
    pub fix: Option<String>,
    /// A pitfall code shared with `torii lint` and `torii check`.
    pub code: Option<&'static str>,
}

/// Everything found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub host: String,
    pub port: u16,
    pub server_name: String,
    /// The path the HTTP/1.1 probes ask for.
    pub path: String,
    pub mode: Mode,
    /// Whether the mode was written (https://, http://) or guessed.
    pub mode_given: bool,
    pub tcp: Tcp,
    pub tls: Vec<Handshake>,
    pub certificate: Option<Certificate>,
    /// grpc.health.v1 Check over TLS with ALPN h2.
    pub tls_grpc: Option<Health>,
    /// GET over TLS with ALPN http/1.1.
    pub tls_http1: Option<FirstBytes>,
    /// gRPC-Web over TLS, HTTP/1.1.
    pub tls_grpc_web: Option<Health>,
    /// What a plaintext port answers to the HTTP/2 preface.
    pub h2c: Option<FirstBytes>,
    /// ... and to an HTTP/1.1 GET.
    pub http1: Option<FirstBytes>,
    pub h2c_grpc: Option<Health>,
    pub http1_grpc_web: Option<Health>,
    pub clients: Vec<Verdict>,
    pub problems: Vec<String>,
    pub ok: bool,
}

/// `torii doctor`: prints the report, returns the exit code (0 all usable,
/// 1 a problem found).
pub fn run(opts: Options) -> u8 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("torii doctor: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(diagnose(&opts)) {
        Ok(report) => {
            if opts.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", text(&report));
            }
            if report.ok {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("torii doctor: {e}");
            1
        }
    }
}

/// `host:port`, `https://host[:port][/…]` or `http://host[:port][/…]`.
pub fn parse_target(target: &str) -> Result<(String, u16, Option<Mode>), String> {
    let (mode, rest) = if let Some(r) = target.strip_prefix("https://") {
        (Some(Mode::Tls), r)
    } else if let Some(r) = target.strip_prefix("http://") {
        (Some(Mode::Plaintext), r)
    } else if target.contains("://") {
        return Err(format!(
            "{target:?}: write host:port, https://host[:port] or http://host[:port]"
        ));
    } else {
        (None, target)
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let default_port = match mode {
        Some(Mode::Tls) => Some(443),
        Some(Mode::Plaintext) => Some(80),
        None => None,
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{target:?}: an IPv6 address needs its closing ]"))?;
        (host.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("{target:?} names no host"));
    }
    let port = match (port, default_port) {
        (Some(p), _) => p
            .parse::<u16>()
            .map_err(|_| format!("{target:?}: {p:?} is not a port (a number from 1 to 65535)"))?,
        (None, Some(d)) => d,
        (None, None) => {
            return Err(format!(
                "{target:?} needs a port: write host:port, or a URL (https://…, http://…)"
            ))
        }
    };
    Ok((host, port, mode))
}

fn read_roots(ca: Option<&PathBuf>) -> Result<(rustls::RootCertStore, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    let (files, name) = match ca {
        Some(path) => (vec![path.clone()], format!("--ca {}", path.display())),
        None => {
            let candidates: Vec<PathBuf> = std::env::var_os("SSL_CERT_FILE")
                .map(PathBuf::from)
                .into_iter()
                .chain(
                    [
                        "/etc/ssl/certs/ca-certificates.crt",
                        "/etc/pki/tls/certs/ca-bundle.crt",
                        "/etc/ssl/cert.pem",
                    ]
                    .map(PathBuf::from),
                )
                .filter(|p| p.exists())
                .take(1)
                .collect();
            (candidates, "the system's trusted CAs".to_string())
        }
    };
    for file in &files {
        let certs = CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        for cert in certs.flatten() {
            let _ = roots.add(cert);
        }
        if ca.is_some() && roots.is_empty() {
            return Err(format!("{} holds no PEM certificate", file.display()));
        }
    }
    Ok((roots, name))
}

fn client_cert(opts: &Options) -> Result<Option<probe::ClientCert>, String> {
    match (&opts.cert, &opts.key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
                .flatten()
                .collect();
            if chain.is_empty() {
                return Err(format!("{} holds no PEM certificate", cert.display()));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
            Ok(Some((chain, Arc::new(key))))
        }
        _ => Err("--cert and --key go together".to_string()),
    }
}

pub async fn diagnose(opts: &Options) -> Result<Report, String> {
    let (host, port, given) = parse_target(&opts.target)?;
    let (roots, roots_name) = read_roots(opts.ca.as_ref())?;
    let client = client_cert(opts)?;
    let t = Target {
        server_name: opts.sni.clone().unwrap_or_else(|| host.clone()),
        host: host.clone(),
        port,
        timeout: opts.timeout,
        service: opts.service.clone(),
        path: opts.path.clone(),
    };
    let (tcp, addr) = probe::resolve_and_connect(&t).await;
    let mut report = Report {
        target: opts.target.clone(),
        host,
        port,
        server_name: t.server_name.clone(),
        path: t.path.clone(),
        mode: given.unwrap_or(Mode::Tls),
        mode_given: given.is_some(),
        tcp,
        tls: Vec::new(),
        certificate: None,
        tls_grpc: None,
        tls_http1: None,
        tls_grpc_web: None,
        h2c: None,
        http1: None,
        h2c_grpc: None,
        http1_grpc_web: None,
        clients: Vec::new(),
        problems: Vec::new(),
        ok: false,
    };
    let Some(addr) = addr else {
        conclude(&mut report);
        return Ok(report);
    };
    let client = client.as_ref();

    // TLS: the usual offer (its stream carries the gRPC check), then h2
    // alone and http/1.1 alone (its stream carries an HTTP/1.1 GET).
    let (both, stream) = probe::tls(addr, &t, &["h2", "http/1.1"], client).await;
    if let Some((stream, chain)) = stream {
        report.certificate = probe::certificate(&chain, &t, &roots, &roots_name);
        // No ALPN: try HTTP/2 anyway, as a client that does not check would.
        if both.alpn.as_deref() != Some("http/1.1") {
            report.tls_grpc = Some(probe::health_h2(stream, &t, "https").await);
        }
    }
    report.tls.push(both);
    let (h2, _) = probe::tls(addr, &t, &["h2"], client).await;
    report.tls.push(h2);
    let (h1, stream) = probe::tls(addr, &t, &["http/1.1"], client).await;
    if let Some((stream, _)) = stream {
        report.tls_http1 =
            Some(probe::first_bytes(stream, &probe::http1_request(&t), t.timeout).await);
        if let (_, Some((stream, _))) = probe::tls(addr, &t, &["http/1.1"], client).await {
            report.tls_grpc_web = Some(probe::health_web(stream, &t, "https").await);
        }
    }
    report.tls.push(h1);

    // Plaintext: what the port answers to the HTTP/2 preface and to HTTP/1.1.
    let h2c = probe::plain_h2(addr, t.timeout).await;
    if h2c.answer == Answer::Http2 {
        if let Some(tcp) = probe::tcp(addr, t.timeout).await {
            report.h2c_grpc = Some(probe::health_h2(tcp, &t, "http").await);
        }
    }
    report.h2c = Some(h2c);
    let h1 = probe::plain_h1(addr, &t).await;
    if h1.answer == Answer::Http1 {
        if let Some(tcp) = probe::tcp(addr, t.timeout).await {
            report.http1_grpc_web = Some(probe::health_web(tcp, &t, "http").await);
        }
    }
    report.http1 = Some(h1);

    if given.is_none() {
        report.mode = if report.tls.iter().any(|h| h.ok) {
            Mode::Tls
        } else {
            Mode::Plaintext
        };
    }
    conclude(&mut report);
    Ok(report)
}

fn verdict(client: &'static str, works: Option<bool>, why: impl Into<String>) -> Verdict {
    Verdict {
        client,
        works,
        why: why.into(),
        fix: None,
        code: None,
    }
}

impl Verdict {
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

const GRPCIO: &str = "grpcio / C-core (Python, C++, Ruby, PHP)";
const GRPC_GO: &str = "grpc-go";
const GRPC_JS: &str = "grpc-js (Node)";
const BROWSER: &str = "browsers via gRPC-Web";
const CURL: &str = "curl";
const K8S_HTTP: &str = "Kubernetes httpGet probe";
const K8S_GRPC: &str = "Kubernetes grpc probe";

/// A health answer in words.
fn health_words(h: &Health) -> String {
    if let Some(e) = &h.error {
        return e.clone();
    }
    let mut s = format!("HTTP {}", h.http_status.unwrap_or(0));
    if let Some(ct) = &h.content_type {
        s += &format!(", content-type {ct}");
    }
    match &h.grpc_status {
        Some(g) => s += &format!(", grpc-status {g}"),
        None => s += ", no grpc-status",
    }
    if let Some(m) = h.grpc_message.as_deref().filter(|m| !m.is_empty()) {
        s += &format!(" ({m})");
    }
    if let Some(serving) = &h.serving {
        s += &format!(": {serving}");
    }
    if !h.real_grpc {
        s += " — not a gRPC answer";
    }
    s
}

/// Whether a real gRPC health answer came back, and its serving status.
fn grpc_state(h: Option<&Health>) -> (bool, Option<String>) {
    match h {
        Some(h) if h.real_grpc => {
            let ok = h
                .grpc_status
                .as_deref()
                .is_some_and(|g| g.starts_with("0 "));
            (
                true,
                if ok {
                    h.serving.clone()
                } else {
                    h.grpc_status.clone()
                },
            )
        }
        _ => (false, None),
    }
}

fn conclude(r: &mut Report) {
    let mut v = Vec::new();
    if !r.tcp.ok {
        let why = r.tcp.error.clone().unwrap_or_default();
        for c in [GRPCIO, GRPC_GO, GRPC_JS, BROWSER, CURL, K8S_HTTP, K8S_GRPC] {
            v.push(
                verdict(c, Some(false), why.clone())
                    .fix("start the server, or check the host, port and firewall"),
            );
        }
        r.problems.push(format!("cannot connect: {why}"));
        finish(r, v);
        return;
    }
    match r.mode {
        Mode::Tls => tls_verdicts(r, &mut v),
        Mode::Plaintext => plain_verdicts(r, &mut v),
    }
    finish(r, v);
}

fn finish(r: &mut Report, v: Vec<Verdict>) {
    for c in &v {
        if c.works == Some(false) {
            let code = c.code.map(|c| format!("[{c}] ")).unwrap_or_default();
            r.problems.push(format!("{code}{}: {}", c.client, c.why));
        }
    }
    if let Some(c) = &r.certificate {
        if !c.expired && c.days_left < 14 {
            r.problems.push(format!(
                "[cert-expiry] the certificate expires in {} days ({})",
                c.days_left, c.not_after
            ));
        }
    }
    r.ok = r.problems.is_empty();
    r.clients = v;
}

fn plain_speaks(r: &Report) -> Option<&'static str> {
    let h2c = r.h2c.as_ref().map(|f| f.answer);
    let h1 = r.http1.as_ref().map(|f| f.answer);
    match (h2c == Some(Answer::Http2), h1 == Some(Answer::Http1)) {
        (true, true) => Some("HTTP/1.1 and HTTP/2 cleartext (h2c)"),
        (true, false) => Some("HTTP/2 cleartext (h2c) only"),
        (false, true) => Some("HTTP/1.1 only"),
        _ => None,
    }
}

fn tls_verdicts(r: &mut Report, v: &mut Vec<Verdict>) {
    let Some(main) = r.tls.first().filter(|h| h.ok) else {
        let error = r
            .tls
            .first()
            .and_then(|h| h.error.clone())
            .unwrap_or_default();
        let (why, fix) = match plain_speaks(r) {
            Some(speaks) => (
                format!("this port speaks plaintext ({speaks}), not TLS: every TLS client fails its handshake ({error})"),
                format!(
                    "connect without TLS (http://{}:{}, an insecure channel), or terminate TLS in front of it",
                    r.host, r.port
                ),
            ),
            None => (format!("the TLS handshake fails: {error}"), "check that the port serves TLS and what it requires (a client certificate: --cert/--key)".to_string()),
        };
        for c in [GRPCIO, GRPC_GO, GRPC_JS, BROWSER, CURL, K8S_HTTP] {
            v.push(verdict(c, Some(false), why.clone()).fix(fix.clone()));
        }
        v.push(verdict(
            K8S_GRPC,
            None,
            "kubelet's grpc probe speaks plaintext h2c only; it cannot check a TLS port",
        ));
        return;
    };
    let cert_problem = r.certificate.as_ref().and_then(|c| c.problem.clone());
    let with_ca = r
        .certificate
        .as_ref()
        .is_some_and(|c| c.roots.starts_with("--ca"));
    let alpn = main.alpn.clone();
    let (real, state) = grpc_state(r.tls_grpc.as_ref());
    let grpc_detail = r
        .tls_grpc
        .as_ref()
        .map(health_words)
        .unwrap_or_else(|| "no HTTP/2 request was possible".into());
    let cert_fix = |p: &str| {
        if p.contains("expired") {
            "renew the certificate".to_string()
        } else if p.contains("not valid for") {
            "issue the certificate with this name in its SANs, or connect with the name it has (--sni)".to_string()
        } else {
            "give clients the CA that signed it (root certificates / --cacert), or use a certificate from a CA they trust".to_string()
        }
    };
    for (client, alpn_note) in [
        (GRPCIO, "fails with 'Cannot check peer: missing selected ALPN property'"),
        (GRPC_GO, "grpc-go 1.67 and later refuse it ('missing selected ALPN property'; older versions connect)"),
        (GRPC_JS, "Node's HTTP/2 client needs h2 selected by ALPN and fails the connection"),
    ] {
        // Every reason this client fails, the ALPN one first (its code
        // is the one users search for).
        let mut reasons: Vec<(String, String, Option<&'static str>)> = Vec::new();
        if alpn.is_none() {
            reasons.push((
                format!("the server selects no ALPN protocol: {alpn_note}"),
                "advertise ALPN h2,http/1.1 on the server (Envoy: alpn_protocols in common_tls_context; torii does by default)".into(),
                Some("tls-no-alpn"),
            ));
        } else if alpn.as_deref() != Some("h2") {
            reasons.push((
                format!(
                    "offered h2,http/1.1, the server selects {:?}: no HTTP/2, so no gRPC",
                    alpn.clone().unwrap_or_default()
                ),
                "enable HTTP/2 on the server and list h2 first in its ALPN".into(),
                Some("tls-no-alpn"),
            ));
        }
        if let Some(p) = &cert_problem {
            reasons.push((format!("certificate verify failed: {p}"), cert_fix(p), None));
        }
        if reasons.is_empty() && !real {
            reasons.push((
                format!("HTTP/2 works but the answer is not gRPC: {grpc_detail}"),
                "point the client at the gRPC server itself, or make the proxy in front send gRPC upstream over HTTP/2".into(),
                Some("grpc-upstream-http1"),
            ));
        }
        let verdict_for = if reasons.is_empty() {
            let mut why = format!("TLS with ALPN h2 and a real gRPC answer ({grpc_detail})");
            if with_ca {
                why += "; clients need the CA given with --ca";
            }
            verdict(client, Some(true), why)
        } else {
            let code = reasons.iter().find_map(|r| r.2);
            let why: Vec<String> = reasons.iter().map(|r| r.0.clone()).collect();
            let fix: Vec<String> = reasons.iter().map(|r| r.1.clone()).collect();
            let mut v = verdict(client, Some(false), why.join("; and ")).fix(fix.join("; "));
            v.code = code;
            v
        };
        v.push(verdict_for);
    }
    let (web_real, _) = grpc_state(r.tls_grpc_web.as_ref());
    let web = r.tls_grpc_web.as_ref().map(health_words);
    v.push(if let Some(p) = &cert_problem {
        verdict(BROWSER, Some(false), format!("the browser refuses the certificate: {p}")).fix(cert_fix(p))
    } else if !web_real {
        verdict(BROWSER, Some(false), format!("no gRPC-Web answer: {}", web.unwrap_or_else(|| "HTTP/1.1 over TLS does not work".into())))
            .fix("put a gRPC-Web translator in front of the server (Envoy's grpc_web filter, grpcwebproxy)")
    } else {
        let mut why = "gRPC-Web over HTTPS answers".to_string();
        if with_ca {
            why += " (the browser must trust the CA given with --ca)";
        }
        verdict(BROWSER, Some(true), why)
    });
    let http1_status = r.tls_http1.as_ref().and_then(|f| f.status);
    v.push(if let Some(p) = &cert_problem {
        verdict(
            CURL,
            Some(false),
            format!("curl: (60) SSL certificate problem: {p}"),
        )
        .fix(cert_fix(p))
    } else if http1_status.is_some() || real {
        let mut why = match http1_status {
            Some(s) => format!("GET {} over HTTPS answers {s}", r.path),
            None => "HTTP/2 over TLS works".into(),
        };
        if with_ca {
            why += &format!(
                " (with --cacert {})",
                r.certificate
                    .as_ref()
                    .map(|c| c.roots.trim_start_matches("--ca ").to_string())
                    .unwrap_or_default()
            );
        }
        verdict(CURL, Some(true), why)
    } else {
        verdict(
            CURL,
            Some(false),
            "neither HTTP/1.1 nor HTTP/2 over TLS answers",
        )
        .fix("check the server's protocols")
    });
    v.push(match r.tls_http1.as_ref() {
        Some(f) if f.status.is_some_and(|s| (200..400).contains(&s)) => verdict(
            K8S_HTTP,
            Some(true),
            format!("GET {} over HTTPS (kubelet skips certificate checks) answers {}", r.path, f.status.unwrap_or(0)),
        ),
        Some(f) if f.status.is_some() => verdict(
            K8S_HTTP,
            Some(false),
            format!("GET {} over HTTPS answers {}: kubelet counts only 200-399 as healthy", r.path, f.status.unwrap_or(0)),
        )
        .fix("point the probe at a path that answers 200 (--path to try another), or use a grpc or tcpSocket probe"),
        _ => {
            let why = r.tls.get(2).and_then(|h| h.error.clone()).unwrap_or_else(|| "no HTTP/1.1 answer over TLS".into());
            verdict(K8S_HTTP, Some(false), format!("the port does not answer HTTP/1.1 over TLS ({why})"))
                .fix("serve HTTP/1.1 beside HTTP/2 (ALPN http/1.1), or use a tcpSocket probe")
                .code("h2c-probe")
        }
    });
    v.push(verdict(K8S_GRPC, None, "kubelet's grpc probe speaks plaintext h2c only; it cannot check a TLS port (use a plaintext health port for it)"));
    health_problem(r, state.as_deref());
}

fn health_problem(r: &mut Report, state: Option<&str>) {
    match state {
        Some("SERVING") | None => {}
        Some(s) => r.problems.push(format!(
            "the gRPC health service answers {s}: load balancers and grpc probes take this server out of rotation"
        )),
    }
}

fn plain_verdicts(r: &mut Report, v: &mut Vec<Verdict>) {
    let tls_port = r.tls.iter().any(|h| h.ok)
        || r.h2c.as_ref().is_some_and(|f| f.answer == Answer::Tls)
        || r.http1.as_ref().is_some_and(|f| f.answer == Answer::Tls);
    if tls_port {
        let why = "this port speaks TLS: plaintext HTTP and h2c get a TLS alert or nothing";
        let fix = format!(
            "connect with TLS (https://{}:{}, secure channel credentials)",
            r.host, r.port
        );
        for c in [GRPCIO, GRPC_GO, GRPC_JS, BROWSER, CURL, K8S_HTTP, K8S_GRPC] {
            v.push(verdict(c, Some(false), why).fix(fix.clone()));
        }
        return;
    }
    let h2c = r.h2c.as_ref().is_some_and(|f| f.answer == Answer::Http2);
    let h1 = r.http1.as_ref().filter(|f| f.answer == Answer::Http1);
    let (real, state) = grpc_state(r.h2c_grpc.as_ref());
    let grpc_detail = r.h2c_grpc.as_ref().map(health_words);
    let preface_answer = r
        .h2c
        .as_ref()
        .map(|f| f.excerpt.clone())
        .unwrap_or_default();
    for client in [GRPCIO, GRPC_GO, GRPC_JS] {
        v.push(if !h2c && h1.is_some() {
            verdict(
                client,
                Some(false),
                format!("the port speaks HTTP/1.1 only (it answered the HTTP/2 preface with {preface_answer:?}): gRPC calls fail with a protocol error (Envoy says 'reset reason: protocol error')"),
            )
            .fix("point gRPC clients at the server's HTTP/2 port, or enable h2c on it")
            .code("grpc-upstream-http1")
        } else if !h2c {
            let what = r.h2c.as_ref().map(|f| format!("{:?} {:?}", f.answer, f.excerpt)).unwrap_or_default();
            verdict(client, Some(false), format!("no HTTP/2 cleartext answer ({what})")).fix("enable h2c (HTTP/2 prior knowledge) on the server")
        } else if !real {
            verdict(client, Some(false), format!("h2c works but the answer is not gRPC: {}", grpc_detail.clone().unwrap_or_default()))
                .fix("point the client at the gRPC server itself")
        } else {
            verdict(client, Some(true), format!("h2c with a real gRPC answer ({})", grpc_detail.clone().unwrap_or_default()))
        });
    }
    let (web_real, _) = grpc_state(r.http1_grpc_web.as_ref());
    v.push(if web_real {
        verdict(BROWSER, Some(true), "gRPC-Web over HTTP/1.1 answers (from http:// pages only; https:// pages need TLS)")
    } else {
        let why = match &r.http1_grpc_web {
            Some(h) => format!("no gRPC-Web answer: {}", health_words(h)),
            None => "browsers cannot speak h2c, and HTTP/1.1 does not answer".to_string(),
        };
        verdict(BROWSER, Some(false), why).fix("put a gRPC-Web translator in front of the server (Envoy's grpc_web filter, grpcwebproxy)")
    });
    v.push(match h1 {
        Some(f) => verdict(
            CURL,
            Some(true),
            format!("HTTP/1.1 answers {}", f.status.unwrap_or(0)),
        ),
        None if h2c => verdict(
            CURL,
            Some(false),
            "plain curl sends HTTP/1.1, which this port does not answer (h2c only)",
        )
        .fix("use curl --http2-prior-knowledge, or serve HTTP/1.1 on this port too")
        .code("h2c-probe"),
        None => verdict(CURL, Some(false), "no HTTP answer").fix("check the server"),
    });
    v.push(match h1 {
        Some(f) if f.status.is_some_and(|s| (200..400).contains(&s)) => {
            verdict(K8S_HTTP, Some(true), format!("GET {} answers {}", r.path, f.status.unwrap_or(0)))
        }
        Some(f) => verdict(K8S_HTTP, Some(false), format!("GET {} answers {}: kubelet counts only 200-399 as healthy", r.path, f.status.unwrap_or(0)))
            .fix("point the probe at a path that answers 200 (--path to try another)"),
        None if h2c => verdict(
            K8S_HTTP,
            Some(false),
            "this port speaks HTTP/2 cleartext only: kubelet's HTTP/1.1 probe fails and the pod never becomes Ready",
        )
        .fix("serve HTTP/1.1 on this port too (torii does), add a second HTTP/1.1 port for the probe, or use a grpc probe")
        .code("h2c-probe"),
        None => verdict(K8S_HTTP, Some(false), "no HTTP/1.1 answer").fix("use a tcpSocket probe"),
    });
    v.push(match (real, state.as_deref()) {
        (true, Some("SERVING")) => verdict(K8S_GRPC, Some(true), "grpc.health.v1 Check answers SERVING"),
        (true, Some(s)) if s.contains("UNIMPLEMENTED") => verdict(K8S_GRPC, Some(false), "the server has no grpc.health.v1 service (UNIMPLEMENTED)")
            .fix("register the standard health service in the server"),
        (true, Some(s)) => verdict(K8S_GRPC, Some(false), format!("grpc.health.v1 Check answers {s}: the pod is not Ready / is restarted"))
            .fix("find out why the server reports itself unhealthy (or ask for another service with --service)"),
        _ => verdict(K8S_GRPC, Some(false), format!("no gRPC health answer over h2c: {}", grpc_detail.unwrap_or_else(|| "the port does not speak h2c".into())))
            .fix("serve grpc.health.v1 over h2c on the probed port"),
    });
    health_problem(r, state.as_deref());
}

fn mark(works: Option<bool>) -> &'static str {
    match works {
        Some(true) => "ok  ",
        Some(false) => "FAIL",
        None => "n/a ",
    }
}

fn first_bytes_words(f: &FirstBytes) -> String {
    match f.answer {
        Answer::Http2 => "HTTP/2 (SETTINGS)".to_string(),
        Answer::Http1 => format!(
            "HTTP/1.1 {}",
            f.status.map(|s| s.to_string()).unwrap_or_default()
        ),
        Answer::Tls => "a TLS alert: this port wants TLS".to_string(),
        Answer::Closed => "closed the connection without answering".to_string(),
        Answer::Silent => "no answer".to_string(),
        Answer::Other => format!("something else: {:?}", f.excerpt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("127.0.0.1:50051").unwrap(),
            ("127.0.0.1".into(), 50051, None)
        );
        assert_eq!(
            parse_target("https://api.example.com/x").unwrap(),
            ("api.example.com".into(), 443, Some(Mode::Tls))
        );
        assert_eq!(
            parse_target("http://[::1]:8080").unwrap(),
            ("::1".into(), 8080, Some(Mode::Plaintext))
        );
        assert!(parse_target("example.com")
            .unwrap_err()
            .contains("needs a port"));
        assert!(parse_target("ftp://x:1").is_err());
        assert!(parse_target("h:99999").unwrap_err().contains("not a port"));
    }
}
