//! Exact dense attention (design §1, last paragraph): the test reference, the benchmark
//! baseline, and what SMYRF reduces to with one cluster. Blocked with an online softmax, so
//! no Nq × Nk buffer ever exists.

use crate::attention::{self, merge, AttentionKernels, Loads, TileScratch};
use crate::call::{check_call, valid_keys_into, CallOptions, KeyLimit, SharedSlice};
use crate::config::{effective_scale, validate_scale};
use crate::convert::ConvertKernels;
use crate::error::Result;
use crate::runtime::pool::Pool;
use crate::runtime::threads::{for_each_index_with, Par};
use crate::simd::Tier;
use crate::view::{AnyView, OutRows, Shape};

/// Queries per dense task: each gathered key tile is reused by this many queries, and
/// B·H·Nq/256 tasks still keep every core busy.
pub(crate) const DENSE_Q_BLOCK: usize = attention::Q_BLOCK;

/// The kernels dense attention runs.
#[derive(Clone, Copy)]
pub(crate) struct DenseKernels {
    pub(crate) attention: &'static AttentionKernels,
    pub(crate) loads: Loads,
}

impl DenseKernels {
    pub(crate) fn of(tier: Tier) -> DenseKernels {
        DenseKernels {
            attention: attention::kernels(tier),
            loads: Loads::new(tier, false),
        }
    }
}

/// The views of one dense call, element types erased.
pub(crate) struct DenseCall<'a> {
    pub(crate) q: AnyView<'a>,
    pub(crate) k: AnyView<'a>,
    pub(crate) v: AnyView<'a>,
    pub(crate) out_shape: Shape,
    pub(crate) out: OutRows<'a>,
    /// `None` means 1/sqrt(d).
    pub(crate) scale: Option<f32>,
}

/// Buffers of one dense task, reused across tasks and calls.
#[derive(Default)]
pub(crate) struct DenseScratch {
    tiles: TileScratch,
    valid: Vec<u32>,
    members: Vec<u32>,
    /// One output row in f32, for a 16-bit output.
    row: Vec<f32>,
}

/// Dense attention with the tier `SMYRF_ISA` names (or the best one detected) on rayon's
/// global pool: the C entry point without a plan.
pub(crate) fn dense_attention_default(call: DenseCall<'_>, options: CallOptions<'_>) -> Result<()> {
    let kernels = DenseKernels::of(Tier::resolve(None)?);
    let scratch = Pool::default();
    match options.parallel_for {
        Some(engine) => dense_attention(kernels, &scratch, Par::Engine(engine), call, options),
        None => dense_attention(kernels, &scratch, Par::Rayon, call, options),
    }
}

/// softmax(scale · Q·Kᵀ) V over the valid keys, with the same views, options, GQA and lse
/// output as SMYRF attention. The tasks are spread as `par` says.
pub(crate) fn dense_attention(
    kernels: DenseKernels,
    scratch: &Pool<DenseScratch>,
    par: Par<'_>,
    call: DenseCall<'_>,
    options: CallOptions<'_>,
) -> Result<()> {
    validate_scale(call.scale)?;
    let shape = check_call(
        call.q.shape,
        call.k.shape,
        call.v.shape,
        call.out_shape,
        &options,
    )?;
    let scale = effective_scale(call.scale, shape.d);
    let CallOptions {
        key_mask,
        key_lengths,
        head_sinks,
        lse,
        ..
    } = options;
    let blocks = shape.nq.div_ceil(DENSE_Q_BLOCK);
    let lse = lse.map(SharedSlice::new);
    let (kern, loads, dv) = (kernels.attention, kernels.loads, call.v.shape.dim);
    let cvt = loads.convert;
    let out = &call.out;
    for_each_index_with(
        par,
        shape.batch * shape.q_heads * blocks,
        scratch,
        |s, task| {
            let (bh, block) = (task / blocks, task % blocks);
            let (b, h) = (bh / shape.q_heads, bh % shape.q_heads);
            let hk = h / shape.group();
            let q0 = block * DENSE_Q_BLOCK;
            let q1 = (q0 + DENSE_Q_BLOCK).min(shape.nq);
            let DenseScratch {
                tiles,
                valid,
                members,
                row,
            } = s;
            members.clear();
            members.extend(q0 as u32..q1 as u32);
            let limit = KeyLimit::of(b, shape.nk, key_mask, key_lengths);
            valid_keys_into(shape.nk, limit, valid);
            row.resize(dv, 0.0);
            let sink = head_sinks.map_or(f32::NEG_INFINITY, |sinks| sinks[h]);
            let lse_base = bh * shape.nq + q0;
            let mut emit = |i: usize, max: f32, sum: f32, fill: &dyn Fn(&mut [f32])| {
                // SAFETY: this task alone owns the rows of its query block.
                let lse_value =
                    unsafe { emit_row(out, cvt, b, h, q0 + i, row, sink, max, sum, fill) };
                if let Some(lse) = &lse {
                    // SAFETY: as above, for its lse entries.
                    unsafe { lse.set(lse_base + i, lse_value) };
                }
            };
            if valid.is_empty() {
                for i in 0..q1 - q0 {
                    emit(i, f32::NEG_INFINITY, 0.0, &|r| r.fill(0.0));
                }
                return;
            }
            let (qr, kr, vr) = (
                call.q.head_rows(b, h),
                call.k.head_rows(b, hk),
                call.v.head_rows(b, hk),
            );
            attention::attend(
                kern,
                &loads,
                tiles,
                qr,
                members,
                kr,
                vr,
                valid,
                scale,
                None,
                |i, result| {
                    emit(i, result.max, result.sum, &|r| {
                        (kern.scale_store)(r, result.acc, result.inv_sum(), false)
                    });
                },
            );
        },
    );
    Ok(())
}

/// Writes output row (b, h, qi): `fill` normalises it (in place when the output is f32, else
/// into `row`), the head sink is merged, a 16-bit output is rounded; returns its lse.
///
/// # Safety
/// No other reference to row (b, h, qi) may be live.
#[allow(clippy::too_many_arguments)]
unsafe fn emit_row(
    out: &OutRows<'_>,
    cvt: &ConvertKernels,
    b: usize,
    h: usize,
    qi: usize,
    row: &mut [f32],
    sink: f32,
    mut max: f32,
    mut sum: f32,
    fill: &dyn Fn(&mut [f32]),
) -> f32 {
    // SAFETY: (each arm) the caller's exclusive access to the row.
    unsafe {
        match out {
            OutRows::F32(w) => {
                let target = w.row(b, h, qi);
                fill(target);
                merge::merge_sink(target, &mut max, &mut sum, sink);
            }
            OutRows::F16(w) | OutRows::Bf16(w) => {
                fill(row);
                merge::merge_sink(row, &mut max, &mut sum, sink);
                let narrow = match out {
                    OutRows::F16(_) => cvt.narrow_f16,
                    _ => cvt.narrow_bf16,
                };
                narrow(row, w.row(b, h, qi));
            }
        }
    }
    max + sum.ln()
}
