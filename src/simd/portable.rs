//! The portable tier of [`super::SimdF32`]: 8 lanes of `wide::f32x8` (SSE2 on x86-64, NEON
//! on aarch64, scalar elsewhere), so the portable kernels are the same generic bodies as the
//! hand-tuned tiers. Every method is plain safe code; only the pointer accesses need the
//! caller's promise that `LANES` values are valid there.

use super::SimdF32;
use wide::{bytemuck::cast, f32x8, i32x8};

/// `wide`'s 8-lane vectors, no instruction-set requirement.
pub(crate) struct Portable;

impl SimdF32 for Portable {
    type V = f32x8;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32x8 {
        f32x8::splat(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32x8 {
        // SAFETY: `p` is valid for 8 values (the caller's contract); unaligned read.
        f32x8::new(unsafe { p.cast::<[f32; 8]>().read_unaligned() })
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> f32x8 {
        // SAFETY: `p` is valid for 8 values (the caller's contract); unaligned read.
        let bits = unsafe { p.cast::<[u16; 8]>().read_unaligned() };
        f32x8::new(bits.map(|b| f32::from_bits(u32::from(b) << 16)))
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32x8) {
        // SAFETY: `p` is valid for 8 values (the caller's contract); unaligned write.
        unsafe { p.cast::<[f32; 8]>().write_unaligned(v.to_array()) }
    }
    /// Two SSE streaming stores on x86-64 (SSE is baseline there; Miri has no streaming
    /// stores), a plain store elsewhere.
    #[inline(always)]
    unsafe fn stream(p: *mut f32, v: f32x8) {
        #[cfg(all(target_arch = "x86_64", not(miri)))]
        // SAFETY: `p` is valid for 8 values and 32-byte aligned (the caller's contract), so
        // both halves are 16-byte aligned; SSE is baseline on x86-64.
        unsafe {
            use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
            let lanes = v.to_array();
            _mm_stream_ps(p, _mm_loadu_ps(lanes.as_ptr()));
            _mm_stream_ps(p.add(4), _mm_loadu_ps(lanes.as_ptr().add(4)));
        }
        #[cfg(not(all(target_arch = "x86_64", not(miri))))]
        // SAFETY: as for `store`.
        unsafe {
            Self::store(p, v)
        }
    }
    #[inline(always)]
    unsafe fn add(a: f32x8, b: f32x8) -> f32x8 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32x8, b: f32x8) -> f32x8 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: f32x8, b: f32x8) -> f32x8 {
        a * b
    }
    /// Fused where the target has FMA, else a product and a sum.
    #[inline(always)]
    unsafe fn fma(a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn fnma(a: f32x8, b: f32x8, c: f32x8) -> f32x8 {
        a.mul_neg_add(b, c)
    }
    /// `a` where `a > b`, else `b` (so `b` when either is NaN), as x86's `maxps`.
    #[inline(always)]
    unsafe fn max(a: f32x8, b: f32x8) -> f32x8 {
        a.simd_gt(b).select(a, b)
    }
    /// `a` where `a < b`, else `b`, as x86's `minps`.
    #[inline(always)]
    unsafe fn min(a: f32x8, b: f32x8) -> f32x8 {
        a.simd_lt(b).select(a, b)
    }
    #[inline(always)]
    unsafe fn round(a: f32x8) -> f32x8 {
        a.round_ties_even()
    }
    #[inline(always)]
    unsafe fn floor(a: f32x8) -> f32x8 {
        a.floor()
    }
    #[inline(always)]
    unsafe fn pow2i(n: f32x8) -> f32x8 {
        cast((n.round_int() + i32x8::splat(127)) << 23)
    }
    #[inline(always)]
    unsafe fn zero_below(x: f32x8, limit: f32, y: f32x8) -> f32x8 {
        // Ordered compare: a NaN x is not below, so its y passes through.
        x.simd_lt(f32x8::splat(limit)).select(f32x8::ZERO, y)
    }
    #[inline(always)]
    unsafe fn reduce_add(v: f32x8) -> f32 {
        let a = v.to_array();
        ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
    }
    #[inline(always)]
    unsafe fn reduce_max(v: f32x8) -> f32 {
        let a = v.to_array();
        let max = |x: f32, y: f32| if x > y { x } else { y };
        max(
            max(max(a[0], a[4]), max(a[2], a[6])),
            max(max(a[1], a[5]), max(a[3], a[7])),
        )
    }
    type Block = [f32x8; 8];
    #[inline(always)]
    unsafe fn zero_block() -> [f32x8; 8] {
        [f32x8::ZERO; 8]
    }
    #[inline(always)]
    unsafe fn transpose_sum(block: &[f32x8; 8]) -> f32x8 {
        let t = f32x8::transpose(*block);
        ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]))
    }
}
