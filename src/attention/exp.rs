//! The exp used by every attention tier (design §4), written once as scalar reference.
//!
//! Domain x ≤ 0 (softmax exponents after subtracting the row max). Method: Cody–Waite range
//! reduction x = n·ln2 + r with |r| ≤ ln2/2 (ln2 split in a 9-bit high part, so n·ln2_hi is
//! exact for |n| ≤ 150), a degree-7 polynomial (Cephes-style minimax on r, written as
//! 1 + r + r²·P5(r)), and the scaling by 2^n done as two multiplies by 2^⌊n/2⌋ and
//! 2^(n−⌊n/2⌋) so that results in the subnormal range are rounded once, not flushed.
//! Bound: ≤ 4 ULP against f64 exp for normal results (the tests sweep [−104, 0]); results
//! below f32's smallest subnormal are exactly 0, −∞ → 0, NaN → NaN. Every SIMD tier
//! evaluates the same steps, so tiers differ by at most the rounding of fused multiply-adds.

/// Below this, e^x < 2^-150 rounds to 0; returning an exact 0 keeps the kernels branch-free.
pub(crate) const EXP_UNDERFLOW: f32 = -103.972_08;
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
pub(crate) const P0: f32 = 1.987_569_1e-4;
pub(crate) const P1: f32 = 1.398_199_9e-3;
pub(crate) const P2: f32 = 8.333_452e-3;
pub(crate) const P3: f32 = 4.166_579_6e-2;
pub(crate) const P4: f32 = 1.666_666_5e-1;
pub(crate) const P5: f32 = 0.5;

/// Scalar exp for x ≤ 0, the same steps as the vector kernels.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < EXP_UNDERFLOW {
        return 0.0;
    }
    let n = (x * LOG2E).round();
    let r = (-n).mul_add(LN2_HI, x);
    let r = (-n).mul_add(LN2_LO, r);
    let z = r * r;
    let p = P0
        .mul_add(r, P1)
        .mul_add(r, P2)
        .mul_add(r, P3)
        .mul_add(r, P4)
        .mul_add(r, P5);
    let y = p.mul_add(z, r) + 1.0;
    let n = n as i32;
    let half = n >> 1;
    y * pow2(half) * pow2(n - half)
}

/// 2^e for e in [-126, 127], built from the exponent bits.
#[inline(always)]
fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}
