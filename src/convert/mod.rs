//! Conversions between f32 and the 16-bit float formats of the tensor views: IEEE binary16
//! (f16) and bfloat16 (bf16), as bit patterns in `u16` slices (callers reinterpret their
//! `half::f16` / `half::bf16` slices). One kernel table per tier (design §4).
//!
//! Every tier gives the same bits for every input:
//! - widening is exact. An f16 NaN becomes an f32 NaN of the same sign with the quiet bit
//!   set and the payload in the top mantissa bits (what F16C `vcvtph2ps` and NEON `fcvtl`
//!   do); a bf16 widens to `bits << 16`, NaNs unchanged;
//! - narrowing rounds to nearest, ties to even, into the subnormal range and to ±0 without
//!   flushing, and overflows to ±∞ (an f16 from 65520 up). A NaN stays a NaN of its sign
//!   with the quiet bit set and the top payload bits kept (`vcvtps2ph` / `fcvtn`), and
//!   never rounds to ∞.
//!
//! The hardware f16 conversions are used where they exist: F16C on the AVX2 tier (when the
//! CPU has it; otherwise that tier takes the portable f16 kernels), AVX-512F on the AVX-512
//! tier, `fcvtl`/`fcvtn` on NEON. Their rounding is the round-to-nearest-even immediate on
//! x86 and the default FPCR mode on NEON, whose instructions take none. bf16 is integer
//! arithmetic on every tier: AVX-512 BF16's `vcvtneps2bf16` flushes subnormals.
//!
//! The vector tiers run one step of `LANES` values over whole chunks and the same step on a
//! zero-padded copy of the tail (`generic.rs`), so tails need no second code path.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod generic;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;

use crate::isa::Isa;
use crate::simd::Tier;

/// One tier's conversion kernels. Each takes `src.len() == dst.len()` (it panics
/// otherwise) and writes `dst[i]` from `src[i]`; u16 values are the 16-bit patterns.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub(crate) struct ConvertKernels {
    /// f16 → f32.
    pub(crate) widen_f16: fn(src: &[u16], dst: &mut [f32]),
    /// bf16 → f32.
    pub(crate) widen_bf16: fn(src: &[u16], dst: &mut [f32]),
    /// f32 → f16.
    pub(crate) narrow_f16: fn(src: &[f32], dst: &mut [u16]),
    /// f32 → bf16.
    pub(crate) narrow_bf16: fn(src: &[f32], dst: &mut [u16]),
}

const PORTABLE: ConvertKernels = ConvertKernels {
    widen_f16: portable::widen_f16_portable,
    widen_bf16: portable::widen_bf16_portable,
    narrow_f16: portable::narrow_f16_portable,
    narrow_bf16: portable::narrow_bf16_portable,
};

/// The AVX2 tier on a CPU with F16C.
#[cfg(target_arch = "x86_64")]
const AVX2_F16C: ConvertKernels = ConvertKernels {
    widen_f16: avx2::widen_f16_avx2_x8,
    widen_bf16: avx2::widen_bf16_avx2_x8,
    narrow_f16: avx2::narrow_f16_avx2_x8,
    narrow_bf16: avx2::narrow_bf16_avx2_x8,
};

/// The AVX2 tier without F16C: the portable f16 kernels give the same bits.
#[cfg(target_arch = "x86_64")]
const AVX2_NO_F16C: ConvertKernels = ConvertKernels {
    widen_f16: portable::widen_f16_portable,
    widen_bf16: avx2::widen_bf16_avx2_x8,
    narrow_f16: portable::narrow_f16_portable,
    narrow_bf16: avx2::narrow_bf16_avx2_x8,
};

#[cfg(target_arch = "x86_64")]
const AVX512: ConvertKernels = ConvertKernels {
    widen_f16: avx512::widen_f16_avx512_x16,
    widen_bf16: avx512::widen_bf16_avx512_x16,
    narrow_f16: avx512::narrow_f16_avx512_x16,
    narrow_bf16: avx512::narrow_bf16_avx512_x16,
};

#[cfg(target_arch = "aarch64")]
const NEON: ConvertKernels = ConvertKernels {
    widen_f16: neon::widen_f16_neon_x8,
    widen_bf16: neon::widen_bf16_neon_x8,
    narrow_f16: neon::narrow_f16_neon_x8,
    narrow_bf16: neon::narrow_bf16_neon_x8,
};

