"""torii (the binary) driven by an xDS control plane written with the real
Envoy v3 messages (PyPI xds-protos on grpcio, tests/blackbox/
xds_control_plane.py), called by a grpcio client: the first configuration
over delta and over state of the world, an endpoint moved with no call
failing, a partial NACK with its error_detail, and a control plane that
is down at start."""

import socket
import time

import pytest

from conftest import ADMIN_RE, LISTENER_RE, curl, grpc_channel, torii_bin
from xds_control_plane import CLUSTER, ENDPOINT, ControlPlane, assignment, eds_cluster, rds_listener, routes_to

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
