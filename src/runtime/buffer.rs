//! A growable f32 buffer aligned to 64 bytes (one cache line, one AVX-512 register), for
//! kernel tiles. It only grows, so a reused buffer allocates nothing once it is large enough.

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// 64-byte aligned storage of f32 values.
#[derive(Default)]
pub(crate) struct AlignedBuf {
    lines: Vec<Line>,
}

impl AlignedBuf {
    /// The first `len` values; contents are whatever the last user left, unless the buffer
    /// has to grow: then it is replaced by a zero-filled one of exactly the new size (the
    /// old one freed first, and no amortised doubling), so the scratch a call allocates is
    /// exactly what its largest tiles need (`Plan::scratch_bytes` bounds it).
    pub(crate) fn get(&mut self, len: usize) -> &mut [f32] {
        let lines = len.div_ceil(16);
        if self.lines.len() < lines {
            self.lines = Vec::new();
            self.lines.resize(lines, Line::default());
        }
        // SAFETY: `Line` is `repr(C)` over `[f32; 16]` with no padding (64 bytes), so the
        // vector's storage is `16 * lines.len()` initialised, aligned f32 values; `len` is at
        // most that, and the slice borrows `self` mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), len) }
    }
}

/// Rounds `n` up to a multiple of `to`.
#[inline(always)]
pub(crate) fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}
