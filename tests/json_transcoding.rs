//! gRPC-JSON transcoding (`json_transcoding:` on a listener), end to end:
//! an HTTP/1.1 client → torii → a gRPC backend (in-process, HTTP/2, built
//! on the same descriptors as dynamic messages) for tests/transcoding/
//! shop.proto: path templates (nested, `**`, custom verbs, additional
//! bindings), query parameters, `body: "*"` and `body: "field"`,
//! `response_body`, google.api.HttpBody both ways, errors as
//! google.rpc.Status, server streams in three framings flushed per
//! message, the admin table, and the load-time checks.

mod proxy_support;
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

use proxy_support::{start, Proxy};
use support::*;

fn shop_proto() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/transcoding/shop.proto")
}

fn pool() -> DescriptorPool {
    let source = torii::transcode::Source {
        protos: vec![shop_proto()],
        ..Default::default()
    };
    torii::transcode::Transcoder::load(&source).unwrap().pool
}

type Chunks = tokio_stream::wrappers::ReceiverStream<Result<Frame<Bytes>, Infallible>>;

/// The backend: answers each Shop method from its request (see
/// shop.proto); ListBooks sends its second book only once `next` is
/// notified, so a test can see the first arrive on its own.
struct Backend {
    pool: DescriptorPool,
    next: Arc<Notify>,
}

fn frame(msg: &DynamicMessage) -> Bytes {
    let bytes = msg.encode_to_vec();
    let mut b = BytesMut::new();
    b.put_u8(0);
    b.put_u32(bytes.len() as u32);
    b.put_slice(&bytes);
    b.freeze()
}

fn trailers(code: i32, message: &str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", code.to_string().parse().unwrap());
    if !message.is_empty() {
        t.insert("grpc-message", message.parse().unwrap());
    }
    t
}

impl Backend {
    fn msg(&self, name: &str) -> DynamicMessage {
        DynamicMessage::new(self.pool.get_message_by_name(name).unwrap())
    }

