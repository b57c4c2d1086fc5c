"""A fleet of torii on one machine, driven by one xDS control plane: three
replicas, each in a network namespace of its own that the test creates
(`ip netns add`), joined by a veth pair per namespace to a bridge in the
root namespace, addresses from a private /24 the test picks. The control
plane (tests/blackbox/xds_control_plane.py) and the Echo backends
(tests/blackbox/xds_load.py) listen on the bridge's address; grpcio
clients in the root namespace call each replica at its own address.

The replicas' files hold nothing but the admin address and the xDS server:
everything they serve comes from the control plane. The test checks that
all three become ready from it alone, that an endpoint move and then a
route change reach all three (each ACKs the new version, /config shows it,
and calls through each land on the new backend), and that when one replica is killed (SIGKILL)
the control plane sees its stream end while the clients of the other two
see no failed call. Namespaces, veths and the bridge are removed at the
end, also when the test fails.

Needs root and iproute2 (scripts/test.sh installs it; CI runs as root);
without them it is SKIPPED, and under CI that is a failure."""

import ipaddress
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass

import pytest

from conftest import ADMIN_RE, LISTENER_RE, Process, Spawner, curl, skip, torii_bin
from xds_control_plane import ENDPOINT, ROUTE, ControlPlane, assignment, eds_cluster, rds_listener, routes_to
from xds_load import Backend, Load, wait_until

pytestmark = pytest.mark.proxy

REPLICAS = 3


def ip(*args, check=True):
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def why_no_namespaces():
    """Why network namespaces cannot be made here, or None."""
    if os.geteuid() != 0:
        return "not running as root (network namespaces need it; CI runs this as root)"
    if shutil.which("ip") is None:
        return "no ip command (iproute2; scripts/test.sh installs it)"
    probe = f"tfleet{os.getpid()}probe"
    result = ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"cannot create a network namespace: {result.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


def free_subnet():
    """A private 10.x.y.0/24 that no address or route of this machine is in."""
    used = ip("-4", "route", "show", "table", "all").stdout + ip("-4", "addr").stdout
    rng = random.Random()
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{rng.randrange(100, 250)}.{rng.randrange(1, 250)}.0/24")
        if f"10.{net.network_address.packed[1]}.{net.network_address.packed[2]}." not in used:
            return net
    raise AssertionError("no free 10.x.y.0/24 found")


def remove_stale():
    """Removes what an earlier run of this test left behind when it was
    killed before its teardown: the namespaces and bridge named after a
    process that no longer runs (only this test's own names)."""
    for line in ip("netns", "list").stdout.splitlines():
        match = re.match(r"tfleet(\d+)-\d+", line)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            ip("netns", "del", match.group(0), check=False)
    for line in ip("-o", "link").stdout.splitlines():
        match = re.match(r"\d+: (tf[bv](\d+)[rn]?\d*)[@:]", line)
        if match and not os.path.exists(f"/proc/{match.group(2)}"):
            ip("link", "del", match.group(1), check=False)


@dataclass
class Replica:
    node: str
    namespace: str
    ip: str
    proc: Process = None
    admin: str = None  # IP:PORT
    address: str = None  # the ingress listener, IP:PORT


