"""A route's retry policy, black-box: a Python grpcio upstream that fails
each call's first two attempts with UNAVAILABLE in trailers (after its
response headers, so torii must hold the head to see the status), and a
grpcio client that sees only success."""

import threading
from concurrent import futures

import grpc
import pytest

from conftest import curl, grpc_channel

pytestmark = pytest.mark.proxy


def test_unavailable_in_trailers_is_retried_until_success(start_torii, pb):
    attempts = {}
    lock = threading.Lock()

    class Flaky(pb.grpc.EchoServicer):
        def Unary(self, request, context):
            with lock:
                n = attempts.get(request.message, 0) + 1
                attempts[request.message] = n
            if n <= 2:
                # Headers first, then the status in trailers.
                context.send_initial_metadata((("x-attempt", str(n)),))
                context.abort(grpc.StatusCode.UNAVAILABLE, f"attempt {n} fails")
            return pb.pb2.EchoResponse(message=request.message)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb.grpc.add_EchoServicer_to_server(Flaky(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        torii = start_torii(
            f"""\
admin:
  address: 127.0.0.1:0
access_log: off
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: py
        retry: {{ on: [unavailable], attempts: 3, backoff: {{ base: 1ms, max: 5ms }} }}
clusters:
  - name: py
    endpoints: ["127.0.0.1:{port}"]
""",
            ["plain"],
            admin=True,
        )
        with grpc_channel(torii.listeners["plain"]) as channel:
            stub = pb.grpc.EchoStub(channel)
            for i in range(5):
                reply = stub.Unary(pb.pb2.EchoRequest(message=f"call-{i}"), timeout=10)
                assert reply.message == f"call-{i}"
        assert attempts == {f"call-{i}": 3 for i in range(5)}
        code, _, metrics = curl(f"http://{torii.admin}/metrics")
        assert code == 200
        line = next(
            l for l in metrics.splitlines() if l.startswith("torii_upstream_retries_total{") and 'reason="unavailable"' in l
        )
        assert line.endswith(" 10"), line
    finally:
        server.stop(0)
