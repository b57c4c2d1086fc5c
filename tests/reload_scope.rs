//! What a reload changes is what runs: a new `admin.address` rebinds the
//! admin listener, a new `access_log` writes there, and `/config` never
//! shows a value that is not in effect. Bound addresses can be read while
//! a reload is under way.

mod proxy_support;
mod support;

use std::task::Poll;

use proxy_support::start;
use support::*;

fn config(admin: &str, access_log: &str, endpoint: &str) -> String {
    format!(
        r#"admin:
  address: {admin}
access_log: {access_log}
listeners:
  - name: plain
    address: 127.0.0.1:0
    routes:
      - match: {{ path: /version }}
        direct_response: {{ status: 200, body: "v1" }}
      - match: {{ prefix: / }}
        cluster: up
clusters:
  - name: up
    endpoints: ["{endpoint}"]
"#
    )
}

#[tokio::test]
async fn a_reload_moves_the_admin_listener_and_reopens_the_access_log() {
    let dir = TempDir::new("reload-scope");
    let log = dir.path().join("access.log");
    let path = dir.path().join("torii.yaml");
    let proxy = start(&config("127.0.0.1:0", "off", "127.0.0.1:1"), dir).await;
    let old_admin = proxy.running.admin_addr().expect("admin listener");
    assert!(admin_get(old_admin, "/ready")
        .await
        .starts_with("HTTP/1.1 200"));

    let new_yaml = config("127.0.0.2:0", &log.display().to_string(), "127.0.0.1:1");
    std::fs::write(&path, &new_yaml).unwrap();
    proxy.running.reload_file(&path).await.expect("reload");

    // The admin listener moved: the new address answers with the new
    // config, the old one is closed.
    let admin = proxy.running.admin_addr().expect("admin listener");
    assert_eq!(admin.ip().to_string(), "127.0.0.2", "{admin}");
    let shown = admin_get(admin, "/config").await;
    assert!(shown.contains("127.0.0.2:0"), "{shown}");
    assert!(shown.contains("access.log"), "{shown}");
    assert!(
        tokio::net::TcpStream::connect(old_admin).await.is_err(),
        "the old admin address is closed"
    );

    // The access log now goes to the file.
    let answer = raw_exchange(
        proxy.addr("plain"),
        b"GET /version HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(answer.ends_with("v1"), "{answer}");
    let deadline = std::time::Instant::now() + PATIENCE;
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("/version") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(text.contains("\"path\":\"/version\""), "{text:?}");

    // Back to off: no more lines there.
    std::fs::write(&path, config("127.0.0.2:0", "off", "127.0.0.1:1")).unwrap();
    proxy.running.reload_file(&path).await.expect("reload");
    let before = std::fs::read_to_string(&log).unwrap();
    let _ = raw_exchange(
        proxy.addr("plain"),
        b"GET /version HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(admin_get(admin, "/config")
        .await
        .contains("\"access_log\": \"off\""));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), before);
}

#[tokio::test]
async fn a_reload_whose_admin_address_cannot_be_bound_is_rejected() {
    let dir = TempDir::new("reload-admin-busy");
    let path = dir.path().join("torii.yaml");
    let proxy = start(&config("127.0.0.1:0", "off", "127.0.0.1:1"), dir).await;
    let admin = proxy.running.admin_addr().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap();
    std::fs::write(&path, config(&taken.to_string(), "off", "127.0.0.1:1")).unwrap();
    let err = proxy
        .running
        .reload_file(&path)
        .await
        .expect_err("the port is taken");
    assert!(err.contains("admin: cannot listen on"), "{err}");
    // Nothing changed, and /config says so.
    assert_eq!(proxy.running.admin_addr(), Some(admin));
    let shown = admin_get(admin, "/config").await;
    assert!(shown.contains("127.0.0.1:0"), "{shown}");
    assert!(!shown.contains(&taken.to_string()), "{shown}");
}

#[tokio::test]
async fn addresses_can_be_read_while_a_reload_is_under_way() {
    let dir = TempDir::new("reload-addr");
    let path = dir.path().join("torii.yaml");
    let proxy = start(&config("127.0.0.1:0", "off", "127.0.0.1:1"), dir).await;
    let before = proxy.addr("plain");
    // A cluster named by DNS makes the reload wait for its first lookup,
    // holding the reload's lock meanwhile.
    std::fs::write(&path, config("127.0.0.1:0", "off", "localhost:1")).unwrap();
    let mut reload = Box::pin(proxy.running.reload_file(&path));
    let first = futures_util::poll!(&mut reload);
    assert!(matches!(first, Poll::Pending), "the reload waits for DNS");
    assert_eq!(
        proxy.addr("plain"),
        before,
        "no panic, the address in effect"
    );
    assert_eq!(proxy.running.try_addr("plain"), Some(before));
    assert!(proxy.running.addrs().await.contains_key("plain"));
    reload.await.expect("reload");
    assert_eq!(proxy.addr("plain"), before);
}

#[tokio::test]
async fn a_reload_reopens_the_access_log_file_after_logrotate_moved_it() {
    let dir = TempDir::new("reload-logrotate");
    let log = dir.path().join("access.log");
    let path = dir.path().join("torii.yaml");
    let yaml = config("127.0.0.1:0", &log.display().to_string(), "127.0.0.1:1");
    let proxy = start(&yaml, dir).await;
    let get = |p: &'static str| {
        let addr = proxy.addr("plain");
        async move {
            raw_exchange(
                addr,
                format!("GET {p} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap()
        }
    };
    let wait_for = |file: std::path::PathBuf, what: &'static str| async move {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if text.contains(what) || std::time::Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    get("/before").await;
    assert!(wait_for(log.clone(), "before").await.contains("before"));
    // logrotate moves the file, then signals a reload.
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    std::fs::write(&path, &yaml).unwrap();
    proxy.running.reload_file(&path).await.expect("reload");
    get("/after").await;
    let text = wait_for(log.clone(), "after").await;
    assert!(
        text.contains("after"),
        "the new file gets the new lines: {text:?}"
    );
    assert!(!std::fs::read_to_string(&rotated).unwrap().contains("after"));
}
