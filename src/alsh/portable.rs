//! Portable projection kernels on `wide::f32x8`.

use crate::attention::Rows;
use wide::f32x8;

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let whole = a.len() / 8 * 8;
    let mut acc = f32x8::ZERO;
    for at in (0..whole).step_by(8) {
        let x: [f32; 8] = a[at..at + 8].try_into().expect("8 lanes");
        let y: [f32; 8] = b[at..at + 8].try_into().expect("8 lanes");
        acc = f32x8::new(x).mul_add(f32x8::new(y), acc);
    }
    let mut sum = acc.reduce_add();
    for (x, y) in a[whole..].iter().zip(&b[whole..]) {
        sum += x * y;
    }
    sum
}

#[inline(always)]
fn row_index(idx: Option<&[u32]>, i: usize) -> usize {
    idx.map_or(i, |idx| idx[i] as usize)
}

/// Norms and raw hashes in one pass over each row.
pub(crate) fn project(
    rows: Rows<'_>,
    idx: Option<&[u32]>,
    a_t: &[f32],
    norms: &mut [f32],
    out: &mut [f32],
) {
    let d = rows.dim;
    let n = norms.len();
    let rounds = a_t.len() / (d + 2);
    for (i, norm) in norms.iter_mut().enumerate() {
        let row = rows.row(row_index(idx, i));
        *norm = dot(row, row);
        for r in 0..rounds {
            out[r * n + i] = dot(row, &a_t[r * (d + 2)..r * (d + 2) + d]);
        }
    }
}
