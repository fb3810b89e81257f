//! AVX2 + FMA projection kernels: 8 lanes along d, 4 rounds per pass over a row.
super::generic::alsh_tier!(crate::simd::Avx2, "avx2,fma", sq_norms_avx2, project_avx2_r4);
