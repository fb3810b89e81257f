//! NEON projection kernels: 4 lanes along d, 4 rounds per pass over a row.
super::generic::alsh_tier!(crate::simd::Neon, "neon", sq_norms_neon, project_neon_r4);
