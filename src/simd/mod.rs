//! One vector interface over the dispatched tiers (design §4), so each kernel is written once
//! as an `#[inline(always)]` generic body and instantiated per ISA behind a thin
//! `#[target_feature]` shim (STYLE.md: bluss/matrixmultiply). Every method is `unsafe`: it
//! executes instructions of its tier, so it may only run where that tier was detected.

/// f32 vector operations of one instruction set.
pub(crate) trait SimdF32 {
    type V: Copy;
    const LANES: usize;
    unsafe fn splat(x: f32) -> Self::V;
    /// Unaligned load of `LANES` values.
    unsafe fn load(p: *const f32) -> Self::V;
    /// Unaligned load of `LANES` bf16 bit patterns, widened exactly (`bits << 16`).
    unsafe fn load_bf16(p: *const u16) -> Self::V;
    /// Unaligned store of `LANES` values.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Non-temporal store of `LANES` values at `p`, aligned to a whole vector; a plain store
    /// where the tier has none. The caller fences (the runtime's `stream::fence`) before the
    /// values are published.
    #[inline(always)]
    unsafe fn stream(p: *mut f32, v: Self::V) {
        // SAFETY: the caller's pointer, valid for `LANES` values.
        unsafe { Self::store(p, v) }
    }
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// a·b + c, fused.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// c − a·b, fused.
    unsafe fn fnma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// Round to nearest integer (ties to even).
    unsafe fn round(a: Self::V) -> Self::V;
    unsafe fn floor(a: Self::V) -> Self::V;
    /// 2^n for lanes holding integers in [−126, 127].
    unsafe fn pow2i(n: Self::V) -> Self::V;
    /// +0.0 where `x < limit`, else `y` (also where `x` is NaN).
    unsafe fn zero_below(x: Self::V, limit: f32, y: Self::V) -> Self::V;
    /// y · 2^n for lanes of n holding integers ≤ 0, results in the subnormal range rounded
    /// once: two normal scalings by 2^⌊n/2⌋ and 2^(n−⌊n/2⌋) (n clamped at −150). A tier with a
    /// scaling instruction overrides it.
    #[inline(always)]
    unsafe fn ldexp_nonpositive(y: Self::V, n: Self::V) -> Self::V {
        // SAFETY: vector arithmetic of the implementing tier.
        unsafe {
            let n = Self::min(Self::max(n, Self::splat(-150.0)), Self::splat(0.0));
            let half = Self::floor(Self::mul(n, Self::splat(0.5)));
            Self::mul(
                Self::mul(y, Self::pow2i(half)),
                Self::pow2i(Self::sub(n, half)),
            )
        }
    }
    unsafe fn reduce_add(v: Self::V) -> f32;
    unsafe fn reduce_max(v: Self::V) -> f32;
    /// `LANES` vectors: one accumulator per row of a row block.
    type Block: Copy + AsRef<[Self::V]> + AsMut<[Self::V]>;
    unsafe fn zero_block() -> Self::Block;
    /// Transposing reduction: lane j of the result is the sum of the lanes of `block[j]`.
    /// A pairwise shuffle-and-add tree, so `LANES` sums cost about two shuffles and one add
    /// each instead of a full horizontal reduction apiece.
    unsafe fn transpose_sum(block: &Self::Block) -> Self::V;
    /// Hint that the cache line holding `p` will be read soon. Never faults, so `p` may be
    /// any address. A no-op where the tier has no stable prefetch instruction.
    #[inline(always)]
    unsafe fn prefetch(_p: *const f32) {}
}

use crate::error::{Error, Result};
use crate::isa::{detected_isa, Isa};

/// A kernel tier the running CPU was found to support. Only [`Tier::new`] and
/// [`Tier::resolve`] build one, after detection, so every kernel table handed out for a
/// `Tier` may run its tier's instructions: the `#[target_feature]` shims behind the tables
/// are reachable from nowhere else, and the call sites stay safe code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tier(Isa);

impl Tier {
    /// The tier `isa`, if this CPU supports it.
    pub(crate) fn new(isa: Isa) -> Option<Tier> {
        isa.is_supported().then_some(Tier(isa))
    }

    /// Resolves a requested tier: an explicit request wins; otherwise `SMYRF_ISA` from the
    /// environment; otherwise the detected tier. A tier the CPU lacks, or an unknown
    /// `SMYRF_ISA` value, is an error (design §4), never a crash.
    pub(crate) fn resolve(requested: Option<Isa>) -> Result<Tier> {
        let isa = match requested {
            Some(isa) => isa,
            None => match std::env::var("SMYRF_ISA") {
                Ok(value) if !value.trim().is_empty() => {
                    Isa::from_name(&value).ok_or_else(|| Error::UnknownIsa {
                        name: value.clone(),
                    })?
                }
                _ => detected_isa(),
            },
        };
        Tier::new(isa).ok_or(Error::UnsupportedIsa { isa })
    }

