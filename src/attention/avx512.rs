//! AVX-512F attention kernels: Q·Kᵀ in 8 × 32 register tiles (16 accumulators of 32 zmm),
//! P·V in 6 × 64 tiles (24 accumulators; a 64-wide tile covers dv = 64 whole, so each P
//! element is broadcast once and V streams from L1).
super::generic::attention_tier!(
    crate::simd::Avx512,
    "avx512f,avx2,fma",
    qk: (8, 2, qk_avx512_8x32),
    pv: (6, 4, pv_avx512_6x64)
);
