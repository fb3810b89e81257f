//! The C ABI (design §3): an opaque plan handle, plain-data config and tensor structs, a
//! `#[repr(u32)]` status enum, and `extern "C"` entry points over the Rust API. `build.rs`
//! turns this file into `include/smyrf.h` with cbindgen (settings in `cbindgen.toml`), so the
//! doc comments here are the header's documentation.
//!
//! Rules every entry point follows (design §2):
//! - a NULL pointer is refused with `SMYRF_ERROR_NULL_POINTER`, never dereferenced;
//! - enum values that arrive from C are read as plain integers: an out-of-range discriminant
//!   in a Rust enum would be undefined behaviour;
//! - on any error nothing is written through an output pointer, and
//!   `smyrf_last_error_message` says what was wrong;
//! - a panic never unwinds into C: it is caught and reported as `SMYRF_ERROR_PANIC`, the one
//!   status after which the outputs may hold partial results.

// The C names are the public contract; they are spelled the C way on the Rust side too, so
// the header is generated without renaming rules.
#![allow(non_camel_case_types, clippy::upper_case_acronyms)]

use crate::call::{CallOptions, ParallelFor};
use crate::config::{Config, SinkSelection};
use crate::error::Error;
use crate::isa::{detected_isa, Isa};
use crate::plan::{KvIndex, Plan};
use crate::view::{AnyView, DType, Element, OutRows, Shape, TensorView, TensorViewMut};
use half::{bf16, f16};
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::mem::{offset_of, size_of, MaybeUninit};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

/// An attention plan: the configuration, the head dimension, the projection matrix, the
/// chosen kernels and the threads. Created by `smyrf_plan_create` or
/// `smyrf_plan_create_with_projections`, released by `smyrf_plan_destroy`. A plan is
/// immutable once built: any number of threads may call `smyrf_attention` with the same
/// plan at the same time.
pub struct smyrf_plan {
    plan: Plan,
}

/// Result of every fallible call (in C a `uint32_t` holding one of these values): compare
/// with `SMYRF_OK`, and read `smyrf_last_error_message()` for the details of a failure.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum smyrf_status {
    /// Success.
    SMYRF_OK = 0,
    /// A required pointer argument (or a tensor's `data`) was NULL.
    SMYRF_ERROR_NULL_POINTER = 1,
    /// A size, stride, length, config field or buffer placement was invalid or inconsistent.
    SMYRF_ERROR_INVALID_ARGUMENT = 2,
    /// The requested instruction-set tier is not supported by this CPU, or the environment
    /// variable `SMYRF_ISA` names no tier.
    SMYRF_ERROR_UNSUPPORTED_ISA = 3,
    /// Memory or threads for the plan could not be obtained.
    SMYRF_ERROR_OUT_OF_MEMORY = 4,
    /// An internal error (a Rust panic) was caught at the boundary; the outputs may hold
    /// partial results. Please report it.
    SMYRF_ERROR_PANIC = 5,
}

/// Instruction-set tier of the kernels, for `smyrf_config.isa`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Constructed by C callers only: Rust reads the field as a plain integer.
#[allow(dead_code)]
pub enum smyrf_isa {
    /// The environment variable `SMYRF_ISA` (`portable`, `avx2`, `avx512` or `neon`) when it
    /// is set, else the best tier the CPU supports.
    SMYRF_ISA_AUTO = 0,
    /// Portable SIMD (SSE2 on x86-64, NEON on aarch64, scalar elsewhere); always available.
    SMYRF_ISA_PORTABLE = 1,
    /// x86-64 AVX2 + FMA.
    SMYRF_ISA_AVX2 = 2,
    /// x86-64 AVX-512F.
    SMYRF_ISA_AVX512 = 3,
    /// aarch64 Advanced SIMD.
    SMYRF_ISA_NEON = 4,
}

/// How the sink keys of design §8 are chosen, for `smyrf_config.sink_selection`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum smyrf_sink_selection {
    /// The first `n_sinks` valid positions (the classic attention sinks: CLS, BOS).
    SMYRF_SINKS_FIRST = 0,
    /// The first valid position plus the valid keys with the largest inner product with the
    /// mean query of the (batch, key/value head); better than `FIRST` from about 8 sinks up.
    SMYRF_SINKS_MEAN_QUERY = 1,
}

/// Element type of a tensor, for `smyrf_tensor.dtype`. Arithmetic is f32 whatever the
/// types; 16-bit outputs are rounded to nearest even.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Constructed by C callers only: Rust reads the field as a plain integer.
#[allow(dead_code)]
pub enum smyrf_dtype {
    /// IEEE binary32 `float` (the default).
    SMYRF_DTYPE_F32 = 0,
    /// IEEE binary16 (`_Float16`, `__fp16`, ggml's `ggml_fp16_t`), as `uint16_t` bits.
    SMYRF_DTYPE_F16 = 1,
    /// bfloat16 (the top half of a binary32), as `uint16_t` bits.
    SMYRF_DTYPE_BF16 = 2,
}

/// How SMYRF attention is computed. Always start from `smyrf_config_default()` (or
/// `smyrf_config_hybrid()`, `smyrf_config_causal()`) and change the fields you need: the initialiser sets
/// `struct_size`, and the library reads only the fields that size covers, taking defaults
/// for any appended later.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct smyrf_config {
    /// `sizeof(smyrf_config)` as the caller was compiled; set by the initialisers: the size
    /// of a released layout (`SMYRF_CONFIG_MIN_SIZE` is the first), or of a newer one of at
    /// most 4096 bytes whose bytes past this library's layout are zero.
    pub struct_size: usize,
    /// Hash rounds R, at least 1 (default 2).
    pub n_hashes: u32,
    /// Queries per cluster, at least 1 (default 64).
    pub q_cluster_size: u32,
    /// Keys per cluster; 0 (default) means round(q_cluster_size * Nk / Nq), at least 1.
    pub k_cluster_size: u32,
    /// Logit scale, finite and positive; 0 (default) means 1 / sqrt(head_dim).
    pub scale: f32,
    /// Seed of the Gaussian projection matrix and of the design §8 residual samples
    /// (default 0).
    pub seed: u64,
    /// 0 (default): the library's thread pool; 1: run on the caller's thread (for engines
    /// that parallelise over heads themselves); n > 1: a pool of n threads owned by the plan.
    pub num_threads: u32,
    /// A `smyrf_isa` value; `SMYRF_ISA_AUTO` (default) honours the environment variable
    /// `SMYRF_ISA`, else takes the best tier. A tier the CPU lacks is refused.
    pub isa: u32,
    /// Design §8 sink keys per (batch, key/value head) that every query attends to;
    /// 0 (default) turns the block off.
    pub n_sinks: u32,
    /// A `smyrf_sink_selection` value (default `SMYRF_SINKS_FIRST`).
    pub sink_selection: u32,
    /// Design §8 local window: query i also attends to the valid keys j with
    /// |j - i| <= window / 2; 0 (default) turns it off. Self-attention only: a call with
    /// as many queries as keys; other calls are refused.
    pub window: u32,
    /// Design §8 residual samples per query, drawn from the keys outside the sinks and the
    /// query's round-0 cluster and weighted to estimate their softmax mass without bias;
    /// 0 (default) turns the block off.
    pub n_samples: u32,
    /// Consecutive queries of a cluster that share one draw of samples; 0 (default) means
    /// 64.
    pub sample_group: u32,
    /// 0 (default): with bf16 queries and keys, Q·Kᵀ uses AVX-512 BF16's `vdpbf16ps` where
    /// the CPU has it and it outruns f32 FMAs, timed once per process (pairwise sums,
    /// subnormals flushed; within 1e-5 of exact). 1: widen to f32 like every other type,
    /// the same bits as the f32 call on the widened values.
    pub bf16_exact: u32,
    /// Design §8 selected keys per query: the valid keys outside the sinks and the query's
    /// window with the largest approximate logit (scored on `select_dims` components of the
    /// query, those largest in magnitude), attended to exactly; 0 (default) turns the block
    /// off.
    pub n_selected: u32,
    /// Query components the selection scores keys on; 0 (default) means
    /// ceil(head_dim / 4), more than head_dim means all of them.
    pub select_dims: u32,
    /// Design §8 key blocks per query, causal calls only: keys are grouped in blocks of
    /// `block_size` consecutive positions with the element-wise minimum and maximum of
    /// their valid keys; a query attends exactly to the keys of the `n_blocks` blocks with
    /// the largest upper bound sum_t max(q_t * min_t, q_t * max_t) of its logits among those
    /// holding visible keys outside its sinks and window. 0 (default) turns the block off;
    /// a call that is not causal is refused when it is on.
    pub n_blocks: u32,
    /// Consecutive positions per key block; 0 (default) means 16.
    pub block_size: u32,
    /// Consecutive queries of a causal call with design §8 blocks that share one attention
    /// call: one choice of key blocks (ranked by the bound of the sum of their queries), one
    /// draw of samples, and one window span from the first query's window start to the last
    /// query. 0 (default) means 16; 1 gives every query its own.
    pub block_tile: u32,
    /// Must be 0: it keeps the struct free of padding, and a later release may give it a
    /// meaning (a nonzero value is refused, so no option is silently ignored).
    pub reserved: u32,
}

/// A read-only view of a `[batch, heads, seq_len, dim]` tensor inside a caller buffer.
/// Strides count elements and the last axis is contiguous, so both `[B, H, N, D]`
/// (`batch_stride = H*N*D, head_stride = N*D, seq_stride = D`) and `[B, N, H, D]`
/// (`batch_stride = N*H*D, head_stride = D, seq_stride = H*D`) are views. The buffer must
/// hold at least `(batch-1)*batch_stride + (heads-1)*head_stride + (seq_len-1)*seq_stride +
/// dim` elements, be aligned to its element size, and stay unchanged for the duration of
/// the call. Build one with `smyrf_tensor_bhnd` or `smyrf_tensor_bnhd` (which set
/// `struct_size`), then change the strides for other layouts.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct smyrf_tensor {
    /// `sizeof(smyrf_tensor)` as the caller was compiled; set by the initialisers: at
    /// least `SMYRF_TENSOR_MIN_SIZE` (every field), at most 4096, zeros past this library's
    /// layout.
    pub struct_size: usize,
    /// First element (batch 0, head 0, position 0, component 0).
    pub data: *const c_void,
    /// A `smyrf_dtype` value.
    pub dtype: u32,
    /// Batch size B, at least 1.
    pub batch: usize,
    /// Heads H, at least 1.
    pub heads: usize,
    /// Sequence length N, at least 1.
    pub seq_len: usize,
    /// Head dimension (d for queries and keys, dv for values), at least 1.
    pub dim: usize,
    /// Elements between consecutive batch elements.
    pub batch_stride: usize,
    /// Elements between consecutive heads.
    pub head_stride: usize,
    /// Elements between consecutive positions.
    pub seq_stride: usize,
}

