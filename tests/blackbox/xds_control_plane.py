"""A scripted xDS v3 control plane for the black-box tests: an ADS server
on grpcio with the Envoy API messages of PyPI `xds-protos`, speaking delta
xDS and state of the world (or state of the world only, answering delta
with UNIMPLEMENTED). Tests set and remove resources; every ACK and NACK is
recorded."""

import contextlib
import threading
from concurrent import futures

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, wrappers_pb2

PREFIX = "type.googleapis.com/"
CLUSTER = PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = PREFIX + "envoy.config.route.v3.RouteConfiguration"
WILDCARD = (CLUSTER, LISTENER)


def _socket(address: str) -> address_pb2.Address:
    host, _, port = address.rpartition(":")
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=int(port)))


ADS = config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource())


def eds_cluster(name, ads=False):
    """An EDS cluster; `ads` names ADS as its EDS source (gRPC clients
    require it; torii takes either)."""
    eds = cluster_pb2.Cluster.EdsClusterConfig(eds_config=ADS if ads else None)
    return cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS, eds_cluster_config=eds)


def assignment(cluster, addresses, locality=False):
    """The endpoints of `cluster`; `locality` puts them in a weighted
    locality (gRPC clients skip endpoints without one)."""
    endpoints = [
        endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=_socket(a))) for a in addresses
    ]
    group = endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=endpoints)
    if locality:
        group.locality.CopyFrom(base_pb2.Locality(region="blackbox"))
        group.load_balancing_weight.CopyFrom(wrappers_pb2.UInt32Value(value=1))
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster, endpoints=[group])


def rds_listener(name, route_config, address="127.0.0.1:0"):
    router = hcm_pb2.HttpFilter(name="envoy.filters.http.router")
    router.typed_config.Pack(router_pb2.Router())
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name, rds=hcm_pb2.Rds(route_config_name=route_config), http_filters=[router]
    )
    network = listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager")
    network.typed_config.Pack(hcm)
    return listener_pb2.Listener(
        name=name, address=_socket(address), filter_chains=[listener_components_pb2.FilterChain(filters=[network])]
    )


def api_listener(name, route_config):
    """A Listener for proxyless gRPC clients (`xds:///NAME`): an
    api_listener holding the HttpConnectionManager, routes by RDS over ADS."""
    router = hcm_pb2.HttpFilter(name="envoy.filters.http.router")
    router.typed_config.Pack(router_pb2.Router())
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=name, rds=hcm_pb2.Rds(route_config_name=route_config, config_source=ADS), http_filters=[router]
    )
    listener = listener_pb2.Listener(name=name, api_listener=api_listener_pb2.ApiListener())
    listener.api_listener.api_listener.Pack(hcm)
    return listener


def routes_to(name, cluster):
    route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"), route=route_components_pb2.RouteAction(cluster=cluster)
    )
    host = route_components_pb2.VirtualHost(name="all", domains=["*"], routes=[route])
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[host])


