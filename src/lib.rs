//! # smyrf
//!
//! Hand-vectorised CPU kernels for SMYRF attention (Daras et al., "SMYRF: Efficient Attention
//! using Asymmetric Clustering", NeurIPS 2020, <https://arxiv.org/abs/2010.05315>): queries
//! and keys are lifted with the asymmetric XBOX+ transform, hashed onto random Gaussian
//! directions, sorted into balanced clusters, and attention runs exactly inside each cluster;
//! hash rounds merge by log-sum-exp. Cost O(N log N + N·c) instead of O(N²), no retraining.
//!
//! ```
//! use smyrf::{CallOptions, Config, Plan, TensorView, TensorViewMut};
//! let (b, h, n, d) = (1, 2, 256, 32);
//! let data: Vec<f32> = (0..b * h * n * d).map(|i| ((i * 7919) % 101) as f32 / 101.0 - 0.5).collect();
//! let mut out = vec![0.0; b * h * n * d];
//! let plan = Plan::new(Config::default().n_hashes(2).q_cluster_size(32), d)?;
//! let q = TensorView::bhnd(&data, b, h, n, d)?; // [B, H, N, D]; `bnhd` for [B, N, H, D]
//! let (k, v) = (q, q);
//! plan.attention(&q, &k, &v, &mut TensorViewMut::bhnd(&mut out, b, h, n, d)?)?;
//!
//! // A key mask and the per-query log-sum-exp, and exact attention for comparison.
//! let mask = vec![1u8; b * n];
//! let mut lse = vec![0.0; b * h * n];
//! let options = CallOptions::new().key_mask(&mask).lse(&mut lse);
//! plan.attention_with(&q, &k, &v, &mut TensorViewMut::bhnd(&mut out, b, h, n, d)?, options)?;
//! plan.dense_attention(&q, &k, &v, &mut TensorViewMut::bhnd(&mut out, b, h, n, d)?)?;
//!
//! // An engine that owns its memory: the call's scratch comes from a workspace it sized
//! // first, and the call allocates nothing.
//! let mut o = TensorViewMut::bhnd(&mut out, b, h, n, d)?;
//! let mut workspace = vec![0u8; plan.workspace_size(&q, &k, &v, &o, &CallOptions::new())?];
//! plan.attention_with(&q, &k, &v, &mut o, CallOptions::new().workspace(&mut workspace))?;
//! # Ok::<(), smyrf::Error>(())
//! ```
//!
//! The contract is `docs/design.md`: shapes Q `[B, Hq, Nq, d]`, K `[B, Hkv, Nk, d]`,
//! V `[B, Hkv, Nk, dv]`, out `[B, Hq, Nq, dv]`, any strides with a contiguous last axis,
//! grouped-query heads, an optional key padding mask `[B, Nk]` (§1); bad input is an
//! [`Error`] and writes nothing (§2). The kernels are chosen at run time for the CPU (§4).

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

// Leaves: no imports from the crate beyond each other.
mod call;
mod config;
mod error;
mod isa;
mod view;
// Vector types and tier tokens, then what the stages run on.
mod runtime;
mod simd;
// Conversions between f32 and the 16-bit element types, which the stages load through.
mod convert;
// The stages, each a kernel table over its tiers.
mod alsh;
mod attention;
mod sort;
// The pipeline, dense attention, and the C ABI over the public API.
mod dense;
mod ffi;
#[cfg(feature = "internals")]
pub mod internals;
mod plan;

pub use call::{CallOptions, ParallelFor};
pub use config::{
    Config, SinkSelection, DEFAULT_BLOCK_SIZE, DEFAULT_BLOCK_TILE, DEFAULT_SAMPLE_GROUP,
    MAX_HASHES, MAX_HEAD_DIM, MAX_THREADS,
};
pub use error::{Error, Result};
pub use isa::{detected_isa, Isa};
pub use plan::{gaussian_projections, KvIndex, Plan};
pub use view::{DType, Element, Shape, TensorView, TensorViewMut};
