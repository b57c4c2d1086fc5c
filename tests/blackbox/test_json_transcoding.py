"""gRPC-JSON transcoding against a real Python grpcio server.

tests/transcoding/shop.proto (annotated with google.api.http) is compiled
by grpcio-tools' protoc into Python stubs and a descriptor set
(--include_imports); the grpcio server runs in this process. One torii
serves two listeners in front of it: `protos` compiles the .proto itself
(json_transcoding.protos), `desc` reads protoc's descriptor set
(json_transcoding.descriptors). Requests go through curl and urllib.

ProtoJSON is checked against Python protobuf's json_format as the oracle:
seeded random messages covering every field kind (int64, enums, bytes,
well-known types, maps, repeated, oneof, proto3 optional) are written by
json_format, sent through torii to the Echo method, and what torii prints
back must be what json_format prints for the same message.
"""

import base64
import concurrent.futures
import http.client
import importlib
import importlib.resources
import json
import pathlib
import random
import sys
import threading
import urllib.error
import urllib.request

import pytest

from conftest import PROTO_DIR, REPO, curl, run_torii

pytestmark = pytest.mark.proxy

SHOP_DIR = REPO / "tests" / "transcoding"
SEED = 17
CASES = 60


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    """Python stubs and a descriptor set for shop.proto, made by protoc."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("shop_stubs")
    include = importlib.resources.files("grpc_tools") / "_proto"
    descriptors = out / "shop.pb"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{SHOP_DIR}",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "--include_imports",
            f"--descriptor_set_out={descriptors}",
            str(SHOP_DIR / "shop.proto"),
            str(PROTO_DIR / "google/api/annotations.proto"),
            str(PROTO_DIR / "google/api/http.proto"),
            str(PROTO_DIR / "google/api/httpbody.proto"),
        ]
    )
    assert rc == 0, "protoc failed on tests/transcoding/shop.proto"
    sys.path.insert(0, str(out))
    # The generated google.api modules live next to protobuf's google
    # package: extend its search path so both are found.
    import google

    google.__path__.append(str(out / "google"))
    shop_pb2 = importlib.import_module("shop_pb2")
    shop_pb2_grpc = importlib.import_module("shop_pb2_grpc")
    httpbody_pb2 = importlib.import_module("google.api.httpbody_pb2")

    class Stubs:
        pb2 = shop_pb2
        grpc = shop_pb2_grpc
        httpbody = httpbody_pb2
        descriptor_set = descriptors

    return Stubs


@pytest.fixture(scope="module")
def backend(stubs):
    """The Shop service on a grpcio server; yields (address, release):
    ListBooks sends its second book only after `release` is set."""
    import grpc
    from google.protobuf import empty_pb2

    pb2 = stubs.pb2
    release = threading.Event()

    class Shop(stubs.grpc.ShopServicer):
        def GetBook(self, request, context):
            context.send_initial_metadata((("x-backend", "python"),))
            return pb2.Book(name=request.name, title=f"Title of {request.name}", id=2**53 + 1, genre=pb2.SCIENCE)

        def Title(self, request, context):
            return pb2.Book(name=request.name, title=f"Title of {request.name}")

        def CreateBook(self, request, context):
            book = pb2.Book()
            book.CopyFrom(request.book)
            book.name = f"{request.parent}/books/new"
            book.id = request.copies
            return book

        def UpdateBook(self, request, context):
            return request

        def Echo(self, request, context):
            return request

        def Download(self, request, context):
            return stubs.httpbody.HttpBody(content_type="text/plain", data=f"file {request.path}".encode())

        def Upload(self, request, context):
            return pb2.UploadReply(
                name=request.name, size=len(request.content.data), content_type=request.content.content_type
            )

        def ListBooks(self, request, context):
            for i in range(request.count):
                if i == 1:
                    release.wait(10)
                yield pb2.Book(name=f"{request.shelf}/{i}")
            if request.fail_code:
                context.abort(grpc.StatusCode(_code(request.fail_code)), "shelf on fire")

        def Fail(self, request, context):
            context.abort(grpc.StatusCode(_code(request.code)), request.message)
            return empty_pb2.Empty()

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
    stubs.grpc.add_ShopServicer_to_server(Shop(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", release
    server.stop(None)


def _code(number):
    import grpc

    return next(c.value for c in grpc.StatusCode if c.value[0] == number)


@pytest.fixture(scope="module")
def torii(module_spawn, tmp_path_factory, backend, stubs):

    directory = tmp_path_factory.mktemp("torii_transcoding")
    config = f"""
access_log: off
listeners:
  - name: protos
    address: 127.0.0.1:0
    json_transcoding:
      protos: [{SHOP_DIR / "shop.proto"}]
    routes:
      - match: {{ grpc_service: shop.v1.Shop }}
        cluster: shop
  - name: desc
    address: 127.0.0.1:0
    json_transcoding:
      descriptors: {stubs.descriptor_set}
      services: [shop.v1.Shop]
    routes:
      - match: {{ prefix: / }}
        cluster: shop
