//! The attention kernels written once over [`SimdF32`]; `avx2.rs`, `avx512.rs` and `neon.rs`
//! instantiate them with their tile shapes. Contracts are those of [`super::AttentionKernels`].

use super::exp::{EXP_UNDERFLOW, LN2_HI, LN2_LO, LOG2E, P0, P1, P2, P3, P4, P5};
use crate::runtime::prefetch::LineQueue;
use crate::simd::SimdF32;

/// Vector exp for x ≤ 0: the steps of [`super::exp::exp_nonpositive`].
#[inline(always)]
pub(crate) unsafe fn exp_v<S: SimdF32>(x: S::V) -> S::V {
    // SAFETY: only vector arithmetic of the caller's tier.
    unsafe {
        let n = S::round(S::mul(x, S::splat(LOG2E)));
        let r = S::fnma(n, S::splat(LN2_HI), x);
        let r = S::fnma(n, S::splat(LN2_LO), r);
        let z = S::mul(r, r);
        let mut p = S::fma(S::splat(P0), r, S::splat(P1));
        p = S::fma(p, r, S::splat(P2));
        p = S::fma(p, r, S::splat(P3));
        p = S::fma(p, r, S::splat(P4));
        p = S::fma(p, r, S::splat(P5));
        let y = S::add(S::fma(p, z, r), S::splat(1.0));
        // A NaN x has made y NaN already; −∞ and values below the underflow threshold are
        // set to an exact 0 (their y is NaN or tiny).
        S::zero_below(x, EXP_UNDERFLOW, S::ldexp_nonpositive(y, n))
    }
}

/// In-place exp of values ≤ 0; the tail shorter than a vector uses the scalar steps.
#[inline(always)]
pub(crate) unsafe fn exp_in_place<S: SimdF32>(values: &mut [f32]) {
    let whole = values.len() / S::LANES * S::LANES;
    let p = values.as_mut_ptr();
    for at in (0..whole).step_by(S::LANES) {
        // SAFETY: at + LANES ≤ whole ≤ len.
        unsafe { S::store(p.add(at), exp_v::<S>(S::load(p.add(at)))) };
    }
    for x in &mut values[whole..] {
        *x = super::exp::exp_nonpositive(*x);
    }
}

/// What a GEMM tile does with its product.
#[derive(Clone, Copy)]
pub(crate) enum Epilogue {
    /// c = scale · (a·b)
    Scale(f32),
    /// c = c · corr[row] + a·b (the pointer covers every row of the call)
    Rescale(*const f32),
    /// c = a·b
    Store,
}

/// c (m × ncols, row stride ldc) from a (m × kdim, stride lda) times b (kdim × ncols, stride
/// ldb), register-blocked in MR rows × NV vectors; ncols is a multiple of `S::LANES`. Edge
/// columns use two-vector tiles (where NV is wider) and then one-vector tiles, edge rows 4-,
/// 2- and one-row tiles, so nothing past the given extents is read or written.
///
/// # Safety
/// Pointers valid for the extents named; the tier's instructions are available.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<S: SimdF32, const MR: usize, const NV: usize, const PF: bool>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    m: usize,
    kdim: usize,
    ncols: usize,
    epilogue: Epilogue,
    queue: &mut LineQueue,
) {
    debug_assert!(ncols.is_multiple_of(S::LANES));
    let mut j = 0;
    // SAFETY: (all column blocks) columns j..j+W·LANES ≤ ncols by the loop bounds.
    unsafe {
        while j + NV * S::LANES <= ncols {
            column_block::<S, MR, NV, PF>(a, lda, b, ldb, c, ldc, m, j, kdim, epilogue, queue);
            j += NV * S::LANES;
        }
        // A narrower remainder (dv = 32 against a 64-wide tile, say) in two-vector tiles: a
        // one-vector tile does one FMA per broadcast.
        if NV > 2 && j + 2 * S::LANES <= ncols {
            column_block::<S, MR, 2, PF>(a, lda, b, ldb, c, ldc, m, j, kdim, epilogue, queue);
            j += 2 * S::LANES;
        }
        while j < ncols {
            column_block::<S, MR, 1, PF>(a, lda, b, ldb, c, ldc, m, j, kdim, epilogue, queue);
            j += S::LANES;
        }
    }
}

