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

use crate::call::CallOptions;
use crate::config::{Config, SinkSelection};
use crate::error::Error;
use crate::isa::{detected_isa, Isa};
use crate::plan::Plan;
use crate::view::{Shape, TensorView, TensorViewMut};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

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

/// How SMYRF attention is computed. Always start from `smyrf_config_default()` and change
/// the fields you need: fields may be appended in later versions, and the defaults function
/// fills every one of them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct smyrf_config {
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
}

/// A read-only view of a `[batch, heads, seq_len, dim]` f32 tensor inside a caller buffer.
/// Strides count elements and the last axis is contiguous, so both `[B, H, N, D]`
/// (`batch_stride = H*N*D, head_stride = N*D, seq_stride = D`) and `[B, N, H, D]`
/// (`batch_stride = N*H*D, head_stride = D, seq_stride = H*D`) are views. The buffer must
/// hold at least `(batch-1)*batch_stride + (heads-1)*head_stride + (seq_len-1)*seq_stride +
/// dim` floats, be 4-byte aligned, and stay unchanged for the duration of the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct smyrf_tensor {
    /// First element (batch 0, head 0, position 0, component 0).
    pub data: *const f32,
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

/// A writable view, laid out like `smyrf_tensor`; its rows must not overlap each other, and
/// the buffer must not overlap any input of the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct smyrf_tensor_mut {
    /// First element (batch 0, head 0, position 0, component 0).
    pub data: *mut f32,
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

/// The default configuration: 2 hash rounds, 64 queries per cluster, derived key cluster
/// size, scale 1/sqrt(head_dim), seed 0, the library's thread pool, automatic tier.
/// Cannot fail.
#[no_mangle]
pub extern "C" fn smyrf_config_default() -> smyrf_config {
    // Mirrors `Config::default()` field by field (a unit test keeps the two in step); plain
    // literals, so nothing here can panic.
    smyrf_config {
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
    }
}

/// The design §8 hybrid preset for a key budget of `key_budget` keys per query (each key
/// costs d + dv multiply-adds): `key_budget / 8` sinks (chosen by mean query from 8 sinks
/// up), a window of `key_budget / 4` and one hash round with clusters of
/// `5 * key_budget / 8` queries, no residual samples; every other field as in
/// `smyrf_config_default()`. Cannot fail.
#[no_mangle]
pub extern "C" fn smyrf_config_hybrid(key_budget: u32) -> smyrf_config {
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
        let config = unsafe { config.as_ref() }.ok_or_else(|| Failure::null("config"))?;
        if out_plan.is_null() {
            return Err(Failure::null("out_plan"));
        }
        let plan = Plan::new(config_from_c(config)?, head_dim)?;
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
        let config = unsafe { config.as_ref() }.ok_or_else(|| Failure::null("config"))?;
        if projections.is_null() {
            return Err(Failure::null("projections"));
        }
        if out_plan.is_null() {
            return Err(Failure::null("out_plan"));
        }
        let config = config_from_c(config)?;
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
/// key/value head h / (Hq / Hkv)) and d equal to the plan's head_dim. `key_mask` is NULL
/// or `B * Nk` bytes (`[batch][k seq_len]`), nonzero = the key takes part; a batch element
/// without valid keys gets zeros. `lse_out` is NULL or `B * Hq * Nq` floats
/// (`[batch][q heads][q seq_len]`) that receive each query's log-sum-exp. `out` and
/// `lse_out` must not overlap each other or any input (their address ranges are compared
/// and overlap is refused). On error nothing is written.
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
    key_mask: *const u8,
    out: *mut smyrf_tensor_mut,
    lse_out: *mut f32,
) -> smyrf_status {
    entry("smyrf_attention", || {
        // SAFETY: NULL is refused; otherwise the caller guarantees a live plan.
        let plan = &unsafe { plan.as_ref() }
            .ok_or_else(|| Failure::null("plan"))?
            .plan;
        // SAFETY: forwarded caller contract for every pointer.
        let mut call = unsafe { CallBuffers::from_c(q, k, v, key_mask, out, lse_out) }?;
        let mut options = CallOptions::new();
        options.key_mask = call.mask;
        options.lse = call.lse;
        plan.attention_with(&call.q, &call.k, &call.v, &mut call.out, options)?;
        Ok(())
    })
}

/// Exact softmax attention with the same shapes, mask, grouped heads, lse output and rules
/// as `smyrf_attention`. `scale` 0 means 1/sqrt(d); it must be finite and positive
/// otherwise. Runs on the library's thread pool with the tier `SMYRF_ISA` names, or the
/// best one detected.
///
/// # Safety
/// As for `smyrf_attention`.
#[no_mangle]
pub unsafe extern "C" fn smyrf_dense_attention(
    q: *const smyrf_tensor,
    k: *const smyrf_tensor,
    v: *const smyrf_tensor,
    key_mask: *const u8,
    scale: f32,
    out: *mut smyrf_tensor_mut,
    lse_out: *mut f32,
) -> smyrf_status {
    entry("smyrf_dense_attention", || {
        let scale = scale_from_c(scale)?;
        // SAFETY: forwarded caller contract for every pointer.
        let mut call = unsafe { CallBuffers::from_c(q, k, v, key_mask, out, lse_out) }?;
        let mut options = CallOptions::new();
        options.key_mask = call.mask;
        options.lse = call.lse;
        let out_shape = call.out.shape();
        crate::dense::dense_attention_default(
            crate::dense::DenseCall {
                q: call.q.erase(),
                k: call.k.erase(),
                v: call.v.erase(),
                out_shape,
                out: call.out.rows_writer(),
                scale,
            },
            options,
        )?;
        Ok(())
    })
}