    /// A google.rpc.Status with one detail (a Duration), base64 as gRPC
    /// sends it in `grpc-status-details-bin` (unpadded).
    fn details(&self, code: i32, message: &str) -> String {
        use base64::Engine;
        let mut took = self.msg("google.protobuf.Duration");
        took.set_field_by_name("seconds", Value::I64(3));
        let mut any = self.msg("google.protobuf.Any");
        any.set_field_by_name(
            "type_url",
            Value::String("type.googleapis.com/google.protobuf.Duration".into()),
        );
        any.set_field_by_name("value", Value::Bytes(took.encode_to_vec().into()));
        let mut status = self.msg("google.rpc.Status");
        status.set_field_by_name("code", Value::I32(code));
        status.set_field_by_name("message", Value::String(message.into()));
        status.set_field_by_name("details", Value::List(vec![Value::Message(any)]));
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec())
    }

    async fn serve(self: Arc<Self>, req: Request<Incoming>) -> Response<StreamBody<Chunks>> {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let metadata = req.headers().clone();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let service = self.pool.get_service_by_name("shop.v1.Shop").unwrap();
        let m = service.methods().find(|m| m.name() == method).unwrap();
        let input = DynamicMessage::decode(m.input(), &body[5.min(body.len())..]).unwrap();
        let (tx, rx) = mpsc::channel(8);
        let head = Response::builder()
            .header("content-type", "application/grpc")
            .header("x-backend", "shop");
        let get = |name: &str| input.get_field_by_name(name).unwrap().into_owned();
        let send = |msgs: Vec<DynamicMessage>, code: i32, message: &str| {
            let tx = tx.clone();
            let t = trailers(code, message);
            tokio::spawn(async move {
                for m in msgs {
                    let _ = tx.send(Ok(Frame::data(frame(&m)))).await;
                }
                let _ = tx.send(Ok(Frame::trailers(t))).await;
            });
        };
        match method.as_str() {
            "GetBook" | "Title" => {
                let mut book = self.msg("shop.v1.Book");
                let name = get("name");
                book.set_field_by_name(
                    "title",
                    Value::String(format!("Title of {}", name.as_str().unwrap())),
                );
                book.set_field_by_name("name", name);
                book.set_field_by_name("id", Value::I64(9007199254740993));
                book.set_field_by_name("genre", Value::EnumNumber(2));
                book.set_field_by_name("author_name", Value::String("Ann".into()));
                // Metadata the client sent, echoed as a tag.
                if let Some(v) = metadata.get("x-trace") {
                    book.set_field_by_name(
                        "tags",
                        Value::List(vec![Value::String(v.to_str().unwrap().into())]),
                    );
                }
                send(vec![book], 0, "");
            }
            "CreateBook" => {
                let mut book = get("book").as_message().unwrap().clone();
                let parent = get("parent");
                book.set_field_by_name(
                    "name",
                    Value::String(format!("{}/books/new", parent.as_str().unwrap())),
                );
                let copies = get("copies").as_i32().unwrap();
                book.set_field_by_name("id", Value::I64(copies as i64));
                send(vec![book], 0, "");
            }
            "UpdateBook" | "Echo" => send(vec![input.clone()], 0, ""),
            "Download" => {
                let mut hb = self.msg("google.api.HttpBody");
                hb.set_field_by_name("content_type", Value::String("text/plain".into()));
                let path = get("path");
                hb.set_field_by_name(
                    "data",
                    Value::Bytes(Bytes::from(format!("file {}", path.as_str().unwrap()))),
                );
                send(vec![hb], 0, "");
            }
            "DownloadChunks" => {
                let path = get("path").as_str().unwrap().to_string();
                let chunks = (0..3)
                    .map(|i| {
                        let mut hb = self.msg("google.api.HttpBody");
                        hb.set_field_by_name("content_type", Value::String("text/csv".into()));
                        hb.set_field_by_name(
                            "data",
                            Value::Bytes(Bytes::from(format!("{path},{i}\n"))),
                        );
                        hb
                    })
                    .collect();
                send(chunks, 0, "");
            }
            "Upload" => {
                let content = get("content");
                let content = content.as_message().unwrap();
                let data = content
                    .get_field_by_name("data")
                    .unwrap()
                    .as_bytes()
                    .unwrap()
                    .clone();
                let ct = content
                    .get_field_by_name("content_type")
                    .unwrap()
                    .into_owned();
                let mut reply = self.msg("shop.v1.UploadReply");
                reply.set_field_by_name("name", get("name"));
                reply.set_field_by_name("size", Value::I64(data.len() as i64));
                reply.set_field_by_name("content_type", ct);
                send(vec![reply], 0, "");
            }
            "Fail" => {
                let code = get("code").as_i32().unwrap();
                let message = get("message").as_str().unwrap().to_string();
                // Trailers-only, as grpc-go and C-core servers fail.
                drop(tx);
                let mut resp = head.header("grpc-status", code.to_string());
                if message == "with details" {
                    resp = resp.header("grpc-status-details-bin", self.details(code, &message));
                }
                if !message.is_empty() {
                    resp = resp.header("grpc-message", message);
                }
                return resp
                    .body(StreamBody::new(
                        tokio_stream::wrappers::ReceiverStream::new(rx),
                    ))
                    .unwrap();
            }
            "ListBooks" => {
                let count = get("count").as_i32().unwrap();
                let fail = get("fail_code").as_i32().unwrap();
                if count == 0 {
                    // An empty stream or a failure before any message,
                    // trailers-only.
                    drop(tx);
                    return head
                        .header("grpc-status", fail.to_string())
                        .body(StreamBody::new(
                            tokio_stream::wrappers::ReceiverStream::new(rx),
                        ))
                        .unwrap();
                }
                let shelf = get("shelf").as_str().unwrap().to_string();
                let next = self.next.clone();
                let book = self.msg("shop.v1.Book");
                tokio::spawn(async move {
                    for i in 0..count {
                        if i == 1 {
                            next.notified().await;
                        }
                        let mut b = book.clone();
                        b.set_field_by_name("name", Value::String(format!("{shelf}/{i}")));
                        let _ = tx.send(Ok(Frame::data(frame(&b)))).await;
                    }
                    let t = if fail != 0 {
                        trailers(fail, "shelf on fire")
                    } else {
                        trailers(0, "")
                    };
                    let _ = tx.send(Ok(Frame::trailers(t))).await;
                });
            }
            other => panic!("unexpected method {other}"),
        }
        head.body(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap()
    }
}

