"""Slow and small-window readers: large responses through torii (64 KiB to
16 MiB, from the Go x/net/http2 h2c server, and a grpc-go server streaming
responses) to clients with tiny HTTP/2 windows, clients that read slowly and
a client that changes SETTINGS_INITIAL_WINDOW_SIZE mid-stream, over h2c and
TLS. Every byte must arrive and every stream must end with END_STREAM (or
the gRPC trailers), never RST_STREAM(CANCEL).

The Go servers and one torii live as long as the module. Each test makes 10
downloads and reports how many were cut, and how.
"""

import re
import shutil
import socket
import ssl
import subprocess
import time

import pytest

import peers
from conftest import run_torii

pytestmark = pytest.mark.proxy

KiB, MiB = 1024, 1024 * 1024
SIZES = [64 * KiB, 3_000_000, 16 * MiB]
DOWNLOADS = 10
ROUTES = ["h2c", "tls"]



def expected_body(n: int) -> bytes:
    """What GET /bytes?n=N answers: byte i is i mod 251."""
    period = bytes(range(251))
    return (period * (n // 251 + 1))[:n]


CONFIG = """\
listeners:
  - name: h2c
    address: 127.0.0.1:0
    protocol: http
    routes: &routes
      - match: {{ grpc_service: torii.interop.v1.TestService }}
        cluster: grpc
      - match: {{ prefix: /bytes }}
        cluster: bytes
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates:
        - cert: "{cert}"
          key: "{key}"
    routes: *routes
clusters:
  - name: bytes
    endpoints: [{bytes}]
    protocol: h2c
  - name: grpc
    endpoints: [{grpc}]
    protocol: h2c
"""


class Env:
    def __init__(self, spawner, pki, tmp):
        self.pki = pki
        self.bytes_server = peers.start_bytes_server(spawner)
        self.grpc_server = peers.start_server(spawner, "go")
        config = CONFIG.format(cert=pki.server.cert, key=pki.server.key, bytes=self.bytes_server, grpc=self.grpc_server)
        self.torii = run_torii(spawner, tmp / "torii.yaml", config, ["h2c", "tls"])

    def url(self, route, n):
        if route == "direct":
            return f"http://{self.bytes_server}/bytes?n={n}"
        scheme = "http" if route == "h2c" else "https"
        return f"{scheme}://{self.torii.listeners[route]}/bytes?n={n}"

    def torii_log_tail(self, lines=30):
        return "\n".join(self.torii.proc.output().splitlines()[-lines:])


@pytest.fixture(scope="module")
def env(module_spawn, module_pki, tmp_path_factory):
    return Env(module_spawn, module_pki, tmp_path_factory.mktemp("downloads"))


def size_id(n):
    return f"{n // MiB}MiB" if n % MiB == 0 else f"{n // KiB}KiB" if n % KiB == 0 else f"{n}B"


def report(env, failures, what, total=DOWNLOADS):
    if failures:
        pytest.fail(
            f"{len(failures)} of {total} {what} were not whole:\n" + "\n".join(failures[:10])
            + f"\n\ntorii's last lines:\n{env.torii_log_tail()}",
            pytrace=False,
        )


# --- curl -----------------------------------------------------------------------


def curl_params():
    out = []
    for route in ["direct"] + ROUTES:
        for n in SIZES:
            out.append(pytest.param(route, n, id=f"{route}-{size_id(n)}"))
    return out


@pytest.mark.parametrize("route,n", curl_params())
def test_curl_downloads_arrive_whole(env, tmp_path, route, n):
    """curl over h2c (prior knowledge) and TLS (ALPN h2); `direct` is the
    baseline straight from the Go server."""
    want = expected_body(n)
    failures = []
    for i in range(DOWNLOADS):
        out = tmp_path / f"body-{i}"
        args = ["curl", "-sS", "--noproxy", "*", "--max-time", "60", "-o", out]
        args += ["--http2-prior-knowledge"] if route in ("h2c", "direct") else ["--http2", "--cacert", env.pki.ca]
        args += ["-w", "%{http_code} %{http_version} %{size_download}", env.url(route, n)]
        result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=90)
        got = out.read_bytes() if out.exists() else b""
        if result.returncode != 0 or got != want or not result.stdout.startswith("200 2"):
            failures.append(
                f"download {i}: curl exit {result.returncode} ({result.stdout}) {len(got)} of {n} bytes"
                f"{'' if got == want[: len(got)] else ' (wrong bytes)'}: {result.stderr.strip()}"
            )
        out.unlink(missing_ok=True)
    report(env, failures, f"curl downloads of {n} bytes")


# --- nghttp with tiny windows ---------------------------------------------------------

# (stream window bits, connection window bits) per size: 2^N-1 bytes. nghttp
# makes the 10 downloads as 10 concurrent streams on one connection.
NGHTTP_WINDOWS = {64 * KiB: (10, 16), 3_000_000: (10, 16), 16 * MiB: (14, 18)}
NGHTTP_FRAME_RE = re.compile(r"recv (DATA|HEADERS|RST_STREAM) frame <length=(\d+), flags=(0x[0-9a-f]+), stream_id=(\d+)>")


@pytest.mark.parametrize(
    "route,n",
    [
        pytest.param(route, n, id=f"{route}-{size_id(n)}")
        for route in ROUTES
        for n in SIZES
    ],
)
def test_nghttp_tiny_windows(env, route, n):
    if shutil.which("nghttp") is None:
        pytest.skip("SKIPPED: no nghttp (scripts/test.sh installs nghttp2-client)")
    stream_bits, conn_bits = NGHTTP_WINDOWS[n]
    args = ["nghttp", "-n", "-v", "-t", "120", "-m", str(DOWNLOADS), "-w", str(stream_bits), "-W", str(conn_bits)]
    result = subprocess.run(args + [env.url(route, n)], capture_output=True, text=True, timeout=150)
    streams = {}
    for m in NGHTTP_FRAME_RE.finditer(result.stdout):
        kind, length, flags, sid = m.group(1), int(m.group(2)), int(m.group(3), 16), int(m.group(4))
        if sid == 0:
            continue
        s = streams.setdefault(sid, {"bytes": 0, "ended": False, "reset": None})
        if kind == "DATA":
            s["bytes"] += length
        if kind in ("DATA", "HEADERS") and flags & 0x1:
            s["ended"] = True
        if kind == "RST_STREAM":
            s["reset"] = True
    failures = [
        f"stream {sid}: {s['bytes']} of {n} bytes, END_STREAM {s['ended']}, RST_STREAM {bool(s['reset'])}"
        for sid, s in sorted(streams.items())
        if s["bytes"] != n or not s["ended"] or s["reset"]
    ]
    if len(streams) != DOWNLOADS:
        failures.append(f"{len(streams)} streams answered of {DOWNLOADS} (nghttp exit {result.returncode}): {result.stderr[-500:]}")
    report(env, failures, f"nghttp downloads of {n} bytes (windows 2^{stream_bits}-1 / 2^{conn_bits}-1)")


# --- a Python h2 client: tiny windows, slow reading, SETTINGS changes -------------------


class H2Client:
    """A raw HTTP/2 client on the `h2` library: its stream window is
    `window` bytes (applied before any request: the SETTINGS are ACKed
    first); it reads `chunk` bytes at a time, pausing `pause` seconds
    between reads (a slow reader)."""

    def __init__(self, address, ca=None, window=1024, chunk=65536, pause=0.0):
        import h2.config
        import h2.connection
        import h2.events
        import h2.settings

        self.events = h2.events
        self.chunk, self.pause = chunk, pause
        host, port = address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=30)
        if ca is not None:
            context = ssl.create_default_context(cafile=str(ca))
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2"
        self.sock = sock
        self.authority = address
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        codes = h2.settings.SettingCodes
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={codes.INITIAL_WINDOW_SIZE: window, codes.ENABLE_PUSH: 0}
        )
        self.conn.initiate_connection()
        self.flush()
        self.streams = {}
        self.settings_acked = 0
        deadline = time.monotonic() + 30
        while self.settings_acked < 1:
            self.pump(deadline)

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def set_window(self, window):
        """Sends SETTINGS_INITIAL_WINDOW_SIZE mid-stream (every open
        stream's window moves by the difference, maybe below zero)."""
        import h2.settings

        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.flush()

    def request(self, method, path, headers=(), body=None):
        sid = self.conn.get_next_available_stream_id()
        scheme = "https" if isinstance(self.sock, ssl.SSLSocket) else "http"
        fields = [(":method", method), (":scheme", scheme), (":authority", self.authority), (":path", path)]
        self.conn.send_headers(sid, fields + list(headers), end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.flush()
        self.streams[sid] = {"headers": None, "data": bytearray(), "trailers": None, "ended": False, "reset": None}
        return sid

    def received(self):
        return sum(len(s["data"]) for s in self.streams.values())

    def done(self):
        return all(s["ended"] or s["reset"] is not None for s in self.streams.values())

    def pump(self, deadline):
        if time.monotonic() > deadline:
            raise TimeoutError("no end within the time allowed")
        if self.pause:
            # The slow reader: the data waits in the socket meanwhile.
            time.sleep(self.pause)
        self.sock.settimeout(max(0.1, deadline - time.monotonic()))
        data = self.sock.recv(self.chunk)
        if not data:
            raise ConnectionError("torii closed the connection")
        ev = self.events
        for event in self.conn.receive_data(data):
            s = self.streams.get(getattr(event, "stream_id", None))
            if isinstance(event, ev.SettingsAcknowledged):
                self.settings_acked += 1
                # h2 applies a new INITIAL_WINDOW_SIZE to its streams only
                # now, and weighs a WINDOW_UPDATE only when data arrives: a
                # stream whose window just went below zero with enough
                # already read would never be opened again. Weigh them now.
                for sid, st in self.streams.items():
                    if not st["ended"] and st["reset"] is None:
                        try:
                            self.conn.acknowledge_received_data(0, sid)
                        except Exception:
                            pass
            elif isinstance(event, ev.ResponseReceived):
                s["headers"] = dict(event.headers)
            elif isinstance(event, ev.DataReceived):
                s["data"] += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, ev.TrailersReceived):
                s["trailers"] = dict(event.headers)
            elif isinstance(event, ev.StreamEnded):
                s["ended"] = True
            elif isinstance(event, ev.StreamReset):
                s["reset"] = event.error_code
            elif isinstance(event, ev.ConnectionTerminated):
                raise ConnectionError(f"GOAWAY {event.error_code!r}: {event.additional_data!r}")
        self.flush()

    def run(self, timeout=120, on_progress=None):
        deadline = time.monotonic() + timeout
        while not self.done():
            self.pump(deadline)
            if on_progress:
                on_progress(self)

    def close(self):
        try:
            self.conn.close_connection()
            self.flush()
        except OSError:
            pass
        self.sock.close()


