//! Gives freed heap back to the operating system after a spike.
//!
//! glibc keeps the memory a burst of connections allocated once they are
//! gone: it reuses it, but it does not return pages in the middle of the
//! heap until asked. After a spike of a few hundred TLS connections a torii
//! that idles again would keep tens of megabytes (34 MB after 328 held
//! connections closed). Every [`CHECK_EVERY`], if the allocator holds more
//! than [`FREE_WORTH_TRIMMING`] of free memory, `malloc_trim` hands the
//! free pages back, on a blocking thread so no connection waits for it.

use std::time::Duration;

/// How often the allocator's free memory is looked at (a cheap read of its
/// statistics).
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Free heap below this stays with the allocator for the next burst.
pub const FREE_WORTH_TRIMMING: usize = 8 << 20;

/// Bytes the allocator holds free (not in use, not yet returned).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn free_bytes() -> usize {
    // SAFETY: mallinfo2 takes no arguments and only reads glibc's own
    // allocator statistics into a struct it returns by value; it is safe to
    // call from any thread at any time (glibc ≥ 2.33, which Debian 12 and
    // every supported distribution ship).
    let info = unsafe { libc::mallinfo2() };
    info.fordblks
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn free_bytes() -> usize {
    0
}

/// Returns free pages to the system; true if any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes the allocator's own locks and only releases
    // memory no allocation uses (madvise on free pages); calling it while
    // other threads allocate is allowed. Pad 0: keep nothing extra.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

/// Runs for the life of the process (spawned by `torii serve`).
pub async fn trim_after_spikes() {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let free = free_bytes();
        if free < FREE_WORTH_TRIMMING {
            continue;
        }
        match tokio::task::spawn_blocking(trim).await {
            Ok(true) => tracing::debug!(free_bytes = free, "returned free heap to the system"),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "heap trim did not run"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_is_counted_and_trimmed() {
        // Many medium blocks (below mmap's threshold, so they come from the
        // heap), then free all but the last so the free space sits below a
        // block still in use and the heap's top cannot simply shrink.
        let mut blocks: Vec<Vec<u8>> = (0..2000).map(|i| vec![i as u8; 16 << 10]).collect();
        let keep = blocks.pop();
        let before = free_bytes();
        drop(blocks);
        let freed = free_bytes();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(
                freed >= before + (16 << 20),
                "free heap {before} -> {freed}"
            );
            trim();
        }
        drop(keep);
    }
}