async fn start_backend() -> (SocketAddr, Arc<Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = Arc::new(Notify::new());
    let backend = Arc::new(Backend {
        pool: pool(),
        next: next.clone(),
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let backend = backend.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let backend = backend.clone();
                    async move { Ok::<_, Infallible>(backend.serve(req).await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, next)
}

async fn proxy(backend: SocketAddr, extra: &str) -> Proxy {
    proxy_logging(backend, extra, "off").await
}

async fn proxy_logging(backend: SocketAddr, extra: &str, access_log: &str) -> Proxy {
    let dir = TempDir::new("transcode");
    let access_log = if access_log == "off" {
        "off".to_string()
    } else {
        dir.path().join(access_log).display().to_string()
    };
    let proto = dir.path().join("shop.proto");
    std::fs::copy(shop_proto(), &proto).unwrap();
    let yaml = format!(
        r#"
access_log: {access_log}
admin: {{ address: 127.0.0.1:0 }}
listeners:
  - name: rest
    address: 127.0.0.1:0
    json_transcoding:
      protos: [shop.proto]
{extra}
    routes:
      - match: {{ prefix: / }}
        cluster: shop
clusters:
  - name: shop
    endpoints: ["{backend}"]
"#
    );
    start(&yaml, dir).await
}

/// An HTTP/1.1 client whose response body is read as it arrives.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "shop.test");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("an answer within 10 s")
        .unwrap()
}

async fn text(resp: Response<Incoming>) -> (u16, HeaderMap, String) {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the body within 10 s")
        .unwrap()
        .to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn json(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, _, text) = text(call(addr, method, path, &[], body).await).await;
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (status, v)
}

#[tokio::test]
async fn path_templates_bindings_and_protojson() {
    let (backend, _) = start_backend().await;
    let p = proxy(backend, "").await;
    let a = p.addr("rest");

    let (s, v) = json(a, "GET", "/v1/shelves/7/books/a%20b", "").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "shelves/7/books/a b");
    assert_eq!(v["id"], "9007199254740993", "int64 as a string");
    assert_eq!(v["genre"], "SCIENCE", "enums by name");
    assert_eq!(v["writer"], "Ann", "json_name");
    // additional_bindings
    let (s, v) = json(a, "GET", "/v1/books/42", "").await;
    assert_eq!((s, v["name"].as_str()), (200, Some("42")));
    // A path no rule matches falls through to the routes (the backend
    // does not know it: it is not gRPC).
    let resp = call(a, "GET", "/v1/shelves/7", &[], "").await;
    assert_ne!(resp.status(), 200);

    // body: "field", with a path variable and a query parameter.
    let (s, v) = json(
        a,
        "POST",
        "/v1/shelves/3/books?copies=5",
        r#"{"title":"Dune","genre":"FICTION","writer":"Herbert","id":"12"}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "shelves/3/books/new");
    assert_eq!(v["id"], "5");
    assert_eq!(v["writer"], "Herbert");
    assert_eq!(v["genre"], "FICTION");

    // body: "*" on PATCH, the path's field overriding the body's.
    let (s, v) = json(
        a,
        "PATCH",
        "/v1/shelves/1/books/2",
        r#"{"name":"ignored","title":"T","tags":["a","b"],"genre":1}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "shelves/1/books/2");
    assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(v["genre"], "FICTION", "enum numbers are accepted");

    // Query parameters: nested, repeated, every kind of value.
    let (s, v) = json(
        a,
        "GET",
        "/v1/echo/x1?nested.label=n&nested.values=1&nested.values=-2&tags=a&tags=b\
         &flag=true&genre=SCIENCE&genres=1&genres=FICTION&i64=-9007199254740993\
         &dbl=1.5&data=aGk%3D&at=2024-01-02T03:04:05Z&took=1.5s&big=7&note=hey&maybe=0\
         &snakeCaseName=j",
        "",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], "x1");
    assert_eq!(v["nested"]["label"], "n");
    assert_eq!(v["nested"]["values"], serde_json::json!(["1", "-2"]));
    assert_eq!(v["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(v["flag"], true);
    assert_eq!(v["genres"], serde_json::json!(["FICTION", "FICTION"]));
    assert_eq!(v["i64"], "-9007199254740993");
    assert_eq!(v["dbl"], 1.5);
    assert_eq!(v["data"], "aGk=");
    assert_eq!(v["at"], "2024-01-02T03:04:05Z");
    assert_eq!(v["took"], "1.500s");
    assert_eq!(v["big"], "7");
    assert_eq!(v["note"], "hey");
    assert_eq!(v["maybe"], 0, "proto3 optional: present though zero");
    assert_eq!(v["snakeCaseName"], "j");
    // Two variables, one nested, and a custom verb on POST body "*".
    let (s, v) = json(a, "GET", "/v1/echo/lbl/deep/i9", "").await;
    assert_eq!(
        (s, &v["nested"]["label"], &v["id"]),
        (200, &"lbl".into(), &"i9".into())
    );
    let every = r#"{"id":"z","u64":"18446744073709551615","s32":-3,"f64":"5","flt":0.5,
        "counts":{"a":"1","b":2},"items":[{"label":"i"}],"number":"77",
        "mask":"a.b,cD","meta":{"k":[1,"x",null,true]},"anyValue":{"n":1},
        "ok":false,"list":[1,2],
        "extra":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"2s"}}"#;
    let (s, v) = json(a, "POST", "/v1/echo:run", every).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["u64"], "18446744073709551615");
    assert_eq!(v["counts"], serde_json::json!({"a": "1", "b": "2"}));
    assert_eq!(v["number"], "77", "oneof");
    assert_eq!(v["mask"], "a.b,cD");
    assert_eq!(v["meta"], serde_json::json!({"k": [1.0, "x", null, true]}));
    assert_eq!(v["ok"], false, "a wrapper is present even when false");
    assert_eq!(v["extra"]["value"], "2s");
    assert!(v.get("maybe").is_none(), "unset optional is absent");
    assert!(v.get("i32").is_none(), "defaults are left out by default");
}

#[tokio::test]
async fn print_options_response_body_and_http_body() {
    let (backend, _) = start_backend().await;
    let p = proxy(
        backend,
        "      print: { emit_defaults: true, proto_field_names: true }",
    )
    .await;
    let a = p.addr("rest");
    let (s, v) = json(a, "GET", "/v1/echo/q", "").await;
    assert_eq!(s, 200);
    assert_eq!(v["i32"], 0, "emit_defaults");
    assert_eq!(v["snake_case_name"], "", "proto_field_names");
    assert_eq!(v["tags"], serde_json::json!([]));

    // response_body: the title alone.
    let (s, v) = json(a, "GET", "/v1/titles/b1", "").await;
    assert_eq!((s, v), (200, serde_json::json!("Title of b1")));

    // google.api.HttpBody out: raw bytes, its content type; `**` decoded.
    let (s, h, body) = text(call(a, "GET", "/v1/files/a/b%20c/d.txt", &[], "").await).await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(body, "file a/b c/d.txt");
    // A stream of them: the first one's content type, the data back to back.
    let (s, h, body) = text(call(a, "GET", "/v1/chunks/x.csv", &[], "").await).await;
    assert_eq!(s, 200);
    assert_eq!(h["content-type"], "text/csv");
    assert_eq!(body, "x.csv,0\nx.csv,1\nx.csv,2\n");
    // …and in, as the body field.
    let resp = call(
        a,
        "POST",
        "/v1/uploads/pic",
        &[("content-type", "image/png")],
        "\u{1}\u{2}\u{3}raw",
    )
    .await;
    let (s, _, body) = text(resp).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["name"], "pic");
    assert_eq!(v["size"], "6");
    assert_eq!(v["content_type"], "image/png");

    // Metadata: allowed request headers go upstream, response metadata comes back.
    let resp = call(
        a,
        "GET",
        "/v1/books/m",
        &[("x-trace", "t-1"), ("cookie", "c")],
        "",
    )
    .await;
    let (s, h, body) = text(resp).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-backend"], "shop");
    assert!(body.contains("t-1"), "{body}");

    // The admin table.
    let admin = p.running.admin_addr().expect("admin listener");
    let table = admin_get(admin, "/transcoding").await;
    assert!(table.contains("/v1/{name=shelves/*/books/*}"), "{table}");
    assert!(table.contains("/shop.v1.Shop/GetBook"), "{table}");
}

