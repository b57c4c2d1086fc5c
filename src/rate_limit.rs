//! Token buckets for local rate limits (a route's `rate_limit:`), pure:
//! every check takes the time as an argument, so tests drive the clock.
//!
//! A bucket is kept as one number, the GCRA form of a token bucket (the
//! "theoretical arrival time" `tat`): with `rate` tokens a second and room
//! for `burst`, each request moves `tat` one interval (1/rate) ahead, and
//! is refused when that would put `tat` more than `burst` intervals past
//! now. A full bucket is any `tat` at or before now, so a bucket nobody
//! used for a while costs nothing to forget, and one number fits in one
//! atomic: [`Bucket`] (the per-route bucket) is a compare-and-swap loop,
//! no lock.
//!
//! Buckets per key (client IP, identity) live in [`KeyedBuckets`]: a fixed
//! number of shards, each a mutex over a least-recently-used map, holding
//! at most `max_keys` keys in all. A new key past the bound evicts the
//! shard's least recently used one; a key that was evicted and comes back
//! starts with a full bucket (its burst again). Keys are stored as a 64-bit
//! keyed hash (SipHash with a per-process random key, so a client cannot
//! aim two keys at one bucket): two live keys share a bucket only if their
//! hashes collide, odds of about 1 in 3·10⁹ at 100,000 live keys.

use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The clock every bucket of the running proxy reads: nanoseconds since
/// the first reading in this process (monotonic).
pub fn now() -> u64 {
    at(Instant::now())
}

