//! The command line: `serve`, `check`, `demo`, `version` (and a hidden
//! `echo` backend used by tests and benchmarks).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "torii",
    version,
    about = "A gRPC-native edge and sidecar proxy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written to stderr.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event, for people.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy.
    #[command(after_help = SERVE_AFTER_HELP)]
    Serve {
        /// The configuration file (YAML); docs/configuration.md lists every key.
        #[arg(short, long)]
        config: PathBuf,
        /// Worker threads (default: one per core; 1 is the leanest for a sidecar).
        #[arg(long)]
        workers: Option<usize>,
        /// error | warn | info | debug | trace for torii's own logs (libraries stay at warn),
        /// or a RUST_LOG-style filter such as debug,rustls=debug (default: info, or RUST_LOG).
        #[arg(long)]
        log_level: Option<String>,
        /// text (default) or json: one JSON object per log line on stderr.
        #[arg(long, value_enum, default_value_t)]
        log_format: LogFormat,
    },
    /// Load and validate a configuration without binding anything; print every problem.
    Check {
        /// The configuration file (YAML) to check, exactly as `serve` would load it.
        #[arg(short, long)]
        config: PathBuf,
        /// Fail (exit 1) on warnings too, not only on errors.
        #[arg(long)]
        strict: bool,
    },
    /// A one-command tour: TLS and plaintext listeners in front of a built-in gRPC service.
    Demo {
        /// Where the demo's TLS listener listens.
        #[arg(long, default_value = "127.0.0.1:8443")]
        tls_address: SocketAddr,
        /// Where the demo's plaintext listener (HTTP/1.1 and h2c) listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        plain_address: SocketAddr,
        /// error | warn | info | debug | trace for torii's own logs (libraries stay at warn),
        /// or a RUST_LOG-style filter such as debug,rustls=debug.
        #[arg(long)]
        log_level: Option<String>,
        /// text (default) or json: one JSON object per log line on stderr.
        #[arg(long, value_enum, default_value_t)]
        log_format: LogFormat,
    },
    /// Find gRPC pitfalls in Envoy, Kubernetes and Istio configs (files, directories, - for stdin).
    #[command(after_help = LINT_AFTER_HELP)]
    Lint {
        /// YAML or JSON files, directories (read recursively) or - for standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// text (default), json (one object per finding) or sarif (SARIF 2.1.0).
        #[arg(long, value_enum, default_value_t)]
        format: crate::lint::Format,
    },
    /// Probe an endpoint as gRPC clients, browsers, curl and Kubernetes probes would, and say which work.
    #[command(after_help = DOCTOR_AFTER_HELP)]
    Doctor(crate::doctor::Options),
    /// Print the version.
    Version,
    /// Run the built-in echo gRPC service (for tests and benchmarks).
    #[command(hide = true)]
    Echo {
        #[arg(long, default_value = "127.0.0.1:0")]
        address: SocketAddr,
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        #[arg(long)]
        workers: Option<usize>,
    },
}

const LINT_AFTER_HELP: &str = "\
Exit code: 0 no pitfalls, 1 pitfalls found, 2 an input could not be read
(the other inputs are still linted). Codes: grpc-upstream-http1, tls-no-alpn,
stream-timeout, port-name-protocol, h2c-probe, port-protocol-undeclared,
grpc-probe-no-health (docs/pitfalls.md).";

const DOCTOR_AFTER_HELP: &str = "\
Exit code: 0 every client can use the endpoint, 1 a problem was found.
Checks TCP, TLS (version, cipher, chain, SANs, expiry, ALPN offered
h2,http/1.1 / h2 / http/1.1 and what was selected), gRPC health over HTTP/2
(TLS or h2c), HTTP/1.1 and gRPC-Web, then judges grpcio/C-core, grpc-go,
grpc-js, browsers (gRPC-Web), curl and Kubernetes httpGet and grpc probes.";

const SERVE_AFTER_HELP: &str = "\
Reload: SIGHUP, or save the config file (its content is checked every 2 s;
certificate and key files it names are watched too). A config with problems
is rejected and logged; the running one stays.
Stop: SIGTERM or SIGINT drain: /ready turns 503, HTTP/2 clients get GOAWAY,
HTTP/1.1 gets connection: close, requests in flight get drain_timeout.
Configuration reference: docs/configuration.md in torii's repository; check a
file first with `torii check -c FILE`.";