clusters:
  - name: shop
    endpoints: ["{backend[0]}"]
"""
    return run_torii(module_spawn, directory / "torii.yaml", config, ["protos", "desc"])


def request(address, method, path, body=None, headers=None):
    """urllib: (status, headers, parsed JSON or raw bytes)."""
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(f"http://{address}{path}", data=data, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            status, head, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, head, raw = e.code, e.headers, e.read()
    if head.get("content-type", "").startswith("application/json"):
        return status, head, json.loads(raw)
    return status, head, raw


@pytest.mark.parametrize("listener", ["protos", "desc"])
def test_mapping_through_curl_and_urllib(torii, listener):
    a = torii.listeners[listener]
    code, _, body = curl(f"http://{a}/v1/shelves/7/books/a%20b")
    assert code == 200, body
    book = json.loads(body)
    assert book == {"name": "shelves/7/books/a b", "title": "Title of shelves/7/books/a b", "id": "9007199254740993", "genre": "SCIENCE"}
    code, _, body = curl(f"http://{a}/v1/books/42")
    assert code == 200 and json.loads(body)["name"] == "42"

    status, _, v = request(a, "POST", "/v1/shelves/3/books?copies=5", '{"title":"Dune","writer":"Herbert","genre":1}')
    assert status == 200, v
    assert v == {"name": "shelves/3/books/new", "title": "Dune", "id": "5", "genre": "FICTION", "writer": "Herbert"}
    status, _, v = request(a, "PATCH", "/v1/shelves/1/books/2", '{"title":"T","tags":["a","b"]}')
    assert (status, v["name"], v["tags"]) == (200, "shelves/1/books/2", ["a", "b"])

    status, _, v = request(a, "GET", "/v1/echo/x?nested.label=n&nested.values=1&nested.values=2&tags=a&tags=b&genre=SCIENCE&flag=true")
    assert status == 200, v
    assert v == {"id": "x", "nested": {"label": "n", "values": ["1", "2"]}, "tags": ["a", "b"], "genre": "SCIENCE", "flag": True}
    status, _, v = request(a, "GET", "/v1/echo/lbl/deep/i9")
    assert v == {"id": "i9", "nested": {"label": "lbl"}}

    status, _, v = request(a, "GET", "/v1/titles/b1")
    assert (status, v) == (200, "Title of b1")
    status, head, raw = request(a, "GET", "/v1/files/a/b/c.txt")
    assert (status, head["content-type"], raw) == (200, "text/plain", b"file a/b/c.txt")
    status, _, v = request(a, "POST", "/v1/uploads/pic", b"\x00\x01\x02raw", {"content-type": "image/png"})
    assert (status, v) == (200, {"name": "pic", "size": "6", "contentType": "image/png"})


def test_errors_are_google_rpc_status(torii):
    a = torii.listeners["protos"]
    for code, http_status in [(3, 400), (5, 404), (7, 403), (16, 401), (8, 429), (14, 503), (4, 504), (12, 501), (9, 400), (10, 409)]:
        status, head, v = request(a, "POST", f"/v1/fail/{code}", json.dumps({"message": f"nope {code}"}))
        assert status == http_status, (code, v)
        assert head["content-type"] == "application/json"
        assert v == {"code": code, "message": f"nope {code}"}
    status, head, v = request(a, "POST", "/v1/shelves/3/books", '{"genre":"POETRY"}')
    assert (status, head["x-torii-error"], v["code"]) == (400, "transcoding_failed", 3)
    assert "genre" in v["message"]
    code, _, body = curl("-X", "POST", "--data", "{broken", f"http://{a}/v1/echo:run")
    assert code == 400 and json.loads(body)["code"] == 3


def test_streams_in_three_framings(torii, backend):
    a = torii.listeners["desc"]
    release = backend[1]
    # NDJSON, read line by line: the first book arrives while the server
    # holds the second.
    release.clear()
    host, port = a.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/v1/shelves/s/books:stream?count=3&failCode=9", headers={"accept": "application/x-ndjson"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type") == "application/x-ndjson"
    first = json.loads(resp.readline())
    assert first == {"name": "s/0"}
    release.set()
    rest = [json.loads(line) for line in resp.read().splitlines()]
    assert rest == [{"name": "s/1"}, {"name": "s/2"}, {"error": {"code": 9, "message": "shelf on fire"}}]
    conn.close()

    release.set()
    code, _, body = curl(f"http://{a}/v1/shelves/s/books:stream?count=2")
    assert code == 200 and json.loads(body) == [{"name": "s/0"}, {"name": "s/1"}]
    code, _, body = curl("-N", "-H", "accept: text/event-stream", f"http://{a}/v1/shelves/s/books:stream?count=2&fail_code=5")
    events = [e for e in body.split("\n\n") if e]
    assert events[:2] == ['data: {"name":"s/0"}', 'data: {"name":"s/1"}']
    assert events[2].startswith("event: error\ndata: ")
    assert json.loads(events[2].split("data: ", 1)[1]) == {"code": 5, "message": "shelf on fire"}


# --- ProtoJSON against json_format ------------------------------------------


def random_everything(pb2, rng):
    from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2, wrappers_pb2

    m = pb2.Everything()
    m.id = rng.choice(["", "a", "ünï", "x y/z"])
    m.i32 = rng.choice([0, 1, -1, 2**31 - 1, -(2**31)])
    m.i64 = rng.choice([0, -1, 2**63 - 1, -(2**63), 2**53 + 1, rng.randrange(-(2**63), 2**63)])
    m.u64 = rng.choice([0, 2**64 - 1, rng.randrange(2**64)])
    m.s32 = rng.randrange(-1000, 1000)
    m.f64 = rng.randrange(2**64)
    m.dbl = rng.choice([0.0, 1.5, -2.25, 1e300, 0.1, float(rng.randrange(10**6)) / 8])
    m.flt = rng.choice([0.0, 0.5, -3.25, 1024.0])
    m.flag = rng.random() < 0.5
    m.data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 9)))
    m.genre = rng.choice([0, 1, 2])
    m.tags.extend(rng.choice(["a", "b", "c\n", "é"]) for _ in range(rng.randrange(0, 3)))
    m.genres.extend(rng.choice([0, 1, 2]) for _ in range(rng.randrange(0, 3)))
    for _ in range(rng.randrange(0, 3)):
        m.counts[rng.choice(["k1", "k2", "k3"])] = rng.randrange(-(2**40), 2**40)
    if rng.random() < 0.6:
        m.nested.label = rng.choice(["", "n"])
        m.nested.size = rng.randrange(-5, 5)
        m.nested.values.extend(rng.randrange(-(2**62), 2**62) for _ in range(rng.randrange(0, 3)))
    for _ in range(rng.randrange(0, 2)):
        m.items.add(label="i", size=rng.randrange(3))
    choice = rng.randrange(3)
    if choice == 1:
        m.text = rng.choice(["", "t"])
    elif choice == 2:
        m.number = rng.choice([0, 2**60])
    if rng.random() < 0.5:
        m.maybe = rng.choice([0, 7])
    if rng.random() < 0.5:
        m.at.CopyFrom(timestamp_pb2.Timestamp(seconds=rng.randrange(0, 4 * 10**9), nanos=rng.choice([0, 500000000, 1000, 7])))
    if rng.random() < 0.5:
        m.took.CopyFrom(duration_pb2.Duration(seconds=rng.randrange(-1000, 1000), nanos=0))
    if rng.random() < 0.5:
        m.mask.paths.extend(rng.sample(["a", "b.c", "snake_case"], rng.randrange(1, 3)))
    if rng.random() < 0.5:
        m.meta.update({"k": rng.choice([1.5, "s", True, None]), "l": [1.0, "x"], "o": {"n": 2.0}})
    if rng.random() < 0.5:
        m.any_value.CopyFrom(struct_pb2.Value(string_value="v"))
    if rng.random() < 0.5:
        m.big.CopyFrom(wrappers_pb2.Int64Value(value=rng.choice([0, 2**62])))
    if rng.random() < 0.5:
        m.note.CopyFrom(wrappers_pb2.StringValue(value=rng.choice(["", "n"])))
    if rng.random() < 0.5:
        m.ok.CopyFrom(wrappers_pb2.BoolValue(value=rng.random() < 0.5))
    if rng.random() < 0.3:
        m.extra.Pack(duration_pb2.Duration(seconds=rng.randrange(100)))
    if rng.random() < 0.3:
        m.list.extend([1.0, "two", True])
    m.snake_case_name = rng.choice(["", "s"])
    return m


def as_numbers(value):
    """int64 strings as JSON numbers where the oracle wrote strings (the
    parser must accept both)."""
    if isinstance(value, dict):
        return {k: as_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_numbers(v) for v in value]
    if isinstance(value, str) and value.lstrip("-").isdigit() and abs(int(value)) < 2**53:
        return int(value)
    return value


@pytest.mark.parametrize("listener", ["protos", "desc"])
def test_protojson_matches_json_format(torii, stubs, listener):
    from google.protobuf import json_format

    a = torii.listeners[listener]
    rng = random.Random(f"{SEED}-{listener}")
    for case in range(CASES):
        m = random_everything(stubs.pb2, rng)
        expected = json_format.MessageToDict(m)
        # Three ways to write the request, all of which must parse to m.
        variant = case % 3
        if variant == 0:
            body = json_format.MessageToJson(m)
        elif variant == 1:
            body = json.dumps(json_format.MessageToDict(m, preserving_proto_field_name=True, use_integers_for_enums=True))
        else:
            body = json.dumps(as_numbers(expected))
        status, _, got = request(a, "POST", "/v1/echo:run", body)
        assert status == 200, (case, body, got)
        assert got == expected, f"case {case}: torii printed\n{got}\njson_format printed\n{expected}\nfor {body}"
        # And what torii printed parses back (json_format) to the message.
        back = stubs.pb2.Everything()
        json_format.ParseDict(got, back)
        assert back == m, f"case {case}"
