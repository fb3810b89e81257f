//! AVX-512F projection kernels: 16 lanes along d, 4 rounds per pass over a row.
super::generic::alsh_tier!(crate::simd::Avx512, "avx512f,avx2,fma", sq_norms_avx512, project_avx512_r4);
