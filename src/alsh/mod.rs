//! ALSH projection (design §1 steps 1–3, §4): squared norms, then R hashes per row with the
//! XBOX+ lift folded in — the lifted rows `[q, 0, sqrt(M − ‖q‖²)]` and `[k, sqrt(M − ‖k‖²), 0]`
//! are never materialised; the lift contributes one extra term per hash.

pub(crate) mod portable;

use crate::attention::Rows;
use crate::isa::Isa;

/// Which side a row set is: it selects the projection row its lift coordinate multiplies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// Lift in coordinate d + 1.
    Query,
    /// Lift in coordinate d.
    Key,
}

/// Squared norms of the rows `idx` (or of rows 0..out.len() when `idx` is `None`).
pub(crate) type SqNormsFn = fn(rows: Rows<'_>, idx: Option<&[u32]>, out: &mut [f32]);

/// Hashes of n rows for every round: `out[r·n + i] = Σ_t a_t[r][t]·x_i[t] + a_t[r][lift]·
/// sqrt(max(M − norms[i], 0))`, with `a_t` the projection transposed, `R × (d + 2)`.
pub(crate) type ProjectFn = fn(
    rows: Rows<'_>,
    idx: Option<&[u32]>,
    norms: &[f32],
    m: f32,
    a_t: &[f32],
    lift: usize,
    out: &mut [f32],
);

/// One tier's projection kernels.
#[derive(Clone, Copy)]
pub(crate) struct AlshKernels {
    pub(crate) sq_norms: SqNormsFn,
    pub(crate) project: ProjectFn,
}

const PORTABLE: AlshKernels = AlshKernels {
    sq_norms: portable::sq_norms,
    project: portable::project,
};

/// The kernels of a tier the CPU supports (checked by the caller).
pub(crate) fn kernels(isa: Isa) -> &'static AlshKernels {
    match isa {
        Isa::Portable | Isa::Avx2 | Isa::Avx512 | Isa::Neon => &PORTABLE,
    }
}

/// Column of the projection matrix that multiplies a side's lift coordinate.
pub(crate) fn lift_column(side: Side, d: usize) -> usize {
    match side {
        Side::Key => d,
        Side::Query => d + 1,
    }
}
