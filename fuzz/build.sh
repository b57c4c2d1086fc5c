#!/bin/sh
# Builds the fuzz targets with libFuzzer's coverage instrumentation on
# stable Rust (no cargo-fuzz, no nightly): the flags cargo-fuzz would pass,
# minus the sanitizer (torii's own code has no unsafe but the allocator of
# the checks). Binaries: fuzz/target/x86_64-unknown-linux-gnu/release/<target>.
set -e
cd "$(dirname "$0")"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
 -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --target x86_64-unknown-linux-gnu --bins "$@"
