//! Giving memory back to the system after a burst of connections.
//!
//! jwtgate's binary allocates with mimalloc (see `src/main.rs`), which keeps
//! the pages a thread freed in that thread's own heap until the thread
//! allocates again, and returns them to the system only when it collects.
//! After thousands of connections close, the threads that served them go
//! quiet and would hold that memory for good. So each thread collects
//! itself once every [`CLOSES_PER_COLLECT`] connections it closed: a burst
//! of closes then hands its memory back as it ends, at the cost of one
//! collection per that many connections (never per request).

use std::cell::Cell;

/// Large enough that connection churn collects rarely, small enough that
/// what a burst leaves behind (this many connections' worth, a few KiB
/// each) does not matter.
pub const CLOSES_PER_COLLECT: u32 = 256;

thread_local! {
    static CLOSED_SINCE_COLLECT: Cell<u32> = const { Cell::new(0) };
}

/// Called as a client connection ends, on the thread that served it.
/// True when this call collected.
pub fn connection_closed() -> bool {
    CLOSED_SINCE_COLLECT.with(|closed| {
        let count = closed.get() + 1;
        if count < CLOSES_PER_COLLECT {
            closed.set(count);
            return false;
        }
        closed.set(0);
        // SAFETY: mi_collect takes no pointers; it only walks the calling
        // thread's own heap and the shared arenas, which mimalloc locks.
        unsafe { libmimalloc_sys::mi_collect(true) };
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_collects_once_per_closes_per_collect() {
        let run = || {
            (0..CLOSES_PER_COLLECT * 3)
                .filter(|_| connection_closed())
                .count()
        };
        assert_eq!(run(), 3);
        // Another thread keeps its own count: its closes are its own heap's.
        assert_eq!(std::thread::spawn(run).join().expect("thread"), 3);
    }
}
