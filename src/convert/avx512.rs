//! The AVX-512F conversion steps, 16 values each: f16 through `vcvtph2ps`/`vcvtps2ph` (the
//! rounding passed as an immediate), bf16 with integer arithmetic (`vcvtneps2bf16` of
//! AVX-512 BF16 flushes subnormals, so it is not used).

use super::generic::{convert_entries, Step};
use std::arch::x86_64::*;

pub(super) struct WidenF16;
pub(super) struct WidenBf16;
pub(super) struct NarrowF16;
pub(super) struct NarrowBf16;

// SAFETY: (every step below) AVX-512F intrinsics, run only inside the `#[target_feature]`
// instances of `convert_entries`; the pointers are valid for 16 values (the `Step` contract).

impl Step for WidenF16 {
    type Src = u16;
    type Dst = f32;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn step(src: *const u16, dst: *mut f32) {
        // SAFETY: see the note above the impls; unaligned loads and stores.
        unsafe { _mm512_storeu_ps(dst, _mm512_cvtph_ps(_mm256_loadu_si256(src.cast()))) }
    }
}

impl Step for NarrowF16 {
    type Src = f32;
    type Dst = u16;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn step(src: *const f32, dst: *mut u16) {
        // SAFETY: see the note above the impls; unaligned loads and stores.
        unsafe {
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_loadu_ps(src),
            );
            _mm256_storeu_si256(dst.cast(), h);
        }
    }
}

impl Step for WidenBf16 {
    type Src = u16;
    type Dst = f32;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn step(src: *const u16, dst: *mut f32) {
        // SAFETY: see the note above the impls; unaligned loads and stores.
        unsafe {
            let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(src.cast()));
            _mm512_storeu_si512(dst.cast(), _mm512_slli_epi32::<16>(wide));
        }
    }
}

impl Step for NarrowBf16 {
    type Src = f32;
    type Dst = u16;
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn step(src: *const f32, dst: *mut u16) {
        // SAFETY: see the note above the impls; unaligned loads and stores.
        unsafe {
            let x = _mm512_loadu_si512(src.cast());
            // Round to nearest even: add 0x7fff plus the kept part's lowest bit.
            let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(1));
            let rounded = _mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), odd);
            // NaNs are truncated with the quiet bit set instead (rounding could reach ∞).
            let abs = _mm512_and_si512(x, _mm512_set1_epi32(0x7fff_ffff));
            let nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
            let quiet = _mm512_or_si512(x, _mm512_set1_epi32(0x0040_0000));
            let high = _mm512_srli_epi32::<16>(_mm512_mask_mov_epi32(rounded, nan, quiet));
            // `vpmovdw` keeps the low 16 bits of each lane: all there is after the shift.
            _mm256_storeu_si256(dst.cast(), _mm512_cvtepi32_epi16(high));
        }
    }
}

convert_entries!(
    "avx512f,avx2,fma",
    widen_f16_avx512_x16: WidenF16,
    narrow_f16_avx512_x16: NarrowF16,
    widen_bf16_avx512_x16: WidenBf16,
    narrow_bf16_avx512_x16: NarrowBf16,
);
