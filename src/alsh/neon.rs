//! NEON projection kernel (norms and hashes in one pass): 4 lanes along d, 4 rounds per pass over a row.
super::generic::alsh_tier!(crate::simd::Neon, "neon", project_neon_r4);
