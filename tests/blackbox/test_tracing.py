"""Tracing, black-box: a grpcio client traced by OpenTelemetry's own gRPC
instrumentation (PyPI) calls a grpcio upstream through torii. The upstream
notes the `traceparent` it got; a small OTLP collector (grpcio and the
published protocol's generated modules) receives torii's spans. The
client's trace continues through torii to the upstream, torii's SERVER
span the child of the client's span and its CLIENT span the upstream's
parent."""

import threading
import time
from concurrent import futures

import grpc
import pytest

from conftest import grpc_channel

pytestmark = pytest.mark.proxy

otel = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed")
from opentelemetry.instrumentation.grpc import client_interceptor  # noqa: E402
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import (  # noqa: E402
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)


def scope_spans(rs):
    """ResourceSpans' field 2. xds-protos (PyPI) ships its own, older copy
    of the opentelemetry.proto modules, where the field is still named
    `instrumentation_library_spans` (same number, same wire form); with
    both installed, whichever came last is imported."""
    found = getattr(rs, "scope_spans", None)
    return found if found is not None else rs.instrumentation_library_spans


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.spans = []
        self.cond = threading.Condition()

    def Export(self, request, context):
        with self.cond:
            for rs in request.resource_spans:
                for ss in scope_spans(rs):
                    self.spans.extend(ss.spans)
            self.cond.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait(self, trace_id: bytes, n: int, timeout=15.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                mine = [s for s in self.spans if s.trace_id == trace_id]
                left = deadline - time.monotonic()
                if len(mine) >= n or left <= 0:
                    return mine
                self.cond.wait(left)


def test_a_python_clients_trace_continues_through_torii(start_torii, pb):
    seen = []

    class Upstream(pb.grpc.EchoServicer):
        def Unary(self, request, context):
            md = dict(context.invocation_metadata())
            seen.append(md.get("traceparent", ""))
            return pb.pb2.EchoResponse(message=request.message)

    upstream = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb.grpc.add_EchoServicer_to_server(Upstream(), upstream)
    up_port = upstream.add_insecure_port("127.0.0.1:0")
    upstream.start()
    collector = Collector()
    otlp = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, otlp)
    otlp_port = otlp.add_insecure_port("127.0.0.1:0")
    otlp.start()
    try:
        torii = start_torii(
            f"""\
access_log: off
tracing:
  otlp: {{ endpoint: "http://127.0.0.1:{otlp_port}" }}
  sample_ratio: 0
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ prefix: / }}
        cluster: py
clusters:
  - name: py
    endpoints: ["127.0.0.1:{up_port}"]
""",
            ["plain"],
        )
        exporter = InMemorySpanExporter()
        provider = otel.TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        # The instrumentation's own channel wrapper, as its instrumentor
        # uses it: the call's span, its traceparent in the metadata.
        with grpc_channel(torii.listeners["plain"]) as plain:
            channel = intercept_channel(plain, client_interceptor(tracer_provider=provider))
            reply = pb.grpc.EchoStub(channel).Unary(pb.pb2.EchoRequest(message="traced"), timeout=10)
        assert reply.message == "traced"

        (client,) = exporter.get_finished_spans()
        trace_id = client.context.trace_id.to_bytes(16, "big")
        client_span = client.context.span_id.to_bytes(8, "big")
        spans = collector.wait(trace_id, 2)
        kinds = {s.kind: s for s in spans}
        assert set(kinds) == {trace_pb2.Span.SPAN_KIND_SERVER, trace_pb2.Span.SPAN_KIND_CLIENT}, spans
        server = kinds[trace_pb2.Span.SPAN_KIND_SERVER]
        out = kinds[trace_pb2.Span.SPAN_KIND_CLIENT]
        # client span -> torii SERVER span -> torii CLIENT span -> upstream
        assert server.parent_span_id == client_span
        assert out.parent_span_id == server.span_id
        assert server.name == "torii.echo.v1.Echo/Unary"
        assert seen == [f"00-{trace_id.hex()}-{out.span_id.hex()}-01"]
        attrs = {kv.key: kv.value for kv in server.attributes}
        assert attrs["rpc.system"].string_value == "grpc"
        assert attrs["rpc.grpc.status_code"].int_value == 0
    finally:
        upstream.stop(0)
        otlp.stop(0)
