//! The port-name incident of docs/incidents.md, end to end: a port declared `http`
//! carries TLS, and a transparent sidecar must not break it.
//!
//! Two network namespaces the test creates and deletes, joined by a veth
//! pair (nothing outside them is touched):
//! - `srv` (10.77.0.2, fd77::2): an HTTPS server on :443, plain HTTP
//!   servers on :80 (v4 and v6) and :8080, a gRPC echo server (h2c) on
//!   :50051, a server-first protocol (SMTP-like) on :25, a client-first
//!   line protocol (Redis-like) on :6379;
//! - `pod` (10.77.0.1, fd77::1): the clients (curl and Rust), torii (the
//!   built binary, as uid 65534) with an `original_destination` listener,
//!   and `scripts/sidecar-iptables.sh` redirecting the pod's outbound TCP
//!   to it, excluding torii's own uid.
//!
//! torii is told `destination_protocols: {"443": http}`, the port name that
//! broke a mesh. HTTPS to :443 must still work (curl and a Rust client),
//! plain HTTP and gRPC must get the L7 pipeline, and the mismatch must be
//! counted and logged once in plain words. The other direction (plaintext
//! where `tls` is declared) and opaque TCP to the original destination are
//! checked in `other_protocols_through_the_sidecar`.
//!
//! Needs root (namespaces, iptables). Without the privilege to create a
//! namespace it is skipped, visibly (`support::skip`: a `SKIPPED:` line
//! that `scripts/test.sh` counts in its summary); under CI (`CI=true`, as
//! root) not being able to run is a failure.

mod support;

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

const SRV_V4: &str = "10.77.0.2";
const POD_V4: &str = "10.77.0.1";
const SRV_V6: &str = "fd77::2";
const POD_V6: &str = "fd77::1";
/// Inside the pod namespace: fixed ports are ours alone there.
const PROXY_PORT: u16 = 15001;
const ADMIN: &str = "127.0.0.1:15000";
/// torii runs as this user, which the iptables rules exclude.
const TORII_UID: &str = "65534";
/// What the HTTPS server on :443 answers.
const TLS_GREETING: &str = "hello over tls";
const HTTP_GREETING: &str = "hello over http";

#[test]
fn a_port_declared_http_does_not_break_https() {
    let Some(lab) = Lab::new() else { return };
    let out = lab.run_in_pod(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        &lab.ca_path(),
        "--resolve",
        &format!("secure.test:443:{SRV_V4}"),
        "https://secure.test/hello",
    ]);
    // Passed through untouched: torii added no request id.
    assert_eq!(
        out,
        format!("{TLS_GREETING} request-id=no\n"),
        "{}",
        lab.log()
    );

    let out = lab.run_in_pod(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        &format!("http://{SRV_V4}/hello"),
    ]);
    // Through the HTTP pipeline: torii added a request id.
    assert_eq!(
        out,
        format!("{HTTP_GREETING} request-id=yes\n"),
        "{}",
        lab.log()
    );
    let out = lab.run_in_pod(&[
        "curl",
        "-sS",
        "-g",
        "--max-time",
        "10",
        &format!("http://[{SRV_V6}]/hello"),
    ]);
    assert_eq!(
        out,
        format!("{HTTP_GREETING} request-id=yes\n"),
        "IPv6: {}",
        lab.log()
    );

    let ca = lab.pki.ca_cert_pem().to_string();
    let (tls_answer, grpc_ok, grpc_refused, metrics) = in_netns(&lab.pod, move || {
        runtime().block_on(async move {
            let tls = https_get(&ca, &format!("{SRV_V4}:443")).await;
            let grpc = grpc_unary(&format!("http://{SRV_V4}:50051")).await;
            let refused = grpc_unary(&format!("http://{SRV_V4}:50052")).await;
            (tls, grpc, refused, http_get(ADMIN, "/metrics").await)
        })
    });
    assert!(
        tls_answer.ends_with(&format!("{TLS_GREETING} request-id=no\n")),
        "{tls_answer}\n{}",
        lab.log()
    );
    grpc_ok.unwrap_or_else(|e| panic!("gRPC through the sidecar: {e}\n{}", lab.log()));
    // A gRPC client gets a gRPC status saying what happened, not a reset.
    let status = grpc_refused.expect_err("nothing listens on :50052");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("refused"), "{status:?}");

    let count = |labels: &[&str]| metric(&metrics, "torii_protocol_detections_total", labels);
    assert_eq!(
        count(&["declared=\"http\"", "detected=\"tls\""]),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        count(&["declared=\"auto\"", "detected=\"http1\""]),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        count(&["declared=\"auto\"", "detected=\"http2\""]),
        2.0,
        "{metrics}"
    );
    let grpc_ok_requests = metric(
        &metrics,
        "torii_requests_total",
        &[
            "cluster=\"original_destination\"",
            "grpc_service=\"torii.echo.v1.Echo\"",
            "grpc_status=\"OK\"",
        ],
    );
    assert_eq!(grpc_ok_requests, 1.0, "{metrics}");

    // Said once per destination, in plain words, although two TLS
    // connections arrived.
    let log = lab.log();
    let said = "destination 10.77.0.2:443 is declared http (destination_protocols \"443\": http), but the client sent a TLS ClientHello (SNI secure.test); torii passed it through as TLS";
    assert_eq!(warnings(&log, said), 1, "{log}");
    if std::env::var_os("TORII_SHOW_LOG").is_some() {
        let _ = writeln!(std::io::stderr(), "torii log:\n{log}\nmetrics:\n{metrics}");
    }
}

