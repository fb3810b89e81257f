//! Direct access to single kernels of a chosen tier, for the tier-against-portable tests and
//! the kernel benchmarks. Not part of the stable API: signatures follow the kernel
//! contracts in `attention/mod.rs` and `alsh/mod.rs`, and every call checks that the tier is
//! supported first.

use crate::alsh;
use crate::attention::{self, Rows};
use crate::error::{Error, Result};
use crate::isa::Isa;

fn supported(isa: Isa) -> Result<Isa> {
    if isa.is_supported() {
        Ok(isa)
    } else {
        Err(Error::UnsupportedIsa { isa })
    }
}

/// In-place exp of values ≤ 0 with the given tier's kernel.
pub fn exp_in_place(isa: Isa, values: &mut [f32]) -> Result<()> {
    (attention::kernels(supported(isa)?).exp)(values);
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
    (attention::kernels(supported(isa)?).merge)(row, run_max, run_sum, acc, max, sum);
    Ok(())
}

/// `row = o · scale` with the given tier's store of a round's first output, streamed when
/// `stream` is set and `row` lies on whole cache lines (a store fence follows).
pub fn scale_store(isa: Isa, row: &mut [f32], o: &[f32], scale: f32, stream: bool) -> Result<()> {
    (attention::kernels(supported(isa)?).scale_store)(row, o, scale, stream);
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
    (attention::kernels(supported(isa)?).qk)(q, kt, m, d, ldk, scale, s);
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
    (attention::kernels(supported(isa)?).softmax)(s, m, ldk, row_max, row_sum, corr);
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
    (attention::kernels(supported(isa)?).pv)(p, v, m, n, ldk, ldv, corr, acc);
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
    let rows = Rows {
        data,
        base: 0,
        stride,
        dim,
    };
    (alsh::kernels(supported(isa)?).project)(rows, idx, a_t, norms, out);
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
    use crate::simd::PEAK_FLOPS_PER_LANE_ITER as PER;
    let isa = supported(isa)?;
    let (lanes, value) = match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => (16, peak::avx512(iterations)),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => (8, peak::avx2(iterations)),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => (4, peak::neon(iterations)),
        _ => (8, peak::portable(iterations)),
    };
    Ok(((iterations * PER * lanes) as f64, value))
}

mod peak {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn avx512_impl(iterations: usize) -> f32 {
        // SAFETY: features enabled here.
        unsafe { crate::simd::fma_peak::<crate::simd::Avx512>(iterations, 1.0) }
    }
    #[cfg(target_arch = "x86_64")]
    pub(super) fn avx512(iterations: usize) -> f32 {
        // SAFETY: only called after `supported(Isa::Avx512)`.
        unsafe { avx512_impl(iterations) }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_impl(iterations: usize) -> f32 {
        // SAFETY: features enabled here.
        unsafe { crate::simd::fma_peak::<crate::simd::Avx2>(iterations, 1.0) }
    }
    #[cfg(target_arch = "x86_64")]
    pub(super) fn avx2(iterations: usize) -> f32 {
        // SAFETY: only called after `supported(Isa::Avx2)`.
        unsafe { avx2_impl(iterations) }
    }
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn neon_impl(iterations: usize) -> f32 {
        // SAFETY: features enabled here.
        unsafe { crate::simd::fma_peak::<crate::simd::Neon>(iterations, 1.0) }
    }
    #[cfg(target_arch = "aarch64")]
    pub(super) fn neon(iterations: usize) -> f32 {
        // SAFETY: only called after `supported(Isa::Neon)`.
        unsafe { neon_impl(iterations) }
    }
    /// The portable tier's peak: 12 `wide::f32x8` multiply-adds per iteration.
    pub(super) fn portable(iterations: usize) -> f32 {
        use wide::f32x8;
        let mut acc = [f32x8::splat(1.0); 12];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = f32x8::splat(1.0 + i as f32);
        }
        let (b, c) = (f32x8::splat(0.999_999), f32x8::splat(1e-7));
        for _ in 0..iterations {
            for a in acc.iter_mut() {
                *a = a.mul_add(b, c);
            }
        }
        acc.iter().fold(f32x8::ZERO, |s, &a| s + a).reduce_add()
    }
}

/// Runs `job` with stage timing on; returns CPU seconds per [`crate::Stage`] (projection,
/// sort, gather, kernels, combine).
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
    let (mut swaps, mut out) = (Vec::new(), Vec::new());
    crate::plan::hybrid::draw_samples_into(
        crate::plan::hybrid::sample_seed(seed, b, h, group),
        &mut pool,
        n,
        &mut swaps,
        &mut out,
    );
    out
}

pub use crate::attention::exp_nonpositive;
pub use crate::isa::resolve_isa;
pub use crate::runtime::profile::Stage;

/// The radix argsort of the cluster step, for its tests, benchmark and fuzz target.
pub mod sort {
    pub use crate::sort::{
        argsort_into, argsort_many, ordered_key, radix_argsort_f32, SortScratch,
    };
}

/// The C entry points, for Rust tests that call them directly.
pub mod ffi {
    pub use crate::ffi::*;
}