/// Where a call writes its output, laid out like `smyrf_tensor` (the descriptor itself is
/// only read); its rows must not overlap each other, and the buffer must not overlap any
/// input of the call. Build one with `smyrf_tensor_mut_bhnd` or `smyrf_tensor_mut_bnhd`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct smyrf_tensor_mut {
    /// `sizeof(smyrf_tensor_mut)` as the caller was compiled; set by the initialisers, as
    /// for `smyrf_tensor`.
    pub struct_size: usize,
    /// First element (batch 0, head 0, position 0, component 0).
    pub data: *mut c_void,
    /// A `smyrf_dtype` value.
    pub dtype: u32,
    /// Batch size B, at least 1.
    pub batch: usize,
    /// Heads H, at least 1.
    pub heads: usize,
    /// Sequence length N, at least 1.
    pub seq_len: usize,
    /// Head dimension dv, at least 1.
    pub dim: usize,
    /// Elements between consecutive batch elements.
    pub batch_stride: usize,
    /// Elements between consecutive heads.
    pub head_stride: usize,
    /// Elements between consecutive positions.
    pub seq_stride: usize,
}

/// A task of a `smyrf_parallel_for_fn`: the engine calls it once for every index in
/// `0..n_tasks`, passing back `task_context`.
pub type smyrf_task_fn = Option<unsafe extern "C" fn(task_context: *mut c_void, index: usize)>;

/// An engine's parallel-for (the pthreadpool / ONNX Runtime `TrySimpleParallelFor` shape):
/// runs `task(task_context, i)` for every i in `0..n_tasks` on the engine's workers, at most
/// `smyrf_call_args.parallel_workers` at once, and returns when all have finished. The
/// tasks never call it again themselves and never unwind.
pub type smyrf_parallel_for_fn = Option<
    unsafe extern "C" fn(
        engine_context: *mut c_void,
        n_tasks: usize,
        task: smyrf_task_fn,
        task_context: *mut c_void,
    ),
>;

/// The optional parts of an attention call. Start from `smyrf_call_args_default()` (which
/// sets `struct_size` and leaves every option off) and set what you need; a NULL
/// `smyrf_call_args*` means all defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct smyrf_call_args {
    /// `sizeof(smyrf_call_args)` as the caller was compiled; set by the initialiser: the
    /// size of a released layout (`SMYRF_CALL_ARGS_MIN_SIZE` is the first), or of a newer
    /// one of at most 4096 bytes whose bytes past this library's layout are zero.
    pub struct_size: usize,
    /// NULL, or `B * Nk` bytes (`[batch][k seq_len]`): nonzero = the key takes part.
    pub key_mask: *const u8,
    /// NULL, or `B` lengths: batch element b attends to its keys `0..key_lengths[b]` only
    /// (ONNX Runtime's `seqlens_k` form); each in `0..=Nk`. With a mask too, a key must pass
    /// both.
    pub key_lengths: *const i32,
    /// NULL, or `Hq` learned sink logits, one per query head: each joins every query's
    /// softmax denominator and carries no value,
    /// `out_i = sum_j exp(s_ij) v_j / (exp(sink_h) + sum_j exp(s_ij))`. SMYRF merges it once,
    /// after the hash rounds, as a logit seen in every round, so a call with one cluster
    /// (decode, say) is exact attention with the sink. Finite or -INFINITY (no sink). Not
    /// the design §8 sink keys (`smyrf_config.n_sinks`).
    pub head_sinks: *const f32,
    /// NULL, or `B * Hq * Nq` floats (`[batch][q heads][q seq_len]`) that receive each
    /// query's log-sum-exp (-INFINITY for a batch element without valid keys and no sink).
    pub lse_out: *mut f32,
    /// NULL (the plan's threads), or the engine's parallel-for: the call then runs its
    /// parallel loops through it and starts no thread (a loop of one task runs on the
    /// calling thread); the results are the same bits either way.
    pub parallel_for: smyrf_parallel_for_fn,
    /// Passed back to `parallel_for` as `engine_context`.
    pub parallel_context: *mut c_void,
    /// How many tasks `parallel_for` may run at once; at least 1 when `parallel_for` is set.
    pub parallel_workers: u32,
    /// NULL (the plan keeps the call's scratch), or `workspace_size` bytes of the caller's
    /// memory, any alignment, uninitialised or not: the call carves all its scratch from
    /// there and allocates nothing. Query the size with `smyrf_plan_workspace_size` (or
    /// `smyrf_dense_workspace_size`) for the same shapes, element types, plan and
    /// `parallel_workers`; a smaller workspace is refused before anything is written. It
    /// must not overlap any tensor or option buffer of the call, and its contents are
    /// unspecified afterwards.
    pub workspace: *mut c_void,
    /// Bytes at `workspace`; 0 when it is NULL.
    pub workspace_size: usize,
    /// A `smyrf_causal` value (default `SMYRF_CAUSAL_NONE`): causal attention, where query
    /// i sits at position `offset + i`, key j at j, and a query sees only the keys at or
    /// before its position.
    pub causal: u32,
    /// Position of query 0 with `SMYRF_CAUSAL_AT_OFFSET`; must be 0 otherwise.
    pub query_offset: u64,
}

/// Causal attention, for `smyrf_call_args.causal`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum smyrf_causal {
    /// Every query sees every valid key.
    SMYRF_CAUSAL_NONE = 0,
    /// Causal, query 0 at position Nk − Nq: the last query sits at the last key (chunked
    /// prefill, decode). Refused when Nq > Nk.
    SMYRF_CAUSAL_BOTTOM_RIGHT = 1,
    /// Causal, query 0 at position `query_offset`.
    SMYRF_CAUSAL_AT_OFFSET = 2,
}

/// Smallest `struct_size` of a `smyrf_config`: the fields up to and including `isa`, its
/// first released layout. The design §8 fields after it take their defaults (off) when a
/// caller's size stops before them.
pub const SMYRF_CONFIG_MIN_SIZE: usize = 40;
/// Smallest `struct_size` of a `smyrf_tensor` or `smyrf_tensor_mut`: every field.
pub const SMYRF_TENSOR_MIN_SIZE: usize = 80;
/// Smallest `struct_size` of a `smyrf_call_args`: the fields up to and including `lse_out`.
pub const SMYRF_CALL_ARGS_MIN_SIZE: usize = 40;

/// Writes the default configuration into the first `struct_size` bytes of `*config` (2 hash
/// rounds, 64 queries per cluster, derived key cluster size, scale 1/sqrt(head_dim),
/// seed 0, the library's thread pool, automatic tier, design §8 blocks off), including
/// `struct_size` itself; bytes past this library's layout are zeroed. The header's
/// `smyrf_config_default()` calls it with the caller's `sizeof(smyrf_config)`, so a
/// program built against an older header gets a struct of its own size.
///
/// # Safety
/// `config` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn smyrf_config_init(
    config: *mut smyrf_config,
    struct_size: usize,
) -> smyrf_status {
    entry("smyrf_config_init", || {
        // SAFETY: forwarded.
        unsafe { write_config(config, struct_size, smyrf_config_default()) }
    })
}

/// Writes the design §8 hybrid preset for a key budget of `key_budget` keys per query (each
/// key costs d + dv multiply-adds) into `*config`, as `smyrf_config_init` does:
/// `key_budget / 2` selected keys per query scored on a quarter of the head dimension,
/// `key_budget - key_budget / 2` residual samples, one hash round with clusters of one
/// query, no sinks and no window; every other field as in `smyrf_config_default()`. A
/// struct that ends before `n_selected` (a 0.2.0 layout) gets the preset without its
/// selected keys. The header's `smyrf_config_hybrid()` wraps it.
///
/// # Safety
/// As for `smyrf_config_init`.
#[no_mangle]
pub unsafe extern "C" fn smyrf_config_hybrid_init(
    config: *mut smyrf_config,
    struct_size: usize,
    key_budget: u32,
) -> smyrf_status {
    entry("smyrf_config_hybrid_init", || {
        // SAFETY: forwarded.
        unsafe { write_config(config, struct_size, smyrf_config_hybrid(key_budget)) }
    })
}

/// Writes the causal preset for a key budget of `key_budget` keys per query into `*config`,
/// as `smyrf_config_init` does (see `Config::causal` in the Rust documentation and
/// docs/design.md §8): sinks, a window of the most recent keys and key blocks chosen per
/// query, one hash round with clusters of one query. Its blocks serve causal calls only. A
/// struct that ends before `n_blocks` (a 0.2.0 or 0.2.1 layout) is refused: it cannot hold
/// the preset. The header's `smyrf_config_causal()` wraps it.
///
/// # Safety
/// As for `smyrf_config_init`.
#[no_mangle]
pub unsafe extern "C" fn smyrf_config_causal_init(
    config: *mut smyrf_config,
    struct_size: usize,
    key_budget: u32,
) -> smyrf_status {
    entry("smyrf_config_causal_init", || {
        if !config.is_null()
            && struct_size < size_of::<smyrf_config>()
            && struct_size >= SMYRF_CONFIG_MIN_SIZE
        {
            return Err(Failure::invalid(format!(
                "config->struct_size = {struct_size}: the causal preset needs a layout with n_blocks and block_size ({} bytes)",
                size_of::<smyrf_config>()
            )));
        }
        // SAFETY: forwarded.
        unsafe { write_config(config, struct_size, smyrf_config_causal(key_budget)) }
    })
}

/// Writes call options with every one off (no mask, no key lengths, no head sinks, no lse
/// output, the plan's threads, no workspace) into `*args`, as `smyrf_config_init` does.
/// The header's `smyrf_call_args_default()` wraps it.
///
/// # Safety
/// `args` must be NULL or point to `struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn smyrf_call_args_init(
    args: *mut smyrf_call_args,
    struct_size: usize,
) -> smyrf_status {
    entry("smyrf_call_args_init", || {
        // SAFETY: forwarded.
        unsafe {
            write_versioned(
                "args",
                args,
                struct_size,
                SMYRF_CALL_ARGS_MIN_SIZE,
                &CALL_ARGS_ENDS,
                smyrf_call_args_default(),
            )
        }
    })
}

