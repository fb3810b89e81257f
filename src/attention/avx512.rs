//! AVX-512F attention kernels: Q·Kᵀ in 12 × 32 register tiles (24 accumulators; per step
//! 2 loads of Kᵀ and 12 broadcasts feed 24 FMAs), P·V in 6 × 64 tiles (24 accumulators; a
//! 64-wide tile covers dv = 64 whole, so each P element is broadcast once and V streams from
//! L1). Measured against 8 × 32 for both (qk 73% → 83% of peak, pv 57% → 86–95%, c = 128,
//! d = dv = 64).
super::generic::attention_tier!(
    crate::simd::Avx512,
    "avx512f,avx2,fma",
    qk: (12, 2, qk_avx512_12x32),
    pv: (6, 4, pv_avx512_6x64)
);
