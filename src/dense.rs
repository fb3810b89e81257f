//! Exact dense attention (design §1, last paragraph): the test reference, the benchmark
//! baseline, and what SMYRF reduces to with one cluster. Blocked with an online softmax, so
//! no Nq × Nk buffer ever exists.

use crate::attention::{self, AttentionKernels, TileScratch};
use crate::call::{check_call, valid_keys, SharedSlice};
use crate::config::{effective_scale, validate_scale};
use crate::error::Result;
use crate::runtime::pool::Pool;
use crate::runtime::threads::for_each_index_with;
use crate::simd::Tier;
use crate::view::head_rows;
use crate::view::{TensorView, TensorViewMut};

/// Queries per dense task: each gathered key tile is reused by this many queries, and
/// B·H·Nq/256 tasks still keep every core busy.
pub(crate) const DENSE_Q_BLOCK: usize = attention::Q_BLOCK;

/// Dense attention with the tier `SMYRF_ISA` names (or the best one detected) on rayon's
/// global pool: the C entry point without a plan.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_attention_default(
    q: &TensorView<'_>,
    k: &TensorView<'_>,
    v: &TensorView<'_>,
    key_mask: Option<&[u8]>,
    scale: Option<f32>,
    out: &mut TensorViewMut<'_>,
    lse: Option<&mut [f32]>,
) -> Result<()> {
    let kern = attention::kernels(Tier::resolve(None)?);
    let tiles = Pool::default();
    dense_attention(kern, &tiles, true, q, k, v, key_mask, scale, out, lse)
}

/// softmax(scale · Q·Kᵀ) V over the valid keys, with the same views, mask, GQA and lse
/// output as SMYRF attention. `scale` `None` means 1/sqrt(d). The tasks run in
/// parallel on the current rayon pool when `parallel` is set.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense_attention(
    kern: &AttentionKernels,
    tiles: &Pool<TileScratch>,
    parallel: bool,
    q: &TensorView<'_>,
    k: &TensorView<'_>,
    v: &TensorView<'_>,
    key_mask: Option<&[u8]>,
    scale: Option<f32>,
    out: &mut TensorViewMut<'_>,
    lse: Option<&mut [f32]>,
) -> Result<()> {
    validate_scale(scale)?;
    let shape = check_call(q, k, v, key_mask, out, lse.as_deref())?;
    let scale = effective_scale(scale, shape.d);
    let valid = valid_keys(&shape, key_mask);
    let query_ids: Vec<u32> = (0..shape.nq as u32).collect();
    let blocks = shape.nq.div_ceil(DENSE_Q_BLOCK);
    let writer = out.rows_writer();
    let lse = lse.map(SharedSlice::new);
    for_each_index_with(
        parallel,
        shape.batch * shape.q_heads * blocks,
        tiles,
        |tiles, task| {
            let (bh, block) = (task / blocks, task % blocks);
            let (b, h) = (bh / shape.q_heads, bh % shape.q_heads);
            let hk = h / shape.group();
            let q0 = block * DENSE_Q_BLOCK;
            let members = &query_ids[q0..(q0 + DENSE_Q_BLOCK).min(shape.nq)];
            let lse_base = bh * shape.nq + q0;
            let keys = &valid[b];
            if keys.is_empty() {
                for (i, &qi) in members.iter().enumerate() {
                    // SAFETY: this task alone owns these rows and lse entries.
                    unsafe { writer.row(b, h, qi as usize) }.fill(0.0);
                    if let Some(lse) = &lse {
                        // SAFETY: as above.
                        unsafe { lse.set(lse_base + i, f32::NEG_INFINITY) };
                    }
                }
                return;
            }
            let (qr, kr, vr) = (head_rows(q, b, h), head_rows(k, b, hk), head_rows(v, b, hk));
            attention::attend(
                kern,
                tiles,
                qr,
                members,
                kr,
                vr,
                keys,
                scale,
                None,
                |i, result| {
                    // SAFETY: this task alone owns the rows and lse entries of its query block.
                    let row = unsafe { writer.row(b, h, members[i] as usize) };
                    (kern.scale_store)(row, result.acc, result.inv_sum(), false);
                    if let Some(lse) = &lse {
                        // SAFETY: as above.
                        unsafe { lse.set(lse_base + i, result.lse()) };
                    }
                },
            );
        },
    );
    Ok(())
}