#[tokio::test]
async fn errors_are_google_rpc_status() {
    let (backend, _) = start_backend().await;
    let p = proxy(backend, "").await;
    let a = p.addr("rest");
    for (code, http) in [
        (3, 400),
        (5, 404),
        (7, 403),
        (16, 401),
        (8, 429),
        (14, 503),
        (4, 504),
        (12, 501),
        (13, 500),
        (6, 409),
    ] {
        let body = format!(r#"{{"message":"nope {code}"}}"#);
        let (s, v) = json(a, "POST", &format!("/v1/fail/{code}"), &body).await;
        assert_eq!(s, http, "code {code}: {v}");
        assert_eq!(v["code"], code);
        assert_eq!(v["message"], format!("nope {code}"));
    }
    // The upstream's error details, from grpc-status-details-bin.
    let (s, v) = json(a, "POST", "/v1/fail/9", r#"{"message":"with details"}"#).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        v["details"],
        serde_json::json!([{"@type": "type.googleapis.com/google.protobuf.Duration", "value": "3s"}])
    );
    // Metrics count the HTTP status the client got.
    let count = p.metric(
        "torii_requests_total",
        &[
            "grpc_method=\"Fail\"",
            "grpc_status=\"NOT_FOUND\"",
            "http_status=\"404\"",
            "protocol=\"json\"",
        ],
    );
    assert_eq!(count, Some(1.0), "{}", p.metrics());
    // JSON that does not fit the message: transcoding_failed, naming the field.
    let resp = call(
        a,
        "POST",
        "/v1/shelves/3/books",
        &[],
        r#"{"genre":"POETRY"}"#,
    )
    .await;
    let (s, h, body) = text(resp).await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(h["x-torii-error"], "transcoding_failed");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], 3);
    assert!(v["message"].as_str().unwrap().contains("genre"), "{v}");
    let (s, v) = json(a, "POST", "/v1/echo:run", r#"{"nested":{"size":"big"}}"#).await;
    assert_eq!(s, 400);
    assert!(
        v["message"].as_str().unwrap().contains("nested.size"),
        "{v}"
    );
    let (s, v) = json(a, "GET", "/v1/echo/x?flag=maybe", "").await;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("flag"), "{v}");
    let (s, v) = json(a, "POST", "/v1/echo:run", "{not json").await;
    assert_eq!((s, v["code"].as_i64()), (400, Some(3)));

    // torii's own failures, in the same shape: the upstream is gone.
    drop(p);
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let p = proxy(dead, "").await;
    let (s, v) = json(p.addr("rest"), "GET", "/v1/books/1", "").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["code"], 14);
    assert!(v["message"].as_str().unwrap().len() > 10);
}

