//! Portable projection kernel: the generic body on `wide::f32x8`, blocks of 8 rows (one per
//! lane), an 8 → 1 transposing reduction per round.
super::generic::alsh_tier!(crate::simd::Portable, [], project_portable_8x1);
