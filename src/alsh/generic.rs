//! Projection kernel written once over [`SimdF32`]; the tier files instantiate it.
//! The contract is that of [`super::ProjectFn`].
//!
//! Rows go in blocks of `LANES` (design §4, projection). A block's rows are copied into a small
//! aligned tile, chunk-major (`LANES` values of each row per chunk, so every load of the inner
//! loops sits at a constant offset from one base), while the copy pass accumulates the squared
//! norms. Then each round runs over the tile: one accumulator per row along d, the round's
//! projection chunk loaded once for all rows, and one transposing reduction
//! ([`SimdF32::transpose_sum`]) turns the `LANES` accumulators into one vector of `LANES`
//! hashes, stored contiguously into the round-major output. The rows come from memory once,
//! during the copy; while the rounds run on the tile, the next rows are prefetched a share per
//! round, so the memory traffic overlaps the arithmetic.

use crate::simd::SimdF32;
use crate::view::{Data, Rows};
use core::mem::MaybeUninit;

/// Largest row block of any tier (AVX-512: 16 rows, one per lane).
const MAX_BLOCK: usize = 16;

/// Floats of the tile (8 KiB): `LANES` rows of up to `TILE / LANES` values. Longer rows go in
/// segments, their partial sums added into the outputs.
const TILE: usize = 2048;

/// How many blocks ahead the copy pass's rows are prefetched.
const PREFETCH_BLOCKS: usize = 2;

/// Floats per 64-byte cache line.
const LINE: usize = 16;

#[repr(C, align(64))]
struct Tile([f32; TILE]);

/// One pass over each row: its squared norm and its R raw dot products with the projection
/// (the lift term is added afterwards by [`super::apply_lift`], once M is known).
#[inline(always)]
pub(crate) unsafe fn project<S: SimdF32>(
    rows: Rows<'_>,
    idx: Option<&[u32]>,
    a_t: &[f32],
    norms: &mut [f32],
    out: &mut [f32],
    ld: usize,
) {
    let d = rows.dim;
    let width = d + 2;
    let n = norms.len();
    let rounds = a_t.len() / width;
    assert!(
        a_t.len() == rounds * width
            && n <= ld
            && (rounds == 0 || out.len() >= (rounds - 1) * ld + n),
        "project extents"
    );
    assert!(S::LANES <= MAX_BLOCK && S::LANES <= LINE, "row block");
    let lanes = S::LANES;
    // Values of each row per segment: a whole number of vectors that fills the tile.
    let seg = TILE / lanes / lanes * lanes;
    let mut tile = MaybeUninit::<Tile>::uninit();
    let tile = tile.as_mut_ptr().cast::<f32>();
    let mut i0 = 0;
    while i0 < n {
        let i1 = i0 + lanes.min(n - i0);
        let block = Block::new(&rows, idx, i0, i1 - i0);
        let ahead = i1 + (PREFETCH_BLOCKS - 1) * lanes;
        let next = (ahead < n).then(|| Block::new(&rows, idx, ahead, lanes.min(n - ahead)));
        let mut s0 = 0;
        // At least one segment, so that d = 0 still writes its zero sums.
        loop {
            let len = seg.min(d - s0);
            let first = s0 == 0;
            // The rows the next copy pass reads: the next segment, else the next block.
            let upcoming = if s0 + len < d {
                Some((block, s0 + len, seg.min(d - s0 - len)))
            } else {
                next.map(|next| (next, 0, seg.min(d)))
            };
            // SAFETY: `Block` bounds every row for d values and [s0, s0 + len) ⊂ [0, d); the
            // tile holds LANES · len ≤ TILE values; each round's slice of a_t below holds len
            // values; the caller's tier is running.
            unsafe {
                let sums = copy_rows::<S>(&block, s0, len, tile);
                store_lanes::<S>(sums, &mut norms[i0..i1], first);
                // Each round takes a share of the prefetch; with no round, the copy takes it.
                if rounds == 0 {
                    if let Some((rows, from, len)) = upcoming {
                        prefetch_share::<S>(&rows, from, len, 0, 1);
                    }
                }
                for r in 0..rounds {
                    if let Some((rows, from, len)) = upcoming {
                        prefetch_share::<S>(&rows, from, len, r, rounds);
                    }
                    let a = &a_t[r * width + s0..r * width + s0 + len];
                    let sums = tile_dots::<S>(tile, a);
                    store_lanes::<S>(sums, &mut out[r * ld + i0..r * ld + i1], first);
                }
            }
            s0 += len;
            if s0 >= d {
                break;
            }
        }
        i0 = i1;
    }
}

