//! Exact dense attention (design §1, last paragraph): the test reference, the benchmark
//! baseline, and what SMYRF reduces to with one cluster. Blocked with an online softmax, so
//! no Nq × Nk buffer ever exists.

use crate::attention::{self, merge, AttentionKernels, Loads, TileScratch, TileShape};
use crate::call::{
    extend_valid_keys, mask_future, CallOptions, CallShape, CallSizes, KeyLimit, SharedSlice,
};
use crate::config::{effective_scale, validate_scale};
use crate::convert::ConvertKernels;
use crate::error::{Error, Result};
use crate::runtime::arena::Arena;
use crate::runtime::buffer::Buf;
use crate::runtime::pool::{FixedPool, Pool, PoolRef};
use crate::runtime::threads::{for_each_index_with, Par};
use crate::simd::Tier;
use crate::view::{AnyView, DType, OutRows, Shape};
use std::mem::MaybeUninit;

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

/// Buffers of one dense task, reused across tasks and calls, or carved from a call's
/// workspace.
#[derive(Default)]
pub(crate) struct DenseScratch {
    tiles: TileScratch,
    valid: Buf<u32>,
    members: Buf<u32>,
    /// One output row in f32, for a 16-bit output.
    row: Buf<f32>,
}

impl DenseScratch {
    /// One task's buffers carved from a workspace, at the lengths `dense_attention` grows
    /// them to: a query block against every key.
    fn carve(arena: &mut Arena<'_>, sizes: &CallSizes) -> DenseScratch {
        let CallShape { nq, nk, d, .. } = sizes.shape;
        let block = nq.min(DENSE_Q_BLOCK);
        let tile = TileShape {
            queries: block,
            keys: nk,
            d,
            dv: sizes.dv,
            widen_keys: sizes.k != DType::F32,
            prefetch: false,
        };
        DenseScratch {
            tiles: TileScratch::carve(arena, &tile),
            valid: arena.buf(nk),
            members: arena.buf(block),
            row: arena.buf(sizes.dv),
        }
    }
}

/// Query blocks of a dense call: its tasks.
fn tasks(shape: CallShape) -> usize {
    shape.batch * shape.q_heads * shape.nq.div_ceil(DENSE_Q_BLOCK)
}

/// The workspace layout of a dense call: a task set for each task that can run at once.
fn layout<'a>(arena: &mut Arena<'a>, sizes: &CallSizes) -> FixedPool<'a, DenseScratch> {
    let sets = sizes.workers.min(tasks(sizes.shape));
    FixedPool::carve(arena, sets, |arena| DenseScratch::carve(arena, sizes))
}

/// Bytes of the workspace a dense call of these sizes needs, at any alignment.
pub(crate) fn workspace_bytes(sizes: &CallSizes) -> usize {
    let mut arena = Arena::measuring();
    layout(&mut arena, sizes);
    arena.needed()
}

/// [`workspace_bytes`] of a call of [`dense_attention_default`], checked as the call is.
pub(crate) fn default_workspace_size(
    shapes: [Shape; 4],
    types: [DType; 4],
    options: &CallOptions<'_>,
) -> Result<usize> {
    let sizes = CallSizes::check(shapes, types, options, default_par(options).workers())?;
    Ok(workspace_bytes(&sizes))
}

/// Where [`dense_attention_default`] runs: the engine's workers, or rayon's current pool.
fn default_par<'a>(options: &CallOptions<'a>) -> Par<'a> {
    options.parallel_for.map_or(Par::Rayon, Par::Engine)
}