#[test]
fn other_protocols_through_the_sidecar() {
    let Some(lab) = Lab::new() else { return };
    // Plaintext where TLS is declared: served as HTTP, said once.
    for _ in 0..2 {
        let out = lab.run_in_pod(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            &format!("http://{SRV_V4}:8080/hello"),
        ]);
        assert_eq!(
            out,
            format!("{HTTP_GREETING} request-id=yes\n"),
            "{}",
            lab.log()
        );
    }
    let (banner, banner_wait, pong, pong_wait, metrics) = in_netns(&lab.pod, || {
        runtime().block_on(async {
            // Server-first, nothing declared: the greeting arrives after the
            // detect timeout (100ms here), as opaque TCP.
            let started = Instant::now();
            let mut smtp = tokio::io::BufReader::new(
                TcpStream::connect(format!("{SRV_V4}:25")).await.unwrap(),
            );
            let banner = line(&mut smtp).await;
            let banner_wait = started.elapsed();
            smtp.get_mut()
                .write_all(b"EHLO pod.test\r\n")
                .await
                .unwrap();
            let banner = banner + &line(&mut smtp).await;
            // Declared tcp: forwarded at once, without detection.
            let started = Instant::now();
            let mut redis = tokio::io::BufReader::new(
                TcpStream::connect(format!("{SRV_V4}:6379")).await.unwrap(),
            );
            redis.get_mut().write_all(b"PING\r\n").await.unwrap();
            let pong = line(&mut redis).await;
            (
                banner,
                banner_wait,
                pong,
                started.elapsed(),
                http_get(ADMIN, "/metrics").await,
            )
        })
    });
    assert_eq!(
        banner,
        "220 smtp.test ready\r\n250 EHLO pod.test\r\n",
        "{}",
        lab.log()
    );
    assert!(banner_wait >= Duration::from_millis(95), "{banner_wait:?}");
    assert!(banner_wait < PATIENCE / 4, "{banner_wait:?}");
    assert_eq!(pong, "+PING\r\n", "{}", lab.log());
    assert!(pong_wait < Duration::from_secs(2), "{pong_wait:?}");

    let count = |labels: &[&str]| metric(&metrics, "torii_protocol_detections_total", labels);
    assert_eq!(
        count(&["declared=\"tls\"", "detected=\"http1\""]),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        count(&["declared=\"auto\"", "detected=\"tcp\""]),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        count(&["declared=\"tcp\"", "detected=\"tcp\""]),
        1.0,
        "{metrics}"
    );
    let log = lab.log();
    let said = "destination 10.77.0.2:8080 is declared tls (destination_protocols \"8080\": tls), but the client sent plaintext HTTP/1.x; torii handled it as plaintext HTTP";
    assert_eq!(warnings(&log, said), 1, "{log}");
}

