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
use crate::view::{AnyView, DType, OutRows, Rows, Shape};
use std::mem::MaybeUninit;

/// Queries per dense task: each gathered key tile is reused by this many queries, and
/// B·H·Nq/256 tasks still keep every core busy.
pub(crate) const DENSE_Q_BLOCK: usize = attention::Q_BLOCK;

/// Keys per split-KV chunk of a decode call (one query per sequence): a split fixed by the
/// key count, so the merge order, and the bits, do not depend on the thread count.
pub(crate) const KV_CHUNK: usize = 4096;

/// Whether a call takes the decode path: one query per (batch, head), whose query heads
/// of one key/value head run as the rows of one task over each key chunk.
fn is_decode(shape: CallShape) -> bool {
    shape.nq == 1
}

/// Key chunks of a decode call.
fn chunks(shape: CallShape) -> usize {
    shape.nk.div_ceil(KV_CHUNK).max(1)
}

/// f32 values of one chunk's partial result of one query head: (max, sum, acc[dv]).
fn partial_len(dv: usize) -> usize {
    dv + 2
}

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
    /// A decode row's chunks merged.
    merged: Buf<f32>,
}

impl DenseScratch {
    /// One task's buffers carved from a workspace, at the lengths `dense_attention` grows
    /// them to: a query block against every key.
    fn carve(arena: &mut Arena<'_>, sizes: &CallSizes) -> DenseScratch {
        let CallShape { nq, nk, d, .. } = sizes.shape;
        let (block, keys) = if is_decode(sizes.shape) {
            (sizes.shape.group(), nk.min(KV_CHUNK))
        } else {
            (nq.min(DENSE_Q_BLOCK), nk)
        };
        let tile = TileShape {
            queries: block,
            keys,
            d,
            dv: sizes.dv,
            widen_keys: sizes.k != DType::F32,
            prefetch: false,
        };
        DenseScratch {
            tiles: TileScratch::carve(arena, &tile),
            valid: arena.buf(keys),
            members: arena.buf(block),
            row: arena.buf(sizes.dv),
            merged: arena.buf(if is_decode(sizes.shape) { sizes.dv } else { 0 }),
        }
    }
}

/// Query blocks of a dense call (of a decode call: key chunks of each key/value head): its
/// tasks.
fn tasks(shape: CallShape) -> usize {
    if is_decode(shape) {
        shape.batch * shape.kv_heads * chunks(shape)
    } else {
        shape.batch * shape.q_heads * shape.nq.div_ceil(DENSE_Q_BLOCK)
    }
}

/// The partial results of a decode call with more than one chunk, per (b, h, chunk).
fn partials_len(sizes: &CallSizes) -> usize {
    let shape = sizes.shape;
    if is_decode(shape) && chunks(shape) > 1 {
        shape.batch * shape.q_heads * chunks(shape) * partial_len(sizes.dv)
    } else {
        0
    }
}

/// The workspace layout of a dense call: a task set for each task that can run at once,
/// and a decode call's partial results.
fn layout<'a>(arena: &mut Arena<'a>, sizes: &CallSizes) -> (FixedPool<'a, DenseScratch>, Buf<f32>) {
    // A split decode merges its chunks in a second loop, over (b, query head) tasks, which
    // may outnumber the chunk tasks.
    let merges = if partials_len(sizes) > 0 {
        sizes.shape.batch * sizes.shape.q_heads
    } else {
        0
    };
    let sets = sizes.workers.min(tasks(sizes.shape).max(merges));
    let partials = arena.buf(partials_len(sizes));
    (
        FixedPool::carve(arena, sets, |arena| DenseScratch::carve(arena, sizes)),
        partials,
    )
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
    let (fixed, mut partials) = match carved {
        Some((pool, partials)) => (Some(pool), partials),
        None => (None, Buf::default()),
    };
    let pool = fixed
        .as_ref()
        .map_or(PoolRef::Heap(scratch), PoolRef::Fixed);
    let lse = lse.map(SharedSlice::new);
    if is_decode(shape) {
        partials.clear();
        partials.resize(partials_len(&sizes), 0.0);
        let decode = Decode {
            kernels,
            call: &call,
            shape,
            dv: sizes.dv,
            scale,
            key_mask,
            key_lengths,
            head_sinks,
            lse: lse.as_ref(),
        };
        decode.run(par, pool, SharedSlice::new(&mut partials));
        return Ok(());
    }
    let blocks = shape.nq.div_ceil(DENSE_Q_BLOCK);
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
            ..
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
) -> Result<(FixedPool<'a, DenseScratch>, Buf<f32>)> {
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

/// One decode call (one query per (batch, head)): per (b, key/value head, key chunk) a task
/// attends the group's query heads, as the rows of one call, to the chunk's visible keys;
/// with several chunks the partial results are merged per query head in chunk order.
struct Decode<'a> {
    kernels: DenseKernels,
    call: &'a DenseCall<'a>,
    shape: CallShape,
    dv: usize,
    scale: f32,
    key_mask: Option<&'a [u8]>,
    key_lengths: Option<&'a [u32]>,
    head_sinks: Option<&'a [f32]>,
    lse: Option<&'a SharedSlice<'a>>,
}

