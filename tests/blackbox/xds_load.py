"""Backends and load for the xDS change scenarios of test_xds.py: grpcio
Echo servers that say who answered and can hold calls open (to have calls
in flight at the moment of a change), and grpcio clients calling through
torii in a loop bounded in calls and time, recording every call."""

import queue
import threading
import time
from concurrent import futures

import grpc

from conftest import grpc_channel

HOLD = "hold"


class Backend:
    """An Echo server on `host`:0 (127.0.0.1 unless told) answering `NAME
    MESSAGE`; a call whose message starts with `hold` waits until
    `release()` (at most 60 s)."""

    def __init__(self, pb, name, host="127.0.0.1"):
        self.name = name
        self.lock = threading.Lock()
        self.started = 0  # calls that arrived
        self.held = 0  # hold calls that arrived
        self.in_flight = 0
        self.streams = 0  # Bidi streams that arrived
        self.released = threading.Event()
        backend = self

        class Servicer(pb.grpc.EchoServicer):
            def Unary(self, request, context):
                with backend.lock:
                    backend.started += 1
                    backend.in_flight += 1
                    if request.message.startswith(HOLD):
                        backend.held += 1
                try:
                    if request.message.startswith(HOLD):
                        backend.released.wait(60)
                    elif request.sleep_ms:
                        time.sleep(request.sleep_ms / 1000)
                    return pb.pb2.EchoResponse(message=f"{backend.name} {request.message}")
                finally:
                    with backend.lock:
                        backend.in_flight -= 1

            def Bidi(self, request_iterator, context):
                with backend.lock:
                    backend.streams += 1
                for request in request_iterator:
                    yield pb.pb2.EchoResponse(message=f"{backend.name} {request.message}")

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        pb.grpc.add_EchoServicer_to_server(Servicer(), self.server)
        self.address = f"{host}:{self.server.add_insecure_port(f'{host}:0')}"
        self.server.start()

    def count(self):
        with self.lock:
            return self.started

    def release(self):
        self.released.set()

    def stop(self, grace=5):
        self.release()
        self.server.stop(grace).wait()


def wait_until(predicate, timeout=20.0, what="the condition"):
    """Polls `predicate` (every 20 ms, at most `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)  # a polling interval, bounded above


class Load:
    """`clients` threads, each with its own channel, calling Unary through
    `address` (each call asking the backend to take `sleep_ms`) until
    `stop()`, at most `max_calls` calls and `seconds` in all. Every call is
    recorded as (start, end, backend or None, error or None)."""

    def __init__(self, pb, address, clients=4, sleep_ms=20, max_calls=20000, seconds=90):
        self.pb = pb
        self.address = address
        self.sleep_ms = sleep_ms
        self.max_calls = max_calls
        self.deadline = time.monotonic() + seconds
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.records = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, index):
        with grpc_channel(self.address) as channel:
            stub = self.pb.grpc.EchoStub(channel)
            i = 0
            while not self.stopping.is_set() and time.monotonic() < self.deadline:
                with self.lock:
                    if len(self.records) >= self.max_calls:
                        return
                start = time.monotonic()
                request = self.pb.pb2.EchoRequest(message=f"c{index}-{i}", sleep_ms=self.sleep_ms)
                try:
                    reply = stub.Unary(request, timeout=10)
                    record = (start, time.monotonic(), reply.message.split(" ")[0], None)
                except grpc.RpcError as e:
                    record = (start, time.monotonic(), None, f"{e.code()}: {e.details()}")
                with self.lock:
                    self.records.append(record)
                i += 1

    def calls(self):
        with self.lock:
            return list(self.records)

    def served_by(self, name, since=0.0):
        return sum(1 for s, _, b, _ in self.calls() if b == name and s >= since)

    def failures(self):
        return [r for r in self.calls() if r[3] is not None]

    def stop(self):
        """Stops the clients; returns every call made."""
        self.stopping.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "a load client did not stop"
        return self.calls()


class Held:
    """`n` calls through `address` that the backends hold open until
    released: calls in flight across a change."""

    def __init__(self, pb, address, n):
        self.channel = grpc_channel(address)
        stub = pb.grpc.EchoStub(self.channel)
        self.futures = [stub.Unary.future(pb.pb2.EchoRequest(message=f"{HOLD}-{i}"), timeout=60) for i in range(n)]

    def results(self):
        """(backend names of the calls that succeeded, errors of the others)."""
        ok, errors = [], []
        for f in self.futures:
            try:
                ok.append(f.result(timeout=60).message.split(" ")[0])
            except grpc.RpcError as e:
                errors.append(f"{e.code()}: {e.details()}")
        self.channel.close()
        return ok, errors


class Stream:
    """A Bidi stream through `address`, open across a change: `say`
    sends a message and returns the name of the backend that answered."""

    def __init__(self, pb, address):
        self.pb = pb
        self.channel = grpc_channel(address)
        self.outbox = queue.Queue()

        def requests():
            while True:
                message = self.outbox.get()
                if message is None:
                    return
                yield pb.pb2.EchoRequest(message=message)

        self.replies = pb.grpc.EchoStub(self.channel).Bidi(requests(), timeout=60)

    def say(self, message):
        self.outbox.put(message)
        return next(self.replies).message.split(" ")[0]

    def close(self):
        """Half-closes; asserts the stream ends with OK."""
        self.outbox.put(None)
        for _ in self.replies:
            pass
        assert self.replies.code() == grpc.StatusCode.OK, self.replies.details()
        self.channel.close()
