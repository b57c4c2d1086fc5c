//! A counting allocator: how much heap a check's run holds at its peak,
//! for the "bounded buffers" invariant. Counts per thread (each check runs
//! on one thread); a binary that does not install it measures nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static INSTALLED: Cell<bool> = const { Cell::new(false) };
}

fn add(n: isize) {
    // `try_with`: during thread teardown the counters may be gone.
    let _ = LIVE.try_with(|live| {
        let v = live.get() + n;
        live.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
        let _ = INSTALLED.try_with(|i| i.set(true));
    });
}

// SAFETY: every method forwards to `System` with the caller's own layout
// and pointer, unchanged, and only adds bookkeeping in thread-local
// `Cell`s (const-initialised, no destructor, so touching them never
// allocates or re-enters the allocator). `System` upholds `GlobalAlloc`'s
// contract, hence so does this.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same layout, forwarded (see above).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same layout, forwarded (see above).
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the pointer came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the pointer came from `System` with this layout.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Runs `f`; returns its result and the most heap it held above what the
/// thread held before (0 when the counting allocator is not installed).
pub fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    let peak = PEAK.with(Cell::get);
    if !INSTALLED.with(Cell::get) {
        return (r, 0);
    }
    (r, (peak - start).max(0) as usize)
}
