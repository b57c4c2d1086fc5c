"""The foreign peers of tests/peers (Python grpcio, Node @grpc/grpc-js, Go
grpc-go and x/net/http2): how to start each as a server and run each as an
interop client. scripts/test.sh installs what they need; a peer whose
toolchain is missing makes its tests SKIPPED (visibly), never passed."""

import functools
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, Pki

PEERS = REPO / "tests" / "peers"
PEER_RE = r"peer listening address=(\S+)"
CASE_RE = re.compile(r"^CASE (\S+) (PASS|FAIL)(?: (.*))?$")

# The interop cases every client runs, in this order.
CASES = [
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "status_codes",
    "unimplemented_method",
    "unimplemented_service",
]
KINDS = ["python", "node", "go"]


@functools.cache
def go_peer() -> pathlib.Path:
    """Builds the Go peer (offline, Debian's sources; go's cache makes a
    rebuild of unchanged sources quick) once per session."""
    if shutil.which("go") is None:
        pytest.skip("SKIPPED: no Go toolchain (scripts/test.sh installs golang-go and Debian's grpc-go)")
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    out = (target if target.is_absolute() else REPO / target) / "peers" / "go-peer"
    result = subprocess.run(
        ["bash", PEERS / "go" / "build.sh", out], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"building the Go peer failed:\n{result.stdout}{result.stderr}"
    return out


def node_ready():
    if shutil.which("node") is None:
        pytest.skip("SKIPPED: no node (Node 20 is expected on the machine)")
    if not (PEERS / "node" / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.skip("SKIPPED: tests/peers/node/node_modules missing: run scripts/test.sh (npm ci)")


def command(kind: str) -> list:
    """The peer program of `kind` (python, node, go)."""
    if kind == "python":
        return [sys.executable, PEERS / "python" / "peer.py"]
    if kind == "node":
        node_ready()
        return ["node", PEERS / "node" / "peer.js"]
    if kind == "go":
        return [go_peer()]
    raise ValueError(kind)


def start_server(spawner, kind: str, pki: Pki | None = None, client_auth=False, name=None) -> str:
    """Starts the gRPC interop server of `kind` (TLS with `pki`, requiring
    client certificates with `client_auth`); returns its IP:PORT."""
    args = command(kind) + ["server"]
    if pki is not None:
        args += ["--cert", pki.server.cert, "--key", pki.server.key]
        if client_auth:
            args += ["--client-ca", pki.ca]
    proc = spawner(args, name or f"{kind}-server")
    return proc.wait_for(PEER_RE, streams=("stdout",))[0].group(1)


def start_bytes_server(spawner) -> str:
    """The Go x/net/http2 h2c server of GET /bytes?n=N; returns IP:PORT."""
    proc = spawner([go_peer(), "bytes-server"], "go-bytes-server")
    return proc.wait_for(PEER_RE, streams=("stdout",))[0].group(1)


def run_client(kind: str, target: str, ca=None, client_cert=None, cases=None, timeout=120):
    """Runs the interop client of `kind` against `target` (TLS if `ca`,
    mTLS with `client_cert`, a conftest.Pair); returns ({case: (passed,
    why)}, its whole output)."""
    args = command(kind) + ["client", "--target", target]
    if ca is not None:
        args += ["--ca", ca, "--server-name", "localhost"]
        if client_cert is not None:
            args += ["--cert", client_cert.cert, "--key", client_cert.key]
    if cases:
        args += ["--cases", ",".join(cases)]
    env = dict(os.environ, NO_COLOR="1")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "grpc_proxy", "all_proxy"):
        env.pop(var, None)
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )
    results = {}
    for line in result.stdout.splitlines():
        m = CASE_RE.match(line)
        if m:
            results[m.group(1)] = (m.group(2) == "PASS", m.group(3) or "")
    output = f"$ {' '.join(str(a) for a in args)}\nexit {result.returncode}\n{result.stdout}{result.stderr}"
    return results, output
