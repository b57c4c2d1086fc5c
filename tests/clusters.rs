//! Clusters: DNS-named endpoints, load balancing and the connections kept
//! to endpoints.

mod proxy_support;
mod support;

use proxy_support::{front, front_with, start, tls_front};
use support::*;

#[tokio::test]
async fn dns_named_endpoint_localhost() {
    let echo = start_echo().await;
    let proxy = front(&[format!("localhost:{}", echo.addr.port())]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    // localhost may resolve to ::1 first, where nothing listens: torii
    // must fail over to 127.0.0.1 without the client noticing.
    for _ in 0..5 {
        let r = client
            .unary(EchoRequest::default())
            .await
            .expect("through a DNS-named endpoint");
        assert!(r.get_ref().headers.contains_key("x-request-id"));
    }
}

#[tokio::test]
async fn unresolvable_name_is_unavailable_with_dns_reason() {
    let proxy = front(&["no-such-host.invalid:9090".to_string()]).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    let err = client
        .unary(EchoRequest::default())
        .await
        .expect_err("no address");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        err.metadata().get("x-torii-error").unwrap(),
        "upstream_dns_failed",
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("no-such-host.invalid"),
        "{}",
        err.message()
    );
}

async fn spread(lb: &str) -> Vec<u64> {
    let servers = [start_echo().await, start_echo().await, start_echo().await];
    let eps: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
    let proxy = front_with(&eps, &format!("    lb: {lb}")).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    for _ in 0..300 {
        client.unary(EchoRequest::default()).await.unwrap();
    }
    servers.iter().map(|s| s.stats.snapshot().started).collect()
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let counts = spread("round_robin").await;
    assert_eq!(counts, vec![100, 100, 100]);
}

#[tokio::test]
async fn random_and_least_request_reach_every_endpoint() {
    for lb in ["random", "least_request"] {
        let counts = spread(lb).await;
        assert_eq!(counts.iter().sum::<u64>(), 300);
        assert!(counts.iter().all(|&c| c >= 30), "{lb}: {counts:?}");
    }
}

/// 600 calls through a cluster of three endpoints written with weights
/// 3, 1 (plain host:port) and 2; the calls each endpoint got.
async fn weighted_spread(lb: &str) -> Vec<u64> {
    let servers = [start_echo().await, start_echo().await, start_echo().await];
    let [a, b, c] = [0, 1, 2].map(|i| servers[i].addr);
    let yaml = format!(
        "listeners:\n  - name: plain\n    address: 127.0.0.1:0\n    routes:\n      - cluster: up\n\
         clusters:\n  - name: up\n    lb: {lb}\n    endpoints:\n      - {{ address: \"{a}\", weight: 3 }}\n\
         \x20     - \"{b}\"\n      - {{ address: \"{c}\", weight: 2 }}\n"
    );
    let proxy = start(&yaml, TempDir::new("weighted")).await;
    let mut client = h2c_client(proxy.addr("plain")).await;
    for _ in 0..600 {
        client.unary(EchoRequest::default()).await.unwrap();
    }
    servers.iter().map(|s| s.stats.snapshot().started).collect()
}

#[tokio::test]
async fn endpoint_weights_split_the_calls() {
    // Weighted round robin: exactly 3 : 1 : 2.
    assert_eq!(weighted_spread("round_robin").await, vec![300, 100, 200]);
    // Weighted random, and least_request on one call at a time (each
    // endpoint idle, so the heavier of the two drawn wins): the heaviest
    // endpoint gets the most, the lightest the least.
    for lb in ["random", "least_request"] {
        let counts = weighted_spread(lb).await;
        assert_eq!(counts.iter().sum::<u64>(), 600);
        assert!(
            counts[0] > counts[2] && counts[2] > counts[1] && counts[1] >= 30,
            "{lb}: {counts:?}"
        );
    }
}

#[tokio::test]
async fn many_concurrent_streams_open_more_connections() {
    let echo = start_echo().await;
    let proxy = front_with(
        &[echo.addr.to_string()],
        "    max_streams_per_connection: 10",
    )
    .await;
    let client = h2c_client(proxy.addr("plain")).await;
    let mut calls = Vec::new();
    for _ in 0..50 {
        let mut c = client.clone();
        calls.push(tokio::spawn(async move {
            c.unary(EchoRequest {
                sleep_ms: 300,
                ..Default::default()
            })
            .await
        }));
    }
    for c in calls {
        c.await.unwrap().expect("every concurrent call succeeds");
    }
    let conns = echo.stats.snapshot().connections;
    assert!(
        (2..=8).contains(&conns),
        "connections to the upstream: {conns}"
    );
}

/// torii in front of a backend that accepts TCP connections and never
/// answers, over TLS: a connect stays under way (in the TLS handshake)
/// until `connect_timeout`.
async fn front_of_a_silent_tls_backend(
    connect_timeout: &str,
) -> (proxy_support::Proxy, BackendHandle) {
    let (hole_addr, hole) = spawn_blackhole().await;
    let pki = TestPki::new("upstream CA");
    let cluster_line = format!("    connect_timeout: {connect_timeout}");
    (tls_front(hole_addr, &cluster_line, &pki).await, hole)
}

/// A connect in progress belongs to the endpoint, not to the request that
/// started it: requests cancelled while it is under way (a client's
/// RST_STREAM, a deadline) leave it running for the requests after them,
/// instead of each starting over. Tied to its request, a client resetting
/// streams made torii open a connection to the upstream per reset — a
/// flood that overflowed the upstream's accept queue.
#[tokio::test]
async fn cancelled_requests_do_not_abandon_the_upstream_connect() {
    // Far beyond the test: the connect stays under way throughout.
    let (proxy, hole) = front_of_a_silent_tls_backend("60s").await;
    let client = h2c_client(proxy.addr("plain")).await;
    // The first request starts the connect; it is cancelled once the
    // backend has the connection.
    let mut first = client.clone();
    let call = tokio::spawn(async move { first.unary(EchoRequest::default()).await });
    assert!(
        hole.wait_connections(1, PATIENCE).await,
        "torii connects for the first request"
    );
    call.abort();
    // Ten more, each given up by its client after 100 ms.
    for _ in 0..10 {
        let mut c = client.clone();
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            c.unary(EchoRequest::default()),
        )
        .await;
        assert!(gave_up.is_err(), "no answer while the connect is under way");
    }
    assert_eq!(
        hole.connections(),
        1,
        "every request waits for the one connect under way"
    );
}

/// Requests waiting for the same connect share its failure: each is told
/// why at once, instead of connecting in turn after the one before it timed
/// out (the tenth would wait ten connect_timeouts).
#[tokio::test]
async fn requests_waiting_for_a_failed_connect_fail_together() {
    let (proxy, hole) = front_of_a_silent_tls_backend("1s").await;
    let client = h2c_client(proxy.addr("plain")).await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move { c.unary(EchoRequest::default()).await })
        })
        .collect();
    for call in calls {
        let err = call
            .await
            .unwrap()
            .expect_err("the upstream never finishes the handshake");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
        assert!(
            err.message().contains("connect_timeout 1s"),
            "says which limit ran out: {}",
            err.message()
        );
    }
    assert_eq!(
        hole.connections(),
        1,
        "the ten requests waited for one connect"
    );
}
