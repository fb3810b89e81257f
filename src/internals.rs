//! Direct access to single kernels of a chosen tier, for the tier-against-portable tests and
//! the kernel benchmarks. Not part of the stable API: signatures follow the kernel
//! contracts in `attention/mod.rs`, `alsh/mod.rs` and `convert/mod.rs`, and every call
//! checks that the tier is supported first.

use crate::alsh;
use crate::attention::{self};
use crate::error::{Error, Result};
use crate::isa::Isa;
use crate::runtime::buffer::Buf;
use crate::runtime::prefetch::LineQueue;
use crate::simd::Tier;
use crate::view::Rows;

/// The tier `isa`, or the error a plan asking for it would get.
fn tier(isa: Isa) -> Result<Tier> {
    Tier::new(isa).ok_or(Error::UnsupportedIsa { isa })
}

/// In-place exp of values ≤ 0 with the given tier's kernel.
pub fn exp_in_place(isa: Isa, values: &mut [f32]) -> Result<()> {
    (attention::kernels(tier(isa)?).exp)(values);
    Ok(())
}

/// Merges a round's result (unnormalised row `acc`, softmax `max` and `sum`) into `row`,
/// whose running result is the pair (`run_max`, `run_sum`), with the given tier's round
/// merge: the log-sum-exp merge of `row` (log-sum-exp `run_max + ln(run_sum)`) and
/// `acc / sum` (log-sum-exp `max + ln(sum)`).
pub fn merge(
    isa: Isa,
    row: &mut [f32],
    run_max: &mut f32,
    run_sum: &mut f32,
    acc: &[f32],
    max: f32,
    sum: f32,
) -> Result<()> {
    let kern = attention::kernels(tier(isa)?);
    crate::attention::merge::merge_row(kern, row, run_max, run_sum, acc, max, sum);
    Ok(())
}

/// `row = o · scale` with the given tier's store of a round's first output, streamed when
/// `stream` is set and `row` lies on whole cache lines (a store fence follows).
pub fn scale_store(isa: Isa, row: &mut [f32], o: &[f32], scale: f32, stream: bool) -> Result<()> {
    (attention::kernels(tier(isa)?).scale_store)(row, o, scale, stream);
    crate::runtime::stream::fence();
    Ok(())
}

/// `s = scale · q·kt` (q: m × d, kt: d × ldk, ldk a multiple of 16).
#[allow(clippy::too_many_arguments)]
pub fn qk(
    isa: Isa,
    q: &[f32],
    kt: &[f32],
    m: usize,
    d: usize,
    ldk: usize,
    scale: f32,
    s: &mut [f32],
) -> Result<()> {
    let mut queue = LineQueue::default();
    (attention::kernels(tier(isa)?).qk)(q, kt, m, d, ldk, scale, s, &mut queue);
    Ok(())
}

/// One online-softmax step over m padded rows of s.
pub fn softmax(
    isa: Isa,
    s: &mut [f32],
    m: usize,
    ldk: usize,
    row_max: &mut [f32],
    row_sum: &mut [f32],
    corr: &mut [f32],
) -> Result<()> {
    (attention::kernels(tier(isa)?).softmax)(s, m, ldk, row_max, row_sum, corr);
    Ok(())
}

/// `acc = acc·corr + p·v` (p: m × ldk with n used, v: n × ldv, ldv a multiple of 16); without
/// `corr`, `acc = p·v` (acc not read).
#[allow(clippy::too_many_arguments)]
pub fn pv(
    isa: Isa,
    p: &[f32],
    v: &[f32],
    m: usize,
    n: usize,
    ldk: usize,
    ldv: usize,
    corr: Option<&[f32]>,
    acc: &mut [f32],
) -> Result<()> {
    let mut queue = LineQueue::default();
    (attention::kernels(tier(isa)?).pv)(p, v, m, n, ldk, ldv, corr, acc, &mut queue);
    Ok(())
}

/// Norms and hashes of `norms.len()` rows (row i at `i · stride`, or at `idx[i] · stride`)
/// for every round (`a_t` is R × (dim + 2)), round-major, lift included: the kernel's raw
/// hashes followed by the lift step, as the pipeline runs them.
#[allow(clippy::too_many_arguments)]
pub fn project(
    isa: Isa,
    data: &[f32],
    stride: usize,
    dim: usize,
    idx: Option<&[u32]>,
    m: f32,
    a_t: &[f32],
    lift: usize,
    norms: &mut [f32],
    out: &mut [f32],
) -> Result<()> {
    let rows = Rows::f32(data, 0, stride, dim);
    let n = norms.len();
    (alsh::kernels(tier(isa)?).project)(rows, idx, a_t, norms, out, n);
    alsh::apply_lift(out, norms, m, a_t, dim + 2, lift);
    Ok(())
}

