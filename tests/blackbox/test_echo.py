"""The built-in echo service through the binary (`torii echo`), with grpcio:
the backend every other black-box test stands on."""

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import ECHO_RE, grpc_channel, torii_bin


def test_unary_and_bidi_over_h2c(echo_backend, pb):
    with grpc_channel(echo_backend) as channel:
        stub = pb.grpc.EchoStub(channel)
        reply = stub.Unary(pb.pb2.EchoRequest(message="hello", payload=b"\x00\x01"), timeout=10)
        assert (reply.message, reply.payload, reply.received) == ("hello", b"\x00\x01", 1)
        assert reply.headers[":path"] == "/torii.echo.v1.Echo/Unary"

        requests = [pb.pb2.EchoRequest(message=f"ping {i}") for i in range(3)]
        replies = list(stub.Bidi(iter(requests), timeout=10))
        assert [(r.message, r.received) for r in replies] == [(f"ping {i}", i + 1) for i in range(3)]


def test_status_metadata_and_trailer_echo(echo_backend, pb):
    with grpc_channel(echo_backend) as channel:
        stub = pb.grpc.EchoStub(channel)
        metadata = [("x-echo-hello", "world"), ("x-echo-trailer-bin", b"\xab\x00\xcd")]
        _, call = stub.Unary.with_call(pb.pb2.EchoRequest(message="m"), metadata=metadata, timeout=10)
        assert ("x-echo-hello", "world") in call.initial_metadata()
        assert ("x-echo-trailer-bin", b"\xab\x00\xcd") in call.trailing_metadata()

        message = "unicode ☺ and 😈"
        failing = pb.pb2.EchoRequest(status_code=grpc.StatusCode.PERMISSION_DENIED.value[0], status_message=message)
        try:
            stub.Unary(failing, timeout=10)
            raise AssertionError("expected PERMISSION_DENIED")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED
            assert err.details() == message


def test_deadline_on_sleeping_server(echo_backend, pb):
    with grpc_channel(echo_backend) as channel:
        stub = pb.grpc.EchoStub(channel)
        try:
            stub.Unary(pb.pb2.EchoRequest(sleep_ms=5000), timeout=0.2)
            raise AssertionError("expected DEADLINE_EXCEEDED")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_health_service(echo_backend):
    with grpc_channel(echo_backend) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ["", "torii.echo.v1.Echo"]:
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_tls_echo_with_grpcio_needs_and_gets_alpn(spawn, pki, pb):
    # grpcio refuses a TLS server that selects no ALPN protocol.
    args = [torii_bin(), "echo", "--address", "127.0.0.1:0", "--tls-cert", pki.server.cert, "--tls-key", pki.server.key]
    address = spawn(args, "echo-tls").wait_for(ECHO_RE, streams=("stdout",))[0].group(1)
    with grpc_channel(address, ca=pki.ca_pem) as channel:
        reply = pb.grpc.EchoStub(channel).Unary(pb.pb2.EchoRequest(message="over tls"), timeout=10)
        assert reply.message == "over tls"
        assert reply.headers[":scheme"] == "https"


def test_echo_exits_cleanly_on_sigterm(spawn):
    proc = spawn([torii_bin(), "echo", "--address", "127.0.0.1:0"], "echo")
    proc.wait_for(ECHO_RE, streams=("stdout",))
    assert proc.stop() == 0, proc.output()