    /// The best tier of this CPU.
    pub(crate) fn detected() -> Tier {
        Tier(detected_isa())
    }

    /// Which tier this is.
    pub(crate) fn isa(self) -> Isa {
        self.0
    }
}

/// The tier's FMA peak loop ([`fma_peak`]) and its vector width, for the benchmarks' peak.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub(crate) struct PeakKernel {
    /// Runs `iterations` of the loop; returns a value that depends on every accumulator.
    pub(crate) run: fn(iterations: usize) -> f32,
    /// f32 lanes per vector.
    pub(crate) lanes: usize,
}

/// The peak loop of `tier`, through the same kind of table as every stage.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub(crate) fn peak_kernel(tier: Tier) -> PeakKernel {
    match tier.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => PeakKernel {
            run: avx512::peak,
            lanes: 16,
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => PeakKernel {
            run: avx2::peak,
            lanes: 8,
        },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => PeakKernel {
            run: neon::peak,
            lanes: 4,
        },
        _ => PeakKernel {
            run: portable_peak,
            lanes: 8,
        },
    }
}

/// The portable tier's peak loop: the same generic loop on `wide::f32x8`.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
fn portable_peak(iterations: usize) -> f32 {
    // SAFETY: the portable tier needs no instruction-set feature.
    unsafe { fma_peak::<Portable>(iterations, 1.0) }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::Avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) use neon::Neon;
pub(crate) use portable::Portable;

/// Flops of one [`fma_peak`] iteration per vector lane: 12 accumulators × 2 flops.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub(crate) const PEAK_FLOPS_PER_LANE_ITER: usize = 24;

/// A tight loop of independent FMAs on 12 accumulators: the tier's single-core fp32 peak
/// when timed. Returns a value that depends on every accumulator so nothing is elided.
#[inline(always)]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub(crate) unsafe fn fma_peak<S: SimdF32>(iterations: usize, seed: f32) -> f32 {
    // SAFETY: vector arithmetic of the caller's tier.
    unsafe {
        let mut acc = [S::splat(seed); 12];
        for (i, a) in acc.iter_mut().enumerate() {
            *a = S::splat(seed + i as f32);
        }
        let (b, c) = (S::splat(0.999_999), S::splat(1e-7));
        for _ in 0..iterations {
            for a in acc.iter_mut() {
                *a = S::fma(*a, b, c);
            }
        }
        let mut total = S::splat(0.0);
        for a in acc {
            total = S::add(total, a);
        }
        S::reduce_add(total)
    }
}

#[cfg(test)]
mod tests {
    use super::SimdF32;

    /// Each tier's transposing reduction against plain sums, on values whose sums are exact
    /// in f32 whatever the order (small integers) and on general values to a tolerance.
    /// Inlined into a `#[target_feature]` shim per tier, as the kernels are.
    #[inline(always)]
    fn check_transpose_sum<S: SimdF32>() {
        let lanes = S::LANES;
        for exact in [true, false] {
            let value = |j: usize, l: usize| {
                if exact {
                    (j * lanes + l) as f32 - 7.0
                } else {
                    ((j * 31 + l * 17) % 23) as f32 * 0.173 - 1.9
                }
            };
            // SAFETY: only called for a tier the running CPU supports; every load and store
            // covers LANES values of a buffer that long.
            let got = unsafe {
                let mut block = S::zero_block();
                for (j, v) in block.as_mut().iter_mut().enumerate() {
                    let row: Vec<f32> = (0..lanes).map(|l| value(j, l)).collect();
                    *v = S::load(row.as_ptr());
                }
                let mut out = vec![0.0f32; lanes];
                S::store(out.as_mut_ptr(), S::transpose_sum(&block));
                out
            };
            for (j, &g) in got.iter().enumerate() {
                let want: f64 = (0..lanes).map(|l| value(j, l) as f64).sum();
                if exact {
                    assert_eq!(g as f64, want, "lane {j}");
                } else {
                    assert!(
                        (g as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "lane {j}"
                    );
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn check_avx2() {
        check_transpose_sum::<super::Avx2>();
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn check_avx512() {
        check_transpose_sum::<super::Avx512>();
    }

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    fn check_neon() {
        check_transpose_sum::<super::Neon>();
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transpose_sum_avx2() {
        if crate::Isa::Avx2.is_supported() {
            // SAFETY: the CPU has AVX2 and FMA.
            unsafe { check_avx2() }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transpose_sum_avx512() {
        if crate::Isa::Avx512.is_supported() {
            // SAFETY: the CPU has AVX-512F, AVX2 and FMA.
            unsafe { check_avx512() }
        }
    }

    #[cfg(target_arch = "aarch64")]
    #[test]
    fn transpose_sum_neon() {
        if crate::Isa::Neon.is_supported() {
            // SAFETY: the CPU has NEON.
            unsafe { check_neon() }
        }
    }
}
