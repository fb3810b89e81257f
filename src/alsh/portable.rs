//! Portable projection kernel on `wide::f32x8`: blocks of 8 rows, one round at a time, an
//! 8 → 1 transposing reduction per round (design §4), like the SIMD tiers' generic body.

use crate::view::Rows;
use wide::f32x8;

/// Rows per block: one per lane.
const BLOCK: usize = 8;

/// Transposing reduction: lane j of the result is the sum of the lanes of `block[j]`.
#[inline(always)]
pub(crate) fn transpose_sum(block: [f32x8; BLOCK]) -> f32x8 {
    let t = f32x8::transpose(block);
    ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]))
}

#[inline(always)]
fn load(x: &[f32]) -> f32x8 {
    f32x8::new(x[..8].try_into().expect("8 lanes"))
}

/// Dot products of the block's rows with `a` (with `a` = None, squared norms): lane j for row
/// j, the d % 8 trailing products added after the vector sum.
#[inline(always)]
fn block_dots(rows: &[&[f32]; BLOCK], a: Option<&[f32]>) -> f32x8 {
    let d = rows[0].len();
    let whole = d / 8 * 8;
    let mut acc = [f32x8::ZERO; BLOCK];
    for at in (0..whole).step_by(8) {
        let av = a.map(|a| load(&a[at..]));
        for (slot, row) in acc.iter_mut().zip(rows) {
            let x = load(&row[at..]);
            *slot = x.mul_add(av.unwrap_or(x), *slot);
        }
    }
    let mut sums = transpose_sum(acc).to_array();
    for (sum, row) in sums.iter_mut().zip(rows) {
        for t in whole..d {
            let w = a.map_or(row[t], |a| a[t]);
            *sum += row[t] * w;
        }
    }
    f32x8::new(sums)
}

/// Hint that the line holding `x[at]` will be read soon (SSE `prefetcht0`, part of every
/// x86-64; elsewhere nothing).
#[inline(always)]
fn prefetch(x: &[f32], at: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86-64 baseline, and a prefetch never faults; `at` is
    // within `x`, so the address is in bounds anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(x[at..].as_ptr().cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, at);
}

/// Norms and raw hashes in one pass over each block of rows.
pub(crate) fn project(
    rows: Rows<'_>,
    idx: Option<&[u32]>,
    a_t: &[f32],
    norms: &mut [f32],
    out: &mut [f32],
) {
    let d = rows.dim;
    let width = d + 2;
    let n = norms.len();
    let rounds = a_t.len() / width;
    let mut i0 = 0;
    while i0 < n {
        let count = BLOCK.min(n - i0);
        // Lanes past `count` repeat the last row: hashed, never stored.
        let block: [&[f32]; BLOCK] = core::array::from_fn(|j| {
            let i = i0 + j.min(count - 1);
            rows.row(idx.map_or(i, |idx| idx[i] as usize))
        });
        // The next block's rows, fetched while this one is hashed.
        for i in i0 + count..n.min(i0 + count + BLOCK) {
            let row = rows.row(idx.map_or(i, |idx| idx[i] as usize));
            for at in (0..d).step_by(16) {
                prefetch(row, at);
            }
        }
        let sums = block_dots(&block, None).to_array();
        norms[i0..i0 + count].copy_from_slice(&sums[..count]);
        for r in 0..rounds {
            let a = &a_t[r * width..r * width + d];
            let sums = block_dots(&block, Some(a)).to_array();
            out[r * n + i0..r * n + i0 + count].copy_from_slice(&sums[..count]);
        }
        i0 += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_sum_matches_plain_sums() {
        let block: [f32x8; BLOCK] =
            core::array::from_fn(|j| f32x8::new(core::array::from_fn(|l| (j * 8 + l) as f32)));
        let got = transpose_sum(block).to_array();
        for (j, &g) in got.iter().enumerate() {
            let want: f32 = block[j].to_array().iter().sum();
            assert_eq!(g, want, "lane {j}");
        }
    }
}