/// Dense attention with the tier `SMYRF_ISA` names (or the best one detected) on rayon's
/// global pool: the C entry point without a plan.
pub(crate) fn dense_attention_default(call: DenseCall<'_>, options: CallOptions<'_>) -> Result<()> {
    let kernels = DenseKernels::of(Tier::resolve(None)?);
    let scratch = Pool::default();
    dense_attention(kernels, &scratch, default_par(&options), call, options)
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
    let sizes = CallSizes::check(
        [call.q.shape, call.k.shape, call.v.shape, call.out_shape],
        [
            call.q.data.dtype(),
            call.k.data.dtype(),
            call.v.data.dtype(),
            call.out.dtype(),
        ],
        &options,
        par.workers(),
    )?;
    let shape = sizes.shape;
    let scale = effective_scale(call.scale, shape.d);
    let CallOptions {
        key_mask,
        key_lengths,
        head_sinks,
        lse,
        workspace,
        ..
    } = options;
    // A workspace too small is refused here, before anything is written.
    let carved = match workspace {
        Some(workspace) => Some(carve_workspace(workspace, &sizes)?),
        None => None,
    };
    let pool = carved
        .as_ref()
        .map_or(PoolRef::Heap(scratch), PoolRef::Fixed);
    let blocks = shape.nq.div_ceil(DENSE_Q_BLOCK);
    let lse = lse.map(SharedSlice::new);
    let (kern, loads, dv) = (kernels.attention, kernels.loads, call.v.shape.dim);
    let cvt = loads.convert;
    let out = &call.out;
    for_each_index_with(par, tasks(shape), pool, |s, task| {
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
        valid.clear();
        extend_valid_keys(shape.nk, limit, valid);
        // Causal: the keys past the block's last query are no query's; the hook masks the
        // rest of each query's future (design §1, causal).
        let causal = shape.causal;
        if let Some(last) = shape.last_visible(q1 - 1) {
            let visible = valid.partition_point(|&j| j <= last);
            valid.resize(visible, 0);
        }
        row.resize(dv, 0.0);
        let sink = head_sinks.map_or(f32::NEG_INFINITY, |sinks| sinks[h]);
        let lse_base = bh * shape.nq + q0;
        let mut emit = |i: usize, max: f32, sum: f32, fill: &dyn Fn(&mut [f32])| {
            // SAFETY: this task alone owns the rows of its query block.
            let lse_value = unsafe { emit_row(out, cvt, b, h, q0 + i, row, sink, max, sum, fill) };
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
        let first_row_sees = shape.last_visible(q0);
        let future = |q_ids: &[u32], _at: usize, k_ids: &[u32], s: &mut [f32], ldk: usize| {
            // Tiles wholly at or before the block's first query need no mask.
            if let (Some(offset), Some(&last_key)) = (causal, k_ids.last()) {
                if first_row_sees.is_some_and(|sees| last_key > sees) {
                    mask_future(offset, q_ids, k_ids, s, ldk);
                }
            }
        };
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
            causal.map(|_| &future as attention::TileAdjust<'_>),
            |i, result| {
                // A causal query with no valid key at or before its position gets zeros (a
                // query that sees keys whose logits are all −∞ keeps its NaN, §2).
                let first_key = valid.first().copied().unwrap_or(u32::MAX);
                if shape
                    .last_visible(q0 + i)
                    .is_some_and(|last| first_key > last)
                {
                    emit(i, f32::NEG_INFINITY, 0.0, &|r| r.fill(0.0));
                } else {
                    emit(i, result.max, result.sum, &|r| {
                        (kern.scale_store)(r, result.acc, result.inv_sum(), false)
                    });
                }
            },
        );
    });
    Ok(())
}

/// A dense call's scratch carved from `workspace`, or `WorkspaceTooSmall` (then nothing is
/// written).
fn carve_workspace<'a>(
    workspace: &'a mut [MaybeUninit<u8>],
    sizes: &CallSizes,
) -> Result<FixedPool<'a, DenseScratch>> {
    let needed = workspace_bytes(sizes);
    if workspace.len() < needed {
        return Err(Error::WorkspaceTooSmall {
            needed,
            given: workspace.len(),
        });
    }
    // SAFETY: every buffer carved goes into an item of the returned pool, which borrows the
    // workspace for 'a and drops its items with it.
    let mut arena = unsafe { Arena::over(workspace) };
    Ok(layout(&mut arena, sizes))
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
