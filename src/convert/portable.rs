//! The portable conversion kernels: scalar bit manipulation per value, which the compiler
//! may vectorise. They define the bits every tier must give (`mod.rs`), so they use no
//! conversion instruction and no library conversion.

/// f16 bits → f32 bits, exact; a NaN is quieted, its payload moved to the top mantissa bits.
#[inline(always)]
pub(super) fn f16_to_f32_bits(h: u16) -> u32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let exponent = (h >> 10) & 0x1f;
    let mantissa = h & 0x3ff;
    let magnitude = if exponent == 0x1f {
        let quiet = if mantissa != 0 { 0x0040_0000 } else { 0 };
        0x7f80_0000 | quiet | (mantissa << 13)
    } else if exponent != 0 {
        // Rebias 15 → 127.
        ((exponent + 112) << 23) | (mantissa << 13)
    } else if mantissa != 0 {
        // A subnormal, mantissa·2^-24: shift its leading one up to the implicit bit (bit 10).
        let shift = mantissa.leading_zeros() - 21;
        ((113 - shift) << 23) | (((mantissa << shift) & 0x3ff) << 13)
    } else {
        0
    };
    sign | magnitude
}

/// f32 bits → f16 bits, rounded to nearest, ties to even.
#[inline(always)]
pub(super) fn f16_from_f32_bits(x: u32) -> u16 {
    let sign = (x >> 16) & 0x8000;
    let abs = x & 0x7fff_ffff;
    let magnitude = if abs > 0x7f80_0000 {
        // NaN: quiet, the top 10 payload bits kept.
        0x7e00 | ((abs >> 13) & 0x3ff)
    } else if abs >= 0x477f_f000 {
        // From 65520, halfway between 65504 and 2^16, up: ∞ (the tie goes to the even ∞).
        0x7c00
    } else if abs >= 0x3880_0000 {
        // Normal (from 2^-14): rebias 127 → 15 and round the 13 dropped bits; a carry out
        // of the mantissa moves the exponent up, as it should.
        let rebiased = abs - (112 << 23);
        (rebiased + 0xfff + ((rebiased >> 13) & 1)) >> 13
    } else if abs >= 0x3300_0000 {
        // Subnormal result (from 2^-25): the significand, leading one included, shifted to
        // units of 2^-24 and rounded; 1024 is the least normal, 0x0400, as it should be.
        let exponent = abs >> 23;
        let significand = (abs & 0x7f_ffff) | 0x80_0000;
        let shift = 126 - exponent;
        let half = 1 << (shift - 1);
        (significand + (half - 1) + ((significand >> shift) & 1)) >> shift
    } else {
        // Below 2^-25 (its tie goes to the even 0): ±0.
        0
    };
    (sign | magnitude) as u16
}

/// f32 bits → bf16 bits, rounded to nearest, ties to even, subnormals kept.
#[inline(always)]
pub(super) fn bf16_from_f32_bits(x: u32) -> u16 {
    if x & 0x7fff_ffff > 0x7f80_0000 {
        // NaN: quiet, sign and top payload bits kept (rounding could reach ∞ or the sign).
        return ((x | 0x0040_0000) >> 16) as u16;
    }
    // No overflow: the greatest finite value rounds to ∞ = 0x7f80, and ∞ stays ∞.
    ((x + 0x7fff + ((x >> 16) & 1)) >> 16) as u16
}

pub(super) fn widen_f16_portable(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen_f16: length mismatch");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits(f16_to_f32_bits(s));
    }
}

pub(super) fn widen_bf16_portable(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen_bf16: length mismatch");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits(u32::from(s) << 16);
    }
}

pub(super) fn narrow_f16_portable(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "narrow_f16: length mismatch");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16_from_f32_bits(s.to_bits());
    }
}

pub(super) fn narrow_bf16_portable(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "narrow_bf16: length mismatch");
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = bf16_from_f32_bits(s.to_bits());
    }
}
