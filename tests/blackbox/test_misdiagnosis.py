"""Failures explained by what arrived, seen by foreign peers: a grpcio
client without TLS credentials on a TLS port reads torii's "This port
expects TLS"; `python -m http.server` as an upstream (it answers the HTTP/2
preface with an HTML page and no status line) is an
upstream_protocol_mismatch quoting that page, for grpcio and curl alike,
and never a reset."""

import sys

import grpc
import pytest

from conftest import curl, grpc_channel

pytestmark = pytest.mark.proxy


@pytest.fixture
def http_server(spawn, tmp_path) -> str:
    """`python3 -m http.server` on 127.0.0.1; returns its IP:PORT."""
    root = tmp_path / "www"
    root.mkdir()
    proc = spawn([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", root], "http.server")
    port = proc.wait_for(r"Serving HTTP on \S+ port (\d+)", streams=("stdout",))[0].group(1)
    return f"127.0.0.1:{port}"


def test_grpc_without_tls_on_a_tls_port_is_told_the_port_expects_tls(start_torii, pki, pb):
    torii = start_torii(
        f"""\
listeners:
  - name: tls
    address: 127.0.0.1:0
    tls:
      certificates: [{{ cert: "{pki.server.cert}", key: "{pki.server.key}" }}]
    routes: [{{ direct_response: {{ status: 200, body: ok }} }}]
""",
        ["tls"],
    )
    with grpc_channel(torii.listeners["tls"]) as channel:
        with pytest.raises(grpc.RpcError) as err:
            pb.grpc.EchoStub(channel).Unary(pb.pb2.EchoRequest(message="x"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
    assert "This port expects TLS" in err.value.details(), err.value.details()
    trailers = dict(err.value.trailing_metadata() or ())
    assert trailers.get("x-torii-error") == "plaintext_on_tls_port", trailers
    torii.proc.wait_for(r"plaintext HTTP/2 .* arrived on this TLS listener")

    # curl without TLS, HTTP/2 prior knowledge and HTTP/1.1 alike.
    for mode in ("--http2-prior-knowledge", "--http1.1"):
        code, _, body = curl(mode, f"http://{torii.listeners['tls']}/")
        assert code == 400, (mode, code, body)
        assert "This port expects TLS" in body, (mode, body)


def test_python_http_server_upstream_is_a_protocol_mismatch(start_torii, http_server, pb):
    torii = start_torii(
        f"""\
access_log: off
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes: [{{ cluster: web }}]
clusters:
  - name: web
    endpoints: [{http_server}]
    protocol: h2c
""",
        ["plain"],
    )
    with grpc_channel(torii.listeners["plain"]) as channel:
        with pytest.raises(grpc.RpcError) as err:
            pb.grpc.EchoStub(channel).Unary(pb.pb2.EchoRequest(message="x"), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
    trailers = dict(err.value.trailing_metadata() or ())
    assert trailers.get("x-torii-error") == "upstream_protocol_mismatch", trailers
    details = err.value.details()
    assert "<!DOCTYPE HTML>" in details, details
    assert "FRAME_SIZE_ERROR" not in details and "reset" not in details, details

    code, _, body = curl("--http2-prior-knowledge", f"http://{torii.listeners['plain']}/")
    assert code == 502, body
    assert "not HTTP/2" in body, body
