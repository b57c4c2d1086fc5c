"""torii (the binary) driven by an xDS control plane written with the real
Envoy v3 messages (PyPI xds-protos on grpcio, tests/blackbox/
xds_control_plane.py), called by a grpcio client: the first configuration
over delta and over state of the world, an endpoint moved with no call
failing, a partial NACK with its error_detail, and a control plane that
is down at start.

Then changes under load (tests/blackbox/xds_load.py): grpcio clients call
through torii in a loop bounded in calls and time while the control plane
adds and removes an endpoint, moves a route to another cluster, removes a
cluster, or goes away and comes back; not one call may fail, calls held
open across the change must finish, and calls started after torii ACKed
the change must land where it says.

Last, @grpc/grpc-js-xds (tests/peers/node/xds_client.js), a real xDS
client, resolves an xds:/// target from the same control plane, which
checks the control plane itself."""

import json
import socket
import time

import pytest

from conftest import ADMIN_RE, LISTENER_RE, curl, grpc_channel, torii_bin
from peers import PEERS, node_ready
from xds_control_plane import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    ControlPlane,
    api_listener,
    assignment,
    eds_cluster,
    rds_listener,
    routes_to,
)
from xds_load import Backend, Held, Load, Stream, wait_until

pytestmark = pytest.mark.proxy


def echo(spawn, name):
    proc = spawn([torii_bin(), "echo", "--address", "127.0.0.1:0"], name)
    return proc, proc.wait_for(r"echo listening address=(\S+)", streams=("stdout",))[0].group(1)


def torii_with_xds(spawn, tmp_path, server_port, node):
    config = tmp_path / "torii.yaml"
    config.write_text(
        f"access_log: off\nadmin: {{ address: 127.0.0.1:0 }}\n"
        f"xds:\n  server: 127.0.0.1:{server_port}\n  node: {{ id: {node}, cluster: blackbox }}\n"
    )
    proc = spawn([torii_bin(), "serve", "-c", config], "torii")
    admin = proc.wait_for(ADMIN_RE)[0].group(1)
    return proc, admin


def scripted(cp, backend):
    cp.set(eds_cluster("echo"))
    cp.set(assignment("echo", [backend]))
    cp.set(rds_listener("ingress", "all"))
    cp.set(routes_to("all", "echo"))


def ingress_address(proc):
    matches = proc.wait_for(LISTENER_RE)
    return next(m.group(2) for m in matches if m.group(1) == "ingress")


def calls(address, pb, n):
    """n unary calls; the number that failed."""
    failed = 0
    with grpc_channel(address) as channel:
        stub = pb.grpc.EchoStub(channel)
        for i in range(n):
            try:
                stub.Unary(pb.pb2.EchoRequest(message=f"m{i}"), timeout=5)
            except Exception:  # noqa: BLE001 - any failure counts
                failed += 1
    return failed


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_configuration_applies_and_an_endpoint_moves_without_failures(spawn, tmp_path, pb, delta):
    first_proc, first = echo(spawn, "echo-1")
    _, second = echo(spawn, "echo-2")
    cp = ControlPlane(delta=delta)
    scripted(cp, first)
    port = cp.start()
    try:
        proc, admin = torii_with_xds(spawn, tmp_path, port, "bb-" + ("delta" if delta else "sotw"))
        address = ingress_address(proc)
        assert calls(address, pb, 5) == 0
        assert cp.streams[-1] == ("delta" if delta else "sotw")

        # The endpoint moves; once torii ACKed it the old one stops, and no
        # call fails: they all go to the new one.
        acks = len([a for a in cp.answers if a[0] == ENDPOINT])
        cp.set(assignment("echo", [second]))
        answers = cp.wait_answers(lambda a: len([x for x in a if x[0] == ENDPOINT]) > acks)
        assert [x for x in answers if x[0] == ENDPOINT][-1][1] is None, answers
        first_proc.stop()
        assert calls(address, pb, 20) == 0

        code, _, body = curl(f"http://{admin}/metrics")
        assert code == 200
        assert 'torii_xds_updates_total{type="endpoint",result="ack"}' in body, body
    finally:
        cp.stop()