/// Where the rows of one block are: rows i0 .. i0 + count, directly or through `idx`. Row j
/// for j ≥ count means the last row (hashed, never stored), so every lane has a valid row.
#[derive(Clone, Copy)]
enum Block<'a> {
    /// Row j at `first + j · stride`, all of them checked to lie in the data.
    Strided {
        first: *const f32,
        stride: usize,
        count: usize,
    },
    /// Row j is `rows.row(idx[j])`, checked when read.
    Indexed { rows: &'a Rows<'a>, idx: &'a [u32] },
}

impl<'a> Block<'a> {
    #[inline(always)]
    fn new(rows: &'a Rows<'a>, idx: Option<&'a [u32]>, i0: usize, count: usize) -> Block<'a> {
        match idx {
            Some(idx) => Block::Indexed {
                rows,
                idx: &idx[i0..i0 + count],
            },
            None => {
                // Consecutive rows lie at increasing offsets: one check of the block's
                // extent, in checked arithmetic, bounds them all.
                let start = i0
                    .checked_mul(rows.stride)
                    .and_then(|o| o.checked_add(rows.base));
                let end = start
                    .zip((count - 1).checked_mul(rows.stride))
                    .and_then(|(start, span)| start.checked_add(span)?.checked_add(rows.dim));
                let (Some(start), Some(end)) = (start, end) else {
                    panic!("row offsets overflow");
                };
                let Data::F32(data) = rows.data else {
                    panic!("the projection kernel reads f32 rows");
                };
                Block::Strided {
                    first: data[start..end].as_ptr(),
                    stride: rows.stride,
                    count,
                }
            }
        }
    }

    /// Row j's d values.
    #[inline(always)]
    fn row(&self, j: usize) -> *const f32 {
        match *self {
            Block::Strided {
                first,
                stride,
                count,
            } => {
                // SAFETY: start + j'·stride + dim ≤ end ≤ data.len() for j' < count (`new`).
                unsafe { first.add(j.min(count - 1) * stride) }
            }
            Block::Indexed { rows, idx } => rows
                .row_f32(idx[j.min(idx.len() - 1)] as usize)
                .expect("the projection kernel reads f32 rows")
                .as_ptr(),
        }
    }

    /// Row j's address for a prefetch: unchecked, wrapping, never dereferenced.
    #[inline(always)]
    fn row_address(&self, j: usize) -> *const f32 {
        match *self {
            Block::Strided {
                first,
                stride,
                count,
            } => first.wrapping_add(j.min(count - 1).wrapping_mul(stride)),
            Block::Indexed { rows, idx } => {
                rows.row_start(idx[j.min(idx.len() - 1)] as usize).cast()
            }
        }
    }
}

/// Copies values [s0, s0 + len) of the block's rows into the tile, chunk-major
/// (`tile[(c·LANES + j)·LANES + l] = x_j[s0 + c·LANES + l]`, the last chunk zero-padded), and
/// returns their squared norms (lane j for row j).
#[inline(always)]
unsafe fn copy_rows<S: SimdF32>(block: &Block<'_>, s0: usize, len: usize, tile: *mut f32) -> S::V {
    let lanes = S::LANES;
    let whole = len / lanes * lanes;
    // SAFETY: the caller guarantees each row + s0 is valid for len values and the tile for
    // LANES · len.div_ceil(LANES) · LANES ≤ TILE values.
    unsafe {
        let mut rows = [core::ptr::null::<f32>(); MAX_BLOCK];
        for (j, row) in rows.iter_mut().take(lanes).enumerate() {
            *row = block.row(j).add(s0);
        }
        let mut acc = S::zero_block();
        let mut dst = tile;
        let mut at = 0;
        while at < whole {
            for (slot, &x) in acc.as_mut().iter_mut().zip(&rows) {
                let v = S::load(x.add(at));
                *slot = S::fma(v, v, *slot);
                S::store(dst, v);
                dst = dst.add(lanes);
            }
            at += lanes;
        }
        if whole < len {
            for (slot, &x) in acc.as_mut().iter_mut().zip(&rows) {
                let mut buf = [0.0f32; MAX_BLOCK];
                core::ptr::copy_nonoverlapping(x.add(whole), buf.as_mut_ptr(), len - whole);
                let v = S::load(buf.as_ptr());
                *slot = S::fma(v, v, *slot);
                S::store(dst, v);
                dst = dst.add(lanes);
            }
        }
        S::transpose_sum(&acc)
    }
}

/// Prefetches the line holding value `at` of every row of the block.
#[inline(always)]
fn prefetch_line<S: SimdF32>(rows: &Block<'_>, at: usize) {
    for j in 0..S::LANES {
        // SAFETY: a prefetch never faults and changes nothing visible, whatever the address;
        // wrapping arithmetic keeps the address computation itself defined.
        unsafe { S::prefetch(rows.row_address(j).wrapping_add(at)) };
    }
}

/// Round `share` of `shares` prefetches lines share, share + shares, … of values
/// [from, from + len) of the block's rows, and the last share also the line of the last value
/// (an unaligned row spans one line more).
#[inline(always)]
fn prefetch_share<S: SimdF32>(
    rows: &Block<'_>,
    from: usize,
    len: usize,
    share: usize,
    shares: usize,
) {
    let mut at = share * LINE;
    while at < len {
        prefetch_line::<S>(rows, from + at);
        at += shares * LINE;
    }
    if share + 1 == shares && len > 0 {
        prefetch_line::<S>(rows, from + len - 1);
    }
}

/// Dot products of the tile's rows with `a` (`a.len()` values; the tile's padding beyond
/// them is zero): lane j of the result is row j's.
#[inline(always)]
unsafe fn tile_dots<S: SimdF32>(tile: *const f32, a: &[f32]) -> S::V {
    let lanes = S::LANES;
    let whole = a.len() / lanes;
    // SAFETY: the caller filled a.len().div_ceil(LANES) chunks of the tile; loads of `a` stay
    // below whole · LANES ≤ a.len(), and its last partial chunk goes through a padded buffer.
    unsafe {
        let mut acc = S::zero_block();
        let mut src = tile;
        for c in 0..whole {
            let av = S::load(a.as_ptr().add(c * lanes));
            for (j, slot) in acc.as_mut().iter_mut().enumerate() {
                *slot = S::fma(S::load(src.add(j * lanes)), av, *slot);
            }
            src = src.add(lanes * lanes);
        }
        if whole * lanes < a.len() {
            let mut buf = [0.0f32; MAX_BLOCK];
            buf[..a.len() - whole * lanes].copy_from_slice(&a[whole * lanes..]);
            let av = S::load(buf.as_ptr());
            for (j, slot) in acc.as_mut().iter_mut().enumerate() {
                *slot = S::fma(S::load(src.add(j * lanes)), av, *slot);
            }
        }
        S::transpose_sum(&acc)
    }
}

/// Stores the first `dst.len()` (≤ LANES) lanes of `v`, or with `first` unset adds them to
/// what `dst` holds (a later segment of long rows).
#[inline(always)]
unsafe fn store_lanes<S: SimdF32>(v: S::V, dst: &mut [f32], first: bool) {
    // SAFETY: a full store writes LANES values into `dst` of that length; a partial one goes
    // through a buffer of MAX_BLOCK ≥ LANES values.
    unsafe {
        if dst.len() == S::LANES {
            let v = if first {
                v
            } else {
                S::add(S::load(dst.as_ptr()), v)
            };
            S::store(dst.as_mut_ptr(), v);
        } else {
            let mut buf = [0.0f32; MAX_BLOCK];
            S::store(buf.as_mut_ptr(), v);
            for (d, b) in dst.iter_mut().zip(buf) {
                *d = if first { b } else { *d + b };
            }
        }
    }
}

/// Declares a tier's projection kernel: a `#[target_feature]` shim and a safe table entry.
macro_rules! alsh_tier {
    ($simd:ty, [$($attr:meta),*], $project:ident) => {
        use super::generic;
        use crate::view::Rows;
        use $simd as S;

        $(#[$attr])*
        unsafe fn project_impl(
            rows: Rows<'_>,
            idx: Option<&[u32]>,
            a_t: &[f32],
            norms: &mut [f32],
            out: &mut [f32],
            ld: usize,
        ) {
            // SAFETY: the tier's features are enabled here (or needed by none); the generic
            // body checks extents.
            unsafe { generic::project::<S>(rows, idx, a_t, norms, out, ld) }
        }

        /// Norms and raw hashes in one pass; the name carries the row block (one row per lane).
        pub(super) fn $project(
            rows: Rows<'_>,
            idx: Option<&[u32]>,
            a_t: &[f32],
            norms: &mut [f32],
            out: &mut [f32],
            ld: usize,
        ) {
            // SAFETY: reachable only through `super::kernels`, which takes a `Tier`: the CPU
            // has this tier's features.
            unsafe { project_impl(rows, idx, a_t, norms, out, ld) }
        }
    };
}
pub(crate) use alsh_tier;
