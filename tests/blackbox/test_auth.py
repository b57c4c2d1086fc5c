"""Identity at the edge with foreign clients: tokens minted with PyJWT and
cryptography (RS256, ES256, EdDSA), a JWKS served by a Python HTTP server
on loopback that the test stops, slows, fails and rotates, grpcio and
@grpc/grpc-js calls with metadata and curl for HTTP; mTLS SPIFFE identities through allow rules; API
keys; the same refusal in gRPC-Web shape."""

import base64
import hashlib
import hmac
import http.server
import json
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from conftest import REPO, SPIFFE_ID, curl, grpc_channel, make_pki, run_torii, torii_bin, ECHO_RE
from peers import node_ready

pytestmark = pytest.mark.proxy

ISS = "https://idp.test"
AUD = "orders.test"
PATIENCE = 15.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Key:
    """A signing key, its JWK, and tokens it signs."""

    def __init__(self, kind: str, kid: str):
        self.kind, self.kid = kind, kid
        if kind == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        elif kind == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
            jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.private.public_key()))
        jwk["kid"] = kid
        self.jwk = jwk

    def token(self, **overrides) -> str:
        now = int(time.time())
        claims = {"iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + 600}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        alg = "EdDSA" if self.kind == "EdDSA" else self.kind
        return jwt.encode(claims, self.private, algorithm=alg, headers={"kid": self.kid})


class Jwks:
    """A JWKS on loopback: keys, status and delay set by the test; counts hits."""

    def __init__(self, keys):
        self.keys, self.status, self.delay, self.hits = list(keys), 200, 0.0, 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with outer.lock:
                    outer.hits += 1
                    status, delay = outer.status, outer.delay
                    body = json.dumps({"keys": [k.jwk for k in outer.keys]}).encode()
                time.sleep(delay)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self):
        with self.lock:
            return self.hits

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def wait_until(check, what, timeout=PATIENCE):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


@pytest.fixture(scope="module")
def env(module_spawn, tmp_path_factory, pb):
    tmp = tmp_path_factory.mktemp("auth")
    pki = make_pki(tmp)
    keys = {kind: Key(kind, f"{kind.lower()}-1") for kind in ("RS256", "ES256", "EdDSA")}
    jwks = Jwks(keys.values())
    fast = Jwks([keys["ES256"]])
    digest = hashlib.sha256(b"globex-key-0123456789").hexdigest()
    (tmp / "keys.yaml").write_text(f'acme: "acme-key-0123456789"\nglobex: "sha256:{digest}"\n')
    echo = module_spawn([torii_bin(), "echo", "--address", "127.0.0.1:0"], "echo")
    echo_addr = echo.wait_for(ECHO_RE, streams=("stdout",))[0].group(1)
    config = f"""
admin: {{ address: 127.0.0.1:0 }}
access_log: off
jwt_providers:
  - name: idp
    issuer: {ISS}
    audiences: [{AUD}]
    jwks: {{ uri: "{jwks.uri}" }}
    from: [{{ header: authorization, prefix: "Bearer " }}, {{ query: access_token }}]
    claims_to_headers: {{ sub: x-user-id }}
  - name: fast
    issuer: {ISS}
    jwks: {{ uri: "{fast.uri}", refresh: 1s }}
api_keys:
  - {{ name: partners, file: keys.yaml, consumer_header: x-consumer }}
listeners:
  - name: jwt
    address: 127.0.0.1:0
    routes:
      - {{ cluster: echo, auth: {{ jwt: [idp] }} }}
  - name: fast
    address: 127.0.0.1:0
    routes:
      - {{ cluster: echo, auth: {{ jwt: [fast] }} }}
  - name: keys
    address: 127.0.0.1:0
    routes:
      - {{ cluster: echo, auth: {{ api_key: [partners] }} }}
  - name: rules
    address: 127.0.0.1:0
    routes:
      - name: writers
        cluster: echo
        auth:
          jwt: [idp]
          allow: [{{ grpc_methods: [torii.echo.v1.Echo/Unary], claims: {{ scope: orders.write }} }}]
  - name: mtls
    address: 127.0.0.1:0
    tls:
      certificates: [{{ cert: "{pki.server.cert}", key: "{pki.server.key}" }}]
      client_auth: {{ ca: "{pki.ca}" }}
    routes:
      - match: {{ grpc_service: torii.echo.v1.Echo, grpc_method: Unary }}
        cluster: echo
        auth: {{ allow: [{{ sans: ["spiffe://example.org/ns/default/*"] }}] }}
      - cluster: echo
        auth: {{ allow: [{{ sans: ["spiffe://example.org/ns/prod/*"] }}] }}
clusters:
  - name: echo
    endpoints: ["{echo_addr}"]
"""
    names = ["jwt", "fast", "keys", "rules", "mtls"]
    torii = run_torii(module_spawn, tmp / "torii.yaml", config, names, admin=True)

    class Env:
        pass

    e = Env()
    e.torii, e.keys, e.jwks, e.fast, e.pki, e.pb = torii, keys, jwks, fast, pki, pb
    yield e
    jwks.close()
    fast.close()