/// [`gemm`] with the cluster's prefetch queue: the variant whose tiles issue the queued
/// lines when some are pending (a cluster of the SMYRF pipeline), the plain one otherwise
/// (dense attention, the §8 blocks), which keeps its inner loop free of the checks.
///
/// # Safety
/// As for [`gemm`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_queued<S: SimdF32, const MR: usize, const NV: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    m: usize,
    kdim: usize,
    ncols: usize,
    epilogue: Epilogue,
    queue: &mut LineQueue,
) {
    // SAFETY: the caller's extents, passed through.
    unsafe {
        if queue.is_pending() {
            gemm::<S, MR, NV, true>(a, lda, b, ldb, c, ldc, m, kdim, ncols, epilogue, queue);
        } else {
            gemm::<S, MR, NV, false>(a, lda, b, ldb, c, ldc, m, kdim, ncols, epilogue, queue);
        }
    }
}

/// Every row of one block of W vector columns starting at column j: MR-row tiles, then edge
/// rows in 4- and 2-row tiles where MR is taller, then single rows (a one-row tile does one
/// FMA per load).
///
/// # Safety
/// As for [`gemm`], with columns j..j+W·LANES inside the extents.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn column_block<S: SimdF32, const MR: usize, const W: usize, const PF: bool>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    m: usize,
    j: usize,
    kdim: usize,
    epilogue: Epilogue,
    queue: &mut LineQueue,
) {
    let mut i = 0;
    // SAFETY: (all tile calls) rows i..i+R ≤ m by the loop bounds; columns by the caller.
    unsafe {
        while i + MR <= m {
            tile::<S, MR, W, PF>(a, lda, b, ldb, c, ldc, i, j, kdim, epilogue, queue);
            i += MR;
        }
        while MR > 4 && i + 4 <= m {
            tile::<S, 4, W, PF>(a, lda, b, ldb, c, ldc, i, j, kdim, epilogue, queue);
            i += 4;
        }
        if MR > 2 && i + 2 <= m {
            tile::<S, 2, W, PF>(a, lda, b, ldb, c, ldc, i, j, kdim, epilogue, queue);
            i += 2;
        }
        while i < m {
            tile::<S, 1, W, PF>(a, lda, b, ldb, c, ldc, i, j, kdim, epilogue, queue);
            i += 1;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<S: SimdF32, const R: usize, const W: usize, const PF: bool>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    i0: usize,
    j0: usize,
    kdim: usize,
    epilogue: Epilogue,
    queue: &mut LineQueue,
) {
    // SAFETY: the caller keeps rows i0..i0+R and columns j0..j0+W·LANES inside a, b, c.
    unsafe {
        let mut acc = [[S::splat(0.0); W]; R];
        if let Epilogue::Rescale(corr) = epilogue {
            for (r, row) in acc.iter_mut().enumerate() {
                let f = S::splat(*corr.add(i0 + r));
                for (w, x) in row.iter_mut().enumerate() {
                    *x = S::mul(S::load(c.add((i0 + r) * ldc + j0 + w * S::LANES)), f);
                }
            }
        }
        for t in 0..kdim {
            // The queued lines of the next cluster, one every few steps (see `LineQueue`).
            if PF && queue.issues_at(t) {
                queue.issue_next();
            }
            let brow = b.add(t * ldb + j0);
            let mut bv = [S::splat(0.0); W];
            for (w, x) in bv.iter_mut().enumerate() {
                *x = S::load(brow.add(w * S::LANES));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let av = S::splat(*a.add((i0 + r) * lda + t));
                for (w, x) in row.iter_mut().enumerate() {
                    *x = S::fma(av, bv[w], *x);
                }
            }
        }
        let scale = match epilogue {
            Epilogue::Scale(s) => Some(S::splat(s)),
            Epilogue::Rescale(_) | Epilogue::Store => None,
        };
        for (r, row) in acc.iter().enumerate() {
            for (w, &x) in row.iter().enumerate() {
                let x = scale.map_or(x, |s| S::mul(x, s));
                S::store(c.add((i0 + r) * ldc + j0 + w * S::LANES), x);
            }
        }
    }
}

/// S = scale · Q·Kᵀ with the given tile shape.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn qk<S: SimdF32, const MR: usize, const NV: usize>(
    q: &[f32],
    kt: &[f32],
    m: usize,
    d: usize,
    ldk: usize,
    scale: f32,
    s: &mut [f32],
    queue: &mut LineQueue,
) {
    assert!(
        q.len() >= m * d && kt.len() >= d * ldk && s.len() >= m * ldk && ldk.is_multiple_of(16)
    );
    // SAFETY: extents asserted above; the tier is the caller's.
    unsafe {
        gemm_queued::<S, MR, NV>(
            q.as_ptr(),
            d,
            kt.as_ptr(),
            ldk,
            s.as_mut_ptr(),
            ldk,
            m,
            d,
            ldk,
            Epilogue::Scale(scale),
            queue,
        )
    }
}

/// acc = acc·corr + P·V (acc = P·V without `corr`) with the given tile shape.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pv<S: SimdF32, const MR: usize, const NV: usize>(
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
    assert!(
        n <= ldk && p.len() >= m * ldk && v.len() >= n * ldv && acc.len() >= m * ldv,
        "pv extents"
    );
    assert!(
        corr.is_none_or(|corr| corr.len() >= m) && ldv.is_multiple_of(16),
        "pv extents"
    );
    let epilogue = corr.map_or(Epilogue::Store, |corr| Epilogue::Rescale(corr.as_ptr()));
    // SAFETY: extents asserted above; the tier is the caller's.
    unsafe {
        gemm_queued::<S, MR, NV>(
            p.as_ptr(),
            ldk,
            v.as_ptr(),
            ldv,
            acc.as_mut_ptr(),
            ldv,
            m,
            n,
            ldv,
            epilogue,
            queue,
        )
    }
}

