//! The NEON tier of [`super::SimdF32`]: 4 lanes of `float32x4_t`.

use super::SimdF32;
use std::arch::aarch64::*;

/// aarch64 Advanced SIMD, 4 lanes.
pub(crate) struct Neon;

// SAFETY: (whole impl) NEON intrinsics, run only where NEON was detected, pointers valid
// for 4 floats by the kernel contract.
impl SimdF32 for Neon {
    type V = float32x4_t;
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vdupq_n_f32(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's
        // note); `p` is valid for 4 values.
        unsafe { vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p))) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vaddq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vsubq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vmulq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vfmaq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn fnma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vfmsq_f32(c, a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vmaxnmq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vminnmq_f32(a, b) }
    }
    #[inline(always)]
    unsafe fn round(a: float32x4_t) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vrndnq_f32(a) }
    }
    #[inline(always)]
    unsafe fn floor(a: float32x4_t) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vrndmq_f32(a) }
    }
    #[inline(always)]
    unsafe fn pow2i(n: float32x4_t) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe {
            let bits = vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127));
            vreinterpretq_f32_s32(vshlq_n_s32::<23>(bits))
        }
    }
    #[inline(always)]
    unsafe fn zero_below(x: float32x4_t, limit: f32, y: float32x4_t) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe {
            // Ordered compare: a NaN x is not below, so its (NaN) y passes through.
            let below = vcltq_f32(x, vdupq_n_f32(limit));
            vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), below))
        }
    }
    #[inline(always)]
    unsafe fn reduce_add(v: float32x4_t) -> f32 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vaddvq_f32(v) }
    }
    #[inline(always)]
    unsafe fn reduce_max(v: float32x4_t) -> f32 {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vmaxnmvq_f32(v) }
    }
    type Block = [float32x4_t; 4];
    #[inline(always)]
    unsafe fn zero_block() -> [float32x4_t; 4] {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { [vdupq_n_f32(0.0); 4] }
    }
    /// Two levels of pairwise adds: 3 instructions for 4 sums.
    #[inline(always)]
    unsafe fn transpose_sum(v: &[float32x4_t; 4]) -> float32x4_t {
        // SAFETY: this tier's intrinsics, inside code that enables its features (the impl's note).
        unsafe { vpaddq_f32(vpaddq_f32(v[0], v[1]), vpaddq_f32(v[2], v[3])) }
    }
}

#[target_feature(enable = "neon")]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
fn peak_impl(iterations: usize) -> f32 {
    // SAFETY: this function enables the tier's features.
    unsafe { super::fma_peak::<Neon>(iterations, 1.0) }
}

/// The peak loop's table entry.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub(super) fn peak(iterations: usize) -> f32 {
    // SAFETY: reachable only through `super::peak_kernel`, which takes a `Tier`: the CPU has
    // this tier's features.
    unsafe { peak_impl(iterations) }
}
