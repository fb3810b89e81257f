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
    /// Unaligned store of `LANES` values.
    unsafe fn store(p: *mut f32, v: Self::V);
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
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::SimdF32;
    use std::arch::x86_64::*;

    /// AVX2 + FMA, 8 lanes.
    pub(crate) struct Avx2;
    /// AVX-512F, 16 lanes.
    pub(crate) struct Avx512;

    // SAFETY (whole impl): each method is a single AVX/AVX2/FMA intrinsic sequence; callers
    // run it only inside `#[target_feature(enable = "avx2,fma")]` code on a CPU where the
    // tier was detected, and pointer arguments are valid for 8 floats by the kernel contract.
    impl SimdF32 for Avx2 {
        type V = __m256;
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            _mm256_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            _mm256_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn fnma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fnmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            _mm256_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m256, b: __m256) -> __m256 {
            _mm256_min_ps(a, b)
        }
        #[inline(always)]
        unsafe fn round(a: __m256) -> __m256 {
            _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
        }
        #[inline(always)]
        unsafe fn floor(a: __m256) -> __m256 {
            _mm256_round_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(a)
        }
        #[inline(always)]
        unsafe fn pow2i(n: __m256) -> __m256 {
            let bits = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(bits))
        }
        #[inline(always)]
        unsafe fn zero_below(x: __m256, limit: f32, y: __m256) -> __m256 {
            let below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(limit));
            _mm256_andnot_ps(below, y)
        }
        #[inline(always)]
        unsafe fn reduce_add(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m256) -> f32 {
            let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }

    // SAFETY (whole impl): as for `Avx2`, inside `#[target_feature(enable = "avx512f")]` code
    // (plus avx2 and fma), pointers valid for 16 floats.
    impl SimdF32 for Avx512 {
        type V = __m512;
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            _mm512_sub_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn fnma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fnmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            _mm512_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m512, b: __m512) -> __m512 {
            _mm512_min_ps(a, b)
        }
        #[inline(always)]
        unsafe fn round(a: __m512) -> __m512 {
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
        }
        #[inline(always)]
        unsafe fn floor(a: __m512) -> __m512 {
            _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(a)
        }
        #[inline(always)]
        unsafe fn pow2i(n: __m512) -> __m512 {
            let bits = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(bits))
        }
        #[inline(always)]
        unsafe fn zero_below(x: __m512, limit: f32, y: __m512) -> __m512 {
            // Ordered compare: a NaN x is not below, so its (NaN) y passes through.
            let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(limit));
            _mm512_mask_mov_ps(y, below, _mm512_setzero_ps())
        }
        /// `vscalefps`: y · 2^n in one instruction, subnormal results correctly rounded.
        #[inline(always)]
        unsafe fn ldexp_nonpositive(y: __m512, n: __m512) -> __m512 {
            _mm512_scalef_ps(y, n)
        }
        #[inline(always)]
        unsafe fn reduce_add(v: __m512) -> f32 {
            _mm512_reduce_add_ps(v)
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m512) -> f32 {
            _mm512_reduce_max_ps(v)
        }
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::SimdF32;
    use std::arch::aarch64::*;

    /// aarch64 Advanced SIMD, 4 lanes.
    pub(crate) struct Neon;

    // SAFETY (whole impl): NEON intrinsics, run only where NEON was detected, pointers valid
    // for 4 floats by the kernel contract.
    impl SimdF32 for Neon {
        type V = float32x4_t;
        const LANES: usize = 4;
        #[inline(always)]
        unsafe fn splat(x: f32) -> float32x4_t {
            vdupq_n_f32(x)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> float32x4_t {
            unsafe { vld1q_f32(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: float32x4_t) {
            unsafe { vst1q_f32(p, v) }
        }
        #[inline(always)]
        unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vaddq_f32(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vsubq_f32(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vmulq_f32(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
            vfmaq_f32(c, a, b)
        }
        #[inline(always)]
        unsafe fn fnma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
            vfmsq_f32(c, a, b)
        }
        #[inline(always)]
        unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vmaxnmq_f32(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
            vminnmq_f32(a, b)
        }
        #[inline(always)]
        unsafe fn round(a: float32x4_t) -> float32x4_t {
            vrndnq_f32(a)
        }
        #[inline(always)]
        unsafe fn floor(a: float32x4_t) -> float32x4_t {
            vrndmq_f32(a)
        }
        #[inline(always)]
        unsafe fn pow2i(n: float32x4_t) -> float32x4_t {
            let bits = vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127));
            vreinterpretq_f32_s32(vshlq_n_s32::<23>(bits))
        }
        #[inline(always)]
        unsafe fn zero_below(x: float32x4_t, limit: f32, y: float32x4_t) -> float32x4_t {
            // Ordered compare: a NaN x is not below, so its (NaN) y passes through.
            let below = vcltq_f32(x, vdupq_n_f32(limit));
            vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), below))
        }
        #[inline(always)]
        unsafe fn reduce_add(v: float32x4_t) -> f32 {
            vaddvq_f32(v)
        }
        #[inline(always)]
        unsafe fn reduce_max(v: float32x4_t) -> f32 {
            vmaxnmvq_f32(v)
        }
    }
}

/// Flops of one [`fma_peak`] iteration per vector lane: 12 accumulators × 2 flops.
pub(crate) const PEAK_FLOPS_PER_LANE_ITER: usize = 24;

/// A tight loop of independent FMAs on 12 accumulators: the tier's single-core fp32 peak
/// when timed. Returns a value that depends on every accumulator so nothing is elided.
#[inline(always)]
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
