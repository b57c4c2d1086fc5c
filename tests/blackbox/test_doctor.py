"""`torii doctor` against real servers started here: openssl s_server
without ALPN, Python grpcio on h2c and on TLS (one whose health says
NOT_SERVING), `python -m http.server`, and torii's own listeners. Each
test asserts the conclusions (which clients work, with which pitfall
code) from `--json`, and the exit code. Ports are chosen by the servers
(port 0) and read back; readiness is waited for, never slept on."""

import json
import shutil
import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from conftest import READY_TIMEOUT, torii_bin

GRPCIO = "grpcio / C-core (Python, C++, Ruby, PHP)"
GRPC_GO = "grpc-go"
GRPC_JS = "grpc-js (Node)"
BROWSER = "browsers via gRPC-Web"
CURL = "curl"
K8S_HTTP = "Kubernetes httpGet probe"
K8S_GRPC = "Kubernetes grpc probe"


def doctor(*args):
    proc = subprocess.run(
        [str(torii_bin()), "doctor", "--json", "--timeout", "2s", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout, proc.stderr
    report = json.loads(proc.stdout)
    clients = {c["client"]: c for c in report["clients"]}
    return proc.returncode, report, clients


def doctor_text(*args):
    proc = subprocess.run(
        [str(torii_bin()), "doctor", "--timeout", "2s", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout


def works(clients, *names):
    return {n: clients[n]["works"] for n in names}


@pytest.fixture
def grpc_server():
    """Starts grpcio servers with the standard health service; `status` is
    what the health service says for "" (the server as a whole)."""
    servers = []

    def start(status=health_pb2.HealthCheckResponse.SERVING, tls=None):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        servicer = health.HealthServicer()
        servicer.set("", status)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        if tls is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            creds = grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)])
            port = server.add_secure_port("127.0.0.1:0", creds)
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(grace=None)


def test_grpcio_h2c_port_fails_http1_probes(grpc_server):
    address = grpc_server()
    code, report, clients = doctor(address)
    assert code == 1
    assert report["mode"] == "plaintext" and report["mode_given"] is False
    assert report["h2c"]["answer"] == "http2"
    assert report["h2c_grpc"]["real_grpc"] is True
    assert report["h2c_grpc"]["serving"] == "SERVING"
    assert works(clients, GRPCIO, GRPC_GO, GRPC_JS, K8S_GRPC) == {GRPCIO: True, GRPC_GO: True, GRPC_JS: True, K8S_GRPC: True}
    assert clients[K8S_HTTP]["works"] is False
    assert clients[K8S_HTTP]["code"] == "h2c-probe"
    assert "never becomes Ready" in clients[K8S_HTTP]["why"]
    assert clients[CURL]["works"] is False and "--http2-prior-knowledge" in clients[CURL]["fix"]
    assert clients[BROWSER]["works"] is False


def test_grpcio_not_serving_is_a_problem(grpc_server):
    address = grpc_server(status=health_pb2.HealthCheckResponse.NOT_SERVING)
    code, report, clients = doctor(f"http://{address}")
    assert code == 1
    assert report["h2c_grpc"]["serving"] == "NOT_SERVING"
    assert clients[GRPCIO]["works"] is True, "the server is reachable; it says it is unhealthy"
    assert clients[K8S_GRPC]["works"] is False
    assert "NOT_SERVING" in clients[K8S_GRPC]["why"]
    assert any("NOT_SERVING" in p for p in report["problems"])


def test_unknown_health_service(grpc_server):
    address = grpc_server()
    code, report, clients = doctor(address, "--service", "no.such.Service")
    assert code == 1
    assert clients[K8S_GRPC]["works"] is False
    assert "NOT_FOUND" in clients[K8S_GRPC]["why"], clients[K8S_GRPC]


def test_grpcio_tls(grpc_server, pki):
    address = grpc_server(tls=pki.server)
    code, report, clients = doctor(address, "--ca", pki.ca, "--sni", "localhost")
    assert report["mode"] == "tls"
    first = report["tls"][0]
    assert first["ok"] and first["alpn"] == "h2" and first["offered"] == "h2,http/1.1"
    assert first["version"] in ("TLS 1.3", "TLS 1.2")
    cert = report["certificate"]
    assert cert["chain_ok"] and cert["name_ok"] and cert["problem"] is None
    assert "localhost" in cert["sans"] and 28 <= cert["days_left"] <= 30
    assert report["tls_grpc"]["real_grpc"] and report["tls_grpc"]["serving"] == "SERVING"
    assert works(clients, GRPCIO, GRPC_GO, GRPC_JS) == {GRPCIO: True, GRPC_GO: True, GRPC_JS: True}
    # grpcio speaks no HTTP/1.1: probes and browsers fail; kubelet's grpc probe cannot do TLS.
    assert clients[K8S_HTTP]["works"] is False
    assert clients[K8S_GRPC]["works"] is None
    assert code == 1


def test_wrong_name_and_unknown_ca(grpc_server, pki):
    address = grpc_server(tls=pki.server)
    code, report, clients = doctor(address, "--ca", pki.ca, "--sni", "api.example.com")
    assert code == 1
    assert report["certificate"]["chain_ok"] is True
    assert report["certificate"]["name_ok"] is False
    assert "not valid for \"api.example.com\"" in report["certificate"]["problem"]
    assert clients[GRPCIO]["works"] is False and "certificate verify failed" in clients[GRPCIO]["why"]
    assert "SANs" in clients[GRPCIO]["fix"]
    # Without --ca the system's roots do not know the test CA.
    code, report, clients = doctor(address, "--sni", "localhost")
    assert "does not lead to a CA" in report["certificate"]["problem"]
    assert clients[CURL]["works"] is False and "curl: (60)" in clients[CURL]["why"]


def test_tls_port_reached_with_plaintext(grpc_server, pki):
    address = grpc_server(tls=pki.server)
    code, report, clients = doctor(f"http://{address}")
    assert code == 1
    for name in (GRPCIO, CURL, K8S_HTTP, K8S_GRPC):
        assert clients[name]["works"] is False
        assert "speaks TLS" in clients[name]["why"]
        assert "https://" in clients[name]["fix"]


def test_plaintext_port_reached_with_tls(grpc_server):
    address = grpc_server()
    code, report, clients = doctor(f"https://{address}")
    assert code == 1
    assert report["mode"] == "tls"
    assert clients[GRPCIO]["works"] is False
    assert "speaks plaintext" in clients[GRPCIO]["why"] and "HTTP/2 cleartext" in clients[GRPCIO]["why"]
    assert "http://" in clients[GRPCIO]["fix"]


def test_openssl_server_without_alpn(spawn, pki):
    if shutil.which("openssl") is None:
        pytest.skip("SKIPPED: no openssl (scripts/test.sh installs it)")
    proc = spawn(
        [
            "openssl", "s_server", "-accept", "127.0.0.1:0", "-www", "-naccept", "100",
            "-cert", pki.server.cert, "-key", pki.server.key,
        ],
        "openssl",
    )
    address = proc.wait_for(r"ACCEPT (\S+:\d+)", streams=("stdout",))[0].group(1)
    code, report, clients = doctor(address, "--ca", pki.ca, "--sni", "localhost")
    assert code == 1
    assert [h["alpn"] for h in report["tls"]] == [None, None, None]
    assert report["certificate"]["problem"] is None
    for name in (GRPCIO, GRPC_GO, GRPC_JS):
        assert clients[name]["works"] is False
        assert clients[name]["code"] == "tls-no-alpn"
    assert "Cannot check peer: missing selected ALPN property" in clients[GRPCIO]["why"]
    assert "alpn_protocols" in clients[GRPCIO]["fix"]
    # s_server -www answers HTTP/1.1: curl and an HTTPS httpGet probe work.
    assert clients[CURL]["works"] is True
    assert clients[K8S_HTTP]["works"] is True
    code, text = doctor_text(address, "--ca", pki.ca, "--sni", "localhost")
    assert "FAIL grpcio / C-core (Python, C++, Ruby, PHP): [tls-no-alpn]" in text, text


def test_http1_only_server(spawn):
    proc = spawn([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"], "http.server")
    port = proc.wait_for(r"port (\d+)", streams=("stdout",))[0].group(1)
    code, report, clients = doctor(f"http://127.0.0.1:{port}", "--path", "/")
    assert code == 1
    assert report["http1"]["answer"] == "http1" and report["http1"]["status"] == 200
    assert report["h2c"]["answer"] != "http2"
    for name in (GRPCIO, GRPC_GO, GRPC_JS):
        assert clients[name]["works"] is False
        assert clients[name]["code"] == "grpc-upstream-http1"
        assert "protocol error" in clients[name]["why"]
    assert clients[CURL]["works"] is True
    assert clients[K8S_HTTP]["works"] is True
    assert clients[K8S_GRPC]["works"] is False


def test_nothing_listening(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound then closed: nothing listens there now
    code, report, clients = doctor(f"127.0.0.1:{port}")
    assert code == 1
    assert report["tcp"]["ok"] is False
    assert "refused" in report["tcp"]["error"]
    assert all(c["works"] is False for c in report["clients"])


@pytest.mark.proxy
def test_torii_itself_is_all_good(start_torii, echo_backend, pki):
    config = f"""\
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: echo
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates: [{{ cert: {pki.server.cert}, key: {pki.server.key} }}]
    routes:
      - match: {{ prefix: / }}
        cluster: echo
clusters:
  - name: echo
    endpoints: [{echo_backend}]
"""
    torii = start_torii(config, ["plain", "tls"])
    # gRPC-Web is judged as it is: until torii translates it (grpc_web), a
    # browser's request goes upstream as HTTP/1.1 and fails; every other
    # client must work, and the exit code follows the browser verdict.
    code, report, clients = doctor(f"http://{torii.listeners['plain']}")
    others = [c for c in report["clients"] if c["client"] != BROWSER]
    assert all(c["works"] is True for c in others), json.dumps(report, indent=1)
    assert report["h2c"]["answer"] == "http2" and report["http1"]["status"] == 200
    browser_ok = clients[BROWSER]["works"]
    assert browser_ok or "no gRPC-Web answer" in clients[BROWSER]["why"]
    assert code == (0 if browser_ok else 1)

    code, report, clients = doctor(f"https://{torii.listeners['tls']}", "--ca", pki.ca, "--sni", "localhost")
    assert report["tls"][0]["alpn"] == "h2"
    assert report["tls"][1]["alpn"] == "h2"
    assert report["tls"][2]["alpn"] == "http/1.1"
    assert report["certificate"]["problem"] is None
    assert clients[K8S_GRPC]["works"] is None
    others = [c for c in report["clients"] if c["client"] not in (BROWSER, K8S_GRPC)]
    assert all(c["works"] is True for c in others), json.dumps(report, indent=1)
    browser_ok = clients[BROWSER]["works"]
    assert code == (0 if browser_ok else 1)
    if browser_ok:
        code, text = doctor_text(f"https://{torii.listeners['tls']}", "--ca", pki.ca, "--sni", "localhost")
        assert "result: every client above can use this endpoint" in text, text


@pytest.mark.proxy
def test_mutual_tls(start_torii, echo_backend, pki):
    config = f"""\
listeners:
  - name: mtls
    address: 127.0.0.1:0
    tls:
      certificates: [{{ cert: {pki.server.cert}, key: {pki.server.key} }}]
      client_auth: {{ ca: {pki.ca} }}
    routes:
      - match: {{ prefix: / }}
        cluster: echo
clusters:
  - name: echo
    endpoints: [{echo_backend}]
"""
    torii = start_torii(config, ["mtls"])
    address = torii.listeners["mtls"]
    code, report, clients = doctor(f"https://{address}", "--ca", pki.ca, "--sni", "localhost")
    assert code == 1
    assert clients[GRPCIO]["works"] is False
    code, report, clients = doctor(
        f"https://{address}", "--ca", pki.ca, "--sni", "localhost",
        "--cert", pki.client.cert, "--key", pki.client.key,
    )
    assert clients[GRPCIO]["works"] is True, clients[GRPCIO]
    assert clients[CURL]["works"] is True and clients[K8S_HTTP]["works"] is True
