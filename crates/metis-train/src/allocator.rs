//! Allocator settings for processes that train or serve with Metis and use mimalloc as their
//! global allocator (the `metis` binary, the SFT bench).

/// mimalloc's `mi_option_purge_delay`: its position in `mi_option_t` in both mimalloc v2 and v3
/// (the bindings do not export it as a constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped: by default mimalloc hands pages back to the kernel soon after
/// they are freed (10 ms in v2, 1 s in v3), and a training step that frees and reallocates its
/// activations every step then page-faults them back in, zeroed by the kernel (a third of a
/// step at the 135M shape). The process's resident memory stays at its high-water mark
/// instead. Without mimalloc as the global allocator this changes nothing.
pub fn keep_freed_memory() {
    // SAFETY: plain calls into the allocator's option table; the option is only changed while
    // it holds a purge delay (a positive number of milliseconds, at most a minute).
    unsafe {
        if (1..=60_000).contains(&libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY)) {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}
