//! What a reload of a config costs on the heap while it compiles: the
//! config compiled once (the running one), then read and compiled again
//! beside it, under the counting allocator of `heap.rs` (the crate must
//! install it and declare both modules at its root).

use std::path::Path;

use jwtgate::assemble::compile_reusing;

use super::heap;

/// The heap peak of compiling `text` again beside its running compile, and
/// what the new compile keeps, both in bytes over the running config.
pub fn peak_and_kept(text: &str) -> (isize, isize) {
    let path = Path::new("big.yaml");
    let parse = || jwtgate::config::parse(path, text, &|_| None).expect("the config parses");
    let running = compile_reusing(path, parse(), &()).expect("the config compiles");
    let before = heap::allocated();
    heap::reset_peak();
    let reloaded = compile_reusing(path, parse(), &()).expect("the config compiles");
    let kept = heap::allocated() - before;
    let peak = heap::peak() - before;
    drop((running, reloaded));
    (peak, kept)
}