/// Online-softmax step over padded rows.
///
/// Two sweeps over the rows: first every row's new maximum, then its exponentials and sum.
/// Rows are independent in each sweep, so the out-of-order core overlaps one row's
/// horizontal reduction with the next row's loads; within a row, two accumulators halve
/// the dependency chain of the max and of the sum.
#[inline(always)]
pub(crate) unsafe fn softmax<S: SimdF32>(
    s: &mut [f32],
    m: usize,
    ldk: usize,
    row_max: &mut [f32],
    row_sum: &mut [f32],
    corr: &mut [f32],
) {
    assert!(s.len() >= m * ldk && ldk.is_multiple_of(S::LANES) && row_max.len() >= m);
    assert!(row_sum.len() >= m && corr.len() >= m);
    let pairs_end = ldk / (2 * S::LANES) * (2 * S::LANES);
    // Sweep 1: the new maximum of each row, parked in `corr` until sweep 2 needs it.
    for i in 0..m {
        let row = s[i * ldk..(i + 1) * ldk].as_ptr();
        // SAFETY: every access is inside this row (ldk is a multiple of LANES).
        unsafe {
            let (mut max_a, mut max_b) = (S::splat(f32::NEG_INFINITY), S::splat(f32::NEG_INFINITY));
            for at in (0..pairs_end).step_by(2 * S::LANES) {
                max_a = S::max(max_a, S::load(row.add(at)));
                max_b = S::max(max_b, S::load(row.add(at + S::LANES)));
            }
            if pairs_end < ldk {
                max_a = S::max(max_a, S::load(row.add(pairs_end)));
            }
            corr[i] = row_max[i].max(S::reduce_max(S::max(max_a, max_b)));
        }
    }
    // Sweep 2: P = exp(S − max) in place, the row sums, the correction of the old sums.
    for i in 0..m {
        let row = s[i * ldk..(i + 1) * ldk].as_mut_ptr();
        let new_max = corr[i];
        let shift = if new_max == f32::NEG_INFINITY {
            0.0
        } else {
            new_max
        };
        // SAFETY: as in sweep 1.
        unsafe {
            let vshift = S::splat(shift);
            let (mut sum_a, mut sum_b) = (S::splat(0.0), S::splat(0.0));
            for at in (0..pairs_end).step_by(2 * S::LANES) {
                let pa = exp_v::<S>(S::sub(S::load(row.add(at)), vshift));
                let pb = exp_v::<S>(S::sub(S::load(row.add(at + S::LANES)), vshift));
                sum_a = S::add(sum_a, pa);
                sum_b = S::add(sum_b, pb);
                S::store(row.add(at), pa);
                S::store(row.add(at + S::LANES), pb);
            }
            if pairs_end < ldk {
                let pa = exp_v::<S>(S::sub(S::load(row.add(pairs_end)), vshift));
                sum_a = S::add(sum_a, pa);
                S::store(row.add(pairs_end), pa);
            }
            corr[i] = super::exp::exp_nonpositive(row_max[i] - shift);
            row_sum[i] = row_sum[i] * corr[i] + S::reduce_add(S::add(sum_a, sum_b));
            row_max[i] = new_max;
        }
    }
}

