//! AVX-512F projection kernel: blocks of 16 rows (one per lane), one round per pass over the
//! block's tile, a 16 → 1 transposing reduction per round.
super::generic::alsh_tier!(
    crate::simd::Avx512,
    [target_feature(enable = "avx512f,avx2,fma")],
    project_avx512_16x1
);
