//! The AVX-512F tier of [`super::SimdF32`]: 16 lanes of `__m512`.

use super::SimdF32;
use std::arch::x86_64::*;

/// AVX-512F, 16 lanes.
pub(crate) struct Avx512;

// Levels of the transposing reductions, as in the AVX2 tier, in each 128-bit block.
// SAFETY: (these helpers) register-only AVX-512F intrinsics, called only from the
// `transpose_sum` of this tier.
/// As the AVX2 tier's `pair256`, in each of the four 128-bit blocks.
#[inline(always)]
unsafe fn pair512(a: __m512, b: __m512) -> __m512 {
    // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
    unsafe { _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b)) }
}
/// As the AVX2 tier's `quad256`, in each of the four 128-bit blocks.
#[inline(always)]
unsafe fn quad512(ab: __m512, cd: __m512) -> __m512 {
    // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
    unsafe {
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(ab, cd),
            _mm512_shuffle_ps::<0xEE>(ab, cd),
        )
    }
}
/// Blocks [a0+a1, a2+a3, b0+b1, b2+b3].
#[inline(always)]
unsafe fn halves512(a: __m512, b: __m512) -> __m512 {
    // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
    unsafe {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    }
}

// SAFETY: (whole impl) as for `Avx2`, inside `#[target_feature(enable = "avx512f")]` code
// (plus avx2 and fma), pointers valid for 16 floats.
impl SimdF32 for Avx512 {
    type V = __m512;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: `p` is valid for a whole vector (the caller's contract).
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> __m512 {
        // SAFETY: `p` is valid for a whole vector of u16 (the caller's contract).
        unsafe {
            let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        // SAFETY: `p` is valid for a whole vector (the caller's contract).
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn stream(p: *mut f32, v: __m512) {
        // SAFETY: 64-byte alignment and the features: the caller's contract.
        unsafe { _mm512_stream_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn fnma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_fnmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn round(a: __m512) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    unsafe fn floor(a: __m512) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    unsafe fn pow2i(n: __m512) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe {
            let bits = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(bits))
        }
    }
    #[inline(always)]
    unsafe fn zero_below(x: __m512, limit: f32, y: __m512) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe {
            // Ordered compare: a NaN x is not below, so its (NaN) y passes through.
            let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(limit));
            _mm512_mask_mov_ps(y, below, _mm512_setzero_ps())
        }
    }
    /// `vscalefps`: y · 2^n in one instruction, subnormal results correctly rounded.
    #[inline(always)]
    unsafe fn ldexp_nonpositive(y: __m512, n: __m512) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_scalef_ps(y, n) }
    }
    #[inline(always)]
    unsafe fn reduce_add(v: __m512) -> f32 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    unsafe fn reduce_max(v: __m512) -> f32 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm512_reduce_max_ps(v) }
    }
    type Block = [__m512; 16];
    #[inline(always)]
    unsafe fn zero_block() -> [__m512; 16] {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { [_mm512_setzero_ps(); 16] }
    }
    /// 16 → 8 → 4 → 2 → 1 vectors: 30 shuffles and 15 adds for 16 sums.
    #[inline(always)]
    unsafe fn transpose_sum(v: &[__m512; 16]) -> __m512 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe {
            let q0 = quad512(pair512(v[0], v[1]), pair512(v[2], v[3]));
            let q1 = quad512(pair512(v[4], v[5]), pair512(v[6], v[7]));
            let q2 = quad512(pair512(v[8], v[9]), pair512(v[10], v[11]));
            let q3 = quad512(pair512(v[12], v[13]), pair512(v[14], v[15]));
            // [rows 0–3: half, half, rows 4–7: half, half] and likewise for rows 8–15; one
            // more level adds the halves and puts each group of four rows in its quarter.
            halves512(halves512(q0, q1), halves512(q2, q3))
        }
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
fn peak_impl(iterations: usize) -> f32 {
    // SAFETY: this function enables the tier's features.
    unsafe { super::fma_peak::<Avx512>(iterations, 1.0) }
}

/// The peak loop's table entry.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub(super) fn peak(iterations: usize) -> f32 {
    // SAFETY: reachable only through `super::peak_kernel`, which takes a `Tier`: the CPU has
    // this tier's features.
    unsafe { peak_impl(iterations) }
}