/// A static, NUL-terminated description of a status code; unknown codes get a text too.
/// Never NULL.
#[no_mangle]
pub extern "C" fn smyrf_status_message(status: u32) -> *const c_char {
    let text: &'static CStr = match status {
        0 => c"success",
        1 => c"null pointer argument",
        2 => c"invalid argument",
        3 => c"instruction set not supported by this CPU",
        4 => c"out of memory",
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

/// Shape of a C tensor view, and the checked number of elements its buffer must hold.
fn tensor_extent(
    what: &'static str,
    data_name: &'static str,
    data: *const f32,
    shape: Shape,
) -> Result<(Shape, Span, usize), Failure> {
    if data.is_null() {
        return Err(Failure::null(data_name));
    }
    let len = shape.required_len(what)?;
    Ok((shape, span(what, data, len)?, len))
}

fn shape_of(t: &smyrf_tensor) -> Shape {
    Shape {
        batch: t.batch,
        heads: t.heads,
        seq_len: t.seq_len,
        dim: t.dim,
        batch_stride: t.batch_stride,
        head_stride: t.head_stride,
        seq_stride: t.seq_stride,
    }
}

fn shape_of_mut(t: &smyrf_tensor_mut) -> Shape {
    Shape {
        batch: t.batch,
        heads: t.heads,
        seq_len: t.seq_len,
        dim: t.dim,
        batch_stride: t.batch_stride,
        head_stride: t.head_stride,
        seq_stride: t.seq_stride,
    }
}

/// The Rust views of one attention call's C arguments.
struct CallBuffers<'a> {
    q: TensorView<'a>,
    k: TensorView<'a>,
    v: TensorView<'a>,
    mask: Option<&'a [u8]>,
    out: TensorViewMut<'a>,
    lse: Option<&'a mut [f32]>,
}

impl CallBuffers<'_> {
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
        key_mask: *const u8,
        out: *mut smyrf_tensor_mut,
        lse_out: *mut f32,
    ) -> Result<Self, Failure> {
        // SAFETY: NULL is refused; otherwise the caller guarantees valid structs. They are
        // copied, so later changes by other threads cannot affect the checks below.
        let (q, k, v, out) = unsafe {
            (
                *q.as_ref().ok_or_else(|| Failure::null("q"))?,
                *k.as_ref().ok_or_else(|| Failure::null("k"))?,
                *v.as_ref().ok_or_else(|| Failure::null("v"))?,
                *out.as_ref().ok_or_else(|| Failure::null("out"))?,
            )
        };
        let (qs, q_span, q_len) = tensor_extent("q", "q->data", q.data, shape_of(&q))?;
        let (ks, k_span, k_len) = tensor_extent("k", "k->data", k.data, shape_of(&k))?;
        let (vs, v_span, v_len) = tensor_extent("v", "v->data", v.data, shape_of(&v))?;
        let (os, out_span, out_len) = tensor_extent(
            "out",
            "out->data",
            out.data.cast_const(),
            shape_of_mut(&out),
        )?;
        // Both products are below isize::MAX / 4: `required_len` bounded the full tensors.
        // The mask is `[batch][k seq_len]`; until the batches are checked equal, view no more
        // than both readings of "batch" promise (a slice past the caller's buffer would be
        // undefined behaviour even unread).
        let mask_len = qs.batch.min(ks.batch) * ks.seq_len;
        let lse_len = qs.batch * qs.heads * qs.seq_len;
        let mask_span = match key_mask.is_null() {
            true => None,
            false => Some(span("key_mask", key_mask, mask_len)?),
        };
        let lse_span = match lse_out.is_null() {
            true => None,
            false => Some(span("lse_out", lse_out.cast_const(), lse_len)?),
        };
        let all = [
            Some(q_span),
            Some(k_span),
            Some(v_span),
            mask_span,
            Some(out_span),
        ];
        for written in [Some(out_span), lse_span].into_iter().flatten() {
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
        // SAFETY: (all slices below) each pointer is non-NULL, aligned and covers the checked
        // extent its shape names, which the caller guarantees is readable (inputs) or
        // writable (outputs); the written ranges overlap nothing else, so no `&mut` aliases.
        let (q, k, v) = unsafe {
            (
                std::slice::from_raw_parts(q.data, q_len),
                std::slice::from_raw_parts(k.data, k_len),
                std::slice::from_raw_parts(v.data, v_len),
            )
        };
        // SAFETY: as above.
        let mask = (!key_mask.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(key_mask, mask_len) });
        // SAFETY: as above.
        let out = unsafe { std::slice::from_raw_parts_mut(out.data, out_len) };
        // SAFETY: as above.
        let lse = (!lse_out.is_null())
            .then(|| unsafe { std::slice::from_raw_parts_mut(lse_out, lse_len) });
        Ok(CallBuffers {
            q: TensorView::new(q, qs)?,
            k: TensorView::new(k, ks)?,
            v: TensorView::new(v, vs)?,
            mask,
            out: TensorViewMut::new(out, os)?,
            lse,
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
