"""Foreign gRPC peers through torii: the interop cases (tests/peers) run by
Python grpcio, Node @grpc/grpc-js and grpc-go clients against servers of the
same three kinds, straight (the baseline: the peers agree among themselves)
and through torii over h2c, TLS and mutual TLS at torii's listener (h2c to
the upstream), plus TLS to the upstream; unary gRPC by curl and nghttp.
Every status, message and trailer a server sends must reach the client
unchanged.

Each server, and one torii with a listener per (server, transport), lives
as long as this module; each client runs all its cases in one process per
(route, client, server) and every case is a test of its own. A case that
fails because of a known torii bug is marked xfail(strict): it fails the
suite once the bug is fixed, so the mark must then go.
"""

import subprocess
import threading
import time
import urllib.parse

import pytest

import peers
from conftest import SPIFFE_ID, run_torii

pytestmark = pytest.mark.proxy

TRANSPORTS = ["h2c", "tls", "mtls"]
# Upstreams served over TLS (torii's cluster has tls:), reached through
# torii's TLS listener.
TLS_UPSTREAMS = ["python", "go"]
# The upstream of the idle-stream test: a server of its own, so no other
# test's traffic keeps its connection busy.
IDLE_UPSTREAM = "python-idle"
IDLE_SECONDS = 170

def params(routes, clients, servers):
    out = []
    for route in routes:
        for client in clients:
            for server in servers:
                for case in peers.CASES:
                    out.append(pytest.param(route, client, server, case, id=f"{route}-{client}-{server}-{case}"))
    return out


# --- the servers and torii --------------------------------------------------------


def listener(name, pki, cluster, tls=False, client_auth=False):
    text = f"""\
  - name: {name}
    address: 127.0.0.1:0
    protocol: http
"""
    if tls:
        text += f"""\
    tls:
      certificates:
        - cert: "{pki.server.cert}"
          key: "{pki.server.key}"
"""
        if client_auth:
            text += f"""\
      client_auth:
        ca: "{pki.ca}"
        required: true
        allowed_sans: ["{SPIFFE_ID}"]
"""
    text += f"""\
    routes:
      - match: {{ prefix: / }}
        cluster: {cluster}
"""
    return text


def cluster(name, address, pki=None):
    text = f"""\
  - name: {name}
    endpoints: [{address}]
"""
    if pki is None:
        return text + "    protocol: h2c\n"
    return text + f"""\
    protocol: h2
    tls:
      ca: "{pki.ca}"
      server_name: localhost
"""


class Env:
    def __init__(self, spawner, pki, tmp):
        self.pki = pki
        self.servers = {}  # name -> IP:PORT
        self.skipped = {}  # server kind -> why it cannot run
        for kind in peers.KINDS:
            try:
                self.servers[kind] = peers.start_server(spawner, kind)
            except pytest.skip.Exception as why:
                self.skipped[kind] = str(why)
        for kind in TLS_UPSTREAMS:
            if kind not in self.skipped:
                self.servers[f"{kind}-tls"] = peers.start_server(spawner, kind, pki=pki, name=f"{kind}-tls-server")
        self.servers[IDLE_UPSTREAM] = peers.start_server(spawner, "python", name="python-idle-server")

        listeners, clusters = {}, []
        for name, address in self.servers.items():
            tls_upstream = name.endswith("-tls")
            clusters.append(cluster(name, address, pki if tls_upstream else None))
            if tls_upstream:
                listeners[f"{name}-tls"] = listener(f"{name}-tls", pki, name, tls=True)
                continue
            listeners[f"{name}-h2c"] = listener(f"{name}-h2c", pki, name)
            if name != IDLE_UPSTREAM:
                listeners[f"{name}-tls"] = listener(f"{name}-tls", pki, name, tls=True)
                listeners[f"{name}-mtls"] = listener(f"{name}-mtls", pki, name, tls=True, client_auth=True)
        config = "listeners:\n" + "".join(listeners.values()) + "clusters:\n" + "".join(clusters)
        self.torii = run_torii(spawner, tmp / "torii.yaml", config, list(listeners))
        self.results = {}
        self.lock = threading.Lock()

    def torii_log_tail(self, lines=40):
        return "\n".join(self.torii.proc.output().splitlines()[-lines:])

    def run(self, route, client, server):
        """The client's results against `server` by `route` (direct, h2c,
        tls, mtls, tls-upstream), run once and kept."""
        for kind in {client, server.removesuffix("-tls")}:
            if kind in self.skipped:
                pytest.skip(self.skipped[kind])
        key = (route, client, server)
        with self.lock:
            if key not in self.results:
                ca = cert = None
                if route == "direct":
                    target = self.servers[server]
                elif route == "tls-upstream":
                    target = self.torii.listeners[f"{server}-tls"]
                    ca = self.pki.ca
                else:
                    target = self.torii.listeners[f"{server}-{route}"]
                    if route != "h2c":
                        ca = self.pki.ca
                    if route == "mtls":
                        cert = self.pki.client
                self.results[key] = peers.run_client(client, target, ca=ca, client_cert=cert)
            return self.results[key]


