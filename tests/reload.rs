//! Hot reload under load: routes change, listeners come and go, and no
//! call fails, no stream breaks; a broken config changes nothing.

mod proxy_support;
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use proxy_support::start;
use support::*;

fn config(echo: std::net::SocketAddr, version: &str, extra_listener: bool) -> String {
    let extra = if extra_listener {
        "  - name: extra\n    address: 127.0.0.1:0\n    routes: [{ direct_response: { status: 200, body: extra } }]\n"
    } else {
        ""
    };
    format!(
        r#"access_log: off
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ path: /version }}
        direct_response: {{ status: 200, body: "{version}" }}
      - match: {{ grpc_service: torii.echo.v1.Echo }}
        cluster: echo
{extra}clusters:
  - name: echo
    endpoints: ["{echo}"]
"#
    )
}

async fn version(addr: std::net::SocketAddr) -> String {
    let r = raw_exchange(
        addr,
        b"GET /version HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    r.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

#[tokio::test]
async fn reload_under_load_keeps_every_call_and_stream() {
    let echo = start_echo().await;
    let dir = TempDir::new("reload");
    let path = dir.path().join("torii.yaml");
    let proxy = start(&config(echo.addr, "v1", false), dir).await;
    let addr = proxy.addr("plain");
    assert_eq!(version(addr).await, "v1");

    // Continuous unary calls from four clients.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let mut client = h2c_client(addr).await;
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            // Bounded in count as well as by the stop flag.
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match client.unary(EchoRequest::default()).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("call failed during reload: {e:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    // Open bidi streams that stay open across the reloads.
    let mut streams = Vec::new();
    for i in 0..20 {
        let mut client = h2c_client(addr).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(EchoRequest {
            message: format!("{i}"),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut s = client
            .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        assert!(s.message().await.unwrap().is_some());
        streams.push((tx, s));
    }

    // Reload: new route content, a new listener.
    std::fs::write(&path, config(echo.addr, "v2", true)).unwrap();
    proxy.running.reload_file(&path).await.expect("reload v2");
    assert_eq!(
        version(addr).await,
        "v2",
        "the same port serves the new routes"
    );
    let extra = proxy.running.addrs().await["extra"];
    assert_eq!(version(extra).await, "extra");

    // A broken file is rejected; nothing changes.
    std::fs::write(&path, "listeners: [ { name: plain, address: nope } ]\n").unwrap();
    let err = proxy
        .running
        .reload_file(&path)
        .await
        .expect_err("broken config");
    assert!(err.contains("nope"), "{err}");
    assert_eq!(version(addr).await, "v2");
    assert_eq!(
        proxy.metric("torii_config_reloads_total", &["result=\"error\""]),
        Some(1.0)
    );

    // Remove the extra listener again.
    std::fs::write(&path, config(echo.addr, "v3", false)).unwrap();
    proxy.running.reload_file(&path).await.expect("reload v3");
    assert_eq!(version(addr).await, "v3");
    assert!(!proxy.running.addrs().await.contains_key("extra"));
    assert_eq!(
        proxy.metric("torii_config_reloads_total", &["result=\"success\""]),
        Some(2.0)
    );

    // Every stream still works after three reloads, and ends OK.
    for (i, (tx, mut s)) in streams.into_iter().enumerate() {
        tx.send(EchoRequest {
            message: format!("after {i}"),
            ..Default::default()
        })
        .await
        .unwrap();
        let m = s.message().await.expect("stream intact").expect("a reply");
        assert_eq!(m.message, format!("after {i}"));
        drop(tx);
        assert!(s.message().await.expect("ends OK").is_none());
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "calls failed during reloads"
    );
}

#[tokio::test]
async fn unchanged_clusters_keep_their_connections() {
    let echo = start_echo().await;
    let dir = TempDir::new("reload-keep");
    let path = dir.path().join("torii.yaml");
    let proxy = start(&config(echo.addr, "v1", false), dir).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    client.unary(EchoRequest::default()).await.unwrap();
    std::fs::write(&path, config(echo.addr, "v2", false)).unwrap();
    proxy.running.reload_file(&path).await.unwrap();
    client.unary(EchoRequest::default()).await.unwrap();
    assert_eq!(
        echo.stats.snapshot().connections,
        1,
        "the upstream connection survived the reload"
    );
}
