//! Copying bytes both ways between a client and an upstream: each
//! direction on its own, an end of stream passed on as a half-close (so
//! request/response protocols that shut down their sending side still get
//! their answer), and the whole connection closed after an idle time with
//! no byte moving either way.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Per direction. Small enough for many idle connections, large enough to
/// move a TLS record (16 KiB) in one read.
const BUFFER: usize = 16 * 1024;

/// How a relayed connection ended and what it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    /// Client → upstream.
    pub bytes_sent: u64,
    /// Upstream → client.
    pub bytes_received: u64,
    pub end: End,
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Both sides closed (in either order).
    Closed,
    /// No byte moved for the idle timeout.
    Idle(Duration),
    /// A read or write failed; the side and the error.
    Failed(Side, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Closed => f.write_str("both sides closed"),
            End::Idle(d) => write!(
                f,
                "no byte moved for the idle timeout ({})",
                crate::config::duration::display(*d)
            ),
            End::Failed(Side::Client, e) => write!(f, "the client connection failed: {e}"),
            End::Failed(Side::Upstream, e) => write!(f, "the upstream connection failed: {e}"),
        }
    }
}

/// Last time a byte moved, in milliseconds since the relay started.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Relays until both directions ended, one failed, or nothing moved for
/// `idle`. Both streams are dropped (closed) when it returns.
pub async fn relay<C, U>(client: C, upstream: U, idle: Duration) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut up_r, mut up_w) = tokio::io::split(upstream);
    let both = async {
        tokio::try_join!(
            pump(&mut client_r, &mut up_w, Side::Client, &sent, &activity),
            pump(
                &mut up_r,
                &mut client_w,
                Side::Upstream,
                &received,
                &activity
            ),
        )
    };
    let end = tokio::select! {
        r = both => match r {
            Ok(_) => End::Closed,
            Err((side, e)) => End::Failed(side, e.to_string()),
        },
        _ = idle_watch(&activity, idle) => End::Idle(idle),
    };
    Relayed {
        bytes_sent: sent.load(Ordering::Relaxed),
        bytes_received: received.load(Ordering::Relaxed),
        end,
        duration: activity.start.elapsed(),
    }
}

/// One direction: read from `from`'s side, write to the other. On end of
/// stream, shuts down the writing side (a FIN), leaving the other
/// direction open.
async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    from: Side,
    count: &AtomicU64,
    activity: &Activity,
) -> Result<(), (Side, io::Error)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let to = match from {
        Side::Client => Side::Upstream,
        Side::Upstream => Side::Client,
    };
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = r.read(&mut buf).await.map_err(|e| (from, e))?;
        if n == 0 {
            // A peer that already went away fully makes the shutdown fail;
            // that is the end we wanted anyway.
            let _ = w.shutdown().await;
            return Ok(());
        }
        activity.touch();
        w.write_all(&buf[..n]).await.map_err(|e| (to, e))?;
        w.flush().await.map_err(|e| (to, e))?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        activity.touch();
    }
}

/// Resolves once nothing moved for `idle`.
async fn idle_watch(activity: &Activity, idle: Duration) {
    loop {
        let deadline = activity.last() + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    #[tokio::test]
    async fn half_close_lets_the_answer_through() {
        let (client, mut client_peer) = duplex(1024);
        let (upstream, mut upstream_peer) = duplex(1024);
        let task = tokio::spawn(relay(client, upstream, Duration::from_secs(5)));
        client_peer.write_all(b"question").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"question");
        // The client's side is shut; the upstream can still answer.
        upstream_peer.write_all(b"answer!").await.unwrap();
        upstream_peer.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client_peer.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer!");
        let r = task.await.unwrap();
        assert_eq!((r.bytes_sent, r.bytes_received, r.end), (8, 7, End::Closed));
    }

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let idle = Duration::from_millis(100);
        let (client, mut client_peer) = duplex(1024);
        let (upstream, _upstream_peer) = duplex(1024);
        let task = tokio::spawn(relay(client, upstream, idle));
        client_peer.write_all(b"x").await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("closed long before 10 s")
            .unwrap();
        assert_eq!(r.end, End::Idle(idle));
        assert!(r.duration >= idle, "{:?}", r.duration);
        assert_eq!(r.bytes_sent, 1);
        let mut rest = Vec::new();
        client_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