/// `x = x·a + y·b` elementwise ([`super::BlendFn`]): two products and a sum per element,
/// in the vector loop and in the scalar tail alike, so every tier gives the same bits.
#[inline(always)]
pub(crate) unsafe fn blend<S: SimdF32>(x: &mut [f32], y: &[f32], a: f32, b: f32) {
    assert_eq!(x.len(), y.len(), "blend extents");
    let whole = x.len() / S::LANES * S::LANES;
    let (x_ptr, y_ptr) = (x.as_mut_ptr(), y.as_ptr());
    // SAFETY: at + LANES ≤ whole ≤ the common length; the tier is the caller's.
    unsafe {
        let (av, bv) = (S::splat(a), S::splat(b));
        for at in (0..whole).step_by(S::LANES) {
            let xv = S::load(x_ptr.add(at));
            let yv = S::load(y_ptr.add(at));
            S::store(x_ptr.add(at), S::add(S::mul(xv, av), S::mul(yv, bv)));
        }
    }
    for (x, &y) in x[whole..].iter_mut().zip(&y[whole..]) {
        *x = *x * a + y * b;
    }
}

/// `x += a·y` elementwise, y bf16 bit patterns ([`super::AddScaledFn`]): a product, rounded,
/// then a sum (never fused), in the vector loop and the scalar tail alike, so every tier
/// gives the same bits.
#[inline(always)]
pub(crate) unsafe fn add_scaled<S: SimdF32>(x: &mut [f32], y: &[u16], a: f32) {
    assert_eq!(x.len(), y.len(), "add_scaled extents");
    let whole = x.len() / S::LANES * S::LANES;
    let (x_ptr, y_ptr) = (x.as_mut_ptr(), y.as_ptr());
    // SAFETY: at + LANES ≤ whole ≤ the common length; the tier is the caller's.
    unsafe {
        let av = S::splat(a);
        for at in (0..whole).step_by(S::LANES) {
            let xv = S::load(x_ptr.add(at));
            let yv = S::load_bf16(y_ptr.add(at));
            S::store(x_ptr.add(at), S::add(xv, S::mul(yv, av)));
        }
    }
    for (x, &y) in x[whole..].iter_mut().zip(&y[whole..]) {
        *x += f32::from_bits(u32::from(y) << 16) * a;
    }
}

/// `row = o · scale` ([`super::ScaleStoreFn`]): non-temporal stores when `stream` is set and
/// the row lies on whole cache lines, plain stores otherwise.
#[inline(always)]
pub(crate) unsafe fn scale_store<S: SimdF32>(row: &mut [f32], o: &[f32], scale: f32, stream: bool) {
    assert_eq!(row.len(), o.len(), "scale_store extents");
    let streamed = stream && crate::runtime::stream::can_stream(row.as_ptr(), row.len());
    let whole = row.len() / S::LANES * S::LANES;
    let (x_ptr, y_ptr) = (row.as_mut_ptr(), o.as_ptr());
    // SAFETY: at + LANES ≤ whole ≤ len of both slices; the tier is the caller's. Streamed
    // rows start on a 64-byte line and are whole lines (`can_stream`), so every vector store
    // is aligned to its width (at most 64 bytes) and `whole` is the whole row.
    unsafe {
        let s = S::splat(scale);
        for at in (0..whole).step_by(S::LANES) {
            let y = S::mul(S::load(y_ptr.add(at)), s);
            if streamed {
                S::stream(x_ptr.add(at), y);
            } else {
                S::store(x_ptr.add(at), y);
            }
        }
    }
    for (x, &y) in row[whole..].iter_mut().zip(&o[whole..]) {
        *x = y * scale;
    }
}

