//! NEON projection kernel: blocks of 4 rows (one per lane), one round per pass over the
//! block's tile, a 4 → 1 transposing reduction per round.
super::generic::alsh_tier!(
    crate::simd::Neon,
    [target_feature(enable = "neon")],
    project_neon_4x1
);