/// # Safety
/// `config` must be NULL or point to `struct_size` writable bytes.
unsafe fn write_config(
    config: *mut smyrf_config,
    struct_size: usize,
    value: smyrf_config,
) -> Result<(), Failure> {
    // SAFETY: forwarded.
    unsafe {
        write_versioned(
            "config",
            config,
            struct_size,
            SMYRF_CONFIG_MIN_SIZE,
            &CONFIG_ENDS,
            value,
        )
    }
}

/// The default configuration, as `smyrf_config_init` writes it (the Rust side's copy).
pub fn smyrf_config_default() -> smyrf_config {
    // Mirrors `Config::default()` field by field (a unit test keeps the two in step); plain
    // literals, so nothing here can panic.
    smyrf_config {
        struct_size: size_of::<smyrf_config>(),
        n_hashes: 2,
        q_cluster_size: 64,
        k_cluster_size: 0,
        scale: 0.0,
        seed: 0,
        num_threads: 0,
        isa: smyrf_isa::SMYRF_ISA_AUTO as u32,
        n_sinks: 0,
        sink_selection: smyrf_sink_selection::SMYRF_SINKS_FIRST as u32,
        window: 0,
        n_samples: 0,
        sample_group: 0,
        bf16_exact: 0,
        n_selected: 0,
        select_dims: 0,
        n_blocks: 0,
        block_size: 0,
        block_tile: 0,
        reserved: 0,
    }
}

/// The hybrid preset, as `smyrf_config_hybrid_init` writes it.
pub fn smyrf_config_hybrid(key_budget: u32) -> smyrf_config {
    // `Config::hybrid` is plain integer arithmetic on a clamped budget, so every field fits
    // in 32 bits and nothing here can panic.
    let config = Config::hybrid(key_budget as usize);
    let narrow = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    smyrf_config {
        n_hashes: narrow(config.n_hashes),
        q_cluster_size: narrow(config.q_cluster_size),
        n_sinks: narrow(config.n_sinks),
        sink_selection: match config.sink_selection {
            SinkSelection::First => smyrf_sink_selection::SMYRF_SINKS_FIRST as u32,
            SinkSelection::MeanQuery => smyrf_sink_selection::SMYRF_SINKS_MEAN_QUERY as u32,
        },
        window: narrow(config.window),
        n_samples: narrow(config.n_samples),
        sample_group: narrow(config.sample_group),
        n_selected: narrow(config.n_selected),
        select_dims: narrow(config.select_dims),
        n_blocks: narrow(config.n_blocks),
        block_size: narrow(config.block_size),
        block_tile: narrow(config.block_tile),
        ..smyrf_config_default()
    }
}

/// The causal preset, as `smyrf_config_causal_init` writes it.
pub fn smyrf_config_causal(key_budget: u32) -> smyrf_config {
    // As for the hybrid preset: integer arithmetic on a clamped budget, no panic.
    let config = Config::causal(key_budget as usize);
    let narrow = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
    smyrf_config {
        n_hashes: narrow(config.n_hashes),
        q_cluster_size: narrow(config.q_cluster_size),
        n_sinks: narrow(config.n_sinks),
        window: narrow(config.window),
        n_samples: narrow(config.n_samples),
        n_blocks: narrow(config.n_blocks),
        block_size: narrow(config.block_size),
        block_tile: narrow(config.block_tile),
        ..smyrf_config_default()
    }
}

/// Builds a plan for queries and keys of head dimension `head_dim`, drawing the projection
/// matrix from `config->seed` (the same seed gives the same matrix on every platform).
/// On success stores the new plan in `*out_plan`; on error leaves `*out_plan` unchanged.
/// Release the plan with `smyrf_plan_destroy`.
///
/// # Safety
/// `config` must be NULL or point to a valid `smyrf_config`; `out_plan` must be NULL or
/// point to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn smyrf_plan_create(
    config: *const smyrf_config,
    head_dim: usize,
    out_plan: *mut *mut smyrf_plan,
) -> smyrf_status {
    entry("smyrf_plan_create", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a valid config.
        let config = unsafe { read_config(config) }?;
        if out_plan.is_null() {
            return Err(Failure::null("out_plan"));
        }
        let plan = Plan::new(config_from_c(&config)?, head_dim)?;
        let handle = Box::into_raw(Box::new(smyrf_plan { plan }));
        // SAFETY: `out_plan` is non-NULL and, by the caller's contract, writable.
        unsafe { out_plan.write(handle) };
        Ok(())
    })
}

/// Builds a plan from a caller-supplied projection matrix A of `len` floats, row-major
/// `[head_dim + 2][n_hashes]` (`projections[t * n_hashes + r] = A[t][r]`); `len` must equal
/// `(head_dim + 2) * config->n_hashes`. The matrix is copied. `config->seed` only seeds the
/// residual samples (design §8).
/// On success stores the new plan in `*out_plan`; on error leaves it unchanged.
///
/// # Safety
/// `config` must be NULL or valid; `projections` must be NULL or point to `len` readable,
/// 4-byte aligned floats; `out_plan` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn smyrf_plan_create_with_projections(
    config: *const smyrf_config,
    head_dim: usize,
    projections: *const f32,
    len: usize,
    out_plan: *mut *mut smyrf_plan,
) -> smyrf_status {
    entry("smyrf_plan_create_with_projections", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a valid config.
        let config = unsafe { read_config(config) }?;
        if projections.is_null() {
            return Err(Failure::null("projections"));
        }
        if out_plan.is_null() {
            return Err(Failure::null("out_plan"));
        }
        let config = config_from_c(&config)?;
        span("projections", projections, len)?;
        // SAFETY: non-NULL, aligned, and `len` readable floats by the caller's contract;
        // `span` checked that the byte range fits the address space and isize. Whether `len`
        // is the right length is checked by `with_projections`, after the config.
        let projections = unsafe { std::slice::from_raw_parts(projections, len) };
        let plan = Plan::with_projections(config, head_dim, projections)?;
        let handle = Box::into_raw(Box::new(smyrf_plan { plan }));
        // SAFETY: `out_plan` is non-NULL and, by the caller's contract, writable.
        unsafe { out_plan.write(handle) };
        Ok(())
    })
}

/// Copies the plan's projection matrix A into `out`, row-major `[head_dim + 2][n_hashes]`;
/// `len` must equal `(head_dim + 2) * n_hashes`.
///
/// # Safety
/// `plan` must be NULL or a live plan; `out` must be NULL or point to `len` writable,
/// 4-byte aligned floats.
#[no_mangle]
pub unsafe extern "C" fn smyrf_plan_projections(
    plan: *const smyrf_plan,
    out: *mut f32,
    len: usize,
) -> smyrf_status {
    entry("smyrf_plan_projections", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a live plan.
        let plan = &unsafe { plan.as_ref() }
            .ok_or_else(|| Failure::null("plan"))?
            .plan;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let source = plan.projections();
        if len != source.len() {
            return Err(Error::ProjectionLength {
                expected: source.len(),
                found: len,
            }
            .into());
        }
        span("out", out, len)?;
        // SAFETY: non-NULL, aligned, `len` writable floats by the caller's contract; the
        // plan's own buffer is private, so the two cannot overlap.
        let out = unsafe { std::slice::from_raw_parts_mut(out, len) };
        out.copy_from_slice(source);
        Ok(())
    })
}

/// Upper bound, in bytes, of the scratch memory a call with these lengths allocates inside
/// the plan (kept and reused by later calls). Never proportional to `q_seq_len * k_seq_len`.
/// Stores it in `*out_bytes`.
///
/// # Safety
/// `plan` must be NULL or a live plan; `out_bytes` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn smyrf_plan_scratch_bytes(
    plan: *const smyrf_plan,
    q_seq_len: usize,
    k_seq_len: usize,
    v_dim: usize,
    out_bytes: *mut usize,
) -> smyrf_status {
    entry("smyrf_plan_scratch_bytes", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a live plan.
        let plan = &unsafe { plan.as_ref() }
            .ok_or_else(|| Failure::null("plan"))?
            .plan;
        if out_bytes.is_null() {
            return Err(Failure::null("out_bytes"));
        }
        for (value, what) in [
            (q_seq_len, "q_seq_len"),
            (k_seq_len, "k_seq_len"),
            (v_dim, "v_dim"),
        ] {
            if value == 0 {
                return Err(Error::ZeroSize { what }.into());
            }
            // Same bound as an attention call's sequence lengths; keeps the sum below from
            // overflowing.
            if value > u32::MAX as usize {
                return Err(Failure::invalid(format!("{what} must be below 2^32")));
            }
        }
        let bytes = plan.scratch_bytes(q_seq_len, k_seq_len, v_dim);
        // SAFETY: `out_bytes` is non-NULL and, by the caller's contract, writable.
        unsafe { out_bytes.write(bytes) };
        Ok(())
    })
}

/// Bytes of the workspace (`smyrf_call_args.workspace`) with which `smyrf_attention` on
/// these tensors and arguments allocates nothing, at any alignment; stored in `*out_bytes`.
/// Only the descriptors' sizes and element types, the plan (its config and threads) and
/// `args->parallel_for` / `parallel_workers` matter: the data pointers may be NULL, and the
/// mask, key lengths, head sinks and lse output play no part. With `num_threads = 0` it is
/// the size for the library's pool. The descriptors are checked as the call checks them.
///
/// # Safety
/// `plan` must be NULL or a live plan; `q`, `k`, `v`, `out` and `args` as for
/// `smyrf_attention` (their data is never read); `out_bytes` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn smyrf_plan_workspace_size(
    plan: *const smyrf_plan,
    q: *const smyrf_tensor,
    k: *const smyrf_tensor,
    v: *const smyrf_tensor,
    out: *const smyrf_tensor_mut,
    args: *const smyrf_call_args,
    out_bytes: *mut usize,
) -> smyrf_status {
    entry("smyrf_plan_workspace_size", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a live plan.
        let plan = &unsafe { plan.as_ref() }
            .ok_or_else(|| Failure::null("plan"))?
            .plan;
        // SAFETY: forwarded caller contract for every pointer.
        let query = unsafe { SizeQuery::from_c(q, k, v, out, args) }?;
        let bytes = plan.workspace_size_of(query.shapes, query.types, &query.options())?;
        query.store(out_bytes, bytes)
    })
}