def test_an_invalid_cluster_is_nacked_with_its_field_and_the_rest_applies(spawn, tmp_path, pb):
    _, backend = echo(spawn, "echo")
    cp = ControlPlane(delta=True)
    scripted(cp, backend)
    bad = eds_cluster("bad")
    bad.type = bad.ORIGINAL_DST
    cp.set(bad)
    port = cp.start()
    try:
        proc, admin = torii_with_xds(spawn, tmp_path, port, "bb-nack")
        assert calls(ingress_address(proc), pb, 3) == 0
        answers = cp.wait_answers(lambda a: any(x[0] == CLUSTER and x[1] for x in a))
        nacks = [x[1] for x in answers if x[0] == CLUSTER and x[1]]
        assert nacks and 'Cluster "bad"' in nacks[0] and "ORIGINAL_DST" in nacks[0], answers
        code, _, body = curl(f"http://{admin}/config")
        assert code == 200 and '"last_update": "nack"' in body, body
    finally:
        cp.stop()


def test_not_ready_until_the_control_plane_answers(spawn, tmp_path, pb):
    _, backend = echo(spawn, "echo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, admin = torii_with_xds(spawn, tmp_path, port, "bb-down")
    deadline = time.monotonic() + 20
    for _ in range(400):
        code, _, body = curl(f"http://{admin}/ready")
        if "unreachable" in body or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # a polling interval, bounded above
    assert code == 503 and "waiting for the first configuration from the xDS server" in body, body

    cp = ControlPlane(delta=True)
    scripted(cp, backend)
    cp.start(port)
    try:
        address = ingress_address(proc)
        assert calls(address, pb, 3) == 0
        code, _, body = curl(f"http://{admin}/ready")
        assert code == 200, body
    finally:
        cp.stop()


# --- changes under load ------------------------------------------------------


def mode(delta):
    return "delta" if delta else "sotw"


def answered(cp, type_url):
    return len([a for a in cp.answers if a[0] == type_url])


def acked(cp, type_url, before):
    """Waits for torii's answer to the next response of `type_url` (it had
    answered `before` of them); asserts it is an ACK. torii ACKs once the
    change is applied, so a call started after this goes where it says."""
    answers = cp.wait_answers(lambda a: len([x for x in a if x[0] == type_url]) > before)
    new = [x[1] for x in answers if x[0] == type_url][before:]
    assert new, f"no answer to the {type_url} change: {answers}"
    assert all(error is None for error in new), f"NACKed: {new}"
    return time.monotonic()


def two_clusters(cp, a, b, first="c1"):
    """Clusters c1 (endpoint a) and c2 (endpoint b); the listener's routes
    go to `first`."""
    cp.set(eds_cluster("c1"))
    cp.set(assignment("c1", [a.address]))
    cp.set(eds_cluster("c2"))
    cp.set(assignment("c2", [b.address]))
    cp.set(rds_listener("ingress", "all"))
    cp.set(routes_to("all", first))


def finish(load, name):
    """Stops the load; asserts not one call failed; prints the numbers."""
    calls = load.stop()
    failures = [r for r in calls if r[3] is not None]
    by = {}
    for _, _, backend, _ in calls:
        by[backend] = by.get(backend, 0) + 1
    print(f"{name}: {len(calls)} calls through torii, {len(failures)} failed, by backend {by}")
    assert not failures, f"{len(failures)} of {len(calls)} calls failed, the first: {failures[:5]}"
    return calls


def on_backend(pb, address, name, tries=20):
    """A Bidi stream through torii that landed on backend `name` (streams
    that land elsewhere are closed; at most `tries`)."""
    for _ in range(tries):
        stream = Stream(pb, address)
        if stream.say("first") == name:
            return stream
        stream.close()
    raise AssertionError(f"no stream landed on {name} in {tries} tries")


def config_clusters(admin):
    code, _, body = curl(f"http://{admin}/config")
    assert code == 200, body
    return {c["name"]: c["endpoints"] for c in json.loads(body)["clusters"]}


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_endpoints_added_and_removed_under_load_fail_no_call(spawn, tmp_path, pb, delta):
    a, b = Backend(pb, "a"), Backend(pb, "b")
    cp = ControlPlane(delta=delta)
    cp.set(eds_cluster("echo"))
    cp.set(assignment("echo", [a.address]))
    cp.set(rds_listener("ingress", "all"))
    cp.set(routes_to("all", "echo"))
    port = cp.start()
    load = None
    try:
        proc, admin = torii_with_xds(spawn, tmp_path, port, "bb-endpoints-" + mode(delta))
        address = ingress_address(proc)
        load = Load(pb, address, clients=6)
        wait_until(lambda: load.served_by("a") >= 20, what="calls through torii to a")

        # Added: calls spread to b.
        n = answered(cp, ENDPOINT)
        cp.set(assignment("echo", [a.address, b.address]))
        added = acked(cp, ENDPOINT, n)
        wait_until(lambda: load.served_by("b", since=added) >= 150, what="calls to the added endpoint b")
        assert load.served_by("a", since=added) > 0, "round robin should keep a in use"

        # Removed while calls are held open at a: they finish; calls
        # started after the ACK all go to b.
        held = Held(pb, address, 6)
        wait_until(lambda: a.held >= 1 and a.held + b.held == 6, what="held calls at both backends")
        stream = on_backend(pb, address, "a")
        n = answered(cp, ENDPOINT)
        cp.set(assignment("echo", [b.address]))
        removed = acked(cp, ENDPOINT, n)
        # A stream open at a goes on there, message after message.
        assert [stream.say(f"after-{i}") for i in range(5)] == ["a"] * 5
        stream.close()
        wait_until(lambda: load.served_by("b", since=removed) >= 300, what="calls to b after a was removed")
        assert load.served_by("a", since=removed) == 0, "a call went to the removed endpoint"
        assert config_clusters(admin)["echo"] == [b.address]
        a.release()
        b.release()
        ok, errors = held.results()
        assert errors == [] and sorted(ok).count("a") == a.held, (ok, errors)

        # The removed endpoint goes away altogether: nothing is sent to it.
        a.stop()
        more = len(load.calls())
        wait_until(lambda: len(load.calls()) >= more + 300, what="calls after a stopped")
        finish(load, f"endpoints added and removed ({mode(delta)})")
        load = None
    finally:
        if load is not None:
            load.stop()
        cp.stop()
        a.stop(0)
        b.stop(0)


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_a_route_moved_to_another_cluster_under_load_fails_no_call(spawn, tmp_path, pb, delta):
    a, b = Backend(pb, "a"), Backend(pb, "b")
    cp = ControlPlane(delta=delta)
    two_clusters(cp, a, b, first="c1")
    port = cp.start()
    load = None
    try:
        proc, _ = torii_with_xds(spawn, tmp_path, port, "bb-route-" + mode(delta))
        address = ingress_address(proc)
        load = Load(pb, address, clients=6)
        wait_until(lambda: load.served_by("a") >= 20, what="calls through torii to a")
        assert load.served_by("b") == 0, "the route names c1 only"
        held = Held(pb, address, 3)
        wait_until(lambda: a.held == 3, what="held calls at a")
        stream = on_backend(pb, address, "a")

        n = answered(cp, ROUTE)
        cp.set(routes_to("all", "c2"))
        moved = acked(cp, ROUTE, n)
        assert [stream.say(f"after-{i}") for i in range(5)] == ["a"] * 5
        stream.close()
        wait_until(lambda: load.served_by("b", since=moved) >= 300, what="calls on the moved route at b")
        assert load.served_by("a", since=moved) == 0, "a call started after the ACK went to the old cluster"
        a.release()
        ok, errors = held.results()
        assert errors == [] and ok == ["a"] * 3, (ok, errors)
        finish(load, f"route moved ({mode(delta)})")
        load = None
    finally:
        if load is not None:
            load.stop()
        cp.stop()
        a.stop(0)
        b.stop(0)


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
@pytest.mark.parametrize("order", ["together", "route_first"])
def test_a_cluster_removed_under_load_fails_no_call(spawn, tmp_path, pb, order, delta):
    a, b = Backend(pb, "a"), Backend(pb, "b")
    cp = ControlPlane(delta=delta)
    two_clusters(cp, a, b, first="c1")
    port = cp.start()
    load = None
    try:
        proc, admin = torii_with_xds(spawn, tmp_path, port, f"bb-cluster-{order}-{mode(delta)}")
        address = ingress_address(proc)
        load = Load(pb, address, clients=6)
        wait_until(lambda: load.served_by("a") >= 20, what="calls through torii to a")
        held = Held(pb, address, 3)
        wait_until(lambda: a.held == 3, what="held calls at a")
        stream = on_backend(pb, address, "a")

        routes, clusters = answered(cp, ROUTE), answered(cp, CLUSTER)
        if order == "together":
            # One change: torii gets the cluster's removal first (it asks
            # for clusters before routes) and must keep c1 for the route
            # that still names it until the route moves.
            with cp.batch():
                cp.set(routes_to("all", "c2"))
                cp.remove(CLUSTER, "c1")
                cp.remove(ENDPOINT, "c1")
            moved = acked(cp, ROUTE, routes)
            acked(cp, CLUSTER, clusters)
        else:
            cp.set(routes_to("all", "c2"))
            moved = acked(cp, ROUTE, routes)
            cp.remove(CLUSTER, "c1")
            cp.remove(ENDPOINT, "c1")
            acked(cp, CLUSTER, clusters)
        wait_until(lambda: load.served_by("b", since=moved) >= 300, what="calls at b after the change")
        assert load.served_by("a", since=moved) == 0, "a call started after the ACK went to the removed cluster"
        wait_until(lambda: "c1" not in config_clusters(admin), what="c1 gone from /config")
        # A stream open on the removed cluster goes on, message after message.
        assert [stream.say(f"after-{i}") for i in range(5)] == ["a"] * 5
        stream.close()
        a.release()
        ok, errors = held.results()
        assert errors == [] and ok == ["a"] * 3, (ok, errors)
        finish(load, f"cluster removed ({order}, {mode(delta)})")
        load = None
    finally:
        if load is not None:
            load.stop()
        cp.stop()
        a.stop(0)
        b.stop(0)


def ready(admin):
    code, _, body = curl(f"http://{admin}/ready")
    return code, body


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_a_control_plane_restarted_under_load_fails_no_call(spawn, tmp_path, pb, delta):
    a, b = Backend(pb, "a"), Backend(pb, "b")
    cp = ControlPlane(delta=delta)
    scripted(cp, a.address)
    port = cp.start()
    load = None
    try:
        proc, admin = torii_with_xds(spawn, tmp_path, port, "bb-restart-" + mode(delta))
        address = ingress_address(proc)
        load = Load(pb, address, clients=6)
        wait_until(lambda: load.served_by("a") >= 20, what="calls through torii to a")

        # Away: the last configuration keeps serving, and /ready says so.
        cp.stop()
        down = time.monotonic()
        wait_until(lambda: "unreachable" in ready(admin)[1], what="/ready to say the server is unreachable")
        code, body = ready(admin)
        assert code == 200 and "serving the last configuration it sent" in body, body
        wait_until(lambda: load.served_by("a", since=down) >= 500, what="calls while the control plane is away")

        # Back, restarted (its versions start above the old ones), with the
        # endpoint moved to b: torii reconnects and applies it.
        cp = ControlPlane(delta=delta, first_version=1000)
        scripted(cp, b.address)
        cp.start(port)
        wait_until(lambda: load.served_by("b") >= 300, timeout=60, what="calls at b after the reconnect")
        wait_until(lambda: "unreachable" not in ready(admin)[1], what="/ready to drop 'unreachable'")
        code, body = ready(admin)
        assert code == 200, body
        assert cp.streams == [mode(delta)], cp.streams
        finish(load, f"control plane restarted ({mode(delta)})")
        load = None
    finally:
        if load is not None:
            load.stop()
        cp.stop()
        a.stop(0)
        b.stop(0)


# --- a real xDS client of the same control plane -----------------------------


def test_grpc_js_xds_resolves_from_the_control_plane_torii_uses(spawn, tmp_path, pb):
    """@grpc/grpc-js-xds (a proxyless gRPC client, state of the world)
    takes the same route configuration, cluster and endpoints as torii
    (delta) from one control plane, ACKs every response, and follows an
    endpoint move: the test control plane is a correct xDS server for a
    client torii's authors did not write. torii NACKs only the
    api_listener, which is for proxyless clients."""
    node_ready()
    if not (PEERS / "node" / "node_modules" / "@grpc" / "grpc-js-xds").is_dir():
        pytest.skip("SKIPPED: @grpc/grpc-js-xds missing from tests/peers/node/node_modules: run scripts/test.sh (npm ci)")
    a, b = Backend(pb, "a"), Backend(pb, "b")
    cp = ControlPlane(delta=True)
    cp.set(eds_cluster("echo", ads=True))
    cp.set(assignment("echo", [a.address], locality=True))
    cp.set(rds_listener("ingress", "all"))
    cp.set(routes_to("all", "echo"))
    cp.set(api_listener("echo-service", "all"))
    port = cp.start()
    try:
        proc, _ = torii_with_xds(spawn, tmp_path, port, "bb-grpc-js-xds")
        ingress = ingress_address(proc)
        assert calls(ingress, pb, 5) == 0
        client = spawn(
            [
                "node",
                PEERS / "node" / "xds_client.js",
                "--server",
                f"127.0.0.1:{port}",
                "--target",
                "xds:///echo-service",
                "--calls",
                "3000",
                "--seconds",
                "60",
                "--interval-ms",
                "10",
                "--until",
                "b",
            ],
            "grpc-js-xds",
        )
        client.wait_for(r"CALL OK a ", count=5, streams=("stdout",))
        cp.set(assignment("echo", [b.address], locality=True))
        done = client.wait_for(r"DONE (\d+) (\d+)", timeout=90, streams=("stdout",))[0]
        ok, failed = int(done.group(1)), int(done.group(2))
        print(f"grpc-js-xds through the control plane: {ok + failed} calls, {failed} failed")
        assert failed == 0 and client.wait_for(r"CALL OK b ", streams=("stdout",)), client.output()
        assert calls(ingress, pb, 5) == 0
        assert b.count() >= 6, "torii and grpc-js both follow the endpoint to b"

        answers = list(cp.answers)
        node = [x for x in answers if x[2] == "grpc-js-xds-peer"]
        assert {x[0] for x in node} == {LISTENER, ROUTE, CLUSTER, ENDPOINT}, node
        assert all(x[1] is None for x in node), f"grpc-js-xds NACKed: {node}"
        nacks = [x[1] for x in answers if x[2] == "bb-grpc-js-xds" and x[1]]
        assert nacks and all('Listener "echo-service"' in n and "api_listener" in n for n in nacks), answers
    finally:
        cp.stop()
        a.stop(0)
        b.stop(0)
