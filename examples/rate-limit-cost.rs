//! What a rate-limit check costs (the target: ≤ 0.3 µs per request), and
//! what 100,000 per-key buckets weigh. A timed loop, not a test: run it in
//! release mode on a quiet machine.
//!
//! ```sh
//! cargo run --release --example rate-limit-cost
//! ```
//!
//! Each figure is the best of 5 runs of 2,000,000 checks on one thread,
//! the clock read (`rate_limit::now`) included, as the phase does it:
//! - per route: the one atomic bucket;
//! - per client IP, one client: the same key each time (a shard lock, a
//!   hash, a hit at the front of the LRU);
//! - per client IP, 100,000 clients in turn: every lookup a cache miss;
//! - per identity: a 40-byte SPIFFE ID hashed each time.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::Instant;

use torii::rate_limit::{now, Bucket, KeyedBuckets, Rate};

const CHECKS: u32 = 2_000_000;

fn best_ns_per_check(mut f: impl FnMut(u32) -> bool) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut allowed = 0u32;
            for i in 0..CHECKS {
                allowed += u32::from(f(i));
            }
            assert_eq!(allowed, CHECKS, "the limit is far above the load");
            start.elapsed().as_nanos() as f64 / f64::from(CHECKS)
        })
        .fold(f64::INFINITY, f64::min)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 only reads glibc's allocator statistics into a
    // struct it returns by value (glibc ≥ 2.33); callable at any time.
    unsafe { libc::mallinfo2() }.uordblks
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> usize {
    0
}

fn main() {
    let rate = Rate::new(1e9, 1_000_000_000);
    let clock = best_ns_per_check(|_| {
        black_box(now());
        true
    });
    println!("clock read alone:                      {clock:6.1} ns");

    let bucket = Bucket::default();
    let ns = best_ns_per_check(|_| bucket.check(&rate, now()).is_ok());
    println!("per route (atomic bucket):             {ns:6.1} ns per check");

    let keyed = KeyedBuckets::new(100_000);
    let one: IpAddr = [10, 1, 2, 3].into();
    let ns = best_ns_per_check(|_| keyed.check(black_box(one), &rate, now()).is_ok());
    println!("per client IP, one client:             {ns:6.1} ns per check");

    let before = heap_in_use();
    let many = KeyedBuckets::new(100_000);
    let ip = |i: u32| IpAddr::from((0x0a00_0000 + i % 100_000).to_be_bytes());
    let ns = best_ns_per_check(|i| many.check(ip(i), &rate, now()).is_ok());
    let grown = heap_in_use().saturating_sub(before);
    println!("per client IP, 100,000 clients:        {ns:6.1} ns per check");

    let id = "spiffe://example.org/ns/prod/sa/orders-api";
    let ns = best_ns_per_check(|_| keyed.check(black_box(id), &rate, now()).is_ok());
    println!("per identity (SPIFFE ID):              {ns:6.1} ns per check");

    println!(
        "100,000 keys: {} held, heap {:.1} MB measured (mallinfo2), {:.1} MB estimated",
        many.len(),
        grown as f64 / 1e6,
        many.approx_bytes() as f64 / 1e6
    );
}
