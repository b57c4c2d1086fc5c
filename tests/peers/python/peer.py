#!/usr/bin/env python3
"""The Python grpcio peer: a server of tests/peers/interop.proto, and a client
that runs the interop cases against any such server.

    peer.py server [--cert CERT --key KEY [--client-ca CA]]
        Listens on 127.0.0.1:0 and prints `peer listening address=IP:PORT`.
        Keepalive enforcement is C-core's default (no option loosens it).
    peer.py client --target IP:PORT [--ca CA [--cert C --key K]
                   [--server-name NAME]] [--cases a,b,c]
        Runs the cases in one process, prints `CASE name PASS` or
        `CASE name FAIL why` per case; exits 1 if any failed.
"""

import argparse
import os
import sys
import threading
import time
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/peers: interop.proto

import grpc  # noqa: E402

pb2, pb2_grpc = grpc.protos_and_services("interop.proto")

SERVICE = "torii.interop.v1.TestService"
LARGE_REQUEST, LARGE_RESPONSE = 271828, 314159
REQUEST_SIZES = [27182, 8, 1828, 45904]
RESPONSE_SIZES = [31415, 9, 2653, 58979]
INITIAL_KEY, INITIAL_VALUE = "x-echo-initial", "test_initial_metadata_value"
TRAILING_KEY, TRAILING_VALUE = "x-echo-trailing-bin", b"\xab\xab\xab"
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
CODES = {s.value[0]: s for s in grpc.StatusCode}
OPTIONS = [("grpc.enable_http_proxy", 0)]


# --- server -------------------------------------------------------------------


def echo_metadata(context):
    received = dict(context.invocation_metadata())
    if INITIAL_KEY in received:
        context.send_initial_metadata([(INITIAL_KEY, received[INITIAL_KEY])])
    if TRAILING_KEY in received:
        context.set_trailing_metadata([(TRAILING_KEY, received[TRAILING_KEY])])


def end_with(status, context):
    if status is not None and status.code != 0:
        context.abort(CODES[status.code], status.message)


def wait(context, interval_us):
    """Sleeps, but no longer than the call lives."""
    if interval_us <= 0:
        return True
    done = threading.Event()
    if not context.add_callback(done.set):
        return False
    return not done.wait(interval_us / 1e6)


class TestService(pb2_grpc.TestServiceServicer):
    def EmptyCall(self, request, context):
        echo_metadata(context)
        return pb2.Empty()

    def UnaryCall(self, request, context):
        echo_metadata(context)
        if request.HasField("response_status"):
            end_with(request.response_status, context)
        return pb2.SimpleResponse(payload=pb2.Payload(body=bytes(request.response_size)))

    def StreamingOutputCall(self, request, context):
        echo_metadata(context)
        for params in request.response_parameters:
            if not wait(context, params.interval_us):
                return
            yield pb2.StreamingOutputCallResponse(payload=pb2.Payload(body=bytes(params.size)))
        if request.HasField("response_status"):
            end_with(request.response_status, context)

    def StreamingInputCall(self, request_iterator, context):
        echo_metadata(context)
        total = sum(len(r.payload.body) for r in request_iterator)
        return pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        for request in request_iterator:
            for params in request.response_parameters:
                if not wait(context, params.interval_us):
                    return
                yield pb2.StreamingOutputCallResponse(payload=pb2.Payload(body=bytes(params.size)))
            if request.HasField("response_status"):
                end_with(request.response_status, context)


def serve(args):
    # No keepalive options: C-core's default enforcement (one ping per 5
    # minutes without data, GOAWAY too_many_pings after two strikes) is the
    # point.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    pb2_grpc.add_TestServiceServicer_to_server(TestService(), server)
    if args.cert:
        cert, key = (open(p, "rb").read() for p in (args.cert, args.key))
        ca = open(args.client_ca, "rb").read() if args.client_ca else None
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"peer listening address=127.0.0.1:{port}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass


# --- client -------------------------------------------------------------------


class Failed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failed(what)


def expect_status(err, code, message=None):
    check(isinstance(err, grpc.RpcError), f"expected {code.name}, got {err!r}")
    got = err.code()
    check(got == code, f"expected {code.name}, got {got.name if got else got}: {err.details()!r}")
    if message is not None:
        check(err.details() == message, f"expected message {message!r}, got {err.details()!r}")


def call_error(fn):
    try:
        result = fn()
    except grpc.RpcError as err:
        return err
    raise Failed(f"the call succeeded ({type(result).__name__}) but an error status was expected")


def empty_unary(stub, _):
    reply = stub.EmptyCall(pb2.Empty(), timeout=10)
    check(reply == pb2.Empty(), f"reply {reply!r}")


