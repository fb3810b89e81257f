//! Non-temporal stores of whole output rows (x86-64; a plain copy elsewhere).
//!
//! The first round of a SMYRF call overwrites every output row whole. An ordinary store
//! first reads the row's lines into the cache (a scattered read of the caller's output, one
//! per line) only to overwrite them; a streaming store writes full lines without reading
//! them (a few percent of a long call, docs/perf-notes.md).

/// Output rows of one head below this size stay with plain stores: they fit in the core's
/// cache, where the later rounds read them back, and streaming them out measured slower.
pub(crate) const MIN_STREAMED_BYTES: usize = 2 << 20;

/// True when `rows` output rows of `dim` f32 are worth streaming (see [`MIN_STREAMED_BYTES`]).
#[inline(always)]
pub(crate) fn worth_streaming(rows: usize, dim: usize) -> bool {
    rows.saturating_mul(dim).saturating_mul(4) >= MIN_STREAMED_BYTES
}

/// True when rows of `len` f32 starting at `start` can take streaming stores: whole 64-byte
/// lines (the row starts on a line and is a whole number of lines) on x86-64. Not under
/// Miri, which has no store fence: there every row takes plain stores.
#[inline(always)]
pub(crate) fn can_stream(start: *const f32, len: usize) -> bool {
    cfg!(all(target_arch = "x86_64", not(miri)))
        && start.addr().is_multiple_of(64)
        && len.is_multiple_of(16)
}

/// Orders this thread's streaming stores before its later stores (and so before the release
/// that publishes them to other threads).
#[inline(always)]
pub(crate) fn fence() {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: SSE is baseline on x86-64; a store fence has no other effect.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_large_outputs_are_worth_streaming() {
        assert!(!worth_streaming(4096, 64));
        assert!(worth_streaming(8192, 64));
        assert!(worth_streaming(16384, 64));
        assert!(worth_streaming(usize::MAX, usize::MAX));
    }

    #[test]
    fn only_whole_aligned_lines_stream() {
        let store = vec![0.0f32; 64];
        let p = store.as_ptr();
        let aligned = p.wrapping_add((64 - p.addr() % 64) % 64 / 4);
        let streams = cfg!(all(target_arch = "x86_64", not(miri)));
        assert_eq!(can_stream(aligned, 16), streams);
        assert_eq!(can_stream(aligned, 64), streams);
        assert!(!can_stream(aligned, 24));
        assert!(!can_stream(aligned.wrapping_add(4), 16));
    }
}
