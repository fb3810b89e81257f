//! AVX2 + FMA projection kernel (norms and hashes in one pass): 8 lanes along d, 4 rounds per pass over a row.
super::generic::alsh_tier!(crate::simd::Avx2, "avx2,fma", project_avx2_r4);
