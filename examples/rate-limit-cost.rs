//! What a rate-limit check costs (the target: ≤ 0.3 µs per request), and
//! what 100,000 per-key buckets weigh. A timed loop, not a test: run it in
//! release mode on a quiet machine.
//!
//! ```sh
//! cargo run --release --example rate-limit-cost            # 2,000,000 checks a run
//! valgrind --tool=callgrind target/release/examples/rate-limit-cost 20000
//! ```
//!
//! Each figure is the best of 5 runs of N checks on one thread, in the
//! thread's CPU time (so other processes on a busy machine do not count),
//! with the phase's reading of the time (`rate_limit::at` of the request's
//! start, which the pipeline takes for its metrics anyway; a fresh clock
//! read, `rate_limit::now`, is shown apart):
//! - per route: the one atomic bucket;
//! - per client IP, one client: the same key each time (a shard lock, a
//!   hash, a hit at the front of the LRU);
//! - per client IP, 100,000 clients in turn: every lookup a cache miss;
//! - per identity: a 40-byte SPIFFE ID hashed each time.

use std::hint::black_box;
use std::net::IpAddr;

use torii::rate_limit::{at, now, Bucket, KeyedBuckets, Rate};

fn checks() -> u32 {
    std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000_000)
}

/// This thread's CPU time, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively
    // borrowed `ts` and reads nothing else; CLOCK_THREAD_CPUTIME_ID exists
    // on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn best_ns_per_check(mut f: impl FnMut(u32) -> bool) -> f64 {
    let n = checks();
    (0..5)
        .map(|_| {
            let start = thread_cpu_ns();
            let mut allowed = 0u32;
            for i in 0..n {
                allowed += u32::from(f(i));
            }
            assert_eq!(allowed, n, "the limit is far above the load");
            (thread_cpu_ns() - start) as f64 / f64::from(n)
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
    // The request's start, read once per request by the pipeline.
    let start = std::time::Instant::now();
    let clock = best_ns_per_check(|_| {
        black_box(now());
        true
    });
    println!("a fresh clock read (not in the phase):  {clock:6.1} ns");

    let bucket = Bucket::default();
    let ns = best_ns_per_check(|_| bucket.check(&rate, at(black_box(start))).is_ok());
    println!("per route (atomic bucket):             {ns:6.1} ns per check");

    let keyed = KeyedBuckets::new(100_000);
    let one: IpAddr = [10, 1, 2, 3].into();
    let ns = best_ns_per_check(|_| {
        keyed
            .check(black_box(one), &rate, at(black_box(start)))
            .is_ok()
    });
    println!("per client IP, one client:             {ns:6.1} ns per check");

    let before = heap_in_use();
    let many = KeyedBuckets::new(100_000);
    let ip = |i: u32| IpAddr::from((0x0a00_0000 + i % 100_000).to_be_bytes());
    let ns = best_ns_per_check(|i| many.check(ip(i), &rate, at(black_box(start))).is_ok());
    let grown = heap_in_use().saturating_sub(before);
    println!("per client IP, 100,000 clients:        {ns:6.1} ns per check");

    let id = "spiffe://example.org/ns/prod/sa/orders-api";
    let ns = best_ns_per_check(|_| {
        keyed
            .check(black_box(id), &rate, at(black_box(start)))
            .is_ok()
    });
    println!("per identity (SPIFFE ID):              {ns:6.1} ns per check");

    println!(
        "100,000 keys: {} held, heap {:.1} MB measured (mallinfo2), {:.1} MB estimated",
        many.len(),
        grown as f64 / 1e6,
        many.approx_bytes() as f64 / 1e6
    );
}
