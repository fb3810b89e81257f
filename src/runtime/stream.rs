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

/// `dst[i] = src[i] · scale`, with non-temporal stores when `stream` is set and
/// [`can_stream`] allows: the portable tier's `ScaleStoreFn` (the vector tiers have their
/// own). After streaming stores the caller must call [`fence`] before other threads may
/// read `dst` or the call returns.
///
/// # Panics
/// If the lengths differ.
#[inline(always)]
pub(crate) fn scale_row(dst: &mut [f32], src: &[f32], scale: f32, stream: bool) {
    assert_eq!(dst.len(), src.len(), "stream::scale_row lengths");
    #[cfg(target_arch = "x86_64")]
    if stream && can_stream(dst.as_ptr(), dst.len()) {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_mul_ps, _mm_set1_ps, _mm_stream_ps};
        for (to, from) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
            // SAFETY: SSE is baseline on x86-64; `to` is 4 writable f32 at a 16-byte aligned
            // address (the row starts on a 64-byte line and chunks are 16 bytes), `from` 4
            // readable f32 (unaligned loads are allowed).
            unsafe {
                let scaled = _mm_mul_ps(_mm_loadu_ps(from.as_ptr()), _mm_set1_ps(scale));
                _mm_stream_ps(to.as_mut_ptr(), scaled);
            }
        }
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = stream;
    for (to, &from) in dst.iter_mut().zip(src) {
        *to = from * scale;
    }
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
    fn rows_are_scaled_whatever_their_alignment() {
        let src: Vec<f32> = (0..200).map(|i| i as f32 * 0.5 - 7.0).collect();
        for offset in 0..20 {
            for len in [1, 15, 16, 17, 64, 100] {
                let mut store = vec![f32::NAN; 256];
                let dst = &mut store[offset..offset + len];
                scale_row(dst, &src[..len], 0.375, offset % 2 == 0);
                fence();
                let expected: Vec<f32> = src[..len].iter().map(|&x| x * 0.375).collect();
                assert_eq!(&store[offset..offset + len], &expected[..]);
                assert!(store[..offset]
                    .iter()
                    .chain(&store[offset + len..])
                    .all(|x| x.is_nan()));
            }
        }
    }

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