impl Decode<'_> {
    fn run(&self, par: Par<'_>, pool: PoolRef<'_, DenseScratch>, partials: SharedSlice<'_>) {
        let shape = self.shape;
        let (n_chunks, group, dv) = (chunks(shape), shape.group(), self.dv);
        let (kern, loads) = (self.kernels.attention, self.kernels.loads);
        let part = partial_len(dv);
        for_each_index_with(par, tasks(shape), pool, |s, task| {
            let (bk, chunk) = (task / n_chunks, task % n_chunks);
            let (b, hk) = (bk / shape.kv_heads, bk % shape.kv_heads);
            let h0 = hk * group;
            // The chunk's valid keys that the query sees.
            let limit = KeyLimit::of(b, shape.nk, self.key_mask, self.key_lengths);
            let mut end = ((chunk + 1) * KV_CHUNK).min(shape.nk);
            if let Some(last) = shape.last_visible(0) {
                end = end.min(last as usize + 1);
            }
            if let Some(len) = limit.length {
                end = end.min(len as usize);
            }
            let start = (chunk * KV_CHUNK).min(end);
            s.valid.clear();
            match limit.mask {
                None => s.valid.extend(start as u32..end as u32),
                Some(mask) => s
                    .valid
                    .extend((start..end).filter(|&j| mask[j] != 0).map(|j| j as u32)),
            }
            let DenseScratch {
                tiles,
                valid,
                members,
                row,
                ..
            } = s;
            members.clear();
            members.extend(0..group as u32);
            let mut store = |i: usize, max: f32, sum: f32, acc: Option<&[f32]>| {
                let h = h0 + i;
                if n_chunks == 1 {
                    // SAFETY: this task alone owns the rows of (b, h0..h0 + group).
                    unsafe {
                        self.emit(row, b, h, max, sum, &|r| match acc {
                            Some(acc) => (kern.scale_store)(r, acc, 1.0 / sum, false),
                            None => r.fill(0.0),
                        })
                    };
                    return;
                }
                let at = ((b * shape.q_heads + h) * n_chunks + chunk) * part;
                // SAFETY: the entries of (b, h, chunk) are this task's alone.
                let slot = unsafe { partials.range(at, part) };
                // A chunk without keys is marked by a negative sum.
                slot[0] = max;
                slot[1] = if acc.is_some() { sum } else { -1.0 };
                if let Some(acc) = acc {
                    slot[2..].copy_from_slice(acc);
                }
            };
            if valid.is_empty() {
                for i in 0..group {
                    store(i, f32::NEG_INFINITY, 0.0, None);
                }
                return;
            }
            // The group's query rows, one per head, at the heads' stride: one pass over the
            // chunk's keys serves every query head that reads them.
            let q_shape = self.call.q.shape;
            let rows = Rows {
                base: q_shape.row_offset(b, h0, 0),
                stride: q_shape.head_stride,
                ..self.call.q.head_rows(b, h0)
            };
            let (kr, vr) = (self.call.k.head_rows(b, hk), self.call.v.head_rows(b, hk));
            attention::attend(
                kern,
                &loads,
                tiles,
                rows,
                members,
                kr,
                vr,
                valid,
                self.scale,
                None,
                |i, result| store(i, result.max, result.sum, Some(result.acc)),
            );
        });
        if n_chunks == 1 {
            return;
        }
        for_each_index_with(par, shape.batch * shape.q_heads, pool, |s, bh| {
            let (b, h) = (bh / shape.q_heads, bh % shape.q_heads);
            let DenseScratch { row, merged, .. } = s;
            merged.clear();
            merged.resize(dv, 0.0);
            let (mut max, mut sum, mut seen) = (f32::NEG_INFINITY, 0.0f32, false);
            for chunk in 0..n_chunks {
                // SAFETY: the first phase is over; row (b, h) is this task's alone.
                let slot = unsafe { partials.range((bh * n_chunks + chunk) * part, part) };
                let (m, z) = (slot[0], slot[1]);
                seen |= z >= 0.0;
                if z <= 0.0 {
                    continue;
                }
                if sum == 0.0 {
                    (kern.scale_store)(merged, &slot[2..], 1.0 / z, false);
                    (max, sum) = (m, z);
                } else {
                    crate::attention::merge::merge_row(
                        kern,
                        merged,
                        &mut max,
                        &mut sum,
                        &slot[2..],
                        m,
                        z,
                    );
                }
            }
            let merged = &*merged;
            // Keys whose logits were all −∞ leave NaN, as the one-chunk call does (0/0).
            let fill = |r: &mut [f32]| match (sum > 0.0, seen) {
                (true, _) => r.copy_from_slice(merged),
                (false, true) => r.fill(f32::NAN),
                (false, false) => r.fill(0.0),
            };
            // SAFETY: this task alone owns row (b, h).
            unsafe { self.emit(row, b, h, max, sum, &fill) };
        });
    }

    /// Writes query 0 of (b, h) and its lse.
    ///
    /// # Safety
    /// No other reference to row (b, h, 0) or its lse entry may be live.
    unsafe fn emit(
        &self,
        row: &mut Buf<f32>,
        b: usize,
        h: usize,
        max: f32,
        sum: f32,
        fill: &dyn Fn(&mut [f32]),
    ) {
        row.resize(self.dv, 0.0);
        let sink = self.head_sinks.map_or(f32::NEG_INFINITY, |sinks| sinks[h]);
        let cvt = self.kernels.loads.convert;
        // SAFETY: forwarded.
        let lse_value =
            unsafe { emit_row(&self.call.out, cvt, b, h, 0, row, sink, max, sum, fill) };
        if let Some(lse) = self.lse {
            // SAFETY: as above, for its lse entry.
            unsafe { lse.set(b * self.shape.q_heads + h, lse_value) };
        }
    }
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
