"""gRPC-Web through torii with real foreign clients: the official `grpc-web`
npm client (text and binary) running the gRPC-Web interop cases against the
Python, Node and Go interop servers (tests/peers) behind torii, over h2c and
TLS listeners; and a real browser (headless Chromium) loading a page on
another origin that calls unary and server streaming with connect-web's
gRPC-Web transport, CORS preflight included (test_browser.py's part is in
this file too, to share the servers)."""

import os
import pathlib
import shutil
import subprocess
import threading
import http.server
import json

import pytest

import peers
from conftest import REPO, run_torii

pytestmark = pytest.mark.proxy

NODE = peers.PEERS / "node"
CASES = [
    "empty_unary",
    "large_unary",
    "server_streaming",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "unimplemented_service",
]
FORMATS = ["text", "binary"]
TRANSPORTS = ["h2c", "tls"]


def listener(name, pki, cluster, tls, origin):
    text = f"""\
  - name: {name}
    address: 127.0.0.1:0
    cors:
      allow_origins: ["{origin}"]
      allow_headers: [x-echo-initial, x-echo-trailing-bin]
      expose_headers: [x-echo-initial, x-echo-trailing-bin]
"""
    if tls:
        text += f"""\
    tls:
      certificates:
        - cert: "{pki.server.cert}"
          key: "{pki.server.key}"
"""
    return text + f"""\
    routes:
      - match: {{ prefix: / }}
        cluster: {cluster}
"""


class Env:
    def __init__(self, spawner, pki, tmp):
        self.pki = pki
        # The browser page's origin: allowed by every listener's CORS.
        self.site = tmp / "site"
        self.site.mkdir()
        self.page = PageServer(self.site)
        origin = f"http://127.0.0.1:{self.page.port}"
        self.servers, self.skipped = {}, {}
        for kind in peers.KINDS:
            try:
                self.servers[kind] = peers.start_server(spawner, kind)
            except pytest.skip.Exception as why:
                self.skipped[kind] = str(why)
        listeners, clusters = {}, []
        for kind, address in self.servers.items():
            clusters.append(f"  - name: {kind}\n    endpoints: [{address}]\n    protocol: h2c\n")
            for transport in TRANSPORTS:
                name = f"{kind}-{transport}"
                listeners[name] = listener(name, pki, kind, transport == "tls", origin)
        config = "listeners:\n" + "".join(listeners.values()) + "clusters:\n" + "".join(clusters)
        self.torii = run_torii(spawner, tmp / "torii.yaml", config, list(listeners))
        self.results = {}
        self.lock = threading.Lock()

    def url(self, kind, transport):
        address = self.torii.listeners[f"{kind}-{transport}"]
        if transport == "tls":
            return "https://localhost:" + address.rsplit(":", 1)[1]
        return "http://" + address

    def run(self, kind, transport, fmt):
        if kind in self.skipped:
            pytest.skip(self.skipped[kind])
        node_ready()
        key = (kind, transport, fmt)
        with self.lock:
            if key not in self.results:
                env = dict(os.environ, NODE_EXTRA_CA_CERTS=str(self.pki.ca))
                for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
                    env.pop(var, None)
                argv = ["node", NODE / "grpc_web_client.js", "--target", self.url(kind, transport), "--format", fmt]
                r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120, env=env)
                results = {}
                for line in r.stdout.splitlines():
                    m = peers.CASE_RE.match(line)
                    if m:
                        results[m.group(1)] = (m.group(2) == "PASS", m.group(3) or "")
                self.results[key] = (results, f"$ {' '.join(map(str, argv))}\nexit {r.returncode}\n{r.stdout}{r.stderr}")
            return self.results[key]


def node_ready():
    peers.node_ready()
    if not (NODE / "node_modules" / "grpc-web").is_dir():
        pytest.skip("SKIPPED: grpc-web missing from tests/peers/node/node_modules: run scripts/test.sh (npm ci)")


@pytest.fixture(scope="module")
def env(module_spawn, module_pki, tmp_path_factory):
    environment = Env(module_spawn, module_pki, tmp_path_factory.mktemp("grpc-web"))
    yield environment
    environment.page.close()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", peers.KINDS)
def test_grpc_web_client_through_torii(env, kind, transport, fmt, case):
    results, output = env.run(kind, transport, fmt)
    passed, why = results.get(case, (False, "no result line for this case (the client died?)"))
    if not passed:
        tail = "\n".join(env.torii.proc.output().splitlines()[-30:])
        pytest.fail(f"grpc-web ({fmt}) -> {kind} server via torii {transport}: {case} failed: {why}\n\n{output}\n\ntorii:\n{tail}", pytrace=False)


# --- a real browser ----------------------------------------------------------------

BROWSER_DIR = pathlib.Path(__file__).parent / "browser"


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class PageServer:
    """The page's own origin: serves the bundled page on 127.0.0.1 (another
    port than torii's, so another origin) and takes the results it POSTs."""

    def __init__(self, root: pathlib.Path):
        self.results = []
        self.got = threading.Event()
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=str(root), **kw)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.results.append(body.decode())
                outer.got.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def bundle(out: pathlib.Path):
    esbuild = NODE / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        pytest.skip("SKIPPED: esbuild missing from tests/peers/node/node_modules: run scripts/test.sh (npm ci)")
    r = subprocess.run(
        [str(esbuild), str(BROWSER_DIR / "page.js"), "--bundle", "--format=iife", f"--outfile={out / 'page.bundle.js'}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, NODE_PATH=str(NODE / "node_modules")),
        cwd=NODE,
    )
    assert r.returncode == 0, f"esbuild failed:\n{r.stdout}{r.stderr}"
    shutil.copy(BROWSER_DIR / "index.html", out / "index.html")
    # interop.proto's descriptor, for the page to build its client from.
    import base64
    import sys

    import grpc

    sys.path.insert(0, str(peers.PEERS))
    try:
        pb2 = grpc.protos_and_services("interop.proto")[0]
    finally:
        sys.path.remove(str(peers.PEERS))
    (out / "interop.desc.b64").write_text(base64.b64encode(pb2.DESCRIPTOR.serialized_pb).decode())


def test_browser_calls_through_torii_across_origins(env, tmp_path):
    """Headless Chromium loads a page from one origin that calls torii on
    another with connect-web's gRPC-Web transport: unary, an error status,
    and server streaming; the page POSTs what it saw back."""
    browser = chromium()
    if browser is None:
        pytest.skip("SKIPPED: no chromium (scripts/test.sh installs Debian's chromium)")
    if "python" in env.skipped:
        pytest.skip(env.skipped["python"])
    bundle(env.site)
    page = env.page
    target = env.url("python", "h2c")
    url = f"http://127.0.0.1:{page.port}/index.html?target={target}"
    proc = subprocess.Popen(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}",
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        got = page.got.wait(timeout=90)
    finally:
        proc.kill()
        out = proc.communicate(timeout=30)[0]
    assert got, f"the page posted no result within 90 s; chromium said:\n{out[-3000:]}"
    result = json.loads(page.results[0])
    assert result.get("error") is None, result
    assert result["unary"] == 31415, result
    assert result["status"] == {"code": "InvalidArgument", "message": "browser \u263a"}, result
    assert result["stream"] == [9, 2653, 58979], result
    assert result["empty"] == [], result
    assert result["unimplemented"] == "Unimplemented", result
