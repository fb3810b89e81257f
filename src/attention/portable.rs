//! Portable attention tile kernels on `wide::f32x8` (SSE2 on x86-64, NEON on aarch64).
//! Contracts are those of [`super::AttentionKernels`].

use super::exp::{EXP_UNDERFLOW, LN2_HI, LN2_LO, LOG2E, P0, P1, P2, P3, P4, P5};
use crate::runtime::prefetch::LineQueue;
use wide::{bytemuck::cast, f32x8, i32x8};

#[inline(always)]
fn load(s: &[f32], at: usize) -> f32x8 {
    let lanes: [f32; 8] = s[at..at + 8].try_into().expect("8 lanes");
    f32x8::new(lanes)
}

#[inline(always)]
fn store(s: &mut [f32], at: usize, v: f32x8) {
    s[at..at + 8].copy_from_slice(&v.to_array());
}

/// Multiply-adds per step of the Q·Kᵀ loop, for the prefetch queue's interval (this tier's
/// loops issue queued lines at their own fixed rate).
pub(crate) const MACS_PER_STEP: usize = 64;

/// Eight lanes of [`super::exp::exp_nonpositive`].
#[inline(always)]
pub(crate) fn exp8(x: f32x8) -> f32x8 {
    let n = (x * f32x8::splat(LOG2E)).round();
    let r = n.mul_neg_add(f32x8::splat(LN2_HI), x);
    let r = n.mul_neg_add(f32x8::splat(LN2_LO), r);
    let z = r * r;
    let mut p = f32x8::splat(P0).mul_add(r, f32x8::splat(P1));
    p = p.mul_add(r, f32x8::splat(P2));
    p = p.mul_add(r, f32x8::splat(P3));
    p = p.mul_add(r, f32x8::splat(P4));
    p = p.mul_add(r, f32x8::splat(P5));
    let y = p.mul_add(z, r) + f32x8::ONE;
    // Clamp before the integer conversion so NaN or −∞ lanes cannot produce odd exponents;
    // those lanes are replaced below.
    let n = n.max(f32x8::splat(-150.0)).min(f32x8::ZERO).round_int();
    let half = n >> 1;
    let bias = i32x8::splat(127);
    let scale_lo: f32x8 = cast((half + bias) << 23);
    let scale_hi: f32x8 = cast((n - half + bias) << 23);
    let y = y * scale_lo * scale_hi;
    let y = x
        .simd_lt(f32x8::splat(EXP_UNDERFLOW))
        .select(f32x8::ZERO, y);
    x.is_nan().select(x, y)
}

/// In-place exp over a slice (x ≤ 0).
pub(crate) fn exp_in_place(values: &mut [f32]) {
    let whole = values.len() / 8 * 8;
    for at in (0..whole).step_by(8) {
        let v = exp8(load(values, at));
        store(values, at, v);
    }
    for x in &mut values[whole..] {
        *x = super::exp::exp_nonpositive(*x);
    }
}

/// S = scale · Q·Kᵀ, one row of Q against 16 columns of Kᵀ at a time.
#[allow(clippy::too_many_arguments)]
pub(crate) fn qk(
    q: &[f32],
    kt: &[f32],
    m: usize,
    d: usize,
    ldk: usize,
    scale: f32,
    s: &mut [f32],
    queue: &mut LineQueue,
) {
    let scale = f32x8::splat(scale);
    // The queued lines of the next cluster, one every 8 steps (see `LineQueue`).
    for i in 0..m {
        let q_row = &q[i * d..(i + 1) * d];
        for jb in (0..ldk).step_by(16) {
            let mut acc0 = f32x8::ZERO;
            let mut acc1 = f32x8::ZERO;
            for (t, &qt) in q_row.iter().enumerate() {
                if t % 8 == 0 {
                    queue.issue_next();
                }
                let qt = f32x8::splat(qt);
                acc0 = qt.mul_add(load(kt, t * ldk + jb), acc0);
                acc1 = qt.mul_add(load(kt, t * ldk + jb + 8), acc1);
            }
            store(s, i * ldk + jb, acc0 * scale);
            store(s, i * ldk + jb + 8, acc1 * scale);
        }
    }
}

/// Online-softmax step over full padded rows (padding already −∞).
pub(crate) fn softmax(
    s: &mut [f32],
    m: usize,
    ldk: usize,
    row_max: &mut [f32],
    row_sum: &mut [f32],
    corr: &mut [f32],
) {
    for i in 0..m {
        let row = &mut s[i * ldk..(i + 1) * ldk];
        let mut vmax = f32x8::splat(f32::NEG_INFINITY);
        for at in (0..ldk).step_by(8) {
            vmax = vmax.max(load(row, at));
        }
        let tile_max = vmax
            .to_array()
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let new_max = row_max[i].max(tile_max);
        let shift = if new_max == f32::NEG_INFINITY {
            0.0
        } else {
            new_max
        };
        let vshift = f32x8::splat(shift);
        let mut vsum = f32x8::ZERO;
        for at in (0..ldk).step_by(8) {
            let p = exp8(load(row, at) - vshift);
            vsum += p;
            store(row, at, p);
        }
        corr[i] = super::exp::exp_nonpositive(row_max[i] - shift);
        row_sum[i] = row_sum[i] * corr[i] + vsum.reduce_add();
        row_max[i] = new_max;
    }
}

/// acc = acc·corr + P·V, 16 columns of V at a time.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pv(
    p: &[f32],
    v: &[f32],
    m: usize,
    n: usize,
    ldk: usize,
    ldv: usize,
    corr: Option<&[f32]>,
    acc: &mut [f32],
    queue: &mut LineQueue,
) {
    for i in 0..m {
        let p_row = &p[i * ldk..i * ldk + n];
        for cb in (0..ldv).step_by(16) {
            let at = i * ldv + cb;
            let (mut acc0, mut acc1) = match corr {
                Some(corr) => {
                    let c = f32x8::splat(corr[i]);
                    (load(acc, at) * c, load(acc, at + 8) * c)
                }
                None => (f32x8::ZERO, f32x8::ZERO),
            };
            for (j, &pj) in p_row.iter().enumerate() {
                if j % 8 == 0 {
                    queue.issue_next();
                }
                let pj = f32x8::splat(pj);
                acc0 = pj.mul_add(load(v, j * ldv + cb), acc0);
                acc1 = pj.mul_add(load(v, j * ldv + cb + 8), acc1);
            }
            store(acc, at, acc0);
            store(acc, at + 8, acc1);
        }
    }
}

/// `x = x·a + y·b` elementwise ([`super::BlendFn`]), 8 lanes at a time: the same bits as
/// every other tier.
pub(crate) fn blend(x: &mut [f32], y: &[f32], a: f32, b: f32) {
    assert_eq!(x.len(), y.len(), "blend extents");
    let whole = x.len() / 8 * 8;
    let (av, bv) = (f32x8::splat(a), f32x8::splat(b));
    for at in (0..whole).step_by(8) {
        let merged = load(x, at) * av + load(y, at) * bv;
        store(x, at, merged);
    }
    for (x, &y) in x[whole..].iter_mut().zip(&y[whole..]) {
        *x = *x * a + y * b;
    }
}

/// `row = o · scale` ([`super::ScaleStoreFn`]), streamed where allowed.
pub(crate) fn scale_store(row: &mut [f32], o: &[f32], scale: f32, stream: bool) {
    crate::runtime::stream::scale_row(row, o, scale, stream);
}