/// Reads the body until `want` has arrived (bounded), returning all of it.
async fn read_until(body: &mut Incoming, got: &mut Vec<u8>, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(got).contains(want) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{want:?} did not arrive; got {:?}",
                    String::from_utf8_lossy(got)
                )
            });
        match frame {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    got.extend_from_slice(d.chunk());
                }
            }
            _ => panic!(
                "the body ended before {want:?}: {:?}",
                String::from_utf8_lossy(got)
            ),
        }
    }
}

#[tokio::test]
async fn server_streams_in_three_framings_flushed_per_message() {
    let (backend, next) = start_backend().await;
    let p = proxy(backend, "").await;
    let a = p.addr("rest");
    let cases = [
        (None, "application/json"),
        (Some("application/x-ndjson"), "application/x-ndjson"),
        (Some("text/event-stream"), "text/event-stream"),
    ];
    for (accept, ct) in cases {
        for fail in [0, 9] {
            let headers: Vec<(&str, &str)> = accept.iter().map(|v| ("accept", *v)).collect();
            let path = format!("/v1/shelves/s1/books:stream?count=2&fail_code={fail}");
            let resp = call(a, "GET", &path, &headers, "").await;
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["content-type"], ct);
            let mut body = resp.into_body();
            let mut got = Vec::new();
            // The first book arrives while the backend holds the second.
            read_until(&mut body, &mut got, "s1/0").await;
            assert!(!String::from_utf8_lossy(&got).contains("s1/1"));
            next.notify_one();
            while let Some(f) = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("the stream ends")
            {
                if let Ok(d) = f.unwrap().into_data() {
                    got.extend_from_slice(&d);
                }
            }
            let text = String::from_utf8(got).unwrap();
            let items: Vec<serde_json::Value> = match accept {
                None => serde_json::from_str::<Vec<serde_json::Value>>(&text)
                    .unwrap_or_else(|e| panic!("{e}: {text}")),
                Some("application/x-ndjson") => text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect(),
                _ => text
                    .split("\n\n")
                    .filter(|e| !e.is_empty())
                    .map(|e| {
                        let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                        let v: serde_json::Value = serde_json::from_str(data).unwrap();
                        if e.starts_with("event: error") {
                            serde_json::json!({ "error": v })
                        } else {
                            v
                        }
                    })
                    .collect(),
            };
            assert_eq!(items[0]["name"], "s1/0", "{text}");
            assert_eq!(items[1]["name"], "s1/1", "{text}");
            if fail == 0 {
                assert_eq!(items.len(), 2, "{text}");
            } else {
                assert_eq!(items.len(), 3, "{text}");
                assert_eq!(items[2]["error"]["code"], fail, "{text}");
                assert_eq!(items[2]["error"]["message"], "shelf on fire");
            }
        }
    }
}