/// A bare level (`debug`) is torii's own: the libraries under it (rustls,
/// hyper) log their internals at debug in their own formatting, which is
/// noise to an operator, so they stay at `warn` unless the filter names
/// them (`debug,rustls=debug` is taken as written).
fn log_filter(text: &str) -> String {
    let text = text.trim();
    let bare = ["error", "warn", "info", "debug", "trace"];
    if bare.contains(&text.to_ascii_lowercase().as_str()) {
        format!("warn,torii={text}")
    } else {
        text.to_string()
    }
}

pub fn init_logging(level: Option<&str>, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let text = level
        .map(str::to_string)
        .or_else(|| std::env::var(EnvFilter::DEFAULT_ENV).ok())
        .unwrap_or_else(|| "info".into());
    let filter = EnvFilter::try_new(log_filter(&text)).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = match workers {
        // One worker: a single-threaded scheduler. No cross-thread wake-ups,
        // and a woken task queues behind the ones already ready, so a
        // connection writes the responses of many streams in one go.
        Some(n) if n <= 1 => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().build()
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            println!("torii {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Doctor(options) => ExitCode::from(crate::doctor::run(options)),
        Command::Lint { files, format } => {
            let code = crate::lint::run(
                &files,
                format,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
            );
            ExitCode::from(code)
        }
        Command::Check { config, strict } => {
            let mut out = std::io::stdout();
            if crate::config::check_strict(&config, &mut out, strict) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Serve {
            config,
            workers,
            log_level,
            log_format,
        } => {
            init_logging(log_level.as_deref(), log_format);
            let loaded = match crate::config::load_file(&config) {
                Ok(l) => l,
                Err(problems) => {
                    for p in &problems {
                        eprintln!("{p}");
                    }
                    eprintln!(
                        "torii: not starting: {} has problems (run `torii check -c {}`)",
                        config.display(),
                        config.display()
                    );
                    return ExitCode::from(1);
                }
            };
            for w in &loaded.warnings {
                tracing::warn!("{}", w.with_help());
            }
            let rt = match runtime(workers) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("torii: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(serve(loaded.config, config))
        }
        Command::Demo {
            tls_address,
            plain_address,
            log_level,
            log_format,
        } => {
            init_logging(
                Some(log_level.as_deref().unwrap_or("warn,torii=info")),
                log_format,
            );
            let rt = match runtime(None) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("torii: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(crate::demo::run_demo(tls_address, plain_address)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("torii demo: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Echo {
            address,
            tls_cert,
            tls_key,
            workers,
        } => {
            init_logging(Some("warn"), LogFormat::Text);
            let rt = match runtime(workers) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("torii: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let tls = tls_cert.zip(tls_key);
            match rt.block_on(crate::demo::run_echo(address, tls)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("torii echo: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn serve(config: crate::config::Config, path: PathBuf) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers before the "listening" lines: whoever reads them may signal
    // at once, and the default action would kill the process mid-start.
    let mut hup = signal(SignalKind::hangup()).expect("installing a SIGHUP handler");
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    let running = match crate::app::start(config).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("not starting: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::spawn(crate::heap::trim_after_spikes());
    let mut watcher = crate::app::Watcher::new(&path, &running);
    let mut poll = tokio::time::interval(crate::app::WATCH_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => "SIGHUP",
            _ = poll.tick() => match watcher.changed(&running) {
                Some(why) => why,
                None => continue,
            },
        };
        if why == "SIGHUP" {
            // What is on disk now is what this reload reads.
            let _ = watcher.changed(&running);
        }
        let result = running.reload_file(&path).await;
        watcher.reloaded(&running);
        match result {
            Ok(()) => tracing::info!(file = %path.display(), "reloaded ({why})"),
            Err(e) => tracing::error!(
                file = %path.display(),
                "reload ({why}) rejected; the running configuration stays:\n{e}"
            ),
        }
    }
    tracing::info!("stop signal received; draining");
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
