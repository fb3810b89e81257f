//! Projection kernels written once over [`SimdF32`]; the tier files instantiate them.
//! Contracts are those of [`super::SqNormsFn`] and [`super::ProjectFn`].

use crate::attention::Rows;
use crate::simd::SimdF32;

/// Rounds hashed together: their accumulators share each load of the row.
const ROUND_BLOCK: usize = 4;

#[inline(always)]
fn row_index(idx: Option<&[u32]>, i: usize) -> usize {
    idx.map_or(i, |idx| idx[i] as usize)
}

/// Σ a[t]·b[t] with two vector accumulators and a scalar tail.
#[inline(always)]
unsafe fn dot<S: SimdF32>(a: &[f32], b: &[f32]) -> f32 {
    let d = a.len().min(b.len());
    let whole = d / S::LANES * S::LANES;
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // SAFETY: every load covers [at, at + LANES) ⊂ [0, whole) ⊂ both slices.
    let mut sum = unsafe {
        let mut acc = S::splat(0.0);
        for at in (0..whole).step_by(S::LANES) {
            acc = S::fma(S::load(pa.add(at)), S::load(pb.add(at)), acc);
        }
        S::reduce_add(acc)
    };
    for t in whole..d {
        sum = a[t].mul_add(b[t], sum);
    }
    sum
}

#[inline(always)]
pub(crate) unsafe fn sq_norms<S: SimdF32>(rows: Rows<'_>, idx: Option<&[u32]>, out: &mut [f32]) {
    for (i, slot) in out.iter_mut().enumerate() {
        let row = rows.row(row_index(idx, i));
        // SAFETY: the caller's tier.
        *slot = unsafe { dot::<S>(row, row) };
    }
}

#[inline(always)]
pub(crate) unsafe fn project<S: SimdF32>(
    rows: Rows<'_>,
    idx: Option<&[u32]>,
    norms: &[f32],
    m: f32,
    a_t: &[f32],
    lift: usize,
    out: &mut [f32],
) {
    let d = rows.dim;
    let width = d + 2;
    let n = norms.len();
    let rounds = a_t.len() / width;
    assert!(out.len() >= rounds * n && lift < width, "project extents");
    let whole = d / S::LANES * S::LANES;
    for (i, &norm) in norms.iter().enumerate() {
        let row = rows.row(row_index(idx, i));
        let lifted = (m - norm).max(0.0).sqrt();
        let x = row.as_ptr();
        let mut r0 = 0;
        while r0 < rounds {
            let block = (rounds - r0).min(ROUND_BLOCK);
            let mut sums = [0.0f32; ROUND_BLOCK];
            // SAFETY: loads cover [at, at + LANES) ⊂ [0, d) of the row and of each round's
            // d + 2 projection values.
            unsafe {
                let mut acc = [S::splat(0.0); ROUND_BLOCK];
                for at in (0..whole).step_by(S::LANES) {
                    let xv = S::load(x.add(at));
                    for (r, slot) in acc.iter_mut().enumerate().take(block) {
                        let a = a_t.as_ptr().add((r0 + r) * width + at);
                        *slot = S::fma(xv, S::load(a), *slot);
                    }
                }
                for (sum, &v) in sums.iter_mut().zip(&acc).take(block) {
                    *sum = S::reduce_add(v);
                }
            }
            for (r, sum) in sums.iter().enumerate().take(block) {
                let a = &a_t[(r0 + r) * width..(r0 + r + 1) * width];
                let mut h = *sum;
                for t in whole..d {
                    h = row[t].mul_add(a[t], h);
                }
                out[(r0 + r) * n + i] = a[lift].mul_add(lifted, h);
            }
            r0 += block;
        }
    }
}

/// Declares a tier's projection kernels: `#[target_feature]` shims and safe table entries.
macro_rules! alsh_tier {
    ($simd:ty, $features:literal, $norms:ident, $project:ident) => {
        use super::generic;
        use crate::attention::Rows;
        use $simd as S;

        #[target_feature(enable = $features)]
        unsafe fn norms_impl(rows: Rows<'_>, idx: Option<&[u32]>, out: &mut [f32]) {
            // SAFETY: the features are enabled here; slices are bounds-checked.
            unsafe { generic::sq_norms::<S>(rows, idx, out) }
        }

        #[target_feature(enable = $features)]
        unsafe fn project_impl(
            rows: Rows<'_>,
            idx: Option<&[u32]>,
            norms: &[f32],
            m: f32,
            a_t: &[f32],
            lift: usize,
            out: &mut [f32],
        ) {
            // SAFETY: as above.
            unsafe { generic::project::<S>(rows, idx, norms, m, a_t, lift, out) }
        }

        pub(crate) fn $norms(rows: Rows<'_>, idx: Option<&[u32]>, out: &mut [f32]) {
            // SAFETY: this table entry is only reachable for a tier the CPU supports.
            unsafe { norms_impl(rows, idx, out) }
        }

        pub(crate) fn $project(
            rows: Rows<'_>,
            idx: Option<&[u32]>,
            norms: &[f32],
            m: f32,
            a_t: &[f32],
            lift: usize,
            out: &mut [f32],
        ) {
            // SAFETY: as above.
            unsafe { project_impl(rows, idx, norms, m, a_t, lift, out) }
        }
    };
}
pub(crate) use alsh_tier;
