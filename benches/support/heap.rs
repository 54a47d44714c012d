//! The system allocator, counting the bytes currently allocated and the
//! most ever allocated at once: a bench or test that installs it
//! (`#[global_allocator]`) can say what a structure holds on the heap, and
//! what building it took at its peak, as requested sizes before the
//! allocator's rounding.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

pub struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

/// Bytes allocated and not yet freed, by the whole process.
pub fn allocated() -> isize {
    ALLOCATED.load(Ordering::Relaxed)
}

/// The most bytes allocated at once since the last [`reset_peak`].
#[allow(dead_code)]
pub fn peak() -> isize {
    PEAK.load(Ordering::Relaxed)
}

/// Starts a new peak from what is allocated now.
#[allow(dead_code)]
pub fn reset_peak() {
    PEAK.store(allocated(), Ordering::Relaxed);
}

fn grow(bytes: isize) {
    let now = ALLOCATED.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    /// The old block and the new one are both held while the contents
    /// move: the peak counts them together.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size() as isize;
        grow(new_size as isize);
        ALLOCATED.fetch_sub(old, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