def large_unary(stub, _):
    req = pb2.SimpleRequest(response_size=LARGE_RESPONSE, payload=pb2.Payload(body=bytes(LARGE_REQUEST)))
    reply = stub.UnaryCall(req, timeout=10)
    check(len(reply.payload.body) == LARGE_RESPONSE, f"payload of {len(reply.payload.body)} B")


def client_streaming(stub, _):
    reqs = (pb2.StreamingInputCallRequest(payload=pb2.Payload(body=bytes(n))) for n in REQUEST_SIZES)
    reply = stub.StreamingInputCall(reqs, timeout=10)
    check(reply.aggregated_payload_size == sum(REQUEST_SIZES), f"aggregated {reply.aggregated_payload_size}")


def server_streaming(stub, _):
    req = pb2.StreamingOutputCallRequest(response_parameters=[pb2.ResponseParameters(size=n) for n in RESPONSE_SIZES])
    sizes = [len(r.payload.body) for r in stub.StreamingOutputCall(req, timeout=10)]
    check(sizes == RESPONSE_SIZES, f"response sizes {sizes}")


class Queue:
    """Requests fed to a streaming call one at a time."""

    def __init__(self):
        self.cond = threading.Condition()
        self.items = []
        self.closed = False

    def put(self, item):
        with self.cond:
            self.items.append(item)
            self.cond.notify()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify()

    def __iter__(self):
        return self

    def __next__(self):
        with self.cond:
            while not self.items and not self.closed:
                self.cond.wait()
            if self.items:
                return self.items.pop(0)
            raise StopIteration


def ping_pong(stub, _):
    queue = Queue()
    call = stub.FullDuplexCall(queue, timeout=10)
    try:
        for req_size, resp_size in zip(REQUEST_SIZES, RESPONSE_SIZES):
            queue.put(
                pb2.StreamingOutputCallRequest(
                    response_parameters=[pb2.ResponseParameters(size=resp_size)],
                    payload=pb2.Payload(body=bytes(req_size)),
                )
            )
            reply = next(call)
            check(len(reply.payload.body) == resp_size, f"response of {len(reply.payload.body)} B, expected {resp_size}")
        queue.close()
        rest = list(call)
        check(not rest, f"{len(rest)} extra responses")
        check(call.code() == grpc.StatusCode.OK, f"status {call.code()}")
    finally:
        queue.close()


def empty_stream(stub, _):
    replies = list(stub.FullDuplexCall(iter([]), timeout=3))
    check(not replies, f"{len(replies)} responses")


def cancel_after_begin(stub, _):
    queue = Queue()
    future = stub.StreamingInputCall.future(queue, timeout=10)
    future.cancel()
    queue.close()
    check(future.cancelled(), "the call was not cancelled")
    # grpcio raises FutureCancelledError from a cancelled future's result().
    try:
        future.result()
    except grpc.FutureCancelledError:
        return
    except grpc.RpcError as err:
        expect_status(err, grpc.StatusCode.CANCELLED)
        return
    raise Failed("the cancelled call returned a response")


def cancel_after_first_response(stub, _):
    queue = Queue()
    call = stub.FullDuplexCall(queue, timeout=10)
    queue.put(
        pb2.StreamingOutputCallRequest(
            response_parameters=[pb2.ResponseParameters(size=31415)], payload=pb2.Payload(body=bytes(27182))
        )
    )
    reply = next(call)
    check(len(reply.payload.body) == 31415, f"response of {len(reply.payload.body)} B")
    call.cancel()
    queue.close()
    err = call_error(lambda: next(call))
    expect_status(err, grpc.StatusCode.CANCELLED)


def timeout_on_sleeping_server(stub, _):
    queue = Queue()
    call = stub.FullDuplexCall(queue, timeout=0.5)
    queue.put(
        pb2.StreamingOutputCallRequest(
            response_parameters=[pb2.ResponseParameters(size=1, interval_us=20_000_000)],
            payload=pb2.Payload(body=bytes(27182)),
        )
    )
    err = call_error(lambda: next(call))
    queue.close()
    expect_status(err, grpc.StatusCode.DEADLINE_EXCEEDED)


def custom_metadata(stub, _):
    metadata = [(INITIAL_KEY, INITIAL_VALUE), (TRAILING_KEY, TRAILING_VALUE)]
    req = pb2.SimpleRequest(response_size=LARGE_RESPONSE, payload=pb2.Payload(body=bytes(LARGE_REQUEST)))
    reply, call = stub.UnaryCall.with_call(req, metadata=metadata, timeout=10)
    check(len(reply.payload.body) == LARGE_RESPONSE, f"payload of {len(reply.payload.body)} B")
    check_echoed(call, "unary")

    call = stub.FullDuplexCall(
        iter([pb2.StreamingOutputCallRequest(response_parameters=[pb2.ResponseParameters(size=LARGE_RESPONSE)])]),
        metadata=metadata,
        timeout=10,
    )
    sizes = [len(r.payload.body) for r in call]
    check(sizes == [LARGE_RESPONSE], f"full duplex response sizes {sizes}")
    check_echoed(call, "full duplex")