#[tokio::test]
async fn an_empty_stream_is_an_empty_framing() {
    let (backend, _) = start_backend().await;
    let p = proxy(backend, "").await;
    let a = p.addr("rest");
    let (s, h, body) =
        text(call(a, "GET", "/v1/shelves/e/books:stream?count=0", &[], "").await).await;
    assert_eq!(
        (s, h["content-type"].to_str().unwrap(), body.as_str()),
        (200, "application/json", "[]")
    );
    let accept = [("accept", "application/x-ndjson")];
    let (s, _, body) =
        text(call(a, "GET", "/v1/shelves/e/books:stream?count=0", &accept, "").await).await;
    assert_eq!((s, body.as_str()), (200, ""));
}

#[tokio::test]
async fn a_deadline_ends_a_stream_with_an_error_element() {
    let (backend, next) = start_backend().await;
    let p = proxy(backend, "").await;
    let a = p.addr("rest");
    // The backend holds the second book until told: the deadline passes.
    let accept = [("accept", "application/x-ndjson"), ("grpc-timeout", "300m")];
    let path = "/v1/shelves/d/books:stream?count=2";
    let (s, _, body) = text(call(a, "GET", path, &accept, "").await).await;
    next.notify_one();
    assert_eq!(s, 200);
    let lines: Vec<serde_json::Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["name"], "d/0", "{body}");
    assert_eq!(lines[1]["error"]["code"], 4, "{body}");
    assert_eq!(lines.len(), 2, "{body}");
}

/// The first line of the proxy's access log, once the writer wrote it.
async fn first_log_line(p: &Proxy) -> serde_json::Value {
    let log = p.dir.path().join("access.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(l) = text.lines().next() {
            return serde_json::from_str(l).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "no access log line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_access_log_says_json() {
    let (backend, _) = start_backend().await;
    let p = proxy_logging(backend, "", "access.log").await;
    let (s, _) = json(p.addr("rest"), "GET", "/v1/books/9", "").await;
    assert_eq!(s, 200);
    let line = first_log_line(&p).await;
    assert_eq!(line["protocol"], "json", "{line}");
    assert_eq!(line["path"], "/v1/books/9", "{line}");
    assert_eq!(line["grpc_method"], "GetBook", "{line}");
    assert_eq!(line["http_status"], 200, "{line}");
}

/// A server stream the upstream fails at once (Trailers-Only) is answered
/// like a unary call: google.rpc.Status with the mapped HTTP status, and
/// the access log and metrics say the status the client got.
#[tokio::test]
async fn a_stream_failed_at_once_gets_the_mapped_status_everywhere() {
    let (backend, _) = start_backend().await;
    let p = proxy_logging(backend, "", "access.log").await;
    let (s, _, body) = text(
        call(
            p.addr("rest"),
            "GET",
            "/v1/shelves/e/books:stream?count=0&fail_code=5",
            &[],
            "",
        )
        .await,
    )
    .await;
    assert_eq!(s, 404, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], 5, "{body}");
    let line = first_log_line(&p).await;
    assert_eq!(line["http_status"], 404, "{line}");
    assert_eq!(line["grpc_status"], 5, "{line}");
    let metrics = p.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("torii_requests_total{")
                && l.contains("http_status=\"404\"")
                && l.contains("protocol=\"json\"")),
        "{metrics}"
    );
}

