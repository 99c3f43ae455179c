//! Prefetch hints: loads the CPU may start early, for the writer's gather of a large batch
//! in key order. A hint has no effect on what the program computes.

/// Asks for the cache line holding `p` (any address: a prefetch never faults).
#[inline(always)]
pub(crate) fn read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is a hint that never faults and never changes memory, whatever
    // the address, and SSE, which it needs, is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks for the first `lines` cache lines of `bytes`.
#[inline(always)]
pub(crate) fn read_lines(bytes: &[u8], lines: usize) {
    for line in bytes.chunks(64).take(lines) {
        read(line.as_ptr());
    }
}
