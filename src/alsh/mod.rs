//! ALSH projection (design §1 steps 1–3, §4): squared norms, then R hashes per row with the
//! XBOX+ lift folded in — the lifted rows `[q, 0, sqrt(M − ‖q‖²)]` and `[k, sqrt(M − ‖k‖²), 0]`
//! are never materialised; the lift contributes one extra term per hash.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod generic;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;

use crate::convert::ConvertKernels;
use crate::isa::Isa;
use crate::runtime::buffer::Buf;
use crate::simd::Tier;
use crate::view::{Data, Rows};

/// Which side a row set is: it selects the projection row its lift coordinate multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// Lift in coordinate d + 1.
    Query,
    /// Lift in coordinate d.
    Key,
}

/// One pass over n f32 rows (`idx` selects them, or rows 0..n): `norms[i] = ‖x_i‖²` and the
/// raw hashes `out[r·ld + i] = Σ_t a_t[r][t]·x_i[t]` (`ld ≥ n`), with `a_t` the projection
/// transposed, `R × (d + 2)`. The lift term is added by [`apply_lift`] once M is known, so
/// the rows are read once. 16-bit rows are widened a block at a time by [`project_rows`].
pub(crate) type ProjectFn = fn(
    rows: Rows<'_>,
    idx: Option<&[u32]>,
    a_t: &[f32],
    norms: &mut [f32],
    out: &mut [f32],
    ld: usize,
);

/// Rows widened at once for the projection of 16-bit rows: 16 KiB of f32 at d = 64, so the
/// kernel reads them from L1.
pub(crate) const STAGE_ROWS: usize = 64;

/// [`ProjectFn`] over rows of any element type, `out[r·n + i]`: f32 rows go to the kernel
/// directly; 16-bit rows are widened `STAGE_ROWS` at a time into `stage`, so they are read
/// from memory once, at their own width.
#[allow(clippy::too_many_arguments)]
pub(crate) fn project_rows(
    project: ProjectFn,
    cvt: &ConvertKernels,
    rows: Rows<'_>,
    idx: Option<&[u32]>,
    a_t: &[f32],
    norms: &mut [f32],
    out: &mut [f32],
    stage: &mut Buf<f32>,
) {
    let n = norms.len();
    if let Data::F32(_) = rows.data {
        return project(rows, idx, a_t, norms, out, n);
    }
    let d = rows.dim;
    stage.resize(STAGE_ROWS * d, 0.0);
    for c0 in (0..n).step_by(STAGE_ROWS) {
        let c1 = (c0 + STAGE_ROWS).min(n);
        for (i, dst) in (c0..c1).zip(stage.chunks_exact_mut(d)) {
            let row = idx.map_or(i, |idx| idx[i] as usize);
            cvt.load(rows.row(row), dst);
        }
        let staged = Rows::f32(stage, 0, d, d);
        project(staged, None, a_t, &mut norms[c0..c1], &mut out[c0..], n);
    }
}

/// Adds the XBOX+ lift term to raw hashes: `out[r·n + i] += a_t[r][lift]·sqrt(max(M − norms[i], 0))`.
/// The square roots are taken once per row, a chunk of rows at a time, not once per round.
pub(crate) fn apply_lift(
    out: &mut [f32],
    norms: &[f32],
    m: f32,
    a_t: &[f32],
    width: usize,
    lift: usize,
) {
    const CHUNK: usize = 256;
    let n = norms.len();
    let rounds = a_t.len() / width;
    let mut lifts = [0.0f32; CHUNK];
    for (c, chunk) in norms.chunks(CHUNK).enumerate() {
        let i0 = c * CHUNK;
        for (l, &norm) in lifts.iter_mut().zip(chunk) {
            *l = (m - norm).max(0.0).sqrt();
        }
        for r in 0..rounds {
            let a = a_t[r * width + lift];
            let hashes = &mut out[r * n + i0..r * n + i0 + chunk.len()];
            for (h, &l) in hashes.iter_mut().zip(&lifts) {
                *h += a * l;
            }
        }
    }
}

/// One tier's projection kernels.
#[derive(Clone, Copy)]
pub(crate) struct AlshKernels {
    pub(crate) project: ProjectFn,
}

const PORTABLE: AlshKernels = AlshKernels {
    project: portable::project_portable_8x1,
};

#[cfg(target_arch = "x86_64")]
const AVX2: AlshKernels = AlshKernels {
    project: avx2::project_avx2_8x1,
};
#[cfg(target_arch = "x86_64")]
const AVX512: AlshKernels = AlshKernels {
    project: avx512::project_avx512_16x1,
};
#[cfg(target_arch = "aarch64")]
const NEON: AlshKernels = AlshKernels {
    project: neon::project_neon_4x1,
};

/// The kernels of a tier. A [`Tier`] exists only for a tier the CPU supports, so no entry of
/// the table runs where its instructions are missing.
pub(crate) fn kernels(tier: Tier) -> &'static AlshKernels {
    match tier.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &AVX2,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &AVX512,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => &NEON,
        _ => &PORTABLE,
    }
}

/// Column of the projection matrix that multiplies a side's lift coordinate.
pub(crate) fn lift_column(side: Side, d: usize) -> usize {
    match side {
        Side::Key => d,
        Side::Query => d + 1,
    }
}