fn check(dir: &TempDir, yaml: &str) -> (bool, String) {
    let file = dir.path().join("torii.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = torii_check(&file);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn bad_rules_are_refused_at_load_with_the_key_position() {
    let dir = TempDir::new("transcode-check");
    let head = r#"syntax = "proto3";
package bad.v1;
import "google/api/annotations.proto";
message Req { string name = 1; Inner inner = 2; repeated string tags = 3; }
message Inner { string x = 1; }
"#;
    let cases = [
        (
            r#"service S { rpc A(Req) returns (Req) { option (google.api.http) = { get: "/v1/{nam}" }; } }"#,
            "has no field \"nam\" (did you mean \"name\"?)",
        ),
        (
            r#"service S { rpc A(Req) returns (Req) { option (google.api.http) = { get: "/v1/{inner}" }; } }"#,
            "the path field inner is a message (bad.v1.Inner)",
        ),
        (
            r#"service S { rpc A(Req) returns (Req) { option (google.api.http) = { get: "/v1/{tags}" }; } }"#,
            "the path field tags is repeated",
        ),
        (
            r#"service S {
  rpc A(Req) returns (Req) { option (google.api.http) = { get: "/v1/{name}" }; }
  rpc B(Req) returns (Req) { option (google.api.http) = { get: "/v1/fixed" }; }
}"#,
            "GET /v1/fixed (bad.v1.S.B) overlaps GET /v1/{name} (bad.v1.S.A)",
        ),
        (
            r#"service S { rpc A(Req) returns (Req) { option (google.api.http) = { post: "/v1/a" body: "nope" }; } }"#,
            "body \"nope\" is not a field of bad.v1.Req",
        ),
    ];
    for (service, want) in cases {
        std::fs::write(dir.path().join("bad.proto"), format!("{head}{service}")).unwrap();
        let (ok, out) = check(
            &dir,
            "listeners:\n  - name: rest\n    address: 127.0.0.1:0\n    json_transcoding:\n      protos: [bad.proto]\n    routes:\n      - match: { prefix: / }\n        cluster: c\nclusters:\n  - name: c\n    endpoints: [127.0.0.1:1]\n",
        );
        assert!(!ok, "{out}");
        assert!(out.contains(want), "want {want:?} in:\n{out}");
        assert!(
            out.contains("torii.yaml:4:5:"),
            "the json_transcoding key's position:\n{out}"
        );
    }
    // A descriptors file that is not one.
    std::fs::write(dir.path().join("api.pb"), b"\xff\xff not a descriptor set").unwrap();
    let (ok, out) = check(
        &dir,
        "listeners:\n  - name: rest\n    address: 127.0.0.1:0\n    json_transcoding: { descriptors: api.pb, services: [x.Y] }\n    routes:\n      - match: { prefix: / }\n        cluster: c\nclusters:\n  - name: c\n    endpoints: [127.0.0.1:1]\n",
    );
    assert!(
        !ok && out.contains("is not a usable FileDescriptorSet"),
        "{out}"
    );
}

#[tokio::test]
async fn reload_reads_the_protos_again_and_a_bad_one_keeps_the_running_rules() {
    let (backend, _) = start_backend().await;
    let p = proxy(backend, "").await;
    let a = p.addr("rest");
    let config = p.dir.path().join("torii.yaml");
    let proto = p.dir.path().join("shop.proto");
    let original = std::fs::read_to_string(&proto).unwrap();

    std::fs::write(&proto, original.replace("rpc GetBook", "rpc GetBook(")).unwrap();
    let err = p.running.reload_file(&config).await.unwrap_err();
    assert!(err.contains("json_transcoding"), "{err}");
    let (s, v) = json(a, "GET", "/v1/books/1", "").await;
    assert_eq!(
        (s, &v["name"]),
        (200, &"1".into()),
        "the old rules still serve"
    );

    std::fs::write(
        &proto,
        original.replace("/v1/books/{name}", "/v2/books/{name}"),
    )
    .unwrap();
    p.running
        .reload_file(&config)
        .await
        .expect("a good proto reloads");
    let (s, v) = json(a, "GET", "/v2/books/7", "").await;
    assert_eq!((s, &v["name"]), (200, &"7".into()), "the new rule serves");
    let resp = call(a, "GET", "/v1/books/7", &[], "").await;
    assert_ne!(resp.status(), 200, "the old rule is gone");
}

