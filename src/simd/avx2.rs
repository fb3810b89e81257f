//! The AVX2 + FMA tier of [`super::SimdF32`]: 8 lanes of `__m256`.

use super::SimdF32;
use std::arch::x86_64::*;

/// AVX2 + FMA, 8 lanes.
pub(crate) struct Avx2;

// Levels of the transposing reductions. Every step works within 128-bit blocks except
// the last ones, which move whole blocks.
// SAFETY: (these helpers) register-only AVX/AVX-512F intrinsics, called only from the
// `transpose_sum` of the tier whose features the running code has enabled.

/// Per 128-bit block of the pair (a, b): [a0+a2, b0+b2, a1+a3, b1+b3].
#[inline(always)]
unsafe fn pair256(a: __m256, b: __m256) -> __m256 {
    // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
    unsafe { _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b)) }
}
/// Two `pair256` results (rows a, b and c, d) to per-block sums [a, b, c, d].
#[inline(always)]
unsafe fn quad256(ab: __m256, cd: __m256) -> __m256 {
    // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
    unsafe {
        _mm256_add_ps(
            _mm256_shuffle_ps::<0x44>(ab, cd),
            _mm256_shuffle_ps::<0xEE>(ab, cd),
        )
    }
}
// SAFETY: (whole impl) each method is a single AVX/AVX2/FMA intrinsic sequence; callers
// run it only inside `#[target_feature(enable = "avx2,fma")]` code on a CPU where the
// tier was detected, and pointer arguments are valid for 8 floats by the kernel contract.
impl SimdF32 for Avx2 {
    type V = __m256;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: `p` is valid for a whole vector (the caller's contract).
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's
        // note); `p` is valid for 8 values.
        unsafe {
            let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        // SAFETY: `p` is valid for a whole vector (the caller's contract).
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn stream(p: *mut f32, v: __m256) {
        // SAFETY: 32-byte alignment and the features: the caller's contract.
        unsafe { _mm256_stream_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn fnma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm256_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn round(a: __m256) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    unsafe fn floor(a: __m256) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    unsafe fn pow2i(n: __m256) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe {
            let bits = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(bits))
        }
    }
    #[inline(always)]
    unsafe fn zero_below(x: __m256, limit: f32, y: __m256) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe {
            let below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(limit));
            _mm256_andnot_ps(below, y)
        }
    }
    #[inline(always)]
    unsafe fn reduce_add(v: __m256) -> f32 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    unsafe fn reduce_max(v: __m256) -> f32 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }
    type Block = [__m256; 8];
    #[inline(always)]
    unsafe fn zero_block() -> [__m256; 8] {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { [_mm256_setzero_ps(); 8] }
    }
    /// 8 → 4 → 2 → 1 vectors: 14 shuffles and 7 adds for 8 sums.
    #[inline(always)]
    unsafe fn transpose_sum(v: &[__m256; 8]) -> __m256 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe {
            let q0 = quad256(pair256(v[0], v[1]), pair256(v[2], v[3]));
            let q1 = quad256(pair256(v[4], v[5]), pair256(v[6], v[7]));
            // Add the two halves: rows 0–3 from q0, rows 4–7 from q1.
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(q0, q1),
                _mm256_permute2f128_ps::<0x31>(q0, q1),
            )
        }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
}

#[target_feature(enable = "avx2,fma")]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
fn peak_impl(iterations: usize) -> f32 {
    // SAFETY: this function enables the tier's features.
    unsafe { super::fma_peak::<Avx2>(iterations, 1.0) }
}

/// The peak loop's table entry.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub(super) fn peak(iterations: usize) -> f32 {
    // SAFETY: reachable only through `super::peak_kernel`, which takes a `Tier`: the CPU has
    // this tier's features.
    unsafe { peak_impl(iterations) }
}