class Net:
    """The bridge and the namespaces; `gateway` is the bridge's address."""

    def __init__(self):
        tag = os.getpid()
        subnet = free_subnet()
        hosts = list(subnet.hosts())
        self.bridge = f"tfb{tag}"
        self.gateway = str(hosts[0])
        self.namespaces = []
        self.links = []
        self.replicas = []
        self.spawner = Spawner(tail=30)
        ip("link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i in range(REPLICAS):
            ns, outside, inside = f"tfleet{tag}-{i}", f"tfv{tag}r{i}", f"tfv{tag}n{i}"
            address = str(hosts[10 + i])
            ip("netns", "add", ns)
            self.namespaces.append(ns)
            ip("link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns)
            self.links.append(outside)
            ip("link", "set", outside, "master", self.bridge)
            ip("link", "set", outside, "up")
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", inside, "up")
            ip("-n", ns, "route", "add", "default", "via", self.gateway)
            self.replicas.append(Replica(node=f"fleet-{i}", namespace=ns, ip=address))

    def start(self, replica, config_dir, xds_port):
        """Runs torii inside the replica's namespace, its admin on the
        namespace's address; its file names only the xDS server."""
        binary = torii_bin()
        if not binary.exists():
            pytest.fail(f"{binary} does not exist: build it first (cargo build) or set TORII_BIN")
        config = config_dir / f"{replica.node}.yaml"
        config.write_text(
            f"access_log: off\nadmin: {{ address: '{replica.ip}:0' }}\n"
            f"xds:\n  server: {self.gateway}:{xds_port}\n  node: {{ id: {replica.node}, cluster: fleet }}\n"
        )
        replica.proc = self.spawner(["ip", "netns", "exec", replica.namespace, binary, "serve", "-c", config], replica.node)
        replica.admin = replica.proc.wait_for(ADMIN_RE)[0].group(1)

    def teardown(self):
        self.spawner.stop_all()
        for ns in self.namespaces:
            ip("netns", "del", ns, check=False)
        for link in self.links:
            ip("link", "del", link, check=False)
        left = ip("-o", "link").stdout + ip("netns", "list").stdout
        assert not any(name in left for name in self.links + self.namespaces), f"left behind: {left}"


@pytest.fixture
def net():
    why = why_no_namespaces()
    if why:
        skip(why)
    remove_stale()
    made = None
    try:
        made = Net()
        yield made
    finally:
        if made is not None:
            made.teardown()
        else:
            # Net() failed half-way: remove what it may have made.
            tag = os.getpid()
            for i in range(REPLICAS):
                ip("netns", "del", f"tfleet{tag}-{i}", check=False)
            ip("link", "del", f"tfb{tag}", check=False)


def config_of(replica):
    code, _, body = curl(f"http://{replica.admin}/config")
    assert code == 200, body
    return json.loads(body)


def xds_resource(replica, kind, name):
    found = [r for r in config_of(replica)["xds"]["resources"] if r["type"] == kind and r["name"] == name]
    return found[0] if found else None


def is_ready(replica):
    code, _, _ = curl(f"http://{replica.admin}/ready")
    return code == 200


def ingress(replica):
    """The replica's ingress listener at its namespace's address (the
    listener binds 0.0.0.0 with a port of the kernel's choosing)."""
    bound = next(m.group(2) for m in replica.proc.wait_for(LISTENER_RE) if m.group(1) == "ingress")
    return f"{replica.ip}:{bound.rpartition(':')[2]}"


def answered_by(cp, node, type_url):
    return len([a for a in cp.answers if a[0] == type_url and a[2] == node])


def push(cp, net, loads, type_url, kind, name, resources, new, old):
    """Sets `resources` in one change; waits until every replica answered
    the `type_url` response; checks each ACKed it, shows `name` at the new
    version in /config, and sends calls started afterwards to backend `new`
    (none to `old`)."""
    before = {r.node: answered_by(cp, r.node, type_url) for r in net.replicas}
    with cp.batch():
        for resource in resources:
            cp.set(resource)
        version = f"v{cp.version}"
    cp.wait_answers(lambda _: all(answered_by(cp, n, type_url) > k for n, k in before.items()))
    for replica in net.replicas:
        new_answers = [x for x in cp.answers if x[0] == type_url and x[2] == replica.node][before[replica.node] :]
        assert new_answers and all(e is None for _, e, _ in new_answers), f"{replica.node} did not ACK: {cp.answers}"
        resource = xds_resource(replica, kind, name)
        assert resource and resource["version"] == version and resource["last_update"] == "ack", resource
    applied = time.monotonic()
    for replica in net.replicas:
        load = loads[replica.node]
        wait_until(lambda: load.served_by(new, since=applied) >= 50, what=f"calls through {replica.node} to {new}")
        assert load.served_by(old, since=applied) == 0, f"{replica.node} sent a call to {old} after its ACK"


def test_a_fleet_of_three_replicas_follows_one_control_plane(net, tmp_path, pb):
    begun = time.monotonic()
    a, b, c = (Backend(pb, name, host=net.gateway) for name in "abc")
    cp = ControlPlane(delta=True)
    cp.set(eds_cluster("echo"))
    cp.set(assignment("echo", [a.address]))
    cp.set(rds_listener("ingress", "all", address="0.0.0.0:0"))
    cp.set(routes_to("all", "echo"))
    port = cp.start(host=net.gateway)
    loads = {}
    try:
        # Ready from the control plane alone: the files hold no listener,
        # route nor cluster.
        for replica in net.replicas:
            net.start(replica, tmp_path, port)
        for replica in net.replicas:
            wait_until(lambda r=replica: is_ready(r), timeout=30, what=f"{replica.node} /ready 200")
            assert config_of(replica)["xds"]["first_configuration_applied"] is True
            replica.address = ingress(replica)
        assert {a[2] for a in cp.answers if a[0] == ENDPOINT and a[1] is None} == {
            r.node for r in net.replicas
        }, cp.answers

        # Clients spread over the three replicas' addresses.
        loads = {r.node: Load(pb, r.address, clients=2, max_calls=6000, seconds=60) for r in net.replicas}
        for replica in net.replicas:
            wait_until(lambda r=replica: loads[r.node].served_by("a") >= 10, what=f"calls through {replica.node} to a")

        # An endpoint move, then a route change, reach all three: each
        # replica ACKs the new version, its /config shows it, and calls
        # through each land on the new backend.
        push(cp, net, loads, ENDPOINT, "endpoint", "echo", [assignment("echo", [b.address])], "b", "a")
        push(
            cp,
            net,
            loads,
            ROUTE,
            "route",
            "all",
            [eds_cluster("other"), assignment("other", [c.address]), routes_to("all", "other")],
            "c",
            "b",
        )

        # One replica killed: the control plane sees its stream end; the
        # clients of the other two see no failure.
        victim, survivors = net.replicas[0], net.replicas[1:]
        victim_calls = loads.pop(victim.node).stop()
        victim.proc.proc.send_signal(signal.SIGKILL)
        victim.proc.proc.wait(10)
        assert cp.wait_ended(victim.node), f"the control plane did not see {victim.node}'s stream end: {cp.ended}"
        killed = time.monotonic()
        for replica in survivors:
            wait_until(
                lambda r=replica: loads[r.node].served_by("c", since=killed) >= 300,
                what=f"calls through {replica.node} after {victim.node} was killed",
            )
            assert is_ready(replica)
        assert not any(r.node in cp.ended for r in survivors), cp.ended

        print(f"{victim.node} (killed): {len(victim_calls)} calls before the kill, {sum(1 for c in victim_calls if c[3])} failed")
        for replica in survivors:
            calls = loads.pop(replica.node).stop()
            failures = [c for c in calls if c[3] is not None]
            after = sum(1 for c in calls if c[0] >= killed)
            print(f"{replica.node}: {len(calls)} calls, {after} after the kill, {len(failures)} failed")
            assert not failures, f"{len(failures)} calls through {replica.node} failed, the first: {failures[:5]}"
        assert not [c for c in victim_calls if c[3]], "calls through the victim failed before it was killed"
        print(f"fleet test took {time.monotonic() - begun:.1f}s")
    finally:
        for load in loads.values():
            load.stop()
        cp.stop()
        for backend in (a, b, c):
            backend.stop(0)