def reset_name(code):
    try:
        import h2.errors

        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)


def http_failures(client, want):
    failures = []
    for sid, s in sorted(client.streams.items()):
        status = (s["headers"] or {}).get(":status")
        if status != "200" or bytes(s["data"]) != want or not s["ended"] or s["reset"] is not None:
            failures.append(
                f"stream {sid}: status {status}, {len(s['data'])} of {len(want)} bytes, END_STREAM {s['ended']}"
                + (f", RST_STREAM({reset_name(s['reset'])})" if s["reset"] is not None else "")
            )
    return failures


def h2_client(env, route, **kwargs):
    ca = env.pki.ca if route == "tls" else None
    return H2Client(env.torii.listeners[route], ca=ca, **kwargs)


@pytest.mark.parametrize(
    "route,n",
    [
        pytest.param(route, n, id=f"{route}-{size_id(n)}")
        for route in ROUTES
        for n in [64 * KiB, 1 * MiB]
    ],
)
def test_h2_slow_reader_with_a_1k_window(env, route, n):
    """10 concurrent downloads on one connection whose streams have 1 KiB
    windows, read 4 KiB at a time with a pause between reads."""
    client = h2_client(env, route, window=1024, chunk=4096, pause=0.001)
    try:
        for _ in range(DOWNLOADS):
            client.request("GET", f"/bytes?n={n}")
        client.run(timeout=120)
        failures = http_failures(client, expected_body(n))
    finally:
        client.close()
    report(env, failures, f"1 KiB-window downloads of {n} bytes")



