//! AVX2 + FMA attention kernels: 6 × 16 register tile (12 accumulators of 16 ymm).
super::generic::attention_tier!(
    crate::simd::Avx2,
    [target_feature(enable = "avx2,fma")],
    qk: (6, 2, qk_avx2_6x16, short: 6),
    pv: (6, 2, pv_avx2_6x16, narrow: (6, 2))
);
