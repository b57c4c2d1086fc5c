"""A route's rate_limit, black-box: `torii serve` in front of `torii echo`;
grpcio sees RESOURCE_EXHAUSTED with `retry-after` once the route's bucket is
empty, curl sees 429 with `retry-after` for a per-client-IP bucket, and the
admin /metrics counts both in torii_rate_limited_total. Refill rates are
tiny (one token every 100 s): nothing depends on time passing."""

import grpc
import pytest

from conftest import curl, grpc_channel

pytestmark = pytest.mark.proxy


def test_grpcio_and_curl_see_the_limit_with_retry_after(start_torii, echo_backend, pb, tmp_path):
    torii = start_torii(
        f"""\
access_log: off
admin:
  address: 127.0.0.1:0
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - name: echo-limited
        match: {{ grpc_service: torii.echo.v1.Echo }}
        cluster: echo
        rate_limit: {{ requests_per_second: 0.01, burst: 3 }}
      - name: page
        match: {{ prefix: /page }}
        direct_response: {{ status: 200, body: "hello" }}
        rate_limit: {{ requests_per_second: 0.01, burst: 2, per: client_ip }}
clusters:
  - name: echo
    endpoints: [{echo_backend}]
""",
        ["plain"],
        admin=True,
    )
    address = torii.listeners["plain"]
    refused = []
    with grpc_channel(address) as channel:
        stub = pb.grpc.EchoStub(channel)
        for i in range(5):
            try:
                stub.Unary(pb.pb2.EchoRequest(message=f"call {i}"), timeout=10)
            except grpc.RpcError as e:
                refused.append(e)
    assert len(refused) == 2, [e.details() for e in refused]
    for e in refused:
        assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        assert e.details().startswith("route echo-limited is over its rate limit of 0.01 requests per second (burst 3)"), e.details()
        metadata = dict(e.trailing_metadata() or ())
        assert metadata.get("x-torii-error") == "rate_limited", metadata
        assert 90 <= int(metadata["retry-after"]) <= 100, metadata

    codes = []
    for _ in range(3):
        headers = tmp_path / "headers.txt"
        code, _, body = curl("-D", str(headers), f"http://{address}/page")
        codes.append(code)
    assert codes == [200, 200, 429], codes
    head = headers.read_text().lower()
    assert "retry-after: 100" in head or "retry-after: 99" in head, head
    assert "x-torii-error: rate_limited" in head, head
    assert "client 127.0.0.1 is over route page's rate limit" in body, body

    _, _, metrics = curl(f"http://{torii.admin}/metrics")
    assert 'torii_rate_limited_total{listener="plain",route="echo-limited"} 2' in metrics, metrics
    assert 'torii_rate_limited_total{listener="plain",route="page"} 1' in metrics, metrics
    _, _, config = curl(f"http://{torii.admin}/config")
    assert '"per": "client_ip"' in config and '"requests_per_second": 0.01' in config, config
