//! The process's allocator, and giving memory back to the system after a
//! burst of connections.
//!
//! jwtgate's binary allocates with mimalloc (see `src/main.rs`), which keeps
//! the pages a thread freed in that thread's own heap until the thread
//! allocates again, and returns them to the system only when it collects.
//! After thousands of connections close, the threads that served them go
//! quiet and would hold that memory for good. So each thread collects
//! itself once every [`CLOSES_PER_COLLECT`] connections it closed, and
//! whenever the connections still open have halved since it last
//! collected: a burst of closes then hands its memory back as it goes and
//! the rest as it ends (the last closes, and the pages mimalloc only
//! releases on its next call, which a quiet thread never makes), at the
//! cost of one collection per that many connections and a few per burst
//! (never per request).

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc,
    mi_zalloc_aligned,
};

/// Every mimalloc block is a whole number of machine words from a
/// word-aligned start, so any block is aligned to this much.
const WORD_ALIGNED: usize = std::mem::size_of::<usize>();

/// mimalloc as Rust's allocator. Most Rust allocations need no more than
/// word alignment: those take mimalloc's plain `mi_malloc`. The `mimalloc`
/// crate's own wrapper sends every allocation through `mi_malloc_aligned`,
/// whose extra checks, and for buffers of a few KiB or more an
/// over-allocation to align the block, cost about 2k instructions of each
/// proxied request.
pub struct Allocator;

/// Whether a plain (unaligned) mimalloc call satisfies `layout`.
fn word_aligned(layout: &Layout) -> bool {
    layout.align() <= WORD_ALIGNED
}

/// A mimalloc allocation call: size, or size and alignment.
type Plain = unsafe extern "C" fn(usize) -> *mut c_void;
type Aligned = unsafe extern "C" fn(usize, usize) -> *mut c_void;

/// A block for `layout` from `plain` where word alignment satisfies it,
/// from `aligned` otherwise.
///
/// # Safety
/// `plain` and `aligned` are mimalloc's allocation functions, which take
/// any size and alignment and return null on failure.
unsafe fn allocate(layout: Layout, plain: Plain, aligned: Aligned) -> *mut u8 {
    // SAFETY: as the caller promises.
    unsafe {
        if word_aligned(&layout) {
            plain(layout.size()).cast()
        } else {
            aligned(layout.size(), layout.align()).cast()
        }
    }
}