/// Declares a tier's attention kernels: `#[target_feature]` shims around the generic bodies,
/// and safe wrappers for the kernel table.
macro_rules! attention_tier {
    (
        $simd:ty,
        [$($attr:meta),*],
        qk: ($qk_mr:literal, $qk_nv:literal, $qk:ident, short: $qk_short_mr:literal),
        pv: ($pv_mr:literal, $pv_nv:literal, $pv:ident, narrow: ($pv_narrow_mr:literal, $pv_narrow_nv:literal))
    ) => {
        use super::generic;
        use crate::runtime::prefetch::LineQueue;
        use $simd as S;

        /// Multiply-adds per step of the Q·Kᵀ register tile: what sets how many steps a
        /// cluster's kernels take (`crate::runtime::prefetch::LineQueue`).
        pub(crate) const MACS_PER_STEP: usize =
            $qk_mr * $qk_nv * <S as crate::simd::SimdF32>::LANES;

        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        unsafe fn qk_impl(
            q: &[f32],
            kt: &[f32],
            m: usize,
            d: usize,
            ldk: usize,
            scale: f32,
            s: &mut [f32],
            queue: &mut LineQueue,
        ) {
            // Calls of fewer than two full tiles (window tiles of 16 queries, say) take the
            // shorter tile, which leaves fewer edge rows. SAFETY: the generic body checks
            // extents; the features are enabled here.
            unsafe {
                if m < 2 * $qk_mr {
                    generic::qk::<S, $qk_short_mr, $qk_nv>(q, kt, m, d, ldk, scale, s, queue)
                } else {
                    generic::qk::<S, $qk_mr, $qk_nv>(q, kt, m, d, ldk, scale, s, queue)
                }
            }
        }

        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        unsafe fn pv_impl(
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
            // Value rows narrower than the full tile (dv = 32 against a 64-wide tile) take
            // the narrow tile, which covers them whole. SAFETY: as above.
            unsafe {
                if ldv < $pv_nv * <S as crate::simd::SimdF32>::LANES {
                    generic::pv::<S, $pv_narrow_mr, $pv_narrow_nv>(
                        p, v, m, n, ldk, ldv, corr, acc, queue,
                    )
                } else {
                    generic::pv::<S, $pv_mr, $pv_nv>(p, v, m, n, ldk, ldv, corr, acc, queue)
                }
            }
        }

        $(#[$attr])*
        unsafe fn softmax_impl(
            s: &mut [f32],
            m: usize,
            ldk: usize,
            row_max: &mut [f32],
            row_sum: &mut [f32],
            corr: &mut [f32],
        ) {
            // SAFETY: as above.
            unsafe { generic::softmax::<S>(s, m, ldk, row_max, row_sum, corr) }
        }

        $(#[$attr])*
        unsafe fn blend_impl(x: &mut [f32], y: &[f32], a: f32, b: f32) {
            // SAFETY: as above.
            unsafe { generic::blend::<S>(x, y, a, b) }
        }

        $(#[$attr])*
        unsafe fn add_scaled_impl(x: &mut [f32], y: &[u16], a: f32) {
            // SAFETY: as above.
            unsafe { generic::add_scaled::<S>(x, y, a) }
        }

        $(#[$attr])*
        unsafe fn scale_store_impl(row: &mut [f32], o: &[f32], scale: f32, stream: bool) {
            // SAFETY: as above.
            unsafe { generic::scale_store::<S>(row, o, scale, stream) }
        }

        $(#[$attr])*
        unsafe fn exp_impl(values: &mut [f32]) {
            // SAFETY: as above.
            unsafe { generic::exp_in_place::<S>(values) }
        }

        /// Q·Kᵀ micro-kernel; the name carries the register tile (rows × columns).
        #[allow(clippy::too_many_arguments)]
        pub(super) fn $qk(
            q: &[f32],
            kt: &[f32],
            m: usize,
            d: usize,
            ldk: usize,
            scale: f32,
            s: &mut [f32],
            queue: &mut LineQueue,
        ) {
            // SAFETY: reachable only through `super::kernels`, which takes a `Tier`: the CPU
            // has this tier's features.
            unsafe { qk_impl(q, kt, m, d, ldk, scale, s, queue) }
        }

        /// P·V micro-kernel; the name carries the register tile (rows × columns).
        #[allow(clippy::too_many_arguments)]
        pub(super) fn $pv(
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
            // SAFETY: as for the Q·Kᵀ entry.
            unsafe { pv_impl(p, v, m, n, ldk, ldv, corr, acc, queue) }
        }

        pub(super) fn softmax(
            s: &mut [f32],
            m: usize,
            ldk: usize,
            row_max: &mut [f32],
            row_sum: &mut [f32],
            corr: &mut [f32],
        ) {
            // SAFETY: as for the Q·Kᵀ entry.
            unsafe { softmax_impl(s, m, ldk, row_max, row_sum, corr) }
        }

        pub(super) fn exp_in_place(values: &mut [f32]) {
            // SAFETY: as for the Q·Kᵀ entry.
            unsafe { exp_impl(values) }
        }

        pub(super) fn blend(x: &mut [f32], y: &[f32], a: f32, b: f32) {
            // SAFETY: as for the Q·Kᵀ entry.
            unsafe { blend_impl(x, y, a, b) }
        }

        pub(super) fn add_scaled(x: &mut [f32], y: &[u16], a: f32) {
            // SAFETY: as for the Q·Kᵀ entry.
            unsafe { add_scaled_impl(x, y, a) }
        }

        pub(super) fn scale_store(row: &mut [f32], o: &[f32], scale: f32, stream: bool) {
            // SAFETY: as for the Q·Kᵀ entry.
            unsafe { scale_store_impl(row, o, scale, stream) }
        }
    };
}
pub(crate) use attention_tier;