def unary(env, listener, metadata=(), channel=None):
    """A unary echo call: (status code, message, headers the upstream saw)."""
    ch = channel or grpc_channel(env.torii.listeners[listener])
    stub = env.pb.grpc.EchoStub(ch)
    try:
        resp = stub.Unary(env.pb.pb2.EchoRequest(message="hi"), metadata=list(metadata), timeout=PATIENCE)
        return grpc.StatusCode.OK, "", dict(resp.headers)
    except grpc.RpcError as e:
        return e.code(), e.details(), {}
    finally:
        if channel is None:
            ch.close()


def test_valid_tokens_of_every_key_type(env):
    for kind, key in env.keys.items():
        code, msg, seen = unary(env, "jwt", [("authorization", f"Bearer {key.token()}"), ("x-user-id", "mallory")])
        assert code == grpc.StatusCode.OK, (kind, msg)
        assert seen["x-user-id"] == "alice", kind


def hs256_with_public_key(key: Key) -> str:
    """The classic confusion: HS256 keyed with the RSA public key's PEM."""
    pem = key.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256", "kid": key.kid}).encode())
    body = b64(json.dumps({"iss": ISS, "aud": AUD, "sub": "alice", "exp": now + 600}).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_every_bad_token_is_refused_with_its_reason(env):
    es, rs = env.keys["ES256"], env.keys["RS256"]
    now = int(time.time())
    good = es.token()
    head, body, sig = good.split(".")
    tampered_body = b64(json.dumps({"iss": ISS, "aud": AUD, "sub": "root", "exp": now + 600}).encode())
    none = jwt.encode({"iss": ISS, "aud": AUD, "exp": now + 600}, None, algorithm="none")
    cases = {
        "missing": (None, "no credential"),
        "expired": (es.token(exp=now - 60 - 2), "expired at"),
        "not yet valid": (es.token(nbf=now + 3600), "not valid before"),
        "wrong issuer": (es.token(iss="https://evil.test"), "issuer"),
        "wrong audience": (es.token(aud="other"), 'audience "other" not in'),
        "alg none": (none, "unsigned"),
        "HS256 with the RSA public key": (hs256_with_public_key(rs), "HS256"),
        "tampered payload": (f"{head}.{tampered_body}.{sig}", "signature does not verify"),
    }
    for name, (token, want) in cases.items():
        md = [] if token is None else [("authorization", f"Bearer {token}")]
        code, msg, _ = unary(env, "jwt", md)
        assert code == grpc.StatusCode.UNAUTHENTICATED, (name, code, msg)
        assert want in msg, (name, msg)
    # (On the listener whose JWKS refreshes every second anyway: the refetch
    # it starts must not count in the single-fetch test below.)
    code, msg, _ = unary(env, "fast", [("authorization", f"Bearer {Key('ES256', 'nobody').token()}")])
    assert code == grpc.StatusCode.UNAUTHENTICATED and 'unknown key id "nobody"' in msg, msg
    # Within the clock skew (60 s) an expired token still passes.
    code, msg, _ = unary(env, "jwt", [("authorization", f"Bearer {es.token(exp=now - 60 + 5)}")])
    assert code == grpc.StatusCode.OK, msg

    # Over HTTP with curl: junk, whitespace, two tokens; RFC 6750's forms.
    url = f"http://{env.torii.listeners['jwt']}/any"
    bad = {
        "junk after the token": ([f"authorization: Bearer {good} junk"], "", "the token contains a space"),
        "### after the token": ([f"authorization: Bearer {good}###"], "", "the token contains"),
        "a tab inside": ([f"authorization: Bearer {head}.\t{body}.{sig}"], "", "a tab"),
        "header and query": ([f"authorization: Bearer {good}"], f"?access_token={good}", "2 tokens"),
    }
    for name, (headers, query, want) in bad.items():
        args = [a for h in headers for a in ("-H", h)]
        code, _, text = curl("-i", *args, url + query)
        assert code == 401, (name, text)
        assert 'www-authenticate: Bearer error="invalid_token"' in text, (name, text)
        assert want in text, (name, text)
    for ok in [f"authorization: bearer {good}", f"authorization: Bearer  {good}"]:
        code, _, text = curl("-i", "-H", ok, url)
        assert code != 401 and "x-torii-error: unauthenticated" not in text, (ok, text)


def test_grpc_web_clients_get_the_same_refusal(env):
    url = f"http://{env.torii.listeners['jwt']}/torii.echo.v1.Echo/Unary"
    req = urllib.request.Request(url, data=b"\x00\x00\x00\x00\x00", method="POST",
                                 headers={"content-type": "application/grpc-web+proto"})
    with urllib.request.urlopen(req, timeout=PATIENCE) as resp:
        assert resp.status == 200
        assert resp.headers["x-torii-error"] == "unauthenticated"
        body = resp.read()
    assert body[0] == 0x80, body  # the trailers frame
    trailers = body[5:].decode()
    assert "grpc-status: 16" in trailers and "no credential" in trailers, trailers


def test_unknown_kid_with_a_slow_jwks_is_fetched_once(env):
    """100 concurrent requests name a key the set lacks while the JWKS
    answers slowly: one refetch, then the rotated key verifies."""
    rotated = Key("ES256", "rotated-1")
    env.jwks.keys.append(rotated)
    env.jwks.delay = 1.0
    before = env.jwks.count()
    token = rotated.token()
    channel = grpc_channel(env.torii.listeners["jwt"])
    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            results = list(pool.map(lambda _: unary(env, "jwt", [("authorization", f"Bearer {token}")], channel), range(100)))
        for code, msg, _ in results:
            assert code == grpc.StatusCode.OK or 'unknown key id "rotated-1"' in msg, (code, msg)
        wait_until(lambda: unary(env, "jwt", [("authorization", f"Bearer {token}")], channel)[0] == grpc.StatusCode.OK,
                   "the rotated key accepted")
    finally:
        channel.close()
        env.jwks.delay = 0.0
    assert env.jwks.count() == before + 1, "exactly one fetch for the unknown key id"


def test_jwks_down_after_warm_up_keeps_the_last_good_keys(env):
    token = env.keys["ES256"].token()
    assert unary(env, "fast", [("authorization", f"Bearer {token}")])[0] == grpc.StatusCode.OK
    env.fast.status = 500
    seen = env.fast.count()
    wait_until(lambda: env.fast.count() >= seen + 2, "two failed refreshes")
    code, msg, _ = unary(env, "fast", [("authorization", f"Bearer {token}")])
    assert code == grpc.StatusCode.OK, msg
    env.fast.status = 200


def test_api_keys(env):
    url = f"http://{env.torii.listeners['keys']}/torii.echo.v1.Echo/Unary"
    code, msg, seen = unary(env, "keys", [("x-api-key", "acme-key-0123456789"), ("x-consumer", "evil")])
    assert code == grpc.StatusCode.OK and seen["x-consumer"] == "acme", msg
    code, msg, seen = unary(env, "keys", [("x-api-key", "globex-key-0123456789")])
    assert code == grpc.StatusCode.OK and seen["x-consumer"] == "globex", msg
    code, msg, _ = unary(env, "keys", [("x-api-key", "acme-key-012345678X")])
    assert code == grpc.StatusCode.UNAUTHENTICATED and "not one of set partners" in msg, msg
    code, _, text = curl("-i", url)
    assert code == 401 and "no credential" in text, text


def node_unary(env, listener, metadata):
    """The same call from @grpc/grpc-js (tests/peers/node/echo_call.js):
    (status code, details, headers the upstream saw)."""
    node_ready()
    args = ["node", str(REPO / "tests" / "peers" / "node" / "echo_call.js"), "--target", env.torii.listeners[listener]]
    for name, value in metadata:
        args += ["--metadata", f"{name}={value}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=PATIENCE * 2, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    code = next(c for c in grpc.StatusCode if c.value[0] == out["code"])
    return code, out["details"], out["headers"]


def test_grpc_js_clients_authenticate_with_call_metadata(env):
    """A Node @grpc/grpc-js client passes tokens and keys as call metadata:
    accepted, refused with the reason, claims forwarded and the client's own
    copy of a claim header replaced."""
    es = env.keys["ES256"]
    code, msg, seen = node_unary(env, "jwt", [("authorization", f"Bearer {es.token()}"), ("x-user-id", "mallory")])
    assert code == grpc.StatusCode.OK, msg
    assert seen.get("x-user-id") == "alice", seen
    expired = es.token(exp=int(time.time()) - 3600)
    code, msg, _ = node_unary(env, "jwt", [("authorization", f"Bearer {expired}")])
    assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" in msg, msg
    code, msg, _ = node_unary(env, "jwt", [])
    assert code == grpc.StatusCode.UNAUTHENTICATED, msg
    code, msg, seen = node_unary(env, "keys", [("x-api-key", "acme-key-0123456789")])
    assert code == grpc.StatusCode.OK and seen.get("x-consumer") == "acme", (msg, seen)
    code, msg, _ = node_unary(env, "rules", [("authorization", f"Bearer {es.token(scope='orders.read')}")])
    assert code == grpc.StatusCode.PERMISSION_DENIED and "route writers" in msg, msg


def test_claims_and_method_rules_and_spiffe_identities(env):
    es = env.keys["ES256"]
    code, msg, _ = unary(env, "rules", [("authorization", f"Bearer {es.token(scope='orders.read orders.write')}")])
    assert code == grpc.StatusCode.OK, msg
    code, msg, _ = unary(env, "rules", [("authorization", f"Bearer {es.token(scope='orders.read')}")])
    assert code == grpc.StatusCode.PERMISSION_DENIED, msg
    assert "route writers" in msg and "jwt:idp/alice" in msg, msg

    ch = grpc_channel(env.torii.listeners["mtls"], ca=env.pki.ca_pem, client=env.pki.client)
    try:
        code, msg, _ = unary(env, "mtls", channel=ch)
        assert code == grpc.StatusCode.OK, msg
        stub = env.pb.grpc.EchoStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.ServerStream(env.pb.pb2.EchoRequest(message="x"), timeout=PATIENCE))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"mtls:URI:{SPIFFE_ID}" in err.value.details(), err.value.details()
    finally:
        ch.close()

    metrics = urllib.request.urlopen(f"http://{env.torii.admin}/metrics", timeout=PATIENCE).read().decode()
    assert 'torii_auth_total{listener="mtls",method="mtls",result="denied",reason="no_rule",mode="enforce"}' in metrics


def test_jwks_down_at_start_fails_closed_until_it_answers(spawn, tmp_path, pb, echo_backend):
    key = Key("ES256", "k1")
    jwks = Jwks([key])
    jwks.status = 500
    try:
        config = f"""
admin: {{ address: 127.0.0.1:0 }}
access_log: off
jwt_providers:
  - {{ name: idp, issuer: "{ISS}", jwks: {{ uri: "{jwks.uri}" }} }}
listeners:
  - name: jwt
    address: 127.0.0.1:0
    routes:
      - {{ cluster: echo, auth: {{ jwt: [idp] }} }}
clusters:
  - {{ name: echo, endpoints: ["{echo_backend}"] }}
"""
        torii = run_torii(spawn, tmp_path / "torii.yaml", config, ["jwt"], admin=True)
        code, _, ready = curl(f"http://{torii.admin}/ready")
        assert code == 503 and "jwt provider idp" in ready and "HTTP 500" in ready, ready

        class E:
            pass

        env = E()
        env.torii, env.pb = torii, pb
        code, msg, _ = unary(env, "jwt", [("authorization", f"Bearer {key.token()}")])
        assert code == grpc.StatusCode.UNAVAILABLE and jwks.uri in msg, (code, msg)
        jwks.status = 200
        wait_until(lambda: curl(f"http://{torii.admin}/ready")[0] == 200, "/ready after the JWKS answers")
        code, msg, _ = unary(env, "jwt", [("authorization", f"Bearer {key.token()}")])
        assert code == grpc.StatusCode.OK, msg
    finally:
        jwks.close()