/// Bytes of the workspace with which `smyrf_dense_attention` on these tensors and arguments
/// allocates nothing, as `smyrf_plan_workspace_size` gives it for `smyrf_attention` (without
/// `args->parallel_for`, for the library's pool). When `SMYRF_ISA` is set, reading it at
/// each call still allocates that one string.
///
/// # Safety
/// As for `smyrf_plan_workspace_size`, without a plan.
#[no_mangle]
pub unsafe extern "C" fn smyrf_dense_workspace_size(
    q: *const smyrf_tensor,
    k: *const smyrf_tensor,
    v: *const smyrf_tensor,
    out: *const smyrf_tensor_mut,
    args: *const smyrf_call_args,
    out_bytes: *mut usize,
) -> smyrf_status {
    entry("smyrf_dense_workspace_size", || {
        // SAFETY: forwarded caller contract for every pointer.
        let query = unsafe { SizeQuery::from_c(q, k, v, out, args) }?;
        let bytes =
            crate::dense::default_workspace_size(query.shapes, query.types, &query.options())?;
        query.store(out_bytes, bytes)
    })
}

/// Releases a plan. NULL is a no-op. The plan must not be in use by another thread.
///
/// # Safety
/// `plan` must be NULL or a plan from `smyrf_plan_create*` that was not destroyed yet.
#[no_mangle]
pub unsafe extern "C" fn smyrf_plan_destroy(plan: *mut smyrf_plan) {
    if plan.is_null() {
        return;
    }
    // A panic while dropping cannot be reported (no status); it is contained, not unwound.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the pointer came from `Box::into_raw` in `smyrf_plan_create*` and, by the
        // caller's contract, is destroyed once.
        drop(unsafe { Box::from_raw(plan) });
    }));
}

/// SMYRF attention (design §1). Shapes: q `[B, Hq, Nq, d]`, k `[B, Hkv, Nk, d]`,
/// v `[B, Hkv, Nk, dv]`, out `[B, Hq, Nq, dv]`, with `Hq % Hkv == 0` (query head h reads
/// key/value head h / (Hq / Hkv)) and d equal to the plan's head_dim. Each tensor has its
/// own element type (f32 Q over an f16 K/V cache, say); out is f32, f16 or bf16. `args` is
/// NULL or the call's options (mask, key lengths, head sinks, lse output, the engine's
/// parallel-for, the workspace); a batch element without valid keys gets zeros. `out`,
/// `lse_out` and the workspace must not overlap each other or any input (their address
/// ranges are compared and overlap is refused). On error nothing is written. With a
/// workspace of `smyrf_plan_workspace_size` bytes, the call allocates nothing on the
/// caller's thread and on the engine's workers (with `num_threads = 1` or a
/// `parallel_for`; the library's pool may allocate in its own job queues).
///
/// # Safety
/// Every pointer must be NULL or valid for its documented extent; tensor buffers must hold
/// the elements their sizes and strides name (see `smyrf_tensor`).
#[no_mangle]
pub unsafe extern "C" fn smyrf_attention(
    plan: *const smyrf_plan,
    q: *const smyrf_tensor,
    k: *const smyrf_tensor,
    v: *const smyrf_tensor,
    out: *const smyrf_tensor_mut,
    args: *const smyrf_call_args,
) -> smyrf_status {
    entry("smyrf_attention", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a live plan.
        let plan = &unsafe { plan.as_ref() }
            .ok_or_else(|| Failure::null("plan"))?
            .plan;
        // SAFETY: forwarded caller contract for every pointer.
        let call = unsafe { CallBuffers::from_c(q, k, v, out, args) }?;
        let CallBuffers {
            q,
            k,
            v,
            call,
            mut out,
            engine,
        } = call;
        let options = call.options(engine.as_ref());
        let (shape, rows) = out.writer();
        plan.run_attention(q, k, v, shape, rows, options)?;
        engine.as_ref().map_or(Ok(()), CEngine::check)
    })
}

/// Exact softmax attention with the same shapes, element types, options and rules as
/// `smyrf_attention`. `scale` 0 means 1/sqrt(d); it must be finite and positive otherwise.
/// Without `args->parallel_for` it runs on the library's thread pool, with the tier
/// `SMYRF_ISA` names, or the best one detected. With a workspace of
/// `smyrf_dense_workspace_size` bytes it allocates nothing, as `smyrf_attention` does.
///
/// # Safety
/// As for `smyrf_attention`.
#[no_mangle]
pub unsafe extern "C" fn smyrf_dense_attention(
    q: *const smyrf_tensor,
    k: *const smyrf_tensor,
    v: *const smyrf_tensor,
    scale: f32,
    out: *const smyrf_tensor_mut,
    args: *const smyrf_call_args,
) -> smyrf_status {
    entry("smyrf_dense_attention", || {
        let scale = scale_from_c(scale)?;
        // SAFETY: forwarded caller contract for every pointer.
        let call = unsafe { CallBuffers::from_c(q, k, v, out, args) }?;
        let CallBuffers {
            q,
            k,
            v,
            call,
            mut out,
            engine,
        } = call;
        let options = call.options(engine.as_ref());
        let (out_shape, out) = out.writer();
        crate::dense::dense_attention_default(
            crate::dense::DenseCall {
                q,
                k,
                v,
                out_shape,
                out,
                scale,
            },
            options,
        )?;
        engine.as_ref().map_or(Ok(()), CEngine::check)
    })
}

/// A KV-cache index (design §10): the bf16 key-block bounds of an engine's K cache and its
/// keys sorted by hash per round, for `smyrf_decode` with the plan it was created for. Created by `smyrf_kv_index_create`,
/// grown by `smyrf_kv_index_append`, released by `smyrf_kv_index_destroy`. It copies no key
/// or value. Appends and resets need the index to themselves; decode calls only read it, so
/// any number may share it between appends.
pub struct smyrf_kv_index {
    index: KvIndex,
}

/// Creates an empty index for `batch` sequences of `kv_heads` key/value heads, each up to
/// `capacity` keys, with the head dim, `block_size`, hash rounds and projection of `plan`
/// (per key of capacity it holds `4 * head_dim / block_size` bytes when the plan has key
/// blocks and 8 bytes per hash round). On success stores it in `*out_index`; on error
/// leaves that unchanged.
///
/// # Safety
/// `plan` must be NULL or a live plan; `out_index` NULL or writable for one pointer.
#[no_mangle]
pub unsafe extern "C" fn smyrf_kv_index_create(
    plan: *const smyrf_plan,
    batch: usize,
    kv_heads: usize,
    capacity: usize,
    out_index: *mut *mut smyrf_kv_index,
) -> smyrf_status {
    entry("smyrf_kv_index_create", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a live plan.
        let plan = &unsafe { plan.as_ref() }
            .ok_or_else(|| Failure::null("plan"))?
            .plan;
        if out_index.is_null() {
            return Err(Failure::null("out_index"));
        }
        let index = KvIndex::new(plan, batch, kv_heads, capacity)?;
        let handle = Box::into_raw(Box::new(smyrf_kv_index { index }));
        // SAFETY: `out_index` is non-NULL and, by the caller's contract, writable.
        unsafe { out_index.write(handle) };
        Ok(())
    })
}

/// Releases an index. NULL is a no-op. No other thread may be using it.
///
/// # Safety
/// `index` must be NULL or an index from `smyrf_kv_index_create` not destroyed yet.
#[no_mangle]
pub unsafe extern "C" fn smyrf_kv_index_destroy(index: *mut smyrf_kv_index) {
    if index.is_null() {
        return;
    }
    // A panic while dropping cannot be reported (no status); it is contained, not unwound.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the pointer came from `Box::into_raw` in `smyrf_kv_index_create` and, by
        // the caller's contract, is destroyed once.
        drop(unsafe { Box::from_raw(index) });
    }));
}

/// Indexes the keys of each batch element b from its current length up to `lengths[b]`
/// (`n_lengths` = the index's batch), reading them from the K cache `k`
/// (`[batch, kv_heads, >= lengths[b], head_dim]`, key j at position j; f32, f16 or bf16).
/// A length below the current one (positions out of order), past the capacity or past
/// `k->seq_len` is refused, and the index is unchanged.
///
/// # Safety
/// `index` must be NULL or a live index no other thread uses; `k` NULL or a valid tensor
/// whose buffer holds what its sizes and strides name; `lengths` NULL or `n_lengths`
/// readable, 4-byte aligned values.
#[no_mangle]
pub unsafe extern "C" fn smyrf_kv_index_append(
    index: *mut smyrf_kv_index,
    k: *const smyrf_tensor,
    lengths: *const u32,
    n_lengths: usize,
) -> smyrf_status {
    entry("smyrf_kv_index_append", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a live, unshared index.
        let index = &mut unsafe { index.as_mut() }
            .ok_or_else(|| Failure::null("index"))?
            .index;
        // SAFETY: NULL is refused; otherwise the caller guarantees a valid struct (copied).
        let k = TensorParts::of("k", &unsafe { read_tensor("k", k) }?)?;
        if lengths.is_null() && n_lengths > 0 {
            return Err(Failure::null("lengths"));
        }
        span("lengths", lengths, n_lengths)?;
        let (_, k_len) = k.extent()?;
        // SAFETY: `extent` checked the view's pointer and extent, readable by the contract.
        let keys = unsafe { k.view(k_len) }?;
        let lengths = if n_lengths == 0 {
            &[][..]
        } else {
            // SAFETY: non-NULL and aligned (checked by `span`), `n_lengths` readable values.
            unsafe { std::slice::from_raw_parts(lengths, n_lengths) }
        };
        index.append_erased(keys, lengths)?;
        Ok(())
    })
}

/// Empties batch element `batch_index` of the index (a new sequence in that slot).
///
/// # Safety
/// `index` must be NULL or a live index no other thread uses.
#[no_mangle]
pub unsafe extern "C" fn smyrf_kv_index_reset(
    index: *mut smyrf_kv_index,
    batch_index: usize,
) -> smyrf_status {
    entry("smyrf_kv_index_reset", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a live, unshared index.
        let index = &mut unsafe { index.as_mut() }
            .ok_or_else(|| Failure::null("index"))?
            .index;
        Ok(index.reset(batch_index)?)
    })
}