// SAFETY: every pointer handed out comes from mimalloc and is freed,
// reallocated or zeroed by mimalloc; each call satisfies the layout's
// alignment, by mimalloc's word alignment or by its aligned variant.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions, as `allocate` asks.
        unsafe { allocate(layout, mi_malloc, mi_malloc_aligned) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe { allocate(layout, mi_zalloc, mi_zalloc_aligned) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc, whose
        // `mi_free` takes aligned and unaligned blocks alike.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block keeps that alignment, by the same rule as `alloc`.
        unsafe {
            if word_aligned(&layout) {
                mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

use std::cell::Cell;

/// Large enough that connection churn collects rarely, small enough that
/// what a burst leaves behind (this many connections' worth, a few KiB
/// each) does not matter.
pub const CLOSES_PER_COLLECT: u32 = 256;

thread_local! {
    static CLOSED_SINCE_COLLECT: Cell<u32> = const { Cell::new(0) };
    /// The client connections open, process-wide, when this thread last
    /// collected.
    static OPEN_AT_COLLECT: Cell<usize> = const { Cell::new(0) };
}

/// Called as a client connection ends, on the thread that served it, with
/// the client connections still open without it. True when this call
/// collected.
pub fn connection_closed(still_open: usize) -> bool {
    let closed = CLOSED_SINCE_COLLECT.get() + 1;
    let halved = still_open.saturating_mul(2) < OPEN_AT_COLLECT.get();
    if closed < CLOSES_PER_COLLECT && !halved {
        CLOSED_SINCE_COLLECT.set(closed);
        return false;
    }
    CLOSED_SINCE_COLLECT.set(0);
    OPEN_AT_COLLECT.set(still_open);
    // SAFETY: mi_collect takes no pointers; it only walks the calling
    // thread's own heap and the shared arenas, which mimalloc locks.
    unsafe { libmimalloc_sys::mi_collect(true) };
    true
}

/// The environment variable that, set to anything, leaves transparent huge
/// pages as the system has them (mimalloc reads the same name).
pub const ALLOW_HUGE_PAGES_VAR: &str = "MIMALLOC_ALLOW_THP";

/// Turns transparent huge pages off for this process, unless
/// [`ALLOW_HUGE_PAGES_VAR`] is set. mimalloc asks for huge pages on its
/// arenas, so each 2 MiB page an idle connection's buffers touch stays
/// resident whole: 175 KiB per idle WebSocket against 54 KiB without
/// (docs/PERFORMANCE.md, "Idle WebSockets"), for no measurable gain per
/// request. The kernel checks the flag when it faults a page in, so
/// calling this first thing in `main` covers the arenas mimalloc reserved
/// before it. Whether it took effect, as the kernel reports it.
pub fn disable_transparent_huge_pages() -> bool {
    if std::env::var_os(ALLOW_HUGE_PAGES_VAR).is_some() {
        return false;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes
    // nothing but the process's own flag.
    return unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 };
    #[cfg(not(target_os = "linux"))]
    false
}

/// Hands the memory this thread freed back to the system. Loading a
/// config parses and compiles it into several times its final size, then
/// frees all but the result: tens of MiB for 10 000 routes, which mimalloc
/// would otherwise keep in this thread's heap for allocations that may
/// never come. Called once per load or reload, never per request.
pub fn release_freed() {
    // SAFETY: as in `connection_closed`.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections closing while as many stay open (steady churn).
    fn steady_closes(n: u32) -> usize {
        (0..n).filter(|_| connection_closed(1_000)).count()
    }

    #[test]
    fn each_thread_collects_once_per_closes_per_collect() {
        let run = || steady_closes(CLOSES_PER_COLLECT * 3);
        assert_eq!(run(), 3);
        // Another thread keeps its own count: its closes are its own heap's.
        assert_eq!(std::thread::spawn(run).join().expect("thread"), 3);
    }

    /// 10 000 connections closing one after another: a collection each
    /// time what is open halves, so the last close collects too, and a
    /// few more than the steady count alone would make.
    #[test]
    fn a_burst_ending_collects_as_the_open_connections_halve_and_at_its_end() {
        let collected = std::thread::spawn(|| {
            steady_closes(CLOSES_PER_COLLECT);
            (0..10_000usize)
                .rev()
                .filter(|&still_open| connection_closed(still_open))
                .collect::<Vec<_>>()
        })
        .join()
        .expect("thread");
        assert_eq!(collected.last(), Some(&0), "{collected:?}");
        let by_count = 10_000 / CLOSES_PER_COLLECT as usize;
        assert!(collected.len() > by_count, "{collected:?}");
        assert!(collected.len() <= by_count + 14, "{collected:?}");
    }

    /// Each layout's block honours its alignment and keeps its bytes
    /// through a reallocation, on both the plain and the aligned path.
    #[test]
    fn blocks_are_aligned_and_reallocation_keeps_contents() {
        for align in [1, 2, 4, 8, 16, 64, 128, 4096] {
            for size in [1, 7, 8, 24, 100, 1024, 5000, 70_000] {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: the layout has a non-zero size; every block is
                // written within its size and freed once with its layout.
                unsafe {
                    let block = Allocator.alloc(layout);
                    assert!(!block.is_null());
                    assert_eq!(block as usize % align, 0, "size {size} align {align}");
                    block.write_bytes(0xa5, size);
                    let grown = Allocator.realloc(block, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "size {size} align {align}");
                    assert!((0..size).all(|i| *grown.add(i) == 0xa5));
                    let grown_layout = Layout::from_size_align(size * 3, align).expect("layout");
                    Allocator.dealloc(grown, grown_layout);

                    let zeroed = Allocator.alloc_zeroed(layout);
                    assert_eq!(zeroed as usize % align, 0, "size {size} align {align}");
                    assert!((0..size).all(|i| *zeroed.add(i) == 0));
                    Allocator.dealloc(zeroed, layout);
                }
            }
        }
    }
}
