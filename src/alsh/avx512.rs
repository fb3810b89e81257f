//! AVX-512F projection kernel (norms and hashes in one pass): 16 lanes along d, 4 rounds per pass over a row.
super::generic::alsh_tier!(crate::simd::Avx512, "avx512f,avx2,fma", project_avx512_r4);
