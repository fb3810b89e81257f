//! NEON attention kernels: 8 × 8 register tile (16 accumulators of 32 q registers).
super::generic::attention_tier!(
    crate::simd::Neon,
    [target_feature(enable = "neon")],
    qk: (8, 2, qk_neon_8x8, short: 8),
    pv: (8, 2, pv_neon_8x8, narrow: (8, 2))
);
