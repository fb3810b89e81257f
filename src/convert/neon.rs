//! The NEON conversion steps, 8 values each: f16 through `fcvtl`/`fcvtl2` and
//! `fcvtn`/`fcvtn2`, bf16 with integer shifts and rounding.
//!
//! The f16 instructions are written with `asm!` on `u16` vectors: the intrinsics that
//! name them (`vcvt_f32_f16` & co.) take `float16x4_t`, unstable at the crate's minimum
//! Rust (1.89). `fcvtn` takes no rounding operand; it rounds by FPCR, whose default mode
//! (nearest even, no flush to zero) is what Rust code runs under.

use super::generic::{convert_entries, Step};
use std::arch::aarch64::*;
use std::arch::asm;

pub(super) struct WidenF16;
pub(super) struct WidenBf16;
pub(super) struct NarrowF16;
pub(super) struct NarrowBf16;

// SAFETY: (every step below) NEON intrinsics and base AdvSIMD instructions, run only inside
// the `#[target_feature]` instances of `convert_entries`; the pointers are valid for 8
// values (the `Step` contract). The `asm!` blocks touch only their register operands.

impl Step for WidenF16 {
    type Src = u16;
    type Dst = f32;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn step(src: *const u16, dst: *mut f32) {
        // SAFETY: see the note above the impls.
        unsafe {
            let h = vld1q_u16(src);
            let low: float32x4_t;
            let high: float32x4_t;
            asm!(
                "fcvtl {low:v}.4s, {h:v}.4h",
                "fcvtl2 {high:v}.4s, {h:v}.8h",
                h = in(vreg) h,
                low = out(vreg) low,
                high = out(vreg) high,
                options(pure, nomem, nostack, preserves_flags),
            );
            vst1q_f32(dst, low);
            vst1q_f32(dst.add(4), high);
        }
    }
}

impl Step for NarrowF16 {
    type Src = f32;
    type Dst = u16;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn step(src: *const f32, dst: *mut u16) {
        // SAFETY: see the note above the impls. `h` is an `out` operand, so it shares no
        // register with `low` or `high`, and the first instruction cannot clobber `high`.
        unsafe {
            let low = vld1q_f32(src);
            let high = vld1q_f32(src.add(4));
            let h: uint16x8_t;
            asm!(
                "fcvtn {h:v}.4h, {low:v}.4s",
                "fcvtn2 {h:v}.8h, {high:v}.4s",
                low = in(vreg) low,
                high = in(vreg) high,
                h = out(vreg) h,
                options(pure, nomem, nostack, preserves_flags),
            );
            vst1q_u16(dst, h);
        }
    }
}

impl Step for WidenBf16 {
    type Src = u16;
    type Dst = f32;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn step(src: *const u16, dst: *mut f32) {
        // SAFETY: see the note above the impls.
        unsafe {
            let b = vld1q_u16(src);
            vst1q_u32(dst.cast(), vshll_n_u16::<16>(vget_low_u16(b)));
            vst1q_u32(dst.add(4).cast(), vshll_high_n_u16::<16>(b));
        }
    }
}

/// f32 bits → bf16 bits in the high halves of the lanes: nearest even, NaNs truncated with
/// the quiet bit set instead (rounding could reach ∞).
#[inline(always)]
unsafe fn round_bf16(x: uint32x4_t) -> uint32x4_t {
    // SAFETY: NEON intrinsics, inside the steps' `#[target_feature]` instances.
    unsafe {
        let odd = vandq_u32(vshrq_n_u32::<16>(x), vdupq_n_u32(1));
        let rounded = vaddq_u32(vaddq_u32(x, vdupq_n_u32(0x7fff)), odd);
        let abs = vandq_u32(x, vdupq_n_u32(0x7fff_ffff));
        let nan = vcgtq_u32(abs, vdupq_n_u32(0x7f80_0000));
        vbslq_u32(nan, vorrq_u32(x, vdupq_n_u32(0x0040_0000)), rounded)
    }
}

impl Step for NarrowBf16 {
    type Src = f32;
    type Dst = u16;
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn step(src: *const f32, dst: *mut u16) {
        // SAFETY: see the note above the impls.
        unsafe {
            let low = round_bf16(vld1q_u32(src.cast()));
            let high = round_bf16(vld1q_u32(src.add(4).cast()));
            let b = vshrn_high_n_u32::<16>(vshrn_n_u32::<16>(low), high);
            vst1q_u16(dst, b);
        }
    }
}

convert_entries!(
    "neon",
    widen_f16_neon_x8: WidenF16,
    narrow_f16_neon_x8: NarrowF16,
    widen_bf16_neon_x8: WidenBf16,
    narrow_bf16_neon_x8: NarrowBf16,
);