/// Copies the keys indexed per batch element into `out` (`len` must equal the batch), and
/// the bytes the index holds into `*out_bytes` (if not NULL).
///
/// # Safety
/// `index` must be NULL or a live index; `out` NULL or writable for `len` aligned values;
/// `out_bytes` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn smyrf_kv_index_lengths(
    index: *const smyrf_kv_index,
    out: *mut u32,
    len: usize,
    out_bytes: *mut usize,
) -> smyrf_status {
    entry("smyrf_kv_index_lengths", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a live index.
        let index = &unsafe { index.as_ref() }
            .ok_or_else(|| Failure::null("index"))?
            .index;
        let lengths = index.lengths();
        if len != lengths.len() {
            return Err(Error::ShapeMismatch {
                what: "len (must equal the index's batch)",
                expected: lengths.len(),
                found: len,
            }
            .into());
        }
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        span("out", out.cast_const(), len)?;
        // SAFETY: non-NULL and aligned (checked by `span`), writable for `len` values.
        unsafe { std::slice::from_raw_parts_mut(out, len) }.copy_from_slice(lengths);
        if !out_bytes.is_null() {
            // SAFETY: non-NULL, writable by the caller's contract.
            unsafe { out_bytes.write(index.memory_bytes()) };
        }
        Ok(())
    })
}

/// Decode attention through a KV-cache index (design §10): the `Nq` queries of each batch
/// element b (q `[B, Hq, Nq, d]`) sit at the last `Nq` of its indexed positions and attend
/// causally to those keys of the cache (k, v `[B, Hkv, >= length, d]`, the views the index
/// was appended from) by the plan's sinks, window, key blocks and samples, exactly as the
/// causal prefill's tile of those queries does, then by each hash round's keys nearest
/// each query's hash. The plan must be the index's (head dim, hash rounds, projection, and
/// block size when it has key blocks). `args` may carry head sinks, `lse_out`,
/// `parallel_for` and a workspace (sized by `smyrf_decode_workspace_size`); a mask, key
/// lengths or causal fields are refused. On error nothing is written.
///
/// # Safety
/// As for `smyrf_attention`; `index` must be NULL or a live index no thread appends to
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn smyrf_decode(
    plan: *const smyrf_plan,
    index: *const smyrf_kv_index,
    q: *const smyrf_tensor,
    k: *const smyrf_tensor,
    v: *const smyrf_tensor,
    out: *const smyrf_tensor_mut,
    args: *const smyrf_call_args,
) -> smyrf_status {
    entry("smyrf_decode", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a live plan.
        let plan = &unsafe { plan.as_ref() }
            .ok_or_else(|| Failure::null("plan"))?
            .plan;
        // SAFETY: NULL is refused; otherwise the caller guarantees a live index.
        let index = &unsafe { index.as_ref() }
            .ok_or_else(|| Failure::null("index"))?
            .index;
        // SAFETY: forwarded caller contract for every pointer.
        let call = unsafe { CallBuffers::from_c(q, k, v, out, args) }?;
        let CallBuffers {
            q,
            k,
            v,
            call,
            mut out,
            engine,
        } = call;
        let options = call.options(engine.as_ref());
        let (shape, rows) = out.writer();
        plan.run_decode(index, q, k, v, shape, rows, options)?;
        engine.as_ref().map_or(Ok(()), CEngine::check)
    })
}

/// Bytes of the workspace (`smyrf_call_args.workspace`) with which `smyrf_decode` on these
/// tensors, this index and these arguments allocates nothing, at any alignment; stored in
/// `*out_bytes`. Only the descriptors' sizes and element types (the cache views' `seq_len`
/// bounds every sequence, so one size serves every step over the same views), the plan, the
/// index's shape and `args->parallel_for` / `parallel_workers` matter: the data pointers
/// may be NULL and the index's lengths play no part. The descriptors are checked as the
/// call checks them.
///
/// # Safety
/// As for `smyrf_plan_workspace_size`; `index` must be NULL or a live index.
#[no_mangle]
pub unsafe extern "C" fn smyrf_decode_workspace_size(
    plan: *const smyrf_plan,
    index: *const smyrf_kv_index,
    q: *const smyrf_tensor,
    k: *const smyrf_tensor,
    v: *const smyrf_tensor,
    out: *const smyrf_tensor_mut,
    args: *const smyrf_call_args,
    out_bytes: *mut usize,
) -> smyrf_status {
    entry("smyrf_decode_workspace_size", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a live plan.
        let plan = &unsafe { plan.as_ref() }
            .ok_or_else(|| Failure::null("plan"))?
            .plan;
        // SAFETY: NULL is refused; otherwise the caller guarantees a live index.
        let index = &unsafe { index.as_ref() }
            .ok_or_else(|| Failure::null("index"))?
            .index;
        // SAFETY: forwarded caller contract for every pointer.
        let query = unsafe { SizeQuery::from_c(q, k, v, out, args) }?;
        let bytes =
            plan.decode_workspace_size_of(index, query.shapes, query.types, &query.options())?;
        query.store(out_bytes, bytes)
    })
}

/// The header's `smyrf_tensor_bhnd()` (an inline function there): a read-only view of
/// contiguous `[batch, heads, seq_len, dim]` elements of type `dtype` at `data`.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub fn smyrf_tensor_bhnd(
    data: *const c_void,
    dtype: u32,
    batch: usize,
    heads: usize,
    seq_len: usize,
    dim: usize,
) -> smyrf_tensor {
    tensor_c(data, dtype, Shape::bhnd(batch, heads, seq_len, dim))
}

/// The header's `smyrf_tensor_bnhd()`: contiguous `[batch, seq_len, heads, dim]`.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub fn smyrf_tensor_bnhd(
    data: *const c_void,
    dtype: u32,
    batch: usize,
    heads: usize,
    seq_len: usize,
    dim: usize,
) -> smyrf_tensor {
    tensor_c(data, dtype, Shape::bnhd(batch, heads, seq_len, dim))
}

/// The header's `smyrf_tensor_mut_bhnd()`: an output view of contiguous
/// `[batch, heads, seq_len, dim]`.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub fn smyrf_tensor_mut_bhnd(
    data: *mut c_void,
    dtype: u32,
    batch: usize,
    heads: usize,
    seq_len: usize,
    dim: usize,
) -> smyrf_tensor_mut {
    tensor_mut_c(data, dtype, Shape::bhnd(batch, heads, seq_len, dim))
}

/// The header's `smyrf_tensor_mut_bnhd()`: contiguous `[batch, seq_len, heads, dim]`.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub fn smyrf_tensor_mut_bnhd(
    data: *mut c_void,
    dtype: u32,
    batch: usize,
    heads: usize,
    seq_len: usize,
    dim: usize,
) -> smyrf_tensor_mut {
    tensor_mut_c(data, dtype, Shape::bnhd(batch, heads, seq_len, dim))
}

/// Call options with every one off, as `smyrf_call_args_init` writes them.
pub fn smyrf_call_args_default() -> smyrf_call_args {
    smyrf_call_args {
        struct_size: size_of::<smyrf_call_args>(),
        key_mask: std::ptr::null(),
        key_lengths: std::ptr::null(),
        head_sinks: std::ptr::null(),
        lse_out: std::ptr::null_mut(),
        parallel_for: None,
        parallel_context: std::ptr::null_mut(),
        parallel_workers: 0,
        workspace: std::ptr::null_mut(),
        workspace_size: 0,
        causal: smyrf_causal::SMYRF_CAUSAL_NONE as u32,
        query_offset: 0,
    }
}

/// A static, NUL-terminated description of a status code; unknown codes get a text too.
/// Never NULL.
#[no_mangle]
pub extern "C" fn smyrf_status_message(status: u32) -> *const c_char {
    let text: &'static CStr = match status {
        0 => c"success",
        1 => c"null pointer argument (nothing was written)",
        2 => c"invalid argument (nothing was written)",
        3 => c"instruction set not supported by this CPU (nothing was written)",
        4 => c"out of memory (nothing was written)",
        5 => c"internal error (a panic caught at the library boundary; outputs may hold partial results)",
        _ => c"unknown status code",
    };
    text.as_ptr()
}

/// Details of the most recent failed call on the calling thread, NUL-terminated: which
/// function, which argument, and why. Every call that returns a `smyrf_status` first
/// clears it, so after a successful call it is the empty string. The text stays valid
/// until the next such call on the same thread. Never NULL.
#[no_mangle]
pub extern "C" fn smyrf_last_error_message() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| {
            slot.try_borrow()
                .ok()
                .and_then(|message| message.as_ref().map(|m| m.as_ptr()))
        })
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
}

/// The library's version, `"MAJOR.MINOR.PATCH"`, static and NUL-terminated. Compare with
/// the header's `SMYRF_VERSION_*` macros to detect a header/library mismatch.
#[no_mangle]
pub extern "C" fn smyrf_version() -> *const c_char {
    VERSION.as_ptr()
}

/// The name of the instruction-set tier a plan runs (`"portable"`, `"avx2"`, `"avx512"` or
/// `"neon"`); with NULL, the best tier this CPU supports. Static, NUL-terminated, never NULL.
///
/// # Safety
/// `plan` must be NULL or a live plan.
#[no_mangle]
pub unsafe extern "C" fn smyrf_isa_name(plan: *const smyrf_plan) -> *const c_char {
    // SAFETY: NULL is handled; otherwise the caller guarantees a live plan.
    let plan = unsafe { plan.as_ref() };
    let isa = match plan {
        Some(p) => p.plan.isa(),
        None => catch_unwind(detected_isa).unwrap_or(Isa::Portable),
    };
    isa_c_name(isa).as_ptr()
}

const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(version) => version,
        Err(_) => panic!("the package version contains a NUL byte"),
    };

fn isa_c_name(isa: Isa) -> &'static CStr {
    match isa {
        Isa::Portable => c"portable",
        Isa::Avx2 => c"avx2",
        Isa::Avx512 => c"avx512",
        Isa::Neon => c"neon",
    }
}

thread_local! {
    /// The message `smyrf_last_error_message` returns; `None` reads as "".
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: Option<String>) {
    let message = message.map(|m| {
        // Interior NULs would cut the C string short; after the replacement `new` cannot fail.
        CString::new(m.replace('\0', "\\0")).unwrap_or_default()
    });
    // During thread teardown the slot may be gone; then there is nobody left to read it.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = message;
        }
    });
}

/// Why an entry point refused a call: the status for C and the text for
/// `smyrf_last_error_message`.
#[derive(Debug)]
struct Failure {
    status: smyrf_status,
    message: String,
}

impl Failure {
    fn null(what: &str) -> Failure {
        Failure {
            status: smyrf_status::SMYRF_ERROR_NULL_POINTER,
            message: format!("{what} is NULL"),
        }
    }

