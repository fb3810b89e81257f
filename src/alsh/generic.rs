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

/// One pass over each row: its squared norm and its R raw dot products with the projection
/// (the lift term is added afterwards by [`super::apply_lift`], once M is known).
#[inline(always)]
pub(crate) unsafe fn project<S: SimdF32>(
    rows: Rows<'_>,
    idx: Option<&[u32]>,
    a_t: &[f32],
    norms: &mut [f32],
    out: &mut [f32],
) {
    let width = rows.dim + 2;
    let n = norms.len();
    let rounds = a_t.len() / width;
    assert!(
        out.len() >= rounds * n && a_t.len() == rounds * width,
        "project extents"
    );
    for i in 0..n {
        let row = rows.row(row_index(idx, i));
        let mut r0 = 0;
        // SAFETY (all blocks): rounds r0..r0+B < rounds, so every projection row read lies in
        // a_t; the row has d values; the caller's tier.
        unsafe {
            norms[i] = rounds_block::<S, 0>(row, a_t, width, 0, &mut [], true);
            while r0 + ROUND_BLOCK <= rounds {
                let mut sums = [0.0; ROUND_BLOCK];
                rounds_block::<S, ROUND_BLOCK>(row, a_t, width, r0, &mut sums, false);
                for (r, h) in sums.into_iter().enumerate() {
                    out[(r0 + r) * n + i] = h;
                }
                r0 += ROUND_BLOCK;
            }
            while r0 < rounds {
                let mut sums = [0.0; 1];
                rounds_block::<S, 1>(row, a_t, width, r0, &mut sums, false);
                out[r0 * n + i] = sums[0];
                r0 += 1;
            }
        }
    }
}

/// B dot products of `row` with rounds r0..r0+B of `a_t` (B constant, so the accumulators
/// live in registers); with `norm` set, returns the squared norm of `row` instead.
#[inline(always)]
unsafe fn rounds_block<S: SimdF32, const B: usize>(
    row: &[f32],
    a_t: &[f32],
    width: usize,
    r0: usize,
    sums: &mut [f32],
    norm: bool,
) -> f32 {
    let d = row.len();
    let whole = d / S::LANES * S::LANES;
    let x = row.as_ptr();
    // SAFETY: loads cover [at, at + LANES) ⊂ [0, d), inside the row and each round's values.
    unsafe {
        if norm {
            let (mut s0, mut s1) = (S::splat(0.0), S::splat(0.0));
            let mut at = 0;
            while at + 2 * S::LANES <= whole {
                let (x0, x1) = (S::load(x.add(at)), S::load(x.add(at + S::LANES)));
                s0 = S::fma(x0, x0, s0);
                s1 = S::fma(x1, x1, s1);
                at += 2 * S::LANES;
            }
            if at < whole {
                let x0 = S::load(x.add(at));
                s0 = S::fma(x0, x0, s0);
            }
            let mut total = S::reduce_add(S::add(s0, s1));
            for &xt in &row[whole..] {
                total = xt.mul_add(xt, total);
            }
            return total;
        }
        let a = a_t.as_ptr().add(r0 * width);
        let mut acc = [S::splat(0.0); B];
        for at in (0..whole).step_by(S::LANES) {
            let xv = S::load(x.add(at));
            for (r, slot) in acc.iter_mut().enumerate() {
                *slot = S::fma(xv, S::load(a.add(r * width + at)), *slot);
            }
        }
        for (r, slot) in acc.iter().enumerate() {
            let mut h = S::reduce_add(*slot);
            for (t, &xt) in row.iter().enumerate().skip(whole) {
                h = xt.mul_add(*a.add(r * width + t), h);
            }
            sums[r] = h;
        }
        0.0
    }
}

/// Declares a tier's projection kernels: `#[target_feature]` shims and safe table entries.
macro_rules! alsh_tier {
    ($simd:ty, $features:literal, $project:ident) => {
        use super::generic;
        use crate::attention::Rows;
        use $simd as S;

        #[target_feature(enable = $features)]
        unsafe fn project_impl(
            rows: Rows<'_>,
            idx: Option<&[u32]>,
            a_t: &[f32],
            norms: &mut [f32],
            out: &mut [f32],
        ) {
            // SAFETY: the features are enabled here; the generic body checks extents.
            unsafe { generic::project::<S>(rows, idx, a_t, norms, out) }
        }

        /// Norms and raw hashes in one pass; the name carries the rounds per pass.
        pub(crate) fn $project(
            rows: Rows<'_>,
            idx: Option<&[u32]>,
            a_t: &[f32],
            norms: &mut [f32],
            out: &mut [f32],
        ) {
            // SAFETY: this table entry is only reachable for a tier the CPU supports.
            unsafe { project_impl(rows, idx, a_t, norms, out) }
        }
    };
}
pub(crate) use alsh_tier;
