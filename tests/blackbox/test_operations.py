"""Operating torii as a binary: grpc.health.v1 through torii with the
grpcio-health-checking client, hot reload on SIGHUP and on file change, a
rejected reload, and SIGTERM draining an open bidi stream. torii runs here
with `--workers 1` (the single-threaded runtime a sidecar would use)."""

import json
import queue
import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import curl, grpc_channel

pytestmark = pytest.mark.proxy


def config(echo_address, version="v1", drain="10s"):
    return f"""\
admin:
  address: 127.0.0.1:0
drain_timeout: {drain}
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ path: /version }}
        direct_response: {{ status: 200, body: "{version}" }}
      - match: {{ grpc_service: torii.echo.v1.Echo }}
        cluster: echo
clusters:
  - name: echo
    endpoints: [{echo_address}]
    health_check: {{ type: grpc, interval: 200ms }}
"""


def wait_until(predicate, timeout=10.0, what="condition"):
    """Polls `predicate` (bounded): for effects of a signal, which has no
    readiness line to wait for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_grpc_health_checking_client_through_torii(start_torii, echo_backend):
    torii = start_torii(config(echo_backend), ["plain"], admin=True, workers=1)
    with grpc_channel(torii.listeners["plain"]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        own = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert own.status == health_pb2.HealthCheckResponse.SERVING
        svc = stub.Check(health_pb2.HealthCheckRequest(service="torii.echo.v1.Echo"), timeout=10)
        assert svc.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
    # An HTTP/1.1 probe on the same port.
    status, version, body = curl("--http1.1", f"http://{torii.listeners['plain']}/healthz")
    assert (status, body.strip()) == (200, "ok")


def test_sighup_and_file_change_reload_and_bad_config_is_rejected(start_torii, echo_backend):
    torii = start_torii(config(echo_backend, "v1"), ["plain"], admin=True, workers=1)
    url = f"http://{torii.listeners['plain']}/version"
    assert curl(url)[2] == "v1"

    torii.config.write_text(config(echo_backend, "v2"))
    torii.proc.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: curl(url)[2] == "v2", what="SIGHUP reload")

    # A change to the file is picked up without a signal.
    torii.config.write_text(config(echo_backend, "v3"))
    wait_until(lambda: curl(url)[2] == "v3", what="reload on file change")

    # A broken file: rejected with reasons, counted, the old config stays.
    torii.config.write_text("listeners:\n  - name: plain\n    address: not-an-address\n")
    torii.proc.proc.send_signal(signal.SIGHUP)
    torii.proc.wait_for(r"reload .* rejected")
    torii.proc.wait_for(r"not-an-address")
    assert curl(url)[2] == "v3"
    metrics = curl(f"http://{torii.admin}/metrics")[2]
    assert 'torii_config_reloads_total{result="error"}' in metrics
    assert 'torii_config_reloads_total{result="success"}' in metrics
    config_view = json.loads(curl(f"http://{torii.admin}/config")[2])
    assert config_view["listeners"][0]["name"] == "plain"


def test_sigterm_drains_an_open_bidi_stream(start_torii, echo_backend, pb):
    torii = start_torii(config(echo_backend, drain="10s"), ["plain"], admin=True, workers=1)
    channel = grpc_channel(torii.listeners["plain"])
    stub = pb.grpc.EchoStub(channel)
    requests = queue.Queue()

    def request_iter():
        while True:
            item = requests.get(timeout=20)
            if item is None:
                return
            yield item

    requests.put(pb.pb2.EchoRequest(message="before"))
    replies = stub.Bidi(request_iter(), timeout=30)
    assert next(replies).message == "before"

    torii.proc.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: curl(f"http://{torii.admin}/ready")[0] == 503, what="/ready 503 while draining")
    # The stream still works during the drain, then ends OK.
    requests.put(pb.pb2.EchoRequest(message="during drain"))
    assert next(replies).message == "during drain"
    requests.put(None)
    assert list(replies) == []
    assert replies.code() == grpc.StatusCode.OK
    channel.close()
    assert torii.proc.proc.wait(15) == 0