    fn invalid(message: String) -> Failure {
        Failure {
            status: smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT,
            message,
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        let status = match error {
            Error::UnsupportedIsa { .. } | Error::UnknownIsa { .. } => {
                smyrf_status::SMYRF_ERROR_UNSUPPORTED_ISA
            }
            Error::OutOfMemory { .. } => smyrf_status::SMYRF_ERROR_OUT_OF_MEMORY,
            _ => smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT,
        };
        Failure {
            status,
            message: error.to_string(),
        }
    }
}

/// The panic boundary of every status-returning entry point: clears the thread's message,
/// runs `body`, and turns its failure or panic into a status plus a message naming
/// `function`.
fn entry(function: &'static str, body: impl FnOnce() -> Result<(), Failure>) -> smyrf_status {
    set_last_error(None);
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => smyrf_status::SMYRF_OK,
        Ok(Err(failure)) => {
            set_last_error(Some(format!("{function}: {}", failure.message)));
            failure.status
        }
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("no message");
            set_last_error(Some(format!(
                "{function}: internal error (panic): {detail}"
            )));
            smyrf_status::SMYRF_ERROR_PANIC
        }
    }
}

/// Maps the C config onto the Rust one (0 means "default" for k_cluster_size and scale,
/// `isa` is read as an integer); the remaining checks run when the plan is built.
fn config_from_c(c: &smyrf_config) -> Result<Config, Failure> {
    let isa = match c.isa {
        0 => None,
        1 => Some(Isa::Portable),
        2 => Some(Isa::Avx2),
        3 => Some(Isa::Avx512),
        4 => Some(Isa::Neon),
        other => {
            return Err(Failure::invalid(format!(
                "config.isa: {other} is not a smyrf_isa value (0 to 4)"
            )))
        }
    };
    let sink_selection = match c.sink_selection {
        0 => SinkSelection::First,
        1 => SinkSelection::MeanQuery,
        other => {
            return Err(Failure::invalid(format!(
                "config.sink_selection: {other} is not a smyrf_sink_selection value (0 or 1)"
            )))
        }
    };
    if c.reserved != 0 {
        return Err(Failure::invalid(format!(
            "config.reserved must be 0, got {}",
            c.reserved
        )));
    }
    Ok(Config {
        n_hashes: c.n_hashes as usize,
        q_cluster_size: c.q_cluster_size as usize,
        k_cluster_size: (c.k_cluster_size != 0).then_some(c.k_cluster_size as usize),
        scale: scale_from_c(c.scale)?,
        seed: c.seed,
        num_threads: c.num_threads as usize,
        isa,
        n_sinks: c.n_sinks as usize,
        sink_selection,
        window: c.window as usize,
        n_samples: c.n_samples as usize,
        sample_group: c.sample_group as usize,
        n_selected: c.n_selected as usize,
        select_dims: c.select_dims as usize,
        n_blocks: c.n_blocks as usize,
        block_size: c.block_size as usize,
        block_tile: c.block_tile as usize,
        bf16_exact: match c.bf16_exact {
            0 => false,
            1 => true,
            other => {
                return Err(Failure::invalid(format!(
                    "config.bf16_exact: {other} is not 0 or 1"
                )))
            }
        },
    })
}

/// 0 asks for the default; negative, NaN and infinite scales are refused (design §2).
fn scale_from_c(scale: f32) -> Result<Option<f32>, Failure> {
    if scale == 0.0 {
        Ok(None)
    } else if !scale.is_finite() || scale < 0.0 {
        Err(Failure::invalid(format!(
            "scale must be finite and positive (0 for 1/sqrt(d)), got {scale}"
        )))
    } else {
        Ok(Some(scale))
    }
}

/// The bytes `[start, end)` a buffer argument covers.
#[derive(Clone, Copy, Debug)]
struct Span {
    what: &'static str,
    start: usize,
    end: usize,
}

impl Span {
    fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Checks that `len` elements from `ptr` form a range a Rust slice may describe: aligned,
/// at most `isize::MAX` bytes, not wrapping around the address space.
fn span<T>(what: &'static str, ptr: *const T, len: usize) -> Result<Span, Failure> {
    if !ptr.is_aligned() {
        return Err(Failure::invalid(format!(
            "{what} is not aligned to {} bytes",
            std::mem::align_of::<T>()
        )));
    }
    let start = ptr as usize;
    let end = len
        .checked_mul(std::mem::size_of::<T>())
        .filter(|&bytes| bytes <= isize::MAX as usize)
        .and_then(|bytes| start.checked_add(bytes))
        .ok_or_else(|| Failure::invalid(format!("{what}: buffer extent overflows")))?;
    Ok(Span { what, start, end })
}

#[cfg_attr(not(feature = "internals"), allow(dead_code))]
fn tensor_c(data: *const c_void, dtype: u32, shape: Shape) -> smyrf_tensor {
    smyrf_tensor {
        struct_size: size_of::<smyrf_tensor>(),
        data,
        dtype,
        batch: shape.batch,
        heads: shape.heads,
        seq_len: shape.seq_len,
        dim: shape.dim,
        batch_stride: shape.batch_stride,
        head_stride: shape.head_stride,
        seq_stride: shape.seq_stride,
    }
}

#[cfg_attr(not(feature = "internals"), allow(dead_code))]
fn tensor_mut_c(data: *mut c_void, dtype: u32, shape: Shape) -> smyrf_tensor_mut {
    let t = tensor_c(data.cast_const(), dtype, shape);
    smyrf_tensor_mut {
        struct_size: size_of::<smyrf_tensor_mut>(),
        data,
        dtype: t.dtype,
        batch: t.batch,
        heads: t.heads,
        seq_len: t.seq_len,
        dim: t.dim,
        batch_stride: t.batch_stride,
        head_stride: t.head_stride,
        seq_stride: t.seq_stride,
    }
}

/// Largest `struct_size` accepted: far above any layout, low enough that a garbage size is
/// refused before the bytes past this library's layout are read.
const MAX_STRUCT_SIZE: usize = 4096;

/// Where each field of a versioned struct ends: the sizes an older caller's struct can have.
macro_rules! field_ends {
    ($t:ty: $($field:ident),+) => {
        [$(offset_of!($t, $field) + size_of_field(|x: &$t| &x.$field)),+]
    };
}

const fn size_of_field<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// The released layouts shorter than this library's: the sizes an older caller's config or
/// call arguments can have (this release's own is the full struct).
const CONFIG_ENDS: [usize; 3] = field_ends!(smyrf_config: isa, bf16_exact, select_dims);
const CALL_ARGS_ENDS: [usize; 2] = field_ends!(smyrf_call_args: lse_out, workspace_size);

/// Whether `size` is a size of a versioned struct whose full layout is `full` bytes.
fn size_fits(size: usize, min: usize, full: usize, ends: &[usize]) -> bool {
    size >= min && size <= MAX_STRUCT_SIZE && (size >= full || ends.contains(&size))
}

fn size_error(what: &str, size: usize, min: usize) -> Failure {
    Failure::invalid(format!(
        "{what}->struct_size = {size}: not a size of this struct (a released layout, at least \
         {min}, or a newer one of at most {MAX_STRUCT_SIZE}); set it with the initialiser"
    ))
}

/// Writes `value` as a caller's versioned struct of `size` bytes: the bytes the size covers
/// (its `struct_size` set to `size`), zeros past this library's layout.
///
/// # Safety
/// `ptr` must be NULL or point to `size` writable bytes.
unsafe fn write_versioned<T: Copy>(
    what: &'static str,
    ptr: *mut T,
    size: usize,
    min: usize,
    ends: &[usize],
    value: T,
) -> Result<(), Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    if !ptr.is_aligned() {
        return Err(Failure::invalid(format!(
            "{what} is not aligned to {} bytes",
            std::mem::align_of::<T>()
        )));
    }
    let full = size_of::<T>();
    if !size_fits(size, min, full, ends) {
        return Err(size_error(what, size, min));
    }
    let bytes = ptr.cast::<u8>();
    // SAFETY: `size` writable bytes at `ptr` (the contract), of which the first
    // `size.min(full)` take `value`'s, the rest zeros; then the size itself, the first field.
    unsafe {
        std::ptr::copy_nonoverlapping((&value as *const T).cast::<u8>(), bytes, size.min(full));
        if size > full {
            std::ptr::write_bytes(bytes.add(full), 0, size - full);
        }
        ptr.cast::<usize>().write(size);
    }
    Ok(())
}

/// Reads a caller's versioned struct (its first field is its `struct_size`): the bytes its
/// size covers, `default`'s fields past them. A size below `min`, one that ends inside a
/// field, or one above `MAX_STRUCT_SIZE` is refused; so is a larger (newer) struct with a
/// nonzero byte past this library's layout, an option this library cannot honour.
///
/// # Safety
/// `ptr` must be NULL or point to a readable struct of at least the `struct_size` it holds
/// (the first `size_of::<usize>()` bytes are always read).
unsafe fn read_versioned<T: Copy>(
    what: &'static str,
    ptr: *const T,
    min: usize,
    ends: &[usize],
    default: T,
) -> Result<T, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    if !ptr.is_aligned() {
        return Err(Failure::invalid(format!(
            "{what} (the struct itself) is not aligned to {} bytes",
            std::mem::align_of::<T>()
        )));
    }
    // SAFETY: non-NULL and aligned; every versioned struct starts with its size.
    let size = unsafe { ptr.cast::<usize>().read() };
    let full = size_of::<T>();
    if !size_fits(size, min, full, ends) {
        return Err(size_error(what, size, min));
    }
    let bytes = ptr.cast::<u8>();
    if size > full {
        // SAFETY: the caller's struct holds `size` bytes (its contract).
        let newer = unsafe { std::slice::from_raw_parts(bytes.add(full), size - full) };
        if let Some(at) = newer.iter().position(|&b| b != 0) {
            return Err(Failure::invalid(format!(
                "{what}: byte {} is set, past the {full} bytes this library knows: a newer \
                 option it cannot honour",
                full + at
            )));
        }
    }
    let mut value = default;
    // SAFETY: `size.min(full)` bytes are readable at `ptr` and fit in `value`; they end on a
    // field boundary, and every field of these structs is an integer, float, raw pointer or
    // optional function pointer, for which any bytes are a valid value.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes, (&mut value as *mut T).cast::<u8>(), size.min(full))
    };
    Ok(value)
}

/// Reads a caller's config: its `struct_size` bytes, defaults for the fields past them.
///
/// # Safety
/// `config` must be NULL or point to a readable config of its `struct_size`.
unsafe fn read_config(config: *const smyrf_config) -> Result<smyrf_config, Failure> {
    // SAFETY: forwarded.
    unsafe {
        read_versioned(
            "config",
            config,
            SMYRF_CONFIG_MIN_SIZE,
            &CONFIG_ENDS,
            smyrf_config_default(),
        )
    }
}