@pytest.fixture(scope="module")
def env(module_spawn, module_pki, tmp_path_factory):
    environment = Env(module_spawn, module_pki, tmp_path_factory.mktemp("interop"))
    environment.idle = IdleStream(environment.torii.listeners[f"{IDLE_UPSTREAM}-h2c"])
    yield environment
    environment.idle.close()


def check_case(env, route, client, server, case):
    results, output = env.run(route, client, server)
    passed, why = results.get(case, (False, "no result line for this case (the client died?)"))
    if not passed:
        detail = f"{client} client -> {server} server via {route}: {case} failed: {why}\n\n{output}"
        if route != "direct":
            detail += f"\n\ntorii's last lines:\n{env.torii_log_tail()}"
        pytest.fail(detail, pytrace=False)


@pytest.mark.parametrize("route,client,server,case", params(["direct"], peers.KINDS, peers.KINDS))
def test_peers_agree_without_torii(env, route, client, server, case):
    """The baseline: a case failing here is the peers' disagreement, not torii's."""
    check_case(env, route, client, server, case)


@pytest.mark.parametrize("route,client,server,case", params(TRANSPORTS, peers.KINDS, peers.KINDS))
def test_interop_through_torii(env, route, client, server, case):
    check_case(env, route, client, server, case)


@pytest.mark.parametrize(
    "route,client,server,case", params(["tls-upstream"], peers.KINDS, [f"{k}-tls" for k in TLS_UPSTREAMS])
)
def test_interop_through_torii_to_a_tls_upstream(env, route, client, server, case):
    check_case(env, route, client, server, case)


# --- curl and nghttp: unary gRPC by hand --------------------------------------------


def interop_pb2():
    import sys

    import grpc

    sys.path.insert(0, str(peers.PEERS))
    try:
        return grpc.protos_and_services("interop.proto")[0]
    finally:
        sys.path.remove(str(peers.PEERS))


def framed(message) -> bytes:
    body = message.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


SPECIAL = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
# (name, request fields, expected grpc-status, expected grpc-message, response payload size)
UNARY_CALLS = [
    ("ok", dict(response_size=314159, payload=271828), 0, None, 314159),
    ("error", dict(status=(2, SPECIAL)), 2, SPECIAL, None),
    ("not-found", dict(status=(5, "no such thing \u263a")), 5, "no such thing \u263a", None),
]


def request_file(tmp_path, fields):
    pb2 = interop_pb2()
    req = pb2.SimpleRequest(response_size=fields.get("response_size", 0))
    if "payload" in fields:
        req.payload.body = bytes(fields["payload"])
    if "status" in fields:
        req.response_status.code, req.response_status.message = fields["status"]
    path = tmp_path / "request.bin"
    path.write_bytes(framed(req))
    return path


def grpc_message(raw: str) -> str:
    """grpc-message is percent-encoded UTF-8."""
    return urllib.parse.unquote(raw.strip(), errors="strict")


def target_url(env, server, route):
    scheme = "http" if route == "h2c" else "https"
    return f"{scheme}://{env.torii.listeners[f'{server}-{route}']}/torii.interop.v1.TestService/UnaryCall"


CURL_NGHTTP_PARAMS = [
    pytest.param(server, route, call, id=f"{server}-{route}-{call[0]}")
    for server in peers.KINDS
    for route in ["h2c", "tls"]
    for call in UNARY_CALLS
]


def skip_missing(env, server, tool):
    import shutil

    if server in env.skipped:
        pytest.skip(env.skipped[server])
    if shutil.which(tool) is None:
        pytest.skip(f"SKIPPED: no {tool} (scripts/test.sh installs it)")


@pytest.mark.parametrize("server,route,call", CURL_NGHTTP_PARAMS)
def test_curl_unary_grpc(env, tmp_path, server, route, call):
    skip_missing(env, server, "curl")
    name, fields, status, message, size = call
    request = request_file(tmp_path, fields)
    headers = tmp_path / "headers.txt"
    body = tmp_path / "body.bin"
    args = ["curl", "-sS", "--noproxy", "*", "--max-time", "20", "-X", "POST"]
    args += ["--http2-prior-knowledge"] if route == "h2c" else ["--http2", "--cacert", env.pki.ca]
    args += ["-H", "content-type: application/grpc", "-H", "te: trailers", "--data-binary", f"@{request}"]
    args += ["-D", headers, "-o", body, target_url(env, server, route)]
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=30)
    dump = headers.read_text(errors="replace") if headers.exists() else ""
    context = f"curl exit {result.returncode}: {result.stderr}\n{dump}\n\ntorii:\n{env.torii_log_tail()}"
    assert result.returncode == 0, context
    fields_seen = [line.split(":", 1) for line in dump.splitlines() if ":" in line]
    seen = {k.strip().lower(): v.strip() for k, v in fields_seen}
    assert seen.get("grpc-status") == str(status), context
    if message is not None:
        assert grpc_message(seen.get("grpc-message", "")) == message, context
    data = body.read_bytes() if body.exists() else b""
    if size is None:
        assert data == b"", context
    else:
        pb2 = interop_pb2()
        assert len(data) >= 5 and int.from_bytes(data[1:5], "big") == len(data) - 5, context
        reply = pb2.SimpleResponse.FromString(data[5:])
        assert len(reply.payload.body) == size, context


