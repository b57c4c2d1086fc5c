//! The echo service and the misbehaving backends, tested directly (no proxy):
//! what every proxy test relies on them to do.

mod support;

use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{BinaryMetadataValue, MetadataValue};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use support::*;

fn req(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn unary_echoes_message_payload_and_request_headers() {
    let server = start_echo().await;
    let mut client = h2c_client(server.addr).await;
    let mut request = Request::new(EchoRequest {
        message: "hello".into(),
        payload: vec![1, 2, 3],
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", "192.0.2.7".parse().unwrap());
    let reply = client.unary(request).await.unwrap().into_inner();
    assert_eq!(reply.message, "hello");
    assert_eq!(reply.payload, vec![1, 2, 3]);
    assert_eq!(reply.received, 1);
    assert_eq!(reply.headers["x-forwarded-for"], "192.0.2.7");
    assert_eq!(reply.headers[":authority"], server.addr.to_string());
    assert_eq!(reply.headers[":path"], "/torii.echo.v1.Echo/Unary");
    assert_eq!(reply.headers["content-type"], "application/grpc");
    let stats = server.stats.snapshot();
    assert_eq!((stats.started, stats.completed, stats.cancelled), (1, 1, 0));
}

#[tokio::test]
async fn empty_unary_and_large_unary_interop_sizes() {
    let server = start_echo().await;
    let mut client = h2c_client(server.addr).await;
    let empty = client
        .unary(EchoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(empty.message.is_empty() && empty.payload.is_empty());
    let large = EchoRequest {
        payload: vec![7; 271_828],
        response_size: 314_159,
        ..Default::default()
    };
    let reply = client.unary(large).await.unwrap().into_inner();
    assert_eq!(reply.payload.len(), 314_159);
}

#[tokio::test]
async fn messages_over_four_mib_both_ways() {
    let server = start_echo().await;
    let mut client = h2c_client(server.addr).await;
    let five_mib = 5 * 1024 * 1024;
    let reply = client
        .unary(EchoRequest {
            payload: vec![42; five_mib],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.payload.len(), five_mib);
    assert!(reply.payload.iter().all(|b| *b == 42));
    let reply = client
        .unary(EchoRequest {
            response_size: 6 * 1024 * 1024,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.payload.len(), 6 * 1024 * 1024);
}

#[tokio::test]
async fn status_code_and_unicode_message() {
    let server = start_echo().await;
    let mut client = h2c_client(server.addr).await;
    let message = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
    let status = client
        .unary(EchoRequest {
            status_code: Code::Unknown as i32,
            status_message: message.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(status.message(), message);
    let status = client
        .unary(EchoRequest {
            status_code: Code::ResourceExhausted as i32,
            status_message: "too much".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::ResourceExhausted, "too much")
    );
    assert_eq!(
        server.stats.completed(),
        2,
        "a requested status is a completed call"
    );
}

fn with_echo_metadata<T>(msg: T) -> Request<T> {
    let mut request = Request::new(msg);
    request
        .metadata_mut()
        .insert("x-echo-initial", "first".parse().unwrap());
    request.metadata_mut().insert_bin(
        "x-echo-trailer-bin",
        BinaryMetadataValue::from_bytes(&[0xab, 0, 0xcd]),
    );
    request
}

fn assert_trailer(metadata: &tonic::metadata::MetadataMap) {
    let trailer = metadata
        .get_bin("x-echo-trailer-bin")
        .expect("the -bin trailer is echoed");
    assert_eq!(trailer.to_bytes().unwrap().as_ref(), &[0xab, 0, 0xcd]);
}

#[tokio::test]
async fn unary_echoes_x_echo_headers_and_bin_trailer() {
    let server = start_echo().await;
    let mut client = h2c_client(server.addr).await;
    let response = client.unary(with_echo_metadata(req("m"))).await.unwrap();
    assert_eq!(response.metadata().get("x-echo-initial").unwrap(), "first");
    // tonic merges unary trailers into the response metadata.
    assert_trailer(response.metadata());

    // An error before any message is trailers-only: the echo rides in it.
    let failing = EchoRequest {
        status_code: Code::Aborted as i32,
        ..Default::default()
    };
    let status = client.unary(with_echo_metadata(failing)).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_trailer(status.metadata());
    assert_eq!(status.metadata().get("x-echo-initial").unwrap(), "first");
}

#[tokio::test]
async fn interop_custom_metadata_names_are_echoed() {
    let server = start_echo().await;
    let mut client = h2c_client(server.addr).await;
    let mut request = Request::new(req("m"));
    request.metadata_mut().insert(
        "x-grpc-test-echo-initial",
        "test_initial_metadata_value".parse().unwrap(),
    );
    request.metadata_mut().insert_bin(
        "x-grpc-test-echo-trailing-bin",
        MetadataValue::from_bytes(&[0xab, 0xab, 0xab]),
    );
    let response = client.unary(request).await.unwrap();
    assert_eq!(
        response.metadata().get("x-grpc-test-echo-initial").unwrap(),
        "test_initial_metadata_value"
    );
    let trailer = response
        .metadata()
        .get_bin("x-grpc-test-echo-trailing-bin")
        .unwrap();
    assert_eq!(trailer.to_bytes().unwrap().as_ref(), &[0xab, 0xab, 0xab]);
}

#[tokio::test]
async fn server_stream_counts_then_ends_with_status() {
    let server = start_echo().await;
    let mut client = h2c_client(server.addr).await;
    let response = client
        .server_stream(with_echo_metadata(EchoRequest {
            message: "tick".into(),
            count: 3,
            sleep_ms: 5,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(response.metadata().get("x-echo-initial").unwrap(), "first");
    let mut stream = response.into_inner();
    for i in 1..=3 {
        let msg = stream.message().await.unwrap().unwrap();
        assert_eq!((msg.message.as_str(), msg.received), ("tick", i));
        assert_eq!(
            msg.headers.is_empty(),
            i > 1,
            "headers ride on the first message only"
        );
    }
    assert!(stream.message().await.unwrap().is_none());
    assert_trailer(&stream.trailers().await.unwrap().unwrap());

    let failing = EchoRequest {
        count: 2,
        status_code: Code::DataLoss as i32,
        status_message: "lost".into(),
        ..Default::default()
    };
    let mut stream = client.server_stream(failing).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().received, 1);
    assert_eq!(stream.message().await.unwrap().unwrap().received, 2);
    let status = stream.message().await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::DataLoss, "lost"));
}

#[tokio::test]
async fn empty_server_stream() {
    let server = start_echo().await;
    let mut client = h2c_client(server.addr).await;
    let mut stream = client
        .server_stream(req("none"))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_none());
}

#[tokio::test]
async fn client_stream_counts_messages_and_bytes() {
    let server = start_echo().await;
    let mut client = h2c_client(server.addr).await;
    let sizes = [27_182usize, 8, 1_828, 45_904];
    let messages: Vec<_> = sizes
        .iter()
        .map(|n| EchoRequest {
            payload: vec![1; *n],
            ..Default::default()
        })
        .collect();
    let request = with_echo_metadata(futures_util::stream::iter(messages));
    let response = client.client_stream(request).await.unwrap();
    assert_eq!(response.metadata().get("x-echo-initial").unwrap(), "first");
    assert_trailer(response.metadata());
    let reply = response.into_inner();
    assert_eq!(reply.received, 4);
    assert_eq!(reply.message, "74922");
    assert!(reply.payload.is_empty());
    assert_eq!(server.stats.messages_received(), 4);

    let empty = client
        .client_stream(futures_util::stream::iter(Vec::new()))
        .await
        .unwrap();
    assert_eq!(
        (empty.get_ref().received, empty.get_ref().message.as_str()),
        (0, "0")
    );
}

#[tokio::test]
async fn bidi_ping_pong_then_status_ends_the_call() {
    let server = start_echo().await;
    let mut client = h2c_client(server.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let response = client
        .bidi(with_echo_metadata(ReceiverStream::new(rx)))
        .await
        .unwrap();
    assert_eq!(response.metadata().get("x-echo-initial").unwrap(), "first");
    let mut inbound = response.into_inner();
    for i in 1..=3u64 {
        tx.send(req(&format!("ping {i}"))).await.unwrap();
        let pong = inbound.message().await.unwrap().unwrap();
        assert_eq!((pong.message, pong.received), (format!("ping {i}"), i));
    }
    tx.send(EchoRequest {
        status_code: Code::FailedPrecondition as i32,
        status_message: "stop".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let status = inbound.message().await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::FailedPrecondition, "stop")
    );
    assert_trailer(status.metadata());
    let stats = server
        .stats
        .wait_for(PATIENCE, |s| s.completed == 1)
        .await
        .unwrap();
    assert_eq!((stats.messages_received, stats.cancelled), (4, 0));
}

#[tokio::test]
async fn bidi_half_close_ends_ok() {
    let server = start_echo().await;
    let mut client = h2c_client(server.addr).await;
    let messages = futures_util::stream::iter(vec![req("a"), req("b")]);
    let mut inbound = client.bidi(messages).await.unwrap().into_inner();
    let replies: Vec<_> = (&mut inbound).map(|r| r.unwrap().message).collect().await;
    assert_eq!(replies, ["a", "b"]);
    server
        .stats
        .wait_for(PATIENCE, |s| s.completed == 1)
        .await
        .unwrap();
}

#[tokio::test]
async fn cancelled_unary_is_counted() {
    let server = start_echo().await;
    let mut client = h2c_client(server.addr).await;
    let call = tokio::spawn(async move {
        client
            .unary(EchoRequest {
                sleep_ms: 60_000,
                ..Default::default()
            })
            .await
    });
    server
        .stats
        .wait_for(PATIENCE, |s| s.started == 1)
        .await
        .unwrap();
    call.abort();
    let stats = server
        .stats
        .wait_for(PATIENCE, |s| s.cancelled == 1)
        .await
        .unwrap();
    assert_eq!(stats.completed, 0);
}

#[tokio::test]
async fn reset_bidi_after_first_response_is_counted() {
    let server = start_echo().await;
    let h2 = raw_h2(server.addr).await;
    let (response, mut body) =
        raw_grpc_call(h2, &server.addr.to_string(), "/torii.echo.v1.Echo/Bidi").await;
    body.send_data(grpc_frame(&req("first")), false).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut inbound = response.into_body();
    let mut buf = BytesMut::new();
    let first = loop {
        buf.extend_from_slice(&inbound.data().await.unwrap().unwrap());
        if let Some(msg) = take_grpc_frames::<EchoResponse>(&mut buf).pop() {
            break msg;
        }
    };
    assert_eq!(first.message, "first");
    body.send_reset(h2::Reason::CANCEL);
    let stats = server
        .stats
        .wait_for(PATIENCE, |s| s.cancelled == 1)
        .await
        .unwrap();
    assert_eq!((stats.started, stats.completed), (1, 0));
}

#[tokio::test]
async fn reset_sleeping_server_stream_is_counted() {
    let server = start_echo().await;
    let h2 = raw_h2(server.addr).await;
    let (response, mut body) = raw_grpc_call(
        h2,
        &server.addr.to_string(),
        "/torii.echo.v1.Echo/ServerStream",
    )
    .await;
    let slow = EchoRequest {
        count: 2,
        sleep_ms: 60_000,
        ..Default::default()
    };
    body.send_data(grpc_frame(&slow), true).unwrap();
    let mut inbound = response.await.unwrap().into_body();
    inbound.data().await.unwrap().unwrap();
    body.send_reset(h2::Reason::CANCEL);
    server
        .stats
        .wait_for(PATIENCE, |s| s.cancelled == 1)
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_method_and_service_are_unimplemented() {
    let server = start_echo().await;
    let channel = h2c_channel(server.addr).await.unwrap();
    for path in ["/torii.echo.v1.Echo/Nope", "/torii.nope.v1.Nope/Call"] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<EchoRequest, EchoResponse>::default();
        let status = grpc
            .unary(
                Request::new(req("x")),
                http::uri::PathAndQuery::from_static(path),
                codec,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{path}");
    }
}

#[tokio::test]
async fn health_reports_serving_and_follows_the_reporter() {
    let server = start_echo().await;
    let mut health = HealthClient::new(h2c_channel(server.addr).await.unwrap());
    for service in ["", "torii.echo.v1.Echo"] {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap();
        assert_eq!(
            reply.get_ref().status(),
            ServingStatus::Serving,
            "{service:?}"
        );
    }
    server
        .health
        .set_service_status(
            "torii.echo.v1.Echo",
            tonic_health::ServingStatus::NotServing,
        )
        .await;
    let reply = health
        .check(HealthCheckRequest {
            service: "torii.echo.v1.Echo".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().status(), ServingStatus::NotServing);
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn counts_connections() {
    let server = start_echo().await;
    for _ in 0..2 {
        let mut client = h2c_client(server.addr).await;
        client.unary(req("x")).await.unwrap();
    }
    assert_eq!(server.stats.connections(), 2);
}

#[tokio::test]
async fn shutdown_stops_listening_and_drop_aborts() {
    let server = start_echo().await;
    let addr = server.addr;
    let mut client = h2c_client(addr).await;
    client.unary(req("x")).await.unwrap();
    server.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let server = start_echo().await;
    let addr = server.addr;
    let mut client = h2c_client(addr).await;
    let stats = server.stats.clone();
    let call = tokio::spawn(async move {
        client
            .unary(EchoRequest {
                sleep_ms: 60_000,
                ..Default::default()
            })
            .await
    });
    stats.wait_for(PATIENCE, |s| s.started == 1).await.unwrap();
    drop(server);
    // Aborting closes the connection: the in-flight call fails and the
    // handler is dropped.
    let result = tokio::time::timeout(PATIENCE, call).await.unwrap().unwrap();
    assert!(result.is_err());
    stats
        .wait_for(PATIENCE, |s| s.cancelled == 1)
        .await
        .unwrap();
}

#[tokio::test]
async fn tls_echo_negotiates_h2_and_serves() {
    let pki = TestPki::new("torii test CA");
    let (addr, server) = spawn_tls_echo(&pki, false).await;
    assert!(server.tls && server.url().starts_with("https://"));
    let tls = TlsClient::new(pki.ca_cert_pem()).with_alpn(&["h2", "http/1.1"]);
    assert_eq!(
        tls.negotiated_alpn(addr).await.unwrap().as_deref(),
        Some("h2")
    );
    let mut client = tls.echo_client(addr).await.unwrap();
    let reply = client.unary(req("over tls")).await.unwrap().into_inner();
    assert_eq!(reply.message, "over tls");
    assert_eq!(reply.headers[":scheme"], "https");
    assert_eq!(
        reply.headers[":authority"],
        format!("localhost:{}", addr.port())
    );

    // By IP too: the certificate carries 127.0.0.1 as an IP SAN.
    let by_ip = TlsClient::new(pki.ca_cert_pem()).with_server_name("127.0.0.1");
    by_ip
        .echo_client(addr)
        .await
        .unwrap()
        .unary(req("ip"))
        .await
        .unwrap();
}

#[tokio::test]
async fn tls_client_rejects_untrusted_and_expired_servers() {
    let pki = TestPki::new("torii test CA");
    let (addr, _server) = spawn_tls_echo(&pki, false).await;
    let stranger = TestPki::new("someone else");
    let err = TlsClient::new(stranger.ca_cert_pem())
        .handshake(addr)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    let expired = pki.expired_cert(&["localhost"]);
    let config = server_config(&expired, None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let expired_server = serve_echo(listener, Some(config)).await;
    let err = TlsClient::new(pki.ca_cert_pem())
        .handshake(expired_server.addr)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

async fn mtls_unary(tls: &TlsClient, addr: std::net::SocketAddr) -> Result<EchoResponse, BoxError> {
    let mut client = tls.echo_client(addr).await?;
    Ok(client.unary(req("mtls")).await?.into_inner())
}

#[tokio::test]
async fn mtls_echo_requires_a_trusted_client_cert() {
    let pki = TestPki::new("torii test CA");
    let (addr, _server) = spawn_tls_echo(&pki, true).await;
    let spiffe = "spiffe://example.org/ns/default/sa/client";
    let good = pki.client_cert(&["client.example.com"], &[spiffe]);
    let tls = TlsClient::new(pki.ca_cert_pem());
    assert_eq!(
        mtls_unary(&tls.clone().with_client_cert(good), addr)
            .await
            .unwrap()
            .message,
        "mtls"
    );
    assert!(
        mtls_unary(&tls, addr).await.is_err(),
        "no client cert must be refused"
    );
    let untrusted = TestPki::untrusted_cert(&["client.example.com"], &[spiffe]);
    assert!(mtls_unary(&tls.clone().with_client_cert(untrusted), addr)
        .await
        .is_err());
    let expired = pki.expired_cert(&["client.example.com"]);
    assert!(mtls_unary(&tls.with_client_cert(expired), addr)
        .await
        .is_err());
}

#[tokio::test]
async fn certificates_write_to_files_and_load_back() {
    let dir = TempDir::new("certs");
    let pki = TestPki::new("torii test CA");
    let ca = pki.write_ca(dir.path(), "ca").unwrap();
    let (cert, key) = pki
        .server_cert(&["localhost"])
        .write_to(dir.path(), "server")
        .unwrap();
    assert!(std::fs::read_to_string(&ca)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(std::fs::read_to_string(&key)
        .unwrap()
        .contains("PRIVATE KEY"));
    server_config_from_files(&cert, &key).unwrap();
    let err = server_config_from_files(&key, &key).unwrap_err();
    assert!(err.to_string().contains("CERTIFICATE"), "{err}");
    let missing = server_config_from_files(&dir.path().join("nope.crt"), &key).unwrap_err();
    assert!(missing.to_string().contains("nope.crt"), "{missing}");
}

#[tokio::test]
async fn http1_only_backend_answers_http1_and_rejects_the_h2_preface() {
    let (addr, backend) = spawn_http1_only().await;
    let answer = raw_exchange(
        addr,
        b"GET /some/path HTTP/1.1\r\nhost: backend\r\nx-probe: 1\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["message"], HTTP1_GREETING);
    assert_eq!(body["path"], "/some/path");
    assert_eq!(body["headers"]["x-probe"], "1");

    let answer = raw_exchange(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(backend.connections(), 2);

    // A gRPC client gets an error, never a success.
    let failed = match h2c_channel(addr).await {
        Ok(channel) => echo_client(channel).unary(req("x")).await.is_err(),
        Err(_) => true,
    };
    assert!(failed);
}

#[tokio::test]
async fn refusing_backend_refuses() {
    let (addr, _backend) = spawn_refusing().await;
    let err = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn blackhole_accepts_and_never_answers() {
    let (addr, backend) = spawn_blackhole().await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await;
    assert!(read.is_err(), "the blackhole must not answer or close");
    let stats = backend.connections();
    assert_eq!(stats, 1);
    drop(backend);
    // Dropping the handle closes the held connection.
    let closed =
        tokio::time::timeout(PATIENCE, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
}

#[tokio::test]
async fn dying_backend_server_stream_sends_n_then_fails() {
    let (addr, _backend) = spawn_dies_mid_stream(3).await;
    let mut client = h2c_client(addr).await;
    let mut stream = client
        .server_stream(req("doomed"))
        .await
        .unwrap()
        .into_inner();
    for i in 1..=3 {
        let msg = stream.message().await.unwrap().unwrap();
        assert_eq!((msg.message.as_str(), msg.received), ("doomed", i));
    }
    let end = stream.message().await;
    assert!(end.is_err(), "the stream must not end OK: {end:?}");
}

#[tokio::test]
async fn dying_backend_bidi_answers_n_then_fails() {
    let (addr, _backend) = spawn_dies_mid_stream(2).await;
    let mut client = h2c_client(addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut inbound = client
        .bidi(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 1..=2 {
        tx.send(req("ping")).await.unwrap();
        assert_eq!(inbound.message().await.unwrap().unwrap().received, i);
    }
    let end = inbound.message().await;
    assert!(end.is_err(), "the stream must not end OK: {end:?}");
}

#[tokio::test]
async fn dying_backend_unary_dies_before_headers_and_keeps_listening() {
    let (addr, backend) = spawn_dies_mid_stream(1).await;
    for _ in 0..2 {
        let mut client = h2c_client(addr).await;
        let status = client.unary(req("x")).await.unwrap_err();
        assert_ne!(status.code(), Code::Ok);
    }
    assert_eq!(backend.connections(), 2);
}

#[tokio::test]
async fn many_dying_streams_always_deliver_n_first() {
    // The death must come after the messages are on the wire, every time.
    let (addr, _backend) = spawn_dies_mid_stream(5).await;
    for _ in 0..20 {
        let mut client = h2c_client(addr).await;
        let mut stream = client
            .server_stream(EchoRequest {
                payload: vec![9; 2000],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut got = 0;
        let end = loop {
            match stream.message().await {
                Ok(Some(_)) => got += 1,
                other => break other,
            }
        };
        assert_eq!(got, 5);
        assert!(end.is_err());
    }
}
