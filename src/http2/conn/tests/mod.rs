//! Connection tests with a raw peer on an in-memory pipe: each pins down a
//! bug a review found (stream ids out of order, stale keys, resets budget,
//! padding and the stream window, flushing before close, the blocked queue,
//! the upstream stream limit). The peer's side: `server.rs` (torii serving
//! a raw client), `client.rs` (torii the client of a raw server).
use super::stream::Chunks;
use super::*;
use crate::http2::frame::Head;
use bytes::Bytes;
use std::future::poll_fn;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

mod client;
mod server;

fn config(stream_window: u32, connection_window: u32) -> Config {
    Config {
        max_concurrent_streams: 1024,
        max_header_list_size: 64 * 1024,
        stream_window,
        connection_window,
        keepalive_interval: Duration::from_secs(600),
        keepalive_timeout: Duration::from_secs(600),
        keepalive_while_idle: false,
        handshake_timeout: Duration::from_secs(600),
    }
}

fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    frame::put_head(&mut v, payload.len(), kind, flags, stream);
    v.extend_from_slice(payload);
    v
}

struct Peer {
    io: DuplexStream,
}

impl Peer {
    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
    }
    async fn frame(&mut self) -> Option<(Head, Vec<u8>)> {
        let mut h = [0u8; 9];
        if self.io.read_exact(&mut h).await.is_err() {
            return None;
        }
        let head = Head::parse(&h);
        let mut p = vec![0u8; head.len as usize];
        self.io.read_exact(&mut p).await.ok()?;
        Some((head, p))
    }
    /// Frames until `pred` matches, or None after `t`.
    async fn until(
        &mut self,
        t: Duration,
        mut pred: impl FnMut(&Head, &[u8]) -> bool,
    ) -> Option<(Head, Vec<u8>)> {
        tokio::time::timeout(t, async {
            loop {
                let (h, p) = self.frame().await?;
                if pred(&h, &p) {
                    return Some((h, p));
                }
            }
        })
        .await
        .ok()
        .flatten()
    }
}

/// Drives a connection (non-inline), handing opened streams to `tx`.
fn spawn_driver(mut conn: Connection<DuplexStream>, tx: Option<mpsc::UnboundedSender<Opened>>) {
    tokio::spawn(async move {
        poll_fn(|cx| {
            conn.begin_poll(cx, false);
            loop {
                let read = conn.poll_read(cx);
                let mut acc = false;
                while let Some(o) = conn.accept() {
                    acc = true;
                    if let Some(tx) = &tx {
                        let _ = tx.send(o);
                    }
                }
                if !read && !acc {
                    break;
                }
            }
            conn.end_poll();
            if conn.poll_timer(cx) {
                return Poll::Ready(());
            }
            if let Poll::Ready(Err(_)) = conn.poll_write(cx) {
                return Poll::Ready(());
            }
            if conn.is_finished() {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    });
}

#[test]
fn pending_chunks_keep_their_order() {
    let mut c = Chunks::default();
    assert!(c.is_empty());
    assert_eq!(c.len(), 0);
    for s in ["a", "b", "c"] {
        c.push_back(Bytes::from_static(s.as_bytes()));
    }
    assert_eq!(c.len(), 3);
    assert_eq!(*c.front_mut().unwrap(), "a");
    assert_eq!(c.pop_front().unwrap(), "a");
    c.push_back(Bytes::from_static(b"d"));
    assert_eq!(c.pop_front().unwrap(), "b");
    assert_eq!(c.pop_front().unwrap(), "c");
    assert_eq!(c.len(), 1);
    assert_eq!(c.pop_front().unwrap(), "d");
    assert!(c.is_empty() && c.pop_front().is_none());
    c.push_back(Bytes::from_static(b"e"));
    c.push_back(Bytes::from_static(b"f"));
    c.clear();
    assert!(c.is_empty());
    assert_eq!(c.len(), 0);
}