@pytest.mark.parametrize(
    "route",
    ROUTES,
)
def test_h2_client_changes_initial_window_mid_stream(env, route, monkeypatch):
    """10 concurrent 2 MiB downloads; the client's SETTINGS_INITIAL_WINDOW_SIZE
    goes 64 KiB -> 1 KiB (windows of streams in flight go negative) -> 256 KiB
    (they must reopen and the data flow again)."""
    import h2.windows

    # h2 raises when a stream's window goes below zero; record by how much
    # instead (DATA beyond what the client allowed is torii's fault).
    overruns = []

    def window_consumed(manager, size):
        manager.current_window_size -= size
        if manager.current_window_size < 0 and manager.max_window_size >= 0:
            overruns.append(-manager.current_window_size)

    monkeypatch.setattr(h2.windows.WindowManager, "window_consumed", window_consumed)
    n = 2 * MiB
    client = h2_client(env, route, window=64 * KiB)
    # (total bytes received, the windows then sent, one SETTINGS frame each)
    steps = [(n, [1024]), (2 * n, [256 * KiB])]
    state = {"step": 0}

    def progress(c):
        while state["step"] < len(steps) and c.received() >= steps[state["step"]][0]:
            for window in steps[state["step"]][1]:
                c.set_window(window)
            state["step"] += 1

    try:
        for _ in range(DOWNLOADS):
            client.request("GET", f"/bytes?n={n}")
        client.run(timeout=120, on_progress=progress)
        failures = http_failures(client, expected_body(n))
    finally:
        client.close()
    assert state["step"] == len(steps), f"only {state['step']} window changes were made"
    if overruns:
        failures.insert(
            0,
            f"torii sent DATA beyond the client's stream window {len(overruns)} times, by up to {max(overruns)} bytes",
        )
    report(env, failures, f"downloads of {n} bytes with window changes")