/// A `smyrf_dtype` value as the element type.
fn dtype_from_c(what: &'static str, dtype: u32) -> Result<DType, Failure> {
    match dtype {
        0 => Ok(DType::F32),
        1 => Ok(DType::F16),
        2 => Ok(DType::Bf16),
        other => Err(Failure::invalid(format!(
            "{what}->dtype: {other} is not a smyrf_dtype value (0 f32, 1 f16, 2 bf16)"
        ))),
    }
}

/// Reads a tensor descriptor.
///
/// # Safety
/// `t` must be NULL or point to a readable descriptor of its `struct_size`.
unsafe fn read_tensor<T: Copy>(what: &'static str, t: *const T) -> Result<T, Failure> {
    // SAFETY: forwarded; a zeroed descriptor is a valid default (every field may be zero),
    // though the minimum size covers every field anyway.
    unsafe {
        read_versioned(
            what,
            t,
            SMYRF_TENSOR_MIN_SIZE,
            &[],
            std::mem::MaybeUninit::<T>::zeroed().assume_init(),
        )
    }
}

/// A C tensor's fields, whichever direction.
struct TensorParts {
    what: &'static str,
    data: *const u8,
    dtype: DType,
    shape: Shape,
}

impl TensorParts {
    fn of(what: &'static str, t: &smyrf_tensor) -> Result<TensorParts, Failure> {
        Ok(TensorParts {
            what,
            data: t.data.cast(),
            dtype: dtype_from_c(what, t.dtype)?,
            shape: Shape {
                batch: t.batch,
                heads: t.heads,
                seq_len: t.seq_len,
                dim: t.dim,
                batch_stride: t.batch_stride,
                head_stride: t.head_stride,
                seq_stride: t.seq_stride,
            },
        })
    }

    fn of_mut(t: &smyrf_tensor_mut) -> Result<TensorParts, Failure> {
        let parts = smyrf_tensor {
            struct_size: t.struct_size,
            data: t.data.cast_const(),
            dtype: t.dtype,
            batch: t.batch,
            heads: t.heads,
            seq_len: t.seq_len,
            dim: t.dim,
            batch_stride: t.batch_stride,
            head_stride: t.head_stride,
            seq_stride: t.seq_stride,
        };
        TensorParts::of("out", &parts)
    }

    /// The checked byte range the view covers, and its length in elements.
    fn extent(&self) -> Result<(Span, usize), Failure> {
        if self.data.is_null() {
            return Err(Failure::null(match self.what {
                "q" => "q->data",
                "k" => "k->data",
                "v" => "v->data",
                _ => "out->data",
            }));
        }
        let len = self.shape.required_len(self.what)?;
        let span = match self.dtype {
            DType::F32 => span(self.what, self.data.cast::<f32>(), len)?,
            _ => span(self.what, self.data.cast::<u16>(), len)?,
        };
        Ok((span, len))
    }

    /// The view over `len` elements.
    ///
    /// # Safety
    /// `extent` accepted the view, and its elements are readable for the call.
    unsafe fn view<'a>(&self, len: usize) -> Result<AnyView<'a>, Failure> {
        /// # Safety
        /// As for `view`, with `T` the view's element type.
        unsafe fn typed<'a, T: Element>(
            p: &TensorParts,
            len: usize,
        ) -> Result<AnyView<'a>, Failure> {
            // SAFETY: non-NULL, aligned and `len` elements readable (the caller's contract,
            // checked by `extent`).
            let data = unsafe { std::slice::from_raw_parts(p.data.cast::<T>(), len) };
            Ok(TensorView::new(data, p.shape)?.erase())
        }
        // SAFETY: (each arm) forwarded, with the type the descriptor names.
        unsafe {
            match self.dtype {
                DType::F32 => typed::<f32>(self, len),
                DType::F16 => typed::<f16>(self, len),
                _ => typed::<bf16>(self, len),
            }
        }
    }
}

/// The output of a call, typed.
enum OutView<'a> {
    F32(TensorViewMut<'a, f32>),
    F16(TensorViewMut<'a, f16>),
    Bf16(TensorViewMut<'a, bf16>),
}

impl OutView<'_> {
    fn writer(&mut self) -> (Shape, OutRows<'_>) {
        match self {
            OutView::F32(v) => (v.shape(), v.rows_writer()),
            OutView::F16(v) => (v.shape(), v.rows_writer()),
            OutView::Bf16(v) => (v.shape(), v.rows_writer()),
        }
    }
}

/// The engine's parallel-for of a call, as a [`ParallelFor`].
struct CEngine {
    run: unsafe extern "C" fn(*mut c_void, usize, smyrf_task_fn, *mut c_void),
    context: *mut c_void,
    workers: usize,
    /// A task panicked on one of the engine's workers (where it must not unwind).
    panicked: AtomicBool,
}

// SAFETY: the engine's contract: its parallel-for and context may be used from whichever
// thread runs the call, and tasks from its own workers.
unsafe impl Sync for CEngine {}

/// What a task of the engine gets back as its context.
struct TaskContext<'a> {
    task: &'a (dyn Fn(usize) + Sync),
    n: usize,
    panicked: &'a AtomicBool,
}

unsafe extern "C" fn run_task(context: *mut c_void, index: usize) {
    // SAFETY: the engine passes back the context `CEngine::run` gave it, alive until the
    // parallel-for returns.
    let Some(context) = (unsafe { context.cast::<TaskContext<'_>>().as_ref() }) else {
        return;
    };
    if index >= context.n {
        return;
    }
    // No unwinding into the engine's frames: the panic is reported when the call returns.
    if catch_unwind(AssertUnwindSafe(|| (context.task)(index))).is_err() {
        context.panicked.store(true, Ordering::Relaxed);
    }
}

impl ParallelFor for CEngine {
    fn workers(&self) -> usize {
        self.workers
    }

    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        let context = TaskContext {
            task,
            n,
            panicked: &self.panicked,
        };
        // SAFETY: the engine's function, called as its contract says; the task context lives
        // until it returns, when every task has finished.
        unsafe {
            (self.run)(
                self.context,
                n,
                Some(run_task),
                (&context as *const TaskContext<'_>).cast_mut().cast(),
            )
        };
        if self.panicked.load(Ordering::Relaxed) {
            panic!("a task panicked on the engine's worker");
        }
    }
}

impl CEngine {
    /// The engine of a call's arguments, if it has one.
    fn of(args: &smyrf_call_args) -> Result<Option<CEngine>, Failure> {
        match (args.parallel_for, args.parallel_workers) {
            (None, _) => Ok(None),
            (Some(_), 0) => Err(Failure::invalid(
                "args->parallel_workers must be at least 1 with a parallel_for".into(),
            )),
            (Some(run), workers) => Ok(Some(CEngine {
                run,
                context: args.parallel_context,
                workers: workers as usize,
                panicked: AtomicBool::new(false),
            })),
        }
    }

    /// A panic on the engine's workers that the call's own loops did not see.
    fn check(&self) -> Result<(), Failure> {
        if self.panicked.load(Ordering::Relaxed) {
            panic!("a task panicked on the engine's worker");
        }
        Ok(())
    }
}

/// What a workspace size depends on, from a call's C arguments: the tensors' shapes and
/// element types, and the engine's workers.
struct SizeQuery {
    shapes: [Shape; 4],
    types: [DType; 4],
    engine: Option<CEngine>,
}

impl SizeQuery {
    /// Reads and checks the descriptors (not their data) and the arguments' engine.
    ///
    /// # Safety
    /// Each non-NULL pointer must point to a readable struct of its `struct_size`.
    unsafe fn from_c(
        q: *const smyrf_tensor,
        k: *const smyrf_tensor,
        v: *const smyrf_tensor,
        out: *const smyrf_tensor_mut,
        args: *const smyrf_call_args,
    ) -> Result<SizeQuery, Failure> {
        // SAFETY: NULL is refused; otherwise the caller guarantees valid structs.
        let parts = unsafe {
            [
                TensorParts::of("q", &read_tensor("q", q)?)?,
                TensorParts::of("k", &read_tensor("k", k)?)?,
                TensorParts::of("v", &read_tensor("v", v)?)?,
                TensorParts::of_mut(&read_tensor("out", out)?)?,
            ]
        };
        for part in &parts {
            // Zero sizes and overflowing extents, as the views of a call would refuse them.
            part.shape.required_len(part.what)?;
        }
        let args = match args.is_null() {
            true => smyrf_call_args_default(),
            // SAFETY: a caller's struct of its `struct_size` (the contract).
            false => unsafe {
                read_versioned(
                    "args",
                    args,
                    SMYRF_CALL_ARGS_MIN_SIZE,
                    &CALL_ARGS_ENDS,
                    smyrf_call_args_default(),
                )?
            },
        };
        Ok(SizeQuery {
            shapes: parts.each_ref().map(|p| p.shape),
            types: parts.each_ref().map(|p| p.dtype),
            engine: CEngine::of(&args)?,
        })
    }

    /// Call options that carry the engine (only its worker count is read).
    fn options(&self) -> CallOptions<'_> {
        let mut options = CallOptions::new();
        options.parallel_for = self.engine.as_ref().map(|e| e as &dyn ParallelFor);
        options
    }

    fn store(&self, out_bytes: *mut usize, bytes: usize) -> Result<(), Failure> {
        if out_bytes.is_null() {
            return Err(Failure::null("out_bytes"));
        }
        // SAFETY: non-NULL and, by the caller's contract, writable.
        unsafe { out_bytes.write(bytes) };
        Ok(())
    }
}

/// The bytes of a call's workspace, if it has one: a NULL workspace of nonzero size is
/// refused (a size without memory is a mistake, not a request for none).
fn workspace_span(args: &smyrf_call_args) -> Result<Option<Span>, Failure> {
    match (args.workspace.is_null(), args.workspace_size) {
        (true, 0) => Ok(None),
        (true, size) => Err(Failure::null(&format!(
            "args->workspace (with workspace_size = {size})"
        ))),
        (false, size) => Ok(Some(span(
            "workspace",
            args.workspace.cast_const().cast::<u8>(),
            size,
        )?)),
    }
}

/// The Rust views of one attention call's C arguments.
struct CallBuffers<'a> {
    q: AnyView<'a>,
    k: AnyView<'a>,
    v: AnyView<'a>,
    call: CallRest<'a>,
    out: OutView<'a>,
    engine: Option<CEngine>,
}

