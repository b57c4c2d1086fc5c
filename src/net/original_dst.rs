//! Where a connection was headed before iptables redirected it to torii:
//! `SO_ORIGINAL_DST` (IPv4) and `IP6T_SO_ORIGINAL_DST` (IPv6), read from
//! the kernel's connection tracking. Also refuses the two loops a
//! transparent listener can fall into: a client connecting to it directly,
//! and torii's own upstream connections redirected back into it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use socket2::SockRef;
use tokio::net::TcpStream;

/// Why a connection on an original-destination listener cannot be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum OriginalDstError {
    /// No NAT entry: the client connected to the listener directly.
    #[error("the connection was not redirected by iptables (the kernel has no original destination for it: {0}); an original_destination listener only takes redirected traffic: connect to the real destination, or check the REDIRECT rules (scripts/sidecar-iptables.sh)")]
    NotRedirected(io::Error),
    /// The original destination is this listener itself: forwarding would loop.
    #[error("the connection's original destination {0} is this listener itself: it was not redirected, and forwarding it would loop; clients must connect to the real destination")]
    Loop(SocketAddr),
    /// One of torii's own upstream connections came back redirected.
    #[error("torii's own connection to {0} was redirected back to torii: the iptables rules must exclude torii's own traffic (-m owner --uid-owner <the user torii runs as> -j RETURN before the REDIRECT; see scripts/sidecar-iptables.sh). Closed, to stop the loop")]
    OwnConnection(SocketAddr),
}

/// How long torii remembers one of its upstream connections. A redirected
/// one arrives back within microseconds; the window only has to be safely
/// longer than that.
const OWN_WINDOW: Duration = Duration::from_secs(10);
/// Bound on remembered connections (pruned to the window when reached).
const OWN_MAX: usize = 8192;

type Own = Mutex<HashMap<(SocketAddr, SocketAddr), Instant>>;

fn own() -> &'static Own {
    static OWN: OnceLock<Own> = OnceLock::new();
    OWN.get_or_init(Default::default)
}

/// Remembers an upstream connection torii opened (`local` → `remote`), so
/// that it is recognised if iptables sends it back to an
/// original-destination listener. A (local, remote) pair is unique while
/// the connection exists, so no client connection can be mistaken for it.
pub fn note_own_connection(local: SocketAddr, remote: SocketAddr) {
    let mut map = own().lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= OWN_MAX {
        map.retain(|_, at| at.elapsed() < OWN_WINDOW);
        if map.len() >= OWN_MAX {
            map.clear();
        }
    }
    map.insert((canonical(local), canonical(remote)), Instant::now());
}

/// Whether a connection from `peer` headed for `dst` is one of torii's own.
/// torii notes its connection right after connecting, before sending
/// anything: once the first bytes arrived the answer is certain; before,
/// the connecting task may not have noted it yet.
pub fn is_own(peer: SocketAddr, dst: SocketAddr) -> bool {
    let map = own().lock().unwrap_or_else(|p| p.into_inner());
    map.get(&(canonical(peer), canonical(dst)))
        .is_some_and(|at| at.elapsed() < OWN_WINDOW)
}

/// The original destination of `stream`, accepted on an original-destination
/// listener. Works for IPv4, IPv6 and IPv4 clients of a dual-stack `[::]`
/// listener (where the socket is IPv6 but the NAT entry is IPv4).
pub fn original_dst(stream: &TcpStream) -> Result<SocketAddr, OriginalDstError> {
    let local = stream
        .local_addr()
        .map_err(OriginalDstError::NotRedirected)?;
    let sock = SockRef::from(stream);
    let v4_first = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
    };
    let mut first_err = None;
    for v4 in [v4_first, !v4_first] {
        let found = if v4 {
            sock.original_dst_v4()
        } else {
            sock.original_dst_v6()
        };
        match found.map(|a| a.as_socket()) {
            Ok(Some(addr)) => {
                let dst = check(canonical(addr), canonical(local))?;
                let peer = stream
                    .peer_addr()
                    .map_err(OriginalDstError::NotRedirected)?;
                if is_own(peer, dst) {
                    return Err(OriginalDstError::OwnConnection(dst));
                }
                return Ok(dst);
            }
            Ok(None) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(OriginalDstError::NotRedirected(first_err.unwrap_or_else(
        || io::Error::other("the kernel returned an address of an unknown family"),
    )))
}

/// Without NAT, conntrack reports the connection's own destination: the
/// listener. Forwarding that would connect torii to itself, forever.
fn check(dst: SocketAddr, local: SocketAddr) -> Result<SocketAddr, OriginalDstError> {
    if dst == local {
        Err(OriginalDstError::Loop(dst))
    } else {
        Ok(dst)
    }
}

/// `::ffff:10.0.0.1` → `10.0.0.1`.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_refused() {
        let l: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        assert!(matches!(check(l, l), Err(OriginalDstError::Loop(_))));
        let d: SocketAddr = "10.0.0.2:443".parse().unwrap();
        assert_eq!(check(d, l).unwrap(), d);
        let mapped: SocketAddr = "[::ffff:10.0.0.2]:443".parse().unwrap();
        assert_eq!(canonical(mapped), d);
    }

    #[test]
    fn own_connections_are_recognised() {
        let local: SocketAddr = "10.0.0.1:40001".parse().unwrap();
        let remote: SocketAddr = "10.0.0.2:443".parse().unwrap();
        note_own_connection(local, remote);
        assert!(is_own(local, remote));
        assert!(is_own("[::ffff:10.0.0.1]:40001".parse().unwrap(), remote));
        // The same local port towards another destination is someone else.
        assert!(!is_own(local, "10.0.0.3:443".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_direct_connection_has_no_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Without conntrack: ENOENT; with it: the listener itself.
        let err = original_dst(&server).unwrap_err();
        assert!(
            matches!(
                err,
                OriginalDstError::NotRedirected(_) | OriginalDstError::Loop(_)
            ),
            "{err}"
        );
    }
}
