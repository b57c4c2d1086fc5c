#!/bin/sh
# Drops from DIR the inputs that fail TARGET's checks with no known bug
# allowed but pass with the known ones allowed (they reproduce a known
# bug, kept minimal in regressions/); an input that fails either way is
# moved to artifacts/TARGET/ (a new finding). Prints the counts.
#   fuzz/filter.sh TARGET DIR
cd "$(dirname "$0")"
bin="target/x86_64-unknown-linux-gnu/release/$1"
known="${TORII_FUZZ_ALLOW-4c-rst-on-idle-stream,4c-frame-after-own-reset,goaway-last-stream-increased}"
mkdir -p "artifacts/$1"
dropped=0
new=0
for f in "$2"/*; do
  if ! env -u TORII_FUZZ_ALLOW "$bin" "$f" >/dev/null 2>&1; then
    if TORII_FUZZ_ALLOW="$known" "$bin" "$f" >/dev/null 2>&1; then
      rm -f "$f"
      dropped=$((dropped + 1))
    else
      mv "$f" "artifacts/$1/"
      new=$((new + 1))
    fi
  fi
done
echo "$1: dropped $dropped inputs that reproduce known bugs; $new fail otherwise (moved to artifacts/$1/)"