/// Every tier this CPU supports, portable first.
pub fn supported_tiers() -> Vec<Isa> {
    Isa::ALL
        .into_iter()
        .filter(|isa| isa.is_supported())
        .collect()
}

/// Runs the tier's FMA peak loop; returns (flops performed, a result to keep alive).
pub fn fma_peak(isa: Isa, iterations: usize) -> Result<(f64, f32)> {
    let kernel = crate::simd::peak_kernel(tier(isa)?);
    let flops = iterations * crate::simd::PEAK_FLOPS_PER_LANE_ITER * kernel.lanes;
    Ok((flops as f64, (kernel.run)(iterations)))
}

/// Runs `job` with stage timing on; returns CPU seconds per [`Stage`] (projection,
/// sort, gather, kernels, combine).
#[cfg(feature = "profile")]
pub fn profile_stages(job: impl FnOnce()) -> [f64; 5] {
    crate::runtime::profile::profile(job)
}

/// The residual samples of one sample group (design §8), exactly as the pipeline draws them:
/// `n` distinct entries of `eligible` (the valid keys, by position, that are neither sinks nor
/// in the group's round-0 cluster), drawn without replacement from a generator seeded by
/// (`seed`, batch element `b`, query head `h`, `group`). Groups are numbered per (b, h) from 0,
/// cluster after cluster of round 0, each cluster's sorted queries cut into groups of
/// `sample_group` (clusters whose draw is empty still count their groups).
pub fn draw_samples(
    seed: u64,
    b: usize,
    h: usize,
    group: usize,
    eligible: &[u32],
    n: usize,
) -> Vec<u32> {
    let mut pool = eligible.to_vec();
    let (mut swaps, mut out) = (Buf::default(), Buf::default());
    crate::plan::hybrid::draw_samples_into(
        crate::plan::hybrid::sample_seed(seed, b, h, group),
        &mut pool,
        n,
        &mut swaps,
        &mut out,
    );
    out.to_vec()
}

pub use crate::attention::exp_nonpositive;
/// The tier a plan with `requested` would run (see `Config::isa`).
pub fn resolve_isa(requested: Option<Isa>) -> Result<Isa> {
    Tier::resolve(requested).map(Tier::isa)
}
pub use crate::runtime::profile::Stage;

/// The radix argsort of the cluster step, for its tests, benchmark and fuzz target.
pub mod sort {
    pub use crate::sort::{
        argsort_into, argsort_many, ordered_key, radix_argsort_f32, SortScratch,
    };
}

/// The f16 and bf16 conversion kernels of a chosen tier, on 16-bit patterns (`u16`; a
/// `half::f16` or `half::bf16` slice reinterprets to one). Lengths must be equal: a
/// mismatch panics, as the kernels do.
pub mod convert {
    use super::tier;
    use crate::convert::kernels;
    use crate::error::Result;
    use crate::isa::Isa;

    /// f16 → f32, exact.
    pub fn widen_f16(isa: Isa, src: &[u16], dst: &mut [f32]) -> Result<()> {
        (kernels(tier(isa)?).widen_f16)(src, dst);
        Ok(())
    }

    /// bf16 → f32, exact.
    pub fn widen_bf16(isa: Isa, src: &[u16], dst: &mut [f32]) -> Result<()> {
        (kernels(tier(isa)?).widen_bf16)(src, dst);
        Ok(())
    }

    /// f32 → f16, rounded to nearest, ties to even.
    pub fn narrow_f16(isa: Isa, src: &[f32], dst: &mut [u16]) -> Result<()> {
        (kernels(tier(isa)?).narrow_f16)(src, dst);
        Ok(())
    }

    /// f32 → bf16, rounded to nearest, ties to even.
    pub fn narrow_bf16(isa: Isa, src: &[f32], dst: &mut [u16]) -> Result<()> {
        (kernels(tier(isa)?).narrow_bf16)(src, dst);
        Ok(())
    }
}

/// The bf16 dot-product kernel's selection: plans use it only where it pays (`Config::bf16_exact`).
pub mod bf16_dot {
    /// Whether the kernel pays on this CPU, as plans decide it; `None` where the CPU lacks
    /// AVX-512 BF16.
    pub fn pays() -> Option<bool> {
        crate::attention::bf16::pays()
    }

    /// Plans made from now on, in this process, use the kernel wherever the CPU has it,
    /// paying or not: for tests of the kernel itself.
    pub fn force() {
        crate::attention::bf16::force()
    }
}

/// The C entry points, for Rust tests that call them directly.
pub mod ffi {
    pub use crate::ffi::*;
}
