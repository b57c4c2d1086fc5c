"""Pitfall warnings while torii runs: the warnings `torii check` prints are
logged at start and again at every reload, and the first gRPC request
that still goes out over HTTP/1.1 (a catch-all route to a `protocol:
http1` cluster, which `check` cannot call a gRPC route) is logged once per
cluster with the code grpc-upstream-http1."""

import signal

import grpc
import pytest

from conftest import grpc_channel

pytestmark = pytest.mark.proxy


def config(echo_address, version):
    return f"""\
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ path: /version }}
        direct_response: {{ status: 200, body: "{version}" }}
      - match: {{ grpc_service: shop.v1.Orders }}
        cluster: legacy
      - match: {{ prefix: / }}
        cluster: legacy
clusters:
  - name: legacy
    endpoints: [{echo_address}]
    protocol: http1
"""


def test_warnings_at_start_and_at_every_reload(start_torii, echo_backend):
    torii = start_torii(config(echo_backend, "v1"), ["plain"])
    line = r"torii\.yaml:8:18: warning\[grpc-upstream-http1\]: .* \(help: remove protocol"
    torii.proc.wait_for(line)
    torii.config.write_text(config(echo_backend, "v2"))
    torii.proc.proc.send_signal(signal.SIGHUP)
    torii.proc.wait_for(r"reloaded \(SIGHUP\)")
    torii.proc.wait_for(line, count=2)


def test_grpc_sent_over_http1_is_logged_once(start_torii, echo_backend, pb):
    torii = start_torii(config(echo_backend, "v1"), ["plain"])
    with grpc_channel(torii.listeners["plain"]) as channel:
        stub = pb.grpc.EchoStub(channel)
        for _ in range(3):
            with pytest.raises(grpc.RpcError):
                stub.Unary(pb.pb2.EchoRequest(message="hi"), timeout=10)
    torii.proc.wait_for(r"warning\[grpc-upstream-http1\]: a gRPC request goes to cluster \"legacy\" over HTTP/1\.1")
    logged = [l for _, l in torii.proc.lines if "a gRPC request goes to cluster" in l]
    assert len(logged) == 1, logged
