//! AVX2 + FMA projection kernel: blocks of 8 rows (one per lane), one round per pass over the
//! block's tile, an 8 → 1 transposing reduction per round.
super::generic::alsh_tier!(
    crate::simd::Avx2,
    [target_feature(enable = "avx2,fma")],
    project_avx2_8x1
);
