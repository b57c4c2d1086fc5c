//! The checks the fuzz targets run on each input, shared with the corpus
//! regression test (`tests/fuzz_corpus.rs` includes this module): one
//! place for the invariants, two ways to run them.
//!
//! Each entry point takes the raw input and panics when torii breaks a
//! rule. Known bugs can be let through while fuzzing (to look for others)
//! with `TORII_FUZZ_ALLOW=kind,kind` (violation kinds of the HTTP/2
//! observer, see `wire.rs`); the regression test never sets it.

pub mod alloc;
mod auth;
mod frames;
mod h2client;
mod h2server;
mod hpack;
pub mod hpack_ref;
mod input;
mod small;
mod wire;

/// Heap a connection run may hold at its peak besides 8 bytes per input
/// byte: windows are bounded by the input (the peer sends all the data),
/// the rest is torii's fixed per-connection state, read buffer and the
/// response bodies the application queues (at most a few hundred KiB).
pub const MAX_HEAP_BASE: usize = 4 << 20;

/// A target's check: panics when an input breaks a rule.
pub type Check = fn(&[u8]);

/// The targets, by name: what `fuzz/fuzz_targets/<name>.rs` runs, and the
/// corpus directory `fuzz/corpus/<name>` the regression test replays.
pub const TARGETS: &[(&str, Check)] = &[
    ("hpack_decode", hpack::decode),
    ("hpack_round_trip", hpack::round_trip),
    ("huffman", hpack::huffman),
    ("h2_frames", frames::run),
    ("h2_server_raw", h2server::raw),
    ("h2_server_structured", h2server::structured),
    ("h2_client", h2client::run),
    ("path", small::path),
    ("grpc_timeout", small::grpc_timeout),
    ("config", small::config),
    ("path_template", small::path_template),
    ("grpc_web", small::grpc_web),
    ("jwt_token", auth::token),
    ("auth_claims", auth::claims),
];

/// The check of target `name`.
pub fn target(name: &str) -> Check {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
        .1
}

thread_local! {
    /// One runtime per thread, its clock paused: time passes only when a
    /// check says so (`tokio::time::advance`).
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
}

/// Runs `f` on this thread's paused runtime.
struct Rt;

impl Rt {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        RUNTIME.with(|rt| rt.block_on(f))
    }
}

fn runtime() -> Rt {
    Rt
}