NGHTTP_FRAME_RE = r"recv (HEADERS|DATA) frame <length=(\d+), flags=(0x[0-9a-f]+), stream_id=(\d+)>"


@pytest.mark.parametrize("server,route,call", CURL_NGHTTP_PARAMS)
def test_nghttp_unary_grpc(env, tmp_path, server, route, call):
    """nghttp shows the frames: grpc-status must come in a HEADERS frame
    that ends the stream (trailers, or Trailers-Only for an error)."""
    import re

    skip_missing(env, server, "nghttp")
    name, fields, status, message, size = call
    request = request_file(tmp_path, fields)
    url = target_url(env, server, route)
    args = ["nghttp", "-v", "-n", "-t", "20", "-d", request]
    args += ["-H", ":method: POST", "-H", "content-type: application/grpc", "-H", "te: trailers", url]
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=30)
    out = result.stdout + result.stderr
    context = f"nghttp exit {result.returncode}:\n{out[-6000:]}\n\ntorii:\n{env.torii_log_tail()}"
    assert result.returncode == 0, context
    assert "RST_STREAM" not in out, context
    # Split the verbose output into frames (nghttp prints a HEADERS frame's
    # fields just before the frame's own line).
    frames, fields = [], {}
    for line in out.splitlines():
        m = re.search(NGHTTP_FRAME_RE, line)
        if m and m.group(4) != "0":
            kind = m.group(1)
            frames.append(
                {
                    "type": kind,
                    "length": int(m.group(2)),
                    "flags": int(m.group(3), 16),
                    "fields": fields if kind == "HEADERS" else {},
                }
            )
            if kind == "HEADERS":
                fields = {}
            continue
        m = re.search(r"\] recv \(stream_id=\d+\) ([^:\s][^:]*|:[a-z]+): (.*)$", line)
        if m:
            fields[m.group(1)] = m.group(2)
    status_frames = [f for f in frames if f["type"] == "HEADERS" and "grpc-status" in f["fields"]]
    assert len(status_frames) == 1, context
    last = frames[-1]
    assert last is status_frames[0] and last["flags"] & 0x1, (
        f"grpc-status must be in the HEADERS frame that carries END_STREAM; frames: "
        f"{[(f['type'], hex(f['flags']), f['length']) for f in frames]}\n{context}"
    )
    assert last["fields"]["grpc-status"] == str(status), context
    if message is not None:
        assert grpc_message(last["fields"].get("grpc-message", "")) == message, context
    data = sum(f["length"] for f in frames if f["type"] == "DATA")
    if size is not None:
        assert data > size, context
    else:
        assert data == 0, context


# --- an idle stream through torii to a C-core server --------------------------------


class IdleStream:
    """A FullDuplexCall through torii to a Python (C-core) server that
    answers once and then stays idle; opened when the module starts."""

    def __init__(self, address):
        import grpc

        from conftest import grpc_channel

        self.pb2 = interop_pb2()
        self.channel = grpc_channel(address)
        self.requests = []
        self.cond = threading.Condition()
        self.closed = False
        method = self.channel.stream_stream(
            "/torii.interop.v1.TestService/FullDuplexCall",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=self.pb2.StreamingOutputCallResponse.FromString,
        )
        self.call = method(self._requests(), timeout=IDLE_SECONDS + 120)
        self.grpc = grpc
        self.send(1)
        self.first = next(self.call)
        self.opened = time.monotonic()

    def _requests(self):
        while True:
            with self.cond:
                while not self.requests and not self.closed:
                    self.cond.wait()
                if self.closed and not self.requests:
                    return
                item = self.requests.pop(0)
            yield item

    def send(self, size):
        with self.cond:
            self.requests.append(
                self.pb2.StreamingOutputCallRequest(response_parameters=[self.pb2.ResponseParameters(size=size)])
            )
            self.cond.notify()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.call.cancel()
        self.channel.close()


def test_idle_stream_to_a_c_core_server_outlives_keepalive(env):
    """Defined last: it waits out the rest of IDLE_SECONDS after the module
    began, then the stream opened then must still answer."""
    idle = env.idle
    assert len(idle.first.payload.body) == 1
    left = idle.opened + IDLE_SECONDS - time.monotonic()
    if left > 0:
        # Waiting is the test: the stream must stay idle this long.
        time.sleep(left)
    idle.send(2)
    try:
        reply = next(idle.call)
    except idle.grpc.RpcError as err:
        pytest.fail(
            f"the idle stream died after {time.monotonic() - idle.opened:.0f} s: {err.code()}: {err.details()!r}\n"
            f"torii:\n{env.torii_log_tail()}",
            pytrace=False,
        )
    assert len(reply.payload.body) == 2