/// Rules that forget to exclude torii's own traffic would send every
/// forwarded connection back into torii, until file descriptors run out.
/// torii recognises its own connection and says what to fix.
#[test]
fn a_missing_exclusion_is_named_not_looped() {
    let Some(lab) = Lab::excluding_uid("4242") else {
        return;
    };
    let status = lab.run_in_pod(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
        &format!("http://{SRV_V4}/hello"),
    ]);
    // The client gets an answer (no hang, no spiral)…
    assert_eq!(status, "502", "{}", lab.log());
    // …and the log says what to change.
    let log = lab.log();
    let said = "torii's own connection to 10.77.0.2:80 was redirected back to torii: the iptables rules must exclude torii's own traffic";
    assert_eq!(warnings(&log, said), 1, "{log}");
    let metrics = in_netns(&lab.pod, || runtime().block_on(http_get(ADMIN, "/metrics")));
    let http1 = metric(
        &metrics,
        "torii_protocol_detections_total",
        &["detected=\"http1\""],
    );
    assert_eq!(
        http1, 1.0,
        "only the client's connection was classified: {metrics}"
    );
}

/// Warnings in `log` that contain `sentence`.
fn warnings(log: &str, sentence: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains(sentence))
        .count()
}

async fn line(r: &mut tokio::io::BufReader<TcpStream>) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut out = String::new();
    let _ = tokio::time::timeout(PATIENCE, r.read_line(&mut out)).await;
    out
}

// ---- the lab: namespaces, servers, torii ----

struct Lab {
    pod: String,
    pki: TestPki,
    dir: TempDir,
    /// Fields drop in order: torii first, then the servers, then the
    /// namespaces (which takes the veth pair and the rules with them).
    torii: Option<Child>,
    servers: Option<Servers>,
    _namespaces: Namespaces,
}

impl Lab {
    /// Sets everything up, or says why it cannot run (`None`).
    fn new() -> Option<Lab> {
        Lab::excluding_uid(TORII_UID)
    }

