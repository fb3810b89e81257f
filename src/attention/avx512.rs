//! AVX-512F attention kernels: 8 × 32 register tile (16 accumulators of 32 zmm).
super::generic::attention_tier!(
    crate::simd::Avx512,
    "avx512f,avx2,fma",
    8,
    2,
    qk_avx512_8x32,
    pv_avx512_8x32
);
