//! A per-thread pool of emptied `HeaderMap`s for the heads and trailers
//! torii's HTTP/2 decodes.
//!
//! Every proxied HTTP/2 exchange builds three maps (request head, response
//! head, trailers) and drops them once they are re-encoded for the next
//! hop. A map with room for twelve fields is two blocks (64 B of indices,
//! 1,248 B of entries), and a burst of requests frees more blocks of one
//! size than glibc's per-thread cache keeps (seven), so most of them went
//! through malloc's slow path: callgrind put those six allocations and
//! frees at ~6% of a 100 B unary request. A map given back here is
//! cleared (its fields dropped, its room kept) and handed to the next
//! head decoded on this thread.
//!
//! Bounded both ways: at most [`KEEP`] maps per thread, and a map that
//! grew past [`MAX_ROOM`] fields or held more values than that (a client's
//! unusual head) is freed rather than kept, so a few big heads cannot pin
//! memory for good.

use std::cell::RefCell;

use http::HeaderMap;

/// Room for a head's regular fields up front: a gRPC client's usual five
/// to eight and the three a proxy adds (`x-request-id`, `x-forwarded-for`,
/// `x-forwarded-proto`). A `HeaderMap` starts with room for 6 and grows
/// (reallocates and rehashes) at the 7th.
pub const ROOM: usize = 12;

/// Maps kept per thread: a burst of this many exchanges in flight reuses
/// maps throughout (~1.3 KB each, so at most ~170 KB per thread).
const KEEP: usize = 256;

/// Maps with more room than this are freed, not kept.
const MAX_ROOM: usize = 32;

thread_local! {
    static POOL: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for at least [`ROOM`] fields.
pub fn take() -> HeaderMap {
    POOL.try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| HeaderMap::with_capacity(ROOM))
}

/// Gives a map that is done with back to this thread's pool.
pub fn give(mut map: HeaderMap) {
    // `len` counts every value, so a head that repeated a name many times
    // (values kept outside the entries, in room `capacity` does not show)
    // is not kept either.
    let room = map.capacity();
    if !(ROOM..=MAX_ROOM).contains(&room) || map.len() > MAX_ROOM {
        return;
    }
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEEP {
            map.clear();
            p.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_map_comes_back_empty_with_its_room() {
        let mut m = take();
        assert!(m.capacity() >= ROOM);
        m.insert("x-a", "1".parse().unwrap());
        let ptr = m.get("x-a").unwrap() as *const _ as usize;
        give(m);
        let again = take();
        assert!(again.is_empty());
        assert!(again.capacity() >= ROOM);
        // The same entries block, not a new one.
        let mut again = again;
        again.insert("x-b", "2".parse().unwrap());
        assert_eq!(again.get("x-b").unwrap() as *const _ as usize, ptr);
    }

    #[test]
    fn small_and_grown_maps_are_not_kept() {
        while POOL.with(|p| p.borrow_mut().pop()).is_some() {}
        give(HeaderMap::new());
        let mut big = HeaderMap::with_capacity(200);
        big.insert("x-a", "1".parse().unwrap());
        give(big);
        let mut repeated = take();
        for i in 0..=MAX_ROOM {
            repeated.append("x-a", i.into());
        }
        assert!(repeated.capacity() <= MAX_ROOM);
        give(repeated);
        assert_eq!(POOL.with(|p| p.borrow().len()), 0);
    }
}
