//! The AVX2 conversion steps, 8 values each: f16 through F16C (`vcvtph2ps`, `vcvtps2ph`
//! with the round-to-nearest-even immediate), bf16 with AVX2 integer arithmetic.

use super::generic::{convert_entries, Step};
use std::arch::x86_64::*;

pub(super) struct WidenF16;
pub(super) struct WidenBf16;
pub(super) struct NarrowF16;
pub(super) struct NarrowBf16;

// SAFETY: (every step below) F16C/AVX2 intrinsics, run only inside the `#[target_feature]`
// instances of `convert_entries`; the pointers are valid for 8 values (the `Step` contract).

impl Step for WidenF16 {
    type Src = u16;
    type Dst = f32;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn step(src: *const u16, dst: *mut f32) {
        // SAFETY: see the note above the impls; unaligned loads and stores.
        unsafe { _mm256_storeu_ps(dst, _mm256_cvtph_ps(_mm_loadu_si128(src.cast()))) }
    }
}

impl Step for NarrowF16 {
    type Src = f32;
    type Dst = u16;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn step(src: *const f32, dst: *mut u16) {
        // The rounding comes from the immediate, not MXCSR. `_MM_FROUND_NO_EXC` would only
        // silence the inexact flag, and the 256-bit intrinsic accepts 3 immediate bits only.
        // SAFETY: see the note above the impls; unaligned loads and stores.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src));
            _mm_storeu_si128(dst.cast(), h);
        }
    }
}

impl Step for WidenBf16 {
    type Src = u16;
    type Dst = f32;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn step(src: *const u16, dst: *mut f32) {
        // SAFETY: see the note above the impls; unaligned loads and stores.
        unsafe {
            let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(src.cast()));
            _mm256_storeu_si256(dst.cast(), _mm256_slli_epi32::<16>(wide));
        }
    }
}

impl Step for NarrowBf16 {
    type Src = f32;
    type Dst = u16;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn step(src: *const f32, dst: *mut u16) {
        // SAFETY: see the note above the impls; unaligned loads and stores.
        unsafe {
            let x = _mm256_loadu_si256(src.cast());
            // Round to nearest even: add 0x7fff plus the kept part's lowest bit.
            let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(x), _mm256_set1_epi32(1));
            let rounded = _mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), odd);
            // NaNs are truncated with the quiet bit set instead (rounding could reach ∞).
            // Signed compare: both sides are below 2^31.
            let abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7fff_ffff));
            let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
            let quiet = _mm256_or_si256(x, _mm256_set1_epi32(0x0040_0000));
            let high = _mm256_srli_epi32::<16>(_mm256_blendv_epi8(rounded, quiet, nan));
            // Lanes hold 0..=0xffff, so the saturating pack keeps them.
            let packed = _mm_packus_epi32(
                _mm256_castsi256_si128(high),
                _mm256_extracti128_si256::<1>(high),
            );
            _mm_storeu_si128(dst.cast(), packed);
        }
    }
}

convert_entries!(
    "avx2,fma,f16c",
    widen_f16_avx2_x8: WidenF16,
    narrow_f16_avx2_x8: NarrowF16,
);
convert_entries!(
    "avx2,fma",
    widen_bf16_avx2_x8: WidenBf16,
    narrow_bf16_avx2_x8: NarrowBf16,
);