/// [`now`] for a moment already read: the request's start, which the
/// pipeline has anyway (a clock read costs more than a check).
#[inline]
pub fn at(instant: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(instant.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

/// A bucket's shape: how fast it refills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds per token (1 / requests per second), at least 1.
    interval: u64,
    /// `burst` intervals: how far ahead of now `tat` may run.
    capacity: u64,
}

impl Rate {
    /// `per_second` tokens a second (> 0), room for `burst` (≥ 1).
    pub fn new(per_second: f64, burst: u32) -> Rate {
        let interval = (1e9 / per_second).round();
        let interval = if interval.is_finite() && interval >= 1.0 {
            interval.min(u64::MAX as f64) as u64
        } else {
            1
        };
        Rate {
            interval,
            capacity: interval.saturating_mul(u64::from(burst.max(1))),
        }
    }

    /// The bucket after one more request at `now`, or how long until one
    /// would be allowed.
    #[inline]
    fn take(&self, tat: u64, now: u64) -> Result<u64, Duration> {
        let next = tat.max(now).saturating_add(self.interval);
        let ahead = next - now;
        if ahead <= self.capacity {
            Ok(next)
        } else {
            Err(Duration::from_nanos(ahead - self.capacity))
        }
    }
}

/// One bucket shared by every request of a route: lock-free.
#[derive(Debug, Default)]
pub struct Bucket {
    tat: AtomicU64,
}

impl Bucket {
    /// Takes a token at `now`, or says how long until one is there.
    #[inline]
    pub fn check(&self, rate: &Rate, now: u64) -> Result<(), Duration> {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = rate.take(tat, now)?;
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }
}

/// Shards of [`KeyedBuckets`]: enough that cores rarely wait on one lock.
const SHARDS: usize = 16;

type Shard = Mutex<lru::LruCache<u64, u64, BuildHasherDefault<Spread>>>;

/// The map's hasher: its keys are SipHash values already, spread evenly,
/// so hashing them again would only cost time.
#[derive(Default)]
struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here (write_u64); any other input is
        // folded in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Buckets per key, at most `max_keys` of them (see the module's words).
pub struct KeyedBuckets {
    shards: Box<[Shard]>,
    per_shard: usize,
    hasher: std::hash::RandomState,
}

impl KeyedBuckets {
    pub fn new(max_keys: usize) -> KeyedBuckets {
        let max_keys = max_keys.max(1);
        let shards = if max_keys >= SHARDS * 64 { SHARDS } else { 1 };
        KeyedBuckets {
            // Unbounded maps that this type bounds: a map grows as keys
            // come, rather than reserving room for `max_keys` up front.
            shards: (0..shards)
                .map(|_| Mutex::new(lru::LruCache::unbounded_with_hasher(Default::default())))
                .collect(),
            per_shard: max_keys / shards,
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The most keys held at once.
    pub fn max_keys(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// Takes a token from `key`'s bucket at `now`, or says how long until
    /// one is there.
    #[inline]
    pub fn check(&self, key: impl Hash, rate: &Rate, now: u64) -> Result<(), Duration> {
        let hash = self.hasher.hash_one(key);
        // The high bits pick the shard; the map hashes the whole value.
        let shard = &self.shards[(hash >> 32) as usize % self.shards.len()];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tat) = map.get_mut(&hash) {
            *tat = rate.take(*tat, now)?;
            return Ok(());
        }
        let next = rate.take(0, now)?;
        if map.len() >= self.per_shard {
            map.pop_lru();
        }
        map.put(hash, next);
        Ok(())
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An estimate of the heap the keys take: per key, its map node (key,
    /// value and two list links, 32 bytes, 48 with the allocator's
    /// header) and its table slot (a pointer pair and a control byte, at
    /// a load of at most 7/8, tables growing by doubling).
    pub fn approx_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let len = lock(s).len();
                let slots = (len * 8 / 7 + 1).next_power_of_two();
                len * 48 + slots * 17
            })
            .sum()
    }
}

fn lock(
    shard: &Shard,
) -> std::sync::MutexGuard<'_, lru::LruCache<u64, u64, BuildHasherDefault<Spread>>> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keys a route keeps buckets for unless its `max_keys` says otherwise.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_full_bucket_gives_its_burst_then_one_per_interval() {
        let rate = Rate::new(2.0, 5);
        let b = Bucket::default();
        let t0 = 10 * S;
        let allowed = (0..20).filter(|_| b.check(&rate, t0).is_ok()).count();
        assert_eq!(allowed, 5, "the burst, all at once");
        // The next token comes half a second later.
        assert_eq!(b.check(&rate, t0), Err(Duration::from_millis(500)));
        assert_eq!(b.check(&rate, t0 + S / 4), Err(Duration::from_millis(250)));
        assert!(b.check(&rate, t0 + S / 2).is_ok());
        assert!(b.check(&rate, t0 + S / 2).is_err());
        // Over 10 s, 20 more: exactly the rate.
        let allowed = (1..=1000)
            .filter(|i| b.check(&rate, t0 + S / 2 + i * S / 100).is_ok())
            .count();
        assert_eq!(allowed, 20);
        // Idle long enough: full again, never more than the burst.
        let later = t0 + 3600 * S;
        let allowed = (0..20).filter(|_| b.check(&rate, later).is_ok()).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn slow_rates_and_bursts_of_one() {
        let rate = Rate::new(0.5, 1);
        let b = Bucket::default();
        assert!(b.check(&rate, S).is_ok());
        assert_eq!(b.check(&rate, S), Err(Duration::from_secs(2)));
        assert_eq!(b.check(&rate, 2 * S), Err(Duration::from_secs(1)));
        assert!(b.check(&rate, 3 * S).is_ok());
        // At time zero (the clock's first reading) too.
        let b = Bucket::default();
        assert!(b.check(&Rate::new(1.0, 1), 0).is_ok());
        assert!(b.check(&Rate::new(1.0, 1), 0).is_err());
    }

    #[test]
    fn threads_share_one_bucket_exactly() {
        let rate = Rate::new(1.0, 1000);
        let b = std::sync::Arc::new(Bucket::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.check(&rate, S).is_ok()).count())
            })
            .collect();
        let allowed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(allowed, 1000);
    }

    #[test]
    fn keys_have_buckets_of_their_own() {
        let rate = Rate::new(1.0, 3);
        let k = KeyedBuckets::new(100);
        let ip = |n: u8| std::net::IpAddr::from([127, 0, 0, n]);
        for n in 1..=3 {
            let allowed = (0..10).filter(|_| k.check(ip(n), &rate, S).is_ok()).count();
            assert_eq!(allowed, 3, "client {n}");
        }
        assert_eq!(k.check("spiffe://a", &rate, S), Ok(()));
        assert_eq!(k.check(ip(1), &rate, S), Err(Duration::from_secs(1)));
        assert_eq!(k.len(), 4);
    }

    #[test]
    fn an_evicted_key_is_the_least_recently_used_and_comes_back_full() {
        let rate = Rate::new(1.0, 2);
        let k = KeyedBuckets::new(3);
        assert_eq!(k.max_keys(), 3);
        for key in ["a", "a", "b", "c"] {
            k.check(key, &rate, S).unwrap();
        }
        assert!(k.check("a", &rate, S).is_err(), "a is empty");
        // "a" was used last (refused, still used): "b" goes.
        k.check("d", &rate, S).unwrap();
        assert_eq!(k.len(), 3);
        assert!(k.check("a", &rate, S).is_err(), "a was kept");
        assert!(k.check("b", &rate, S).is_ok(), "b came back with its burst");
    }

    #[test]
    fn a_million_distinct_keys_stay_within_the_bound() {
        let rate = Rate::new(100.0, 10);
        let max = DEFAULT_MAX_KEYS;
        let k = KeyedBuckets::new(max);
        for i in 0..1_000_000u32 {
            assert!(k
                .check(std::net::IpAddr::from(i.to_be_bytes()), &rate, S)
                .is_ok());
        }
        let len = k.len();
        assert!(len <= max, "{len} keys held, bound {max}");
        assert!(len >= max * 99 / 100, "the bound is used: {len}");
        let bytes = k.approx_bytes();
        eprintln!("{len} keys ≈ {} KiB", bytes / 1024);
        assert!(bytes < 12 << 20, "{bytes} bytes for {len} keys");
    }
}