    /// A lab whose iptables rules exclude `uid` from redirection (torii's
    /// own uid unless the test wants the rules wrong).
    fn excluding_uid(uid: &str) -> Option<Lab> {
        // Namespace names are global: unique per process and per lab (the
        // tests of this file run in parallel).
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let pod = format!("torii{id}pod");
        let srv = format!("torii{id}srv");
        if let Err(why) = namespaces_possible() {
            skip(&why);
            return None;
        }
        for tool in ["iptables", "ip6tables", "curl", "nsenter"] {
            assert!(
                Command::new("sh").args(["-c", &format!("command -v {tool}")]).stdout(Stdio::null()).status().unwrap().success(),
                "{tool} is missing: install iproute2 iptables curl util-linux (scripts/test.sh does)"
            );
        }
        let namespaces = Namespaces(vec![pod.clone(), srv.clone()]);
        sh(&["ip", "netns", "add", &pod]);
        sh(&["ip", "netns", "add", &srv]);
        let (veth_pod, veth_srv) = (format!("tv{id}p"), format!("tv{id}s"));
        sh(&[
            "ip", "-n", &pod, "link", "add", &veth_pod, "type", "veth", "peer", "name", &veth_srv,
            "netns", &srv,
        ]);
        for (ns, dev, v4, v6) in [
            (&pod, &veth_pod, POD_V4, POD_V6),
            (&srv, &veth_srv, SRV_V4, SRV_V6),
        ] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                dev,
            ]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // Right after link-up, IPv6 neighbour discovery holds the first
        // connection for a second: tell each side the other's address.
        for (ns, dev, peer_ns, peer_dev, peer_v6) in [
            (&pod, &veth_pod, &srv, &veth_srv, SRV_V6),
            (&srv, &veth_srv, &pod, &veth_pod, POD_V6),
        ] {
            let mac = mac_of(peer_ns, peer_dev);
            sh(&[
                "ip",
                "-n",
                ns,
                "neigh",
                "replace",
                peer_v6,
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }

        let pki = TestPki::new("sidecar test CA");
        let dir = TempDir::new("sidecar");
        pki.write_ca(dir.path(), "ca").unwrap();
        let servers = Servers::start(&srv, &pki);

        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sidecar-iptables.sh");
        sh(&[
            "ip",
            "netns",
            "exec",
            &pod,
            "bash",
            script.to_str().unwrap(),
            "--uid",
            uid,
            "--proxy-port",
            &PROXY_PORT.to_string(),
            "--ipv6",
        ]);

        let mut lab = Lab {
            pod,
            pki,
            dir,
            torii: None,
            servers: Some(servers),
            _namespaces: namespaces,
        };
        lab.start_torii();
        Some(lab)
    }

    fn start_torii(&mut self) {
        let config = self.dir.path().join("torii.yaml");
        std::fs::write(
            &config,
            format!(
                r#"
admin:
  address: {ADMIN}
listeners:
  - name: out
    address: "[::]:{PROXY_PORT}"
    original_destination: true
    detect_timeout: 100ms
    destination_protocols: {{ "443": http, "8080": tls, "6379": tcp }}
"#
            ),
        )
        .unwrap();
        // World-readable: torii runs as an unprivileged user.
        for p in [self.dir.path(), config.as_path()] {
            let _ = Command::new("chmod").arg("a+rX").arg(p).status();
        }
        let log = File::create(self.log_path()).unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.pod))
            .args(["--setuid", TORII_UID, "--setgid", TORII_UID, "--"])
            .arg(self.torii_binary())
            .args(["serve", "-c"])
            .arg(&config)
            .args(["--log-level", "warn,torii=info"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start torii");
        self.torii = Some(child);
        let ready = in_netns(&self.pod, || {
            runtime().block_on(async {
                let deadline = Instant::now() + PATIENCE;
                while Instant::now() < deadline {
                    if http_get(ADMIN, "/ready").await.starts_with("HTTP/1.1 200") {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                false
            })
        });
        assert!(ready, "torii did not become ready:\n{}", self.log());
    }

    /// The torii binary, where uid 65534 can run it: in place when every
    /// directory above it lets others through (not so for a checkout under
    /// /root), else a copy in the lab's directory.
    fn torii_binary(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let built = Path::new(env!("CARGO_BIN_EXE_torii"));
        let others_may = |p: &Path, bits: u32| {
            std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & bits == bits)
        };
        let reachable = built
            .ancestors()
            .skip(1)
            .all(|d| d.as_os_str().is_empty() || others_may(d, 0o001));
        if reachable && others_may(built, 0o005) {
            return built.to_path_buf();
        }
        let copy = self.dir.path().join("torii");
        std::fs::copy(built, &copy).expect("copy the torii binary");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("torii.log")
    }

    /// What torii logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn ca_path(&self) -> String {
        self.dir.path().join("ca.crt").display().to_string()
    }

    /// Runs a command in the pod namespace; its stdout (it must succeed).
    fn run_in_pod(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.pod])
            .args(args)
            .output()
            .expect("run a command in the pod namespace");
        assert!(
            out.status.success(),
            "{args:?} failed: {}\n{}\ntorii log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.torii.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.servers.take());
    }
}

/// Deletes the namespaces when dropped, also after a failed assertion.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Why namespaces cannot be made here, if they cannot (probed once).
fn namespaces_possible() -> Result<(), String> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    PROBED.get_or_init(probe_namespaces).clone()
}

fn probe_namespaces() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "not running as root (network namespaces and iptables need it; CI runs this as root)"
                .into(),
        );
    }
    let probe = format!("torii{}probe", std::process::id());
    let out = Command::new("ip").args(["netns", "add", &probe]).output();
    match out {
        Err(e) => Err(format!("cannot run ip (iproute2): {e}")),
        Ok(o) if !o.status.success() => Err(format!(
            "cannot create a network namespace: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            Ok(())
        }
    }
}

/// The MAC address of `dev` in namespace `ns`.
fn mac_of(ns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-br", "link", "show", "dev", dev])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no MAC in {text:?}"))
        .to_string()
}

#[track_caller]
fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `f` on a thread that has entered network namespace `ns`: every
/// socket it opens lives there.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns);
            f()
        })
        .join()
        .expect("the namespace thread panicked")
    })
}

