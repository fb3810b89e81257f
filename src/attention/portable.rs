//! Portable attention kernels: the generic bodies on `wide::f32x8` (SSE2 on x86-64, NEON on
//! aarch64), 4 × 16 register tiles (8 accumulators: 16 SSE registers).
super::generic::attention_tier!(
    crate::simd::Portable,
    [],
    qk: (4, 2, qk_portable_4x16, short: 4),
    pv: (4, 2, pv_portable_4x16, narrow: (4, 2))
);