/// The kernels of a tier. A [`Tier`] exists only for a tier the CPU supports, so no entry of
/// the table runs where its instructions are missing; F16C, which the AVX2 tier does not
/// imply, is checked here.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub(crate) fn kernels(tier: Tier) -> &'static ConvertKernels {
    match tier.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if std::arch::is_x86_feature_detected!("f16c") => &AVX2_F16C,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &AVX2_NO_F16C,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &AVX512,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => &NEON,
        _ => &PORTABLE,
    }
}

impl ConvertKernels {
    /// `dst = row` as f32: a copy for f32 rows, else the tier's widening.
    #[inline(always)]
    pub(crate) fn load(&self, row: crate::view::RowRef<'_>, dst: &mut [f32]) {
        use crate::view::RowRef;
        match row {
            RowRef::F32(r) => dst.copy_from_slice(r),
            RowRef::F16(r) => (self.widen_f16)(r, dst),
            RowRef::Bf16(r) => (self.widen_bf16)(r, dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::portable::{bf16_from_f32_bits, f16_from_f32_bits, f16_to_f32_bits};

    /// Hand-checked values of the portable bit functions, the fallback of every tier.
    #[test]
    fn portable_f16_known_values() {
        let widen = [
            (0x0000, 0x0000_0000), // +0
            (0x8000, 0x8000_0000), // −0
            (0x0001, 0x3380_0000), // 2^-24, the least subnormal
            (0x03ff, 0x387f_c000), // the greatest subnormal
            (0x0400, 0x3880_0000), // 2^-14, the least normal
            (0x3c00, 0x3f80_0000), // 1
            (0xc000, 0xc000_0000), // −2
            (0x7bff, 0x477f_e000), // 65504
            (0x7c00, 0x7f80_0000), // +∞
            (0xfc00, 0xff80_0000), // −∞
            (0x7c01, 0x7fc0_2000), // signalling NaN, quieted, payload kept
            (0xfe00, 0xffc0_0000), // quiet NaN
        ];
        for (h, f) in widen {
            assert_eq!(f16_to_f32_bits(h), f, "widen {h:#06x}");
        }
        let narrow = [
            (0x3f80_0000, 0x3c00), // 1
            (0x477f_e000, 0x7bff), // 65504
            (0x477f_efff, 0x7bff), // just below 65520
            (0x477f_f000, 0x7c00), // 65520: the tie goes to ∞ (even)
            (0x3380_0000, 0x0001), // 2^-24
            (0x3300_0000, 0x0000), // 2^-25: the tie goes to 0 (even)
            (0x3300_0001, 0x0001), // just above 2^-25
            (0x33c0_0000, 0x0002), // 1.5·2^-24: the tie goes to 2 (even)
            (0x387f_f000, 0x0400), // rounds up from the subnormals to 2^-14
            (0x0000_0001, 0x0000), // the least f32 subnormal
            (0x8000_0001, 0x8000), // its negative, to −0
            (0x7f80_0000, 0x7c00), // +∞
            (0x7f80_0001, 0x7e00), // signalling NaN with only low payload bits
            (0xffc0_2000, 0xfe01), // quiet NaN, payload kept
        ];
        for (f, h) in narrow {
            assert_eq!(f16_from_f32_bits(f), h, "narrow {f:#010x}");
        }
    }

    #[test]
    fn portable_bf16_known_values() {
        let narrow = [
            (0x3f80_0000, 0x3f80),
            (0x3f80_8000, 0x3f80), // tie to even (down)
            (0x3f81_8000, 0x3f82), // tie to even (up)
            (0x3f80_8001, 0x3f81),
            (0x7f7f_ffff, 0x7f80), // overflow to ∞
            (0x0000_8001, 0x0001), // subnormal kept, not flushed
            (0x7f80_0001, 0x7fc0), // signalling NaN quieted, not ∞
            (0xff80_0001, 0xffc0),
            (0x7fff_ffff, 0x7fff), // NaN that would carry into the sign
        ];
        for (f, b) in narrow {
            assert_eq!(bf16_from_f32_bits(f), b, "narrow {f:#010x}");
        }
    }
}
