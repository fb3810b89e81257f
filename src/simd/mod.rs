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
    /// Non-temporal store of `LANES` values at `p`, aligned to a whole vector (see
    /// `crate::stream`); a plain store where the tier has none. Followed by
    /// `crate::runtime::stream::fence` before the values are published.
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

    // Levels of the transposing reductions. Every step works within 128-bit blocks except
    // the last ones, which move whole blocks.
    // SAFETY (these helpers): register-only AVX/AVX-512F intrinsics, called only from the
    // `transpose_sum` of the tier whose features the running code has enabled.

    /// Per 128-bit block of the pair (a, b): [a0+a2, b0+b2, a1+a3, b1+b3].
    #[inline(always)]
    unsafe fn pair256(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b))
    }
    /// Two `pair256` results (rows a, b and c, d) to per-block sums [a, b, c, d].
    #[inline(always)]
    unsafe fn quad256(ab: __m256, cd: __m256) -> __m256 {
        _mm256_add_ps(
            _mm256_shuffle_ps::<0x44>(ab, cd),
            _mm256_shuffle_ps::<0xEE>(ab, cd),
        )
    }
    /// As [`pair256`], in each of the four 128-bit blocks.
    #[inline(always)]
    unsafe fn pair512(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b))
    }
    /// As [`quad256`], in each of the four 128-bit blocks.
    #[inline(always)]
    unsafe fn quad512(ab: __m512, cd: __m512) -> __m512 {
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(ab, cd),
            _mm512_shuffle_ps::<0xEE>(ab, cd),
        )
    }
    /// Blocks [a0+a1, a2+a3, b0+b1, b2+b3].
    #[inline(always)]
    unsafe fn halves512(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    }

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
        unsafe fn stream(p: *mut f32, v: __m256) {
            // 32-byte alignment: the caller's contract.
            unsafe { _mm256_stream_ps(p, v) }
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
        type Block = [__m256; 8];
        #[inline(always)]
        unsafe fn zero_block() -> [__m256; 8] {
            [_mm256_setzero_ps(); 8]
        }
        /// 8 → 4 → 2 → 1 vectors: 14 shuffles and 7 adds for 8 sums.
        #[inline(always)]
        unsafe fn transpose_sum(v: &[__m256; 8]) -> __m256 {
            let q0 = quad256(pair256(v[0], v[1]), pair256(v[2], v[3]));
            let q1 = quad256(pair256(v[4], v[5]), pair256(v[6], v[7]));
            // Add the two halves: rows 0–3 from q0, rows 4–7 from q1.
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(q0, q1),
                _mm256_permute2f128_ps::<0x31>(q0, q1),
            )
        }
        #[inline(always)]
        unsafe fn prefetch(p: *const f32) {
            _mm_prefetch::<_MM_HINT_T0>(p.cast())
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
        unsafe fn stream(p: *mut f32, v: __m512) {
            // 64-byte alignment: the caller's contract.
            unsafe { _mm512_stream_ps(p, v) }
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
        type Block = [__m512; 16];
        #[inline(always)]
        unsafe fn zero_block() -> [__m512; 16] {
            [_mm512_setzero_ps(); 16]
        }
        /// 16 → 8 → 4 → 2 → 1 vectors: 30 shuffles and 15 adds for 16 sums.
        #[inline(always)]
        unsafe fn transpose_sum(v: &[__m512; 16]) -> __m512 {
            let q0 = quad512(pair512(v[0], v[1]), pair512(v[2], v[3]));
            let q1 = quad512(pair512(v[4], v[5]), pair512(v[6], v[7]));
            let q2 = quad512(pair512(v[8], v[9]), pair512(v[10], v[11]));
            let q3 = quad512(pair512(v[12], v[13]), pair512(v[14], v[15]));
            // [rows 0–3: half, half, rows 4–7: half, half] and likewise for rows 8–15; one
            // more level adds the halves and puts each group of four rows in its quarter.
            halves512(halves512(q0, q1), halves512(q2, q3))
        }
        #[inline(always)]
        unsafe fn prefetch(p: *const f32) {
            _mm_prefetch::<_MM_HINT_T0>(p.cast())
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
        type Block = [float32x4_t; 4];
        #[inline(always)]
        unsafe fn zero_block() -> [float32x4_t; 4] {
            [vdupq_n_f32(0.0); 4]
        }
        /// Two levels of pairwise adds: 3 instructions for 4 sums.
        #[inline(always)]
        unsafe fn transpose_sum(v: &[float32x4_t; 4]) -> float32x4_t {
            vpaddq_f32(vpaddq_f32(v[0], v[1]), vpaddq_f32(v[2], v[3]))
        }
    }
}

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