/// The options of a call, from what `CallBuffers` left after the views were taken.
struct CallRest<'a> {
    mask: Option<&'a [u8]>,
    key_lengths: Option<&'a [u32]>,
    head_sinks: Option<&'a [f32]>,
    lse: Option<&'a mut [f32]>,
    workspace: Option<&'a mut [MaybeUninit<u8>]>,
    /// The position of query 0, `None` meaning Nk − Nq; all `None` when not causal.
    causal: Option<Option<usize>>,
}

impl<'a> CallRest<'a> {
    fn options<'b>(self, engine: Option<&'b CEngine>) -> CallOptions<'b>
    where
        'a: 'b,
    {
        let mut options = CallOptions::new();
        options.key_mask = self.mask;
        options.key_lengths = self.key_lengths;
        options.head_sinks = self.head_sinks;
        options.lse = self.lse;
        options.parallel_for = engine.map(|e| e as &dyn ParallelFor);
        options.workspace = self.workspace;
        if let Some(offset) = self.causal {
            options.causal = true;
            options.query_offset = offset;
        }
        options
    }
}

/// The causal fields of `args`, checked.
fn causal_of(args: &smyrf_call_args) -> Result<Option<Option<usize>>, Failure> {
    const NONE: u32 = smyrf_causal::SMYRF_CAUSAL_NONE as u32;
    const BOTTOM_RIGHT: u32 = smyrf_causal::SMYRF_CAUSAL_BOTTOM_RIGHT as u32;
    const AT_OFFSET: u32 = smyrf_causal::SMYRF_CAUSAL_AT_OFFSET as u32;
    match (args.causal, args.query_offset) {
        (NONE, 0) => Ok(None),
        (BOTTOM_RIGHT, 0) => Ok(Some(None)),
        (AT_OFFSET, offset) => match usize::try_from(offset) {
            Ok(offset) => Ok(Some(Some(offset))),
            Err(_) => Err(Failure::invalid(format!(
                "args.query_offset {offset} does not fit this platform's size_t"
            ))),
        },
        (NONE | BOTTOM_RIGHT, offset) => Err(Failure::invalid(format!(
            "args.query_offset is {offset}: it must be 0 unless args.causal is SMYRF_CAUSAL_AT_OFFSET"
        ))),
        (other, _) => Err(Failure::invalid(format!(
            "args.causal: {other} is not a smyrf_causal value (0, 1 or 2)"
        ))),
    }
}

impl<'a> CallBuffers<'a> {
    /// Checks every pointer, size and placement, then builds slices of exactly the extents
    /// the shapes name. Overlap between what is written and anything else is refused before
    /// any slice exists: a `&mut` slice aliasing another slice would be undefined behaviour,
    /// and reading while writing would be a data race.
    ///
    /// # Safety
    /// Each non-NULL pointer must be valid for its documented extent (see `smyrf_attention`).
    unsafe fn from_c(
        q: *const smyrf_tensor,
        k: *const smyrf_tensor,
        v: *const smyrf_tensor,
        out: *const smyrf_tensor_mut,
        args: *const smyrf_call_args,
    ) -> Result<Self, Failure> {
        // SAFETY: NULL is refused; otherwise the caller guarantees valid structs. They are
        // copied, so later changes by other threads cannot affect the checks below.
        let (q, k, v, out) = unsafe {
            (
                TensorParts::of("q", &read_tensor("q", q)?)?,
                TensorParts::of("k", &read_tensor("k", k)?)?,
                TensorParts::of("v", &read_tensor("v", v)?)?,
                TensorParts::of_mut(&read_tensor("out", out)?)?,
            )
        };
        let args = match args.is_null() {
            true => smyrf_call_args_default(),
            // SAFETY: a caller's struct of its `struct_size` (the contract).
            false => unsafe {
                read_versioned(
                    "args",
                    args,
                    SMYRF_CALL_ARGS_MIN_SIZE,
                    &CALL_ARGS_ENDS,
                    smyrf_call_args_default(),
                )?
            },
        };
        let (q_span, q_len) = q.extent()?;
        let (k_span, k_len) = k.extent()?;
        let (v_span, v_len) = v.extent()?;
        let (out_span, out_len) = out.extent()?;
        let (qs, ks) = (q.shape, k.shape);
        // Both products are below isize::MAX / 4: `required_len` bounded the full tensors.
        // The mask is `[batch][k seq_len]`; until the batches are checked equal, view no more
        // than both readings of "batch" promise (a slice past the caller's buffer would be
        // undefined behaviour even unread).
        let batch = qs.batch.min(ks.batch);
        let mask_len = batch * ks.seq_len;
        let lse_len = qs.batch * qs.heads * qs.seq_len;
        let optional = |ptr: *const u8, what, len, size: usize| -> Result<Option<Span>, Failure> {
            match ptr.is_null() {
                true => Ok(None),
                false => {
                    if !ptr.addr().is_multiple_of(size) {
                        return Err(Failure::invalid(format!(
                            "{what} is not aligned to {size} bytes"
                        )));
                    }
                    Ok(Some(span(what, ptr, len * size)?))
                }
            }
        };
        let mask_span = optional(args.key_mask, "key_mask", mask_len, 1)?;
        let lengths_span = optional(args.key_lengths.cast(), "key_lengths", batch, 4)?;
        let sinks_span = optional(args.head_sinks.cast(), "head_sinks", qs.heads, 4)?;
        let lse_span = optional(args.lse_out.cast_const().cast(), "lse_out", lse_len, 4)?;
        let workspace_span = workspace_span(&args)?;
        let all = [
            Some(q_span),
            Some(k_span),
            Some(v_span),
            mask_span,
            lengths_span,
            sinks_span,
            Some(out_span),
            // The workspace is written too, and checked against everything else.
            lse_span,
        ];
        let (inputs_and_out, _) = all.split_at(all.len() - 1);
        let checks = [
            (Some(out_span), inputs_and_out),
            (lse_span, inputs_and_out),
            (workspace_span, &all[..]),
        ];
        for (written, all) in checks {
            let Some(written) = written else { continue };
            for other in all.iter().flatten().filter(|o| o.what != written.what) {
                if written.overlaps(other) {
                    return Err(Failure::invalid(format!(
                        "{} overlaps {}: outputs must not share memory with inputs or \
                         each other",
                        written.what, other.what
                    )));
                }
            }
        }
        let engine = CEngine::of(&args)?;
        let causal = causal_of(&args)?;
        // SAFETY: (all slices below) each pointer is non-NULL, aligned and covers the checked
        // extent its shape names, which the caller guarantees is readable (inputs) or
        // writable (outputs); the written ranges overlap nothing else, so no `&mut` aliases.
        let (qv, kv, vv) = unsafe { (q.view(q_len)?, k.view(k_len)?, v.view(v_len)?) };
        // SAFETY: as above.
        let mask =
            mask_span.map(|_| unsafe { std::slice::from_raw_parts(args.key_mask, mask_len) });
        let key_lengths = match lengths_span {
            None => None,
            Some(_) => {
                // SAFETY: as above.
                let lengths = unsafe { std::slice::from_raw_parts(args.key_lengths, batch) };
                if let Some((b, &len)) = lengths.iter().enumerate().find(|&(_, &l)| l < 0) {
                    return Err(Error::KeyLength {
                        batch: b,
                        length: len.into(),
                        nk: ks.seq_len,
                    }
                    .into());
                }
                // SAFETY: the same memory as non-negative i32, which are the same u32 values;
                // u32 and i32 share size and alignment.
                Some(unsafe { std::slice::from_raw_parts(args.key_lengths.cast::<u32>(), batch) })
            }
        };
        // SAFETY: as above.
        let head_sinks =
            sinks_span.map(|_| unsafe { std::slice::from_raw_parts(args.head_sinks, qs.heads) });
        // SAFETY: as above.
        let lse =
            lse_span.map(|_| unsafe { std::slice::from_raw_parts_mut(args.lse_out, lse_len) });
        // SAFETY: as above; as `MaybeUninit` bytes, the workspace may be uninitialised.
        let workspace = workspace_span.map(|span| unsafe {
            std::slice::from_raw_parts_mut(
                args.workspace.cast::<MaybeUninit<u8>>(),
                span.end - span.start,
            )
        });
        // SAFETY: as above, for the output's element type.
        let out = unsafe {
            match out.dtype {
                DType::F32 => OutView::F32(TensorViewMut::new(
                    std::slice::from_raw_parts_mut(out.data.cast::<f32>().cast_mut(), out_len),
                    out.shape,
                )?),
                DType::F16 => OutView::F16(TensorViewMut::new(
                    std::slice::from_raw_parts_mut(out.data.cast::<f16>().cast_mut(), out_len),
                    out.shape,
                )?),
                _ => OutView::Bf16(TensorViewMut::new(
                    std::slice::from_raw_parts_mut(out.data.cast::<bf16>().cast_mut(), out_len),
                    out.shape,
                )?),
            }
        };
        Ok(CallBuffers {
            q: qv,
            k: kv,
            v: vv,
            call: CallRest {
                mask,
                key_lengths,
                head_sinks,
                lse,
                workspace,
                causal,
            },
            out,
            engine,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_mirrors_the_rust_default() {
        let c = smyrf_config_default();
        assert_eq!(config_from_c(&c).unwrap(), Config::default());
        for budget in [0, 1, 7, 64, 100, 128, 4096] {
            let c = smyrf_config_hybrid(budget);
            assert_eq!(
                config_from_c(&c).unwrap(),
                Config::hybrid(budget as usize),
                "budget {budget}"
            );
        }
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = entry("test_entry", || panic!("boom"));
        assert_eq!(status, smyrf_status::SMYRF_ERROR_PANIC);
        // SAFETY: the pointer is a NUL-terminated string owned by this thread's slot.
        let message = unsafe { CStr::from_ptr(smyrf_last_error_message()) };
        assert_eq!(
            message.to_str().unwrap(),
            "test_entry: internal error (panic): boom"
        );
        assert_eq!(entry("test_entry", || Ok(())), smyrf_status::SMYRF_OK);
        // SAFETY: as above.
        assert!(unsafe { CStr::from_ptr(smyrf_last_error_message()) }.is_empty());
    }

    #[test]
    fn status_codes_and_isa_values_match_the_header() {
        assert_eq!(smyrf_status::SMYRF_ERROR_PANIC as u32, 5);
        assert_eq!(smyrf_isa::SMYRF_ISA_NEON as u32, 4);
        for isa in Isa::ALL {
            assert_eq!(isa_c_name(isa).to_str().unwrap(), isa.name());
        }
    }
}
