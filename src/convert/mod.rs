//! Conversions between f32 and the 16-bit element types (placeholder: portable only).

use crate::simd::Tier;
use crate::view::RowRef;

/// One tier's conversion kernels; `src.len() == dst.len()`.
#[derive(Clone, Copy)]
pub(crate) struct ConvertKernels {
    pub(crate) widen_f16: fn(src: &[u16], dst: &mut [f32]),
    pub(crate) widen_bf16: fn(src: &[u16], dst: &mut [f32]),
    pub(crate) narrow_f16: fn(src: &[f32], dst: &mut [u16]),
    pub(crate) narrow_bf16: fn(src: &[f32], dst: &mut [u16]),
}

fn widen_f16(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = half::f16::from_bits(s).to_f32();
    }
}
fn widen_bf16(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f32::from_bits(u32::from(s) << 16);
    }
}
fn narrow_f16(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len());
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = half::f16::from_f32(s).to_bits();
    }
}
fn narrow_bf16(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len());
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = half::bf16::from_f32(s).to_bits();
    }
}

const PORTABLE: ConvertKernels = ConvertKernels {
    widen_f16,
    widen_bf16,
    narrow_f16,
    narrow_bf16,
};

pub(crate) fn kernels(_tier: Tier) -> &'static ConvertKernels {
    &PORTABLE
}

impl ConvertKernels {
    /// `dst = row` as f32 (a copy for f32 rows).
    #[inline(always)]
    pub(crate) fn load(&self, row: RowRef<'_>, dst: &mut [f32]) {
        match row {
            RowRef::F32(r) => dst.copy_from_slice(r),
            RowRef::F16(r) => (self.widen_f16)(r, dst),
            RowRef::Bf16(r) => (self.widen_bf16)(r, dst),
        }
    }
}
