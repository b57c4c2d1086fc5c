#!/bin/sh
# Fuzzes one target for a bounded time, growing a working corpus in
# fuzz/work/TARGET (seeded from fuzz/corpus/TARGET, which stays as it is);
# prints libFuzzer's final statistics (executions). Build first: ./build.sh.
#   fuzz/run.sh TARGET SECONDS [libFuzzer options...]
# To minimise the working corpus back into the committed one afterwards:
#   fuzz/target/x86_64-unknown-linux-gnu/release/TARGET -merge=1 corpus/TARGET.new work/TARGET
set -e
cd "$(dirname "$0")"
target="$1"
seconds="$2"
shift 2
bin="target/x86_64-unknown-linux-gnu/release/$target"
mkdir -p "work/$target" "artifacts/$target"
[ -d "corpus/$target" ] || mkdir -p "corpus/$target"
# Known, unfixed bugs are let through so that the run looks for others
# (see src/checks/mod.rs); the corpus test never does this.
export TORII_FUZZ_ALLOW="${TORII_FUZZ_ALLOW-4c-rst-on-idle-stream,4c-frame-after-own-reset,goaway-last-stream-increased}"
exec "$bin" "work/$target" "corpus/$target" -max_total_time="$seconds" \
  -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="artifacts/$target/" "$@"
