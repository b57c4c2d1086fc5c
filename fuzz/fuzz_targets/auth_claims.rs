//! See `fuzz/src/checks/mod.rs`: the invariants this target checks, also
//! replayed over its corpus by `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torii_fuzz::checks;

#[global_allocator]
static ALLOC: checks::alloc::Counting = checks::alloc::Counting;

fuzz_target!(|data: &[u8]| {
    checks::target("auth_claims")(data);
});