def check_echoed(call, what):
    initial = dict(call.initial_metadata())
    trailing = dict(call.trailing_metadata())
    check(initial.get(INITIAL_KEY) == INITIAL_VALUE, f"{what}: initial metadata {initial}")
    check(trailing.get(TRAILING_KEY) == TRAILING_VALUE, f"{what}: trailing metadata {trailing}")


def status_and_message(stub, code, message):
    status = pb2.EchoStatus(code=code, message=message)
    err = call_error(lambda: stub.UnaryCall(pb2.SimpleRequest(response_status=status), timeout=10))
    try:
        expect_status(err, CODES[code], message)
    except Failed as failed:
        raise Failed(f"unary: {failed}") from None
    req = pb2.StreamingOutputCallRequest(response_status=status)
    err = call_error(lambda: list(stub.FullDuplexCall(iter([req]), timeout=10)))
    try:
        expect_status(err, CODES[code], message)
    except Failed as failed:
        raise Failed(f"full duplex: {failed}") from None


def status_code_and_message(stub, _):
    status_and_message(stub, 2, "test status message")


def special_status_message(stub, _):
    status_and_message(stub, 2, SPECIAL_MESSAGE)


def status_codes(stub, _):
    """Every error code a server can send, unary, each with a message."""
    for code in range(1, 17):
        status = pb2.EchoStatus(code=code, message=f"code {code} \u263a")
        err = call_error(lambda: stub.UnaryCall(pb2.SimpleRequest(response_status=status), timeout=10))
        try:
            expect_status(err, CODES[code], status.message)
        except Failed as failed:
            raise Failed(f"code {code}: {failed}") from None


def unimplemented_method(_, channel):
    call = channel.unary_unary(f"/{SERVICE}/UnimplementedCall", pb2.Empty.SerializeToString, pb2.Empty.FromString)
    expect_status(call_error(lambda: call(pb2.Empty(), timeout=10)), grpc.StatusCode.UNIMPLEMENTED)


def unimplemented_service(_, channel):
    call = channel.unary_unary(
        "/torii.interop.v1.UnimplementedService/UnimplementedCall", pb2.Empty.SerializeToString, pb2.Empty.FromString
    )
    expect_status(call_error(lambda: call(pb2.Empty(), timeout=10)), grpc.StatusCode.UNIMPLEMENTED)


CASES = {
    f.__name__: f
    for f in [
        empty_unary,
        large_unary,
        client_streaming,
        server_streaming,
        ping_pong,
        empty_stream,
        cancel_after_begin,
        cancel_after_first_response,
        timeout_on_sleeping_server,
        custom_metadata,
        status_code_and_message,
        special_status_message,
        status_codes,
        unimplemented_method,
        unimplemented_service,
    ]
}


def run_client(args):
    if args.ca:
        creds = grpc.ssl_channel_credentials(
            root_certificates=open(args.ca, "rb").read(),
            private_key=open(args.key, "rb").read() if args.key else None,
            certificate_chain=open(args.cert, "rb").read() if args.cert else None,
        )
        options = OPTIONS + [("grpc.ssl_target_name_override", args.server_name)]
        channel = grpc.secure_channel(args.target, creds, options=options)
    else:
        channel = grpc.insecure_channel(args.target, options=OPTIONS)
    stub = pb2_grpc.TestServiceStub(channel)
    names = args.cases.split(",") if args.cases else list(CASES)
    failed = 0
    for name in names:
        started = time.monotonic()
        try:
            CASES[name](stub, channel)
            line = "PASS"
        except Exception as err:  # noqa: BLE001 - every failure is a result line
            failed += 1
            why = f"{type(err).__name__}: {err}" if not isinstance(err, Failed) else str(err)
            if isinstance(err, grpc.RpcError):
                why = f"{err.code()}: {err.details()!r}"
            line = "FAIL " + why.replace("\n", "\\n")
        print(f"CASE {name} {line} ({(time.monotonic() - started) * 1000:.0f} ms)", flush=True)
    channel.close()
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--cert")
    s.add_argument("--key")
    s.add_argument("--client-ca")
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("--ca")
    c.add_argument("--cert")
    c.add_argument("--key")
    c.add_argument("--server-name", default="localhost")
    c.add_argument("--cases")
    args = parser.parse_args()
    if args.mode == "server":
        serve(args)
        return 0
    return run_client(args)


if __name__ == "__main__":
    sys.exit(main())