/// torii's own refusals on transcoded routes — authentication,
/// authorization and rate limits — reach a REST client as the same
/// google.rpc.Status JSON an upstream error would, with the mapped HTTP
/// status and the headers HTTP clients act on.
#[tokio::test]
async fn auth_and_rate_limit_refusals_are_google_rpc_status() {
    let (backend, _) = start_backend().await;
    let dir = TempDir::new("transcode-refusals");
    std::fs::copy(shop_proto(), dir.path().join("shop.proto")).unwrap();
    std::fs::write(
        dir.path().join("keys.yaml"),
        "acme: k-acme-0123456789abcdef\nglobex: k-globex-0123456789abcdef\n",
    )
    .unwrap();
    let yaml = format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
api_keys:
  - {{ name: partners, file: keys.yaml }}
listeners:
  - name: rest
    address: 127.0.0.1:0
    json_transcoding:
      protos: [shop.proto]
    routes:
      - name: echo
        match: {{ prefix: /shop.v1.Shop/Echo }}
        cluster: shop
        auth: {{ api_key: [partners] }}
      - name: books
        match: {{ prefix: /shop.v1.Shop/GetBook }}
        cluster: shop
        auth:
          api_key: [partners]
          allow: [{{ api_keys: [acme] }}]
        rate_limit: {{ requests_per_second: 0.01, burst: 1 }}
clusters:
  - name: shop
    endpoints: ["{backend}"]
"#
    );
    let p = start(&yaml, dir).await;
    let a = p.addr("rest");
    let ask = |path: &'static str, key: Option<&'static str>| async move {
        let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
        let (s, h, body) = text(call(a, "GET", path, &headers, "").await).await;
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        (s, h, v)
    };
    // No key: UNAUTHENTICATED, 401.
    let (s, h, v) = ask("/v1/echo/x", None).await;
    assert_eq!((s, v["code"].as_i64()), (401, Some(16)), "{v}");
    assert_eq!(h["x-torii-error"], "unauthenticated");
    assert_eq!(h["content-type"], "application/json");
    assert!(v["message"].as_str().unwrap().contains("x-api-key"), "{v}");
    // A wrong key is told apart from a missing one.
    let (s, _, v) = ask("/v1/echo/x", Some("k-wrong-0123456789abcdef")).await;
    assert_eq!((s, v["code"].as_i64()), (401, Some(16)), "{v}");
    assert_ne!(
        v["message"],
        ask("/v1/echo/x", None).await.2["message"],
        "missing and wrong keys say the same"
    );
    let (s, _, v) = ask("/v1/echo/x", Some("k-globex-0123456789abcdef")).await;
    assert_eq!(s, 200, "{v}");
    // A known caller the route does not allow: PERMISSION_DENIED, 403,
    // naming the caller and the route.
    let (s, h, v) = ask("/v1/books/1", Some("k-globex-0123456789abcdef")).await;
    assert_eq!((s, v["code"].as_i64()), (403, Some(7)), "{v}");
    assert_eq!(h["x-torii-error"], "permission_denied");
    let words = v["message"].as_str().unwrap();
    assert!(words.contains("globex") && words.contains("books"), "{v}");
    // The allowed caller: one request, then the bucket is empty:
    // RESOURCE_EXHAUSTED, 429, with retry-after.
    let (s, _, v) = ask("/v1/books/1", Some("k-acme-0123456789abcdef")).await;
    assert_eq!(s, 200, "{v}");
    let (s, h, v) = ask("/v1/books/1", Some("k-acme-0123456789abcdef")).await;
    assert_eq!((s, v["code"].as_i64()), (429, Some(8)), "{v}");
    assert_eq!(h["x-torii-error"], "rate_limited");
    let retry_after: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=100).contains(&retry_after),
        "retry-after {retry_after}"
    );
    assert!(!h.contains_key("grpc-retry-pushback-ms"), "{h:?}");
    // Counted like every refusal, with the status the client got.
    let refused = p.metric(
        "torii_requests_total",
        &["http_status=\"429\"", "protocol=\"json\""],
    );
    assert_eq!(refused, Some(1.0), "{}", p.metrics());
}