class ControlPlane(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, delta=True, first_version=0):
        self.delta = delta
        # Reentrant: `batch` holds it around several `set`/`remove`.
        self.changed = threading.Condition(threading.RLock())
        self.resources = {}  # type URL -> {name: (version, Any)}
        # A restarted control plane starts above the last one's versions, so
        # that a version torii holds never names different content.
        self.version = first_version
        self.answers = []  # (type URL, NACK message or None, node id)
        self.streams = []  # "delta" / "sotw", one per stream
        self.ended = []  # node id of each stream that ended (None if it named none)
        self.server = None

    # --- scripting --------------------------------------------------------

    def set(self, message):
        name = getattr(message, "cluster_name", "") or message.name
        packed = any_pb2.Any()
        packed.Pack(message)
        with self.changed:
            self.version += 1
            self.resources.setdefault(packed.type_url, {})[name] = (self.version, packed)
            self.changed.notify_all()

    def remove(self, type_url, name):
        with self.changed:
            self.version += 1
            self.resources.get(type_url, {}).pop(name, None)
            self.changed.notify_all()

    @contextlib.contextmanager
    def batch(self):
        """`set`s and `remove`s inside are seen by the streams together."""
        with self.changed:
            yield

    def wait_answers(self, predicate, timeout=20.0):
        """The answers once `predicate(answers)` holds (or after `timeout`)."""
        with self.changed:
            self.changed.wait_for(lambda: predicate(list(self.answers)), timeout=timeout)
            return list(self.answers)

    def wait_ended(self, node, timeout=20.0):
        """Whether a stream of `node` ended within `timeout`."""
        with self.changed:
            return self.changed.wait_for(lambda: node in self.ended, timeout=timeout)

    def start(self, port=0, host="127.0.0.1") -> int:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self.server)
        bound = self.server.add_insecure_port(f"{host}:{port}")
        self.server.start()
        return bound

    def stop(self):
        if self.server is not None:
            self.server.stop(grace=0).wait()
            self.server = None
        with self.changed:
            self.changed.notify_all()

    # --- the service --------------------------------------------------------

    def _current(self, type_url, names):
        found = self.resources.get(type_url, {})
        return {n: r for n, r in found.items() if names is None or n in names}

    def _pump(self, requests, context, handle, respond, node):
        """Reads requests on a thread; after each request or change, asks
        `respond` for responses to send. When the stream ends (the client
        went away, or the server stops), its node id (`node`, filled by
        `_record`) goes into `ended`."""
        inbox, state = [], {"closed": False}

        def read():
            try:
                for request in requests:
                    with self.changed:
                        inbox.append(request)
                        self.changed.notify_all()
            except grpc.RpcError:
                pass
            finally:
                with self.changed:
                    state["closed"] = True
                    self.changed.notify_all()

        threading.Thread(target=read, daemon=True).start()
        seen = -1
        try:
            while context.is_active():
                with self.changed:
                    self.changed.wait_for(lambda: inbox or state["closed"] or self.version != seen, timeout=0.5)
                    if state["closed"]:
                        return
                    for request in inbox:
                        handle(request)
                    if inbox:
                        self.changed.notify_all()  # answers were recorded
                    inbox.clear()
                    seen = self.version
                    out = respond()
                yield from out
        finally:
            with self.changed:
                self.ended.append(node[0] if node else None)
                self.changed.notify_all()

    def _record(self, request, node):
        """Records an ACK or NACK; `node` holds the stream's node id (the
        first request names it)."""
        if request.HasField("node") and not node:
            node.append(request.node.id)
        if request.response_nonce:
            error = request.error_detail.message if request.HasField("error_detail") else None
            self.answers.append((request.type_url, error, node[0] if node else None))

    def StreamAggregatedResources(self, request_iterator, context):
        self.streams.append("sotw")
        subs, sent, nonce, node = {}, {}, [0], []

        def handle(request):
            self._record(request, node)
            names = set(request.resource_names)
            subs[request.type_url] = None if (not names and request.type_url in WILDCARD) else names

        def respond():
            out = []
            for type_url, names in subs.items():
                now = self._current(type_url, names)
                key = sorted((n, v) for n, (v, _) in now.items())
                if sent.get(type_url) == key:
                    continue
                sent[type_url] = key
                nonce[0] += 1
                out.append(
                    discovery_pb2.DiscoveryResponse(
                        version_info=f"v{max([v for _, v in key], default=0)}",
                        type_url=type_url,
                        nonce=f"n{nonce[0]}",
                        resources=[a for _, a in now.values()],
                    )
                )
            return out

        yield from self._pump(request_iterator, context, handle, respond, node)

    def DeltaAggregatedResources(self, request_iterator, context):
        if not self.delta:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "delta xDS is not implemented here")
        self.streams.append("delta")
        subs, sent, nonce, node = {}, {}, [0], []

        def handle(request):
            self._record(request, node)
            if request.type_url not in subs:
                subs[request.type_url] = None if not request.resource_names_subscribe else set()
                known = sent.setdefault(request.type_url, {})
                for name, version in request.initial_resource_versions.items():
                    known[name] = int(version.lstrip("v") or 0)
            if subs[request.type_url] is not None:
                subs[request.type_url] |= set(request.resource_names_subscribe)
                subs[request.type_url] -= set(request.resource_names_unsubscribe)
                for name in request.resource_names_unsubscribe:
                    sent.get(request.type_url, {}).pop(name, None)

        def respond():
            out = []
            for type_url, names in subs.items():
                now = self._current(type_url, names)
                known = sent.setdefault(type_url, {})
                changed = [
                    discovery_pb2.Resource(name=n, version=f"v{v}", resource=a)
                    for n, (v, a) in now.items()
                    if known.get(n) != v
                ]
                removed = [n for n in known if n not in now]
                for r in changed:
                    known[r.name] = now[r.name][0]
                for n in removed:
                    del known[n]
                if changed or removed:
                    nonce[0] += 1
                    out.append(
                        discovery_pb2.DeltaDiscoveryResponse(
                            type_url=type_url, nonce=f"n{nonce[0]}", resources=changed, removed_resources=removed
                        )
                    )
            return out

        yield from self._pump(request_iterator, context, handle, respond, node)