# --- gRPC server streaming to small-window readers ---------------------------------------




def streaming_request(message_size, count):
    """A framed StreamingOutputCallRequest: `count` responses of
    `message_size` bytes (encoded by hand: field 1, repeated
    ResponseParameters{size = 1})."""

    def varint(v):
        out = bytearray()
        while v >= 0x80:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
        return bytes(out)

    params = b"\x08" + varint(message_size)
    body = (b"\x0a" + varint(len(params)) + params) * count
    return b"\x00" + len(body).to_bytes(4, "big") + body


def grpc_messages(data: bytes):
    """The payload sizes of the framed StreamingOutputCallResponse messages
    in `data` (a response {payload {body}}: the body is what counts)."""
    sizes, i = [], 0
    while i + 5 <= len(data):
        length = int.from_bytes(data[i + 1 : i + 5], "big")
        sizes.append(length)
        i += 5 + length
    return sizes, i == len(data)


@pytest.mark.parametrize(
    "route,window,message,count",
    [
        pytest.param(
            route,
            window,
            message,
            count,
            id=f"{route}-{size_id(message * count)}-window{size_id(window)}",
        )
        for route in ROUTES
        for window, message, count in [(1024, 64 * KiB, 1), (1024, 64 * KiB, 8), (16 * KiB, 64 * KiB, 256)]
    ],
)
def test_grpc_server_streaming_to_small_windows(env, route, window, message, count):
    """grpc-go streams `count` messages of 64 KiB (64 KiB to 16 MiB) to 10
    concurrent calls (2 for 16 MiB) on one connection with small stream
    windows; every message and the trailers (grpc-status 0, END_STREAM)
    must arrive."""
    client = h2_client(env, route, window=window, chunk=16384)
    headers = [("content-type", "application/grpc"), ("te", "trailers")]
    calls = DOWNLOADS if count < 256 else 2
    try:
        for _ in range(calls):
            client.request("POST", "/torii.interop.v1.TestService/StreamingOutputCall", headers, streaming_request(message, count))
        client.run(timeout=120)
    finally:
        client.close()
    failures = []
    for sid, s in sorted(client.streams.items()):
        sizes, whole = grpc_messages(bytes(s["data"]))
        status = (s["trailers"] or s["headers"] or {}).get("grpc-status")
        # Each message is a response whose payload body is `message` bytes
        # (plus a few bytes of protobuf framing).
        if len(sizes) != count or not whole or any(x < message for x in sizes) or status != "0" or not s["ended"] or s["reset"] is not None:
            failures.append(
                f"stream {sid}: {len(sizes)} of {count} messages ({len(s['data'])} bytes), grpc-status {status}, "
                f"END_STREAM {s['ended']}" + (f", RST_STREAM({reset_name(s['reset'])})" if s["reset"] is not None else "")
            )
    report(env, failures, f"server-streaming calls of {count} x {message} bytes", total=calls)