fn enter_netns(ns: &str) {
    let file = File::open(format!("/run/netns/{ns}")).expect("the namespace exists");
    // SAFETY: a valid namespace fd; CLONE_NEWNET changes only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The servers in the `srv` namespace, on a thread of their own; stopped
/// when dropped.
struct Servers {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Servers {
    fn start(ns: &str, pki: &TestPki) -> Servers {
        let mut tls = server_config(&pki.server_cert(&["secure.test"]), None).unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(std::sync::Arc::new(tls));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = mpsc::channel();
        let ns = ns.to_string();
        let thread = std::thread::spawn(move || {
            enter_netns(&ns);
            runtime().block_on(async move {
                let bind = |a: String| async move {
                    TcpListener::bind(a.parse::<SocketAddr>().unwrap())
                        .await
                        .expect("bind in srv")
                };
                tokio::spawn(serve_http(
                    bind(format!("{SRV_V4}:443")).await,
                    Some(acceptor),
                    TLS_GREETING,
                ));
                tokio::spawn(serve_http(
                    bind(format!("{SRV_V4}:80")).await,
                    None,
                    HTTP_GREETING,
                ));
                tokio::spawn(serve_http(
                    bind(format!("[{SRV_V6}]:80")).await,
                    None,
                    HTTP_GREETING,
                ));
                tokio::spawn(serve_http(
                    bind(format!("{SRV_V4}:8080")).await,
                    None,
                    HTTP_GREETING,
                ));
                tokio::spawn(serve_lines(
                    bind(format!("{SRV_V4}:25")).await,
                    Some("220 smtp.test ready"),
                    "250 ",
                ));
                tokio::spawn(serve_lines(bind(format!("{SRV_V4}:6379")).await, None, "+"));
                let _echo = serve_echo(bind(format!("{SRV_V4}:50051")).await, None).await;
                ready_tx.send(()).unwrap();
                let _ = stopped.await;
            });
        });
        ready.recv_timeout(PATIENCE).expect("servers started");
        Servers {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// HTTP/1.1 and h2 (TLS with ALPN, or h2c), answering `GREETING
/// request-id=yes|no`: whether a proxy added `x-request-id` on the way.
async fn serve_http(listener: TcpListener, tls: Option<TlsAcceptor>, greeting: &'static str) {
    while let Ok((tcp, _)) = listener.accept().await {
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| async move {
                let id = if req.headers().contains_key("x-request-id") {
                    "yes"
                } else {
                    "no"
                };
                let body = Full::new(Bytes::from(format!("{greeting} request-id={id}\n")));
                Ok::<_, std::convert::Infallible>(Response::new(body))
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(tcp).await {
                        let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                    }
                }
                None => {
                    let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
                }
            }
        });
    }
}

/// A line protocol: `greeting` first if given (server-first, like SMTP),
/// then `prefix` + each line the client sends (like Redis' `+PONG`).
async fn serve_lines(listener: TcpListener, greeting: Option<&'static str>, prefix: &'static str) {
    use tokio::io::AsyncBufReadExt;
    while let Ok((tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (r, mut w) = tcp.into_split();
            if let Some(g) = greeting {
                if w.write_all(format!("{g}\r\n").as_bytes()).await.is_err() {
                    return;
                }
            }
            let mut lines = tokio::io::BufReader::new(r).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if w.write_all(format!("{prefix}{l}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

/// GET over plaintext HTTP/1.1; the whole answer ("" when it failed).
async fn http_get(addr: &str, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: torii\r\nconnection: close\r\n\r\n");
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(request.as_bytes()).await?;
        let mut out = String::new();
        tcp.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(PATIENCE, exchange).await {
        Ok(Ok(out)) => out,
        _ => String::new(),
    }
}

/// GET https://secure.test/hello over a Rust TLS client, to `addr`.
async fn https_get(ca: &str, addr: &str) -> String {
    let exchange = async {
        let stream = TlsClient::new(ca)
            .with_server_name("secure.test")
            .with_alpn(&["http/1.1"])
            .handshake(addr.parse().unwrap())
            .await?;
        let mut stream = stream;
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nhost: secure.test\r\nconnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok::<_, BoxError>(out)
    };
    match tokio::time::timeout(PATIENCE, exchange).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => format!("HTTPS failed: {e}"),
        Err(_) => "HTTPS timed out".into(),
    }
}

async fn grpc_unary(url: &str) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect_timeout(PATIENCE)
        .timeout(PATIENCE)
        .connect()
        .await
        .map_err(|e| tonic::Status::unknown(format!("connect: {e:?}")))?;
    echo_client(channel)
        .unary(EchoRequest::default())
        .await
        .map(|_| ())
}

/// The value of the first line of `name` with all `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
