//! Per-cluster attention (design §1 step 5, §4): gather a cluster's rows into aligned tiles,
//! S = scale·Q·Kᵀ, online softmax across key tiles, O = P·V, per-row softmax max and sum.
//! The same driver computes dense attention (one cluster holding every key), so SMYRF with
//! one cluster and dense attention run the same arithmetic.
//!
//! Tile layout, shared by every tier's kernels:
//! - Q: `m × d`, row-major, rows of the cluster's queries;
//! - Kᵀ: `d × ldk`, the cluster's keys transposed, `ldk` = key count rounded up to 16, zero
//!   padded, so the Q·Kᵀ micro-kernel runs along keys in whole vectors;
//! - V: `n × ldv`, `ldv` = dv rounded up to 16, zero padded;
//! - S/P: `m × ldk`; acc: `m × ldv`.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
pub(crate) mod bf16;
pub(crate) mod exp;
mod generic;
pub(crate) mod merge;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;

use crate::convert::ConvertKernels;
use crate::isa::Isa;
use crate::runtime::arena::Arena;
use crate::runtime::buffer::{round_up, AlignedBuf, Buf};
use crate::runtime::prefetch::{prefetch_span, LineQueue, HINT_L1};
use crate::runtime::profile::{Stage, StageTimer};
use crate::simd::Tier;
use crate::view::{Data, RowRef, Rows};
use bf16::QkBf16Fn;

#[cfg(feature = "internals")]
pub use exp::exp_nonpositive;

/// Queries per tile: the Q tile and its S rows stay in L1/L2 while keys stream past.
pub(crate) const Q_TILE: usize = 64;
/// Queries gathered at once: larger clusters are processed in query blocks of this size, each
/// streaming the cluster's key tiles, so per-thread scratch is bounded.
pub(crate) const Q_BLOCK: usize = 256;
/// Keys per tile: larger clusters are processed in key tiles with an online softmax.
pub(crate) const K_TILE: usize = 128;
/// Padding granule of tile rows: one AVX-512 register of f32.
pub(crate) const LANES: usize = 16;

/// `s[i·ldk + j] = scale · Σ_t q[i·d + t] · kt[t·ldk + j]` for i < m, j < ldk; issues the
/// queued prefetches of `queue` while it computes.
pub(crate) type QkFn = fn(
    q: &[f32],
    kt: &[f32],
    m: usize,
    d: usize,
    ldk: usize,
    scale: f32,
    s: &mut [f32],
    queue: &mut LineQueue,
);
/// Online-softmax step on rows of `s` (m × ldk, padding already −∞): new row max, P = exp(S −
/// max) in place, `corr[i]` = exp(old max − new max), `row_sum` rescaled and increased.
pub(crate) type SoftmaxFn = fn(
    s: &mut [f32],
    m: usize,
    ldk: usize,
    row_max: &mut [f32],
    row_sum: &mut [f32],
    corr: &mut [f32],
);
/// `acc[i·ldv + c] = acc[i·ldv + c]·corr[i] + Σ_{j<n} p[i·ldk + j] · v[j·ldv + c]`; with no
/// `corr` (a row block's first key tile) `acc = P·V`, and `acc` is not read. Issues the
/// queued prefetches of `queue` while it computes.
pub(crate) type PvFn = fn(
    p: &[f32],
    v: &[f32],
    m: usize,
    n: usize,
    ldk: usize,
    ldv: usize,
    corr: Option<&[f32]>,
    acc: &mut [f32],
    queue: &mut LineQueue,
);
/// In-place exp of values ≤ 0.
pub(crate) type ExpFn = fn(values: &mut [f32]);
/// `x = x·a + y·b` elementwise, with two products and a sum per element in every tier (the
/// same bits everywhere): the vector part of the pipeline's round merge.
pub(crate) type BlendFn = fn(x: &mut [f32], y: &[f32], a: f32, b: f32);
/// `x += a·y` elementwise for bf16 bit patterns y, the product rounded before the sum in
/// every tier (the same bits everywhere): one component's term of the key blocks' logit
/// bounds.
pub(crate) type AddScaledFn = fn(x: &mut [f32], y: &[u16], a: f32);
/// `row = o · scale` (a round's first output, normalised on the way), with streaming stores
/// when `stream` is set and the row lies on whole cache lines (`crate::runtime::stream::can_stream`);
/// the caller fences (`crate::runtime::stream::fence`) after streaming.
pub(crate) type ScaleStoreFn = fn(row: &mut [f32], o: &[f32], scale: f32, stream: bool);
/// One query's result from [`attend`]: its output row is `acc / sum` and its log-sum-exp
/// `max + ln(sum)`, computed by whoever needs them (the SMYRF rounds merge without either).
#[derive(Clone, Copy)]
pub(crate) struct RowResult<'a> {
    /// The unnormalised output row: Σ_j e^(s_j − max) · v_j.
    pub(crate) acc: &'a [f32],
    /// The row's largest scaled logit.
    pub(crate) max: f32,
    /// Σ_j e^(s_j − max).
    pub(crate) sum: f32,
}

impl RowResult<'_> {
    /// The normalisation factor of `acc`.
    #[inline(always)]
    pub(crate) fn inv_sum(&self) -> f32 {
        1.0 / self.sum
    }
}

/// Transposes coordinates t0..t0+16 of 16 key rows into 16 rows of `dst` at stride `ldk`
/// (the Kᵀ tile), where a tier has a vector transpose.
pub(crate) type Transpose16Fn = fn(rows: &[&[f32]; 16], t0: usize, dst: &mut [f32], ldk: usize);

/// One tier's attention kernels.
#[derive(Clone, Copy)]
pub(crate) struct AttentionKernels {
    pub(crate) qk: QkFn,
    pub(crate) softmax: SoftmaxFn,
    pub(crate) pv: PvFn,
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub(crate) exp: ExpFn,
    pub(crate) blend: BlendFn,
    pub(crate) add_scaled: AddScaledFn,
    pub(crate) scale_store: ScaleStoreFn,
    pub(crate) transpose16: Option<Transpose16Fn>,
    /// Multiply-adds per register-tile step of the Q·Kᵀ kernel.
    pub(crate) macs_per_step: usize,
}

const PORTABLE: AttentionKernels = AttentionKernels {
    qk: portable::qk_portable_4x16,
    softmax: portable::softmax,
    pv: portable::pv_portable_4x16,
    exp: portable::exp_in_place,
    blend: portable::blend,
    add_scaled: portable::add_scaled,
    scale_store: portable::scale_store,
    transpose16: None,
    macs_per_step: portable::MACS_PER_STEP,
};

#[cfg(target_arch = "x86_64")]
const AVX2: AttentionKernels = AttentionKernels {
    qk: avx2::qk_avx2_6x16,
    softmax: avx2::softmax,
    pv: avx2::pv_avx2_6x16,
    exp: avx2::exp_in_place,
    blend: avx2::blend,
    add_scaled: avx2::add_scaled,
    scale_store: avx2::scale_store,
    transpose16: None,
    macs_per_step: avx2::MACS_PER_STEP,
};

#[cfg(target_arch = "x86_64")]
const AVX512: AttentionKernels = AttentionKernels {
    qk: avx512::qk_avx512_12x32,
    softmax: avx512::softmax,
    pv: avx512::pv_avx512_6x64,
    exp: avx512::exp_in_place,
    blend: avx512::blend,
    add_scaled: avx512::add_scaled,
    scale_store: avx512::scale_store,
    transpose16: Some(avx512::transpose16),
    macs_per_step: avx512::MACS_PER_STEP,
};

#[cfg(target_arch = "aarch64")]
const NEON: AttentionKernels = AttentionKernels {
    qk: neon::qk_neon_8x8,
    softmax: neon::softmax,
    pv: neon::pv_neon_8x8,
    exp: neon::exp_in_place,
    blend: neon::blend,
    add_scaled: neon::add_scaled,
    scale_store: neon::scale_store,
    transpose16: None,
    macs_per_step: neon::MACS_PER_STEP,
};

/// The kernels of a tier. A [`Tier`] exists only for a tier the CPU supports, so no entry of
/// the table runs where its instructions are missing.
pub(crate) fn kernels(tier: Tier) -> &'static AttentionKernels {
    match tier.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &AVX2,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &AVX512,
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => &NEON,
        _ => &PORTABLE,
    }
}

/// How the tiles load rows: the conversions of 16-bit rows to f32, and, when set, the bf16
/// dot-product kernel that takes bf16 queries and keys as they are.
#[derive(Clone, Copy)]
pub(crate) struct Loads {
    pub(crate) convert: &'static ConvertKernels,
    pub(crate) bf16_dot: Option<QkBf16Fn>,
}

impl Loads {
    /// The loads of a tier; `bf16_exact` turns the dot-product kernel off.
    pub(crate) fn new(tier: Tier, bf16_exact: bool) -> Loads {
        Loads {
            convert: crate::convert::kernels(tier),
            bf16_dot: if bf16_exact { None } else { bf16::kernel(tier) },
        }
    }
}

/// The tile buffers and prefetch queue of one running cluster, owned by the plan and reused
/// across clusters and calls (they only grow, so nothing is allocated once the largest
/// cluster has been seen), or carved from a call's workspace.
#[derive(Default)]
pub(crate) struct TileScratch {
    /// The lines of the next cluster, prefetched by this cluster's kernels.
    pub(crate) queue: LineQueue,
    q: AlignedBuf,
    kt: AlignedBuf,
    v: AlignedBuf,
    s: AlignedBuf,
    acc: AlignedBuf,
    row_max: Buf<f32>,
    row_sum: Buf<f32>,
    corr: Buf<f32>,
    /// 16-bit key rows of one transpose block, widened.
    stage: Buf<f32>,
    /// The bf16 Q tile of the dot-product kernel (`bf16` module layout); its Kᵀ tile is
    /// `kt`, as 32-bit pairs.
    q16: Buf<u16>,
}

/// The largest [`attend`] calls a set of tiles serves: what its buffers are carved for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileShape {
    /// Queries of one call (more are split into blocks of `Q_BLOCK`).
    pub(crate) queries: usize,
    /// Keys of one call (more are streamed in tiles of `K_TILE`).
    pub(crate) keys: usize,
    pub(crate) d: usize,
    pub(crate) dv: usize,
    /// The key rows are 16-bit: they are widened through a staging block.
    pub(crate) widen_keys: bool,
    /// The caller refills the prefetch queue (the cluster rounds do, the other callers not).
    pub(crate) prefetch: bool,
}

impl TileScratch {
    /// Tiles carved from a workspace for every [`attend`] call within `shape`: the buffer
    /// sizes of `attend_block` and `gather_keys` at their largest.
    pub(crate) fn carve(arena: &mut Arena<'_>, shape: &TileShape) -> TileScratch {
        let TileShape { d, dv, .. } = *shape;
        let m = shape.queries.min(Q_BLOCK);
        let n = shape.keys.min(K_TILE);
        let (ldk, ldv) = (round_up(n, LANES), round_up(dv, LANES));
        // Saturating: a size past `usize::MAX` must read as too large, not wrap.
        TileScratch {
            queue: LineQueue::carve(arena, shape.prefetch),
            q: arena.aligned(m.saturating_mul(d)),
            kt: arena.aligned(d.saturating_mul(ldk)),
            v: arena.aligned(n.saturating_mul(ldv)),
            s: arena.aligned(m.min(Q_TILE).saturating_mul(ldk)),
            acc: arena.aligned(m.saturating_mul(ldv)),
            row_max: arena.buf(m),
            row_sum: arena.buf(m),
            corr: arena.buf(m),
            stage: arena.buf(if shape.widen_keys { 16 * d } else { 0 }),
            // bf16 queries over bf16 keys may take the dot-product kernel's Q tile.
            q16: arena.buf(if shape.widen_keys {
                m.saturating_mul(d.saturating_add(1))
            } else {
                0
            }),
        }
    }
}

/// Bytes of tile scratch one thread uses for `m` queries per call and head dims d, dv.
/// Saturating: a bound past `usize::MAX` (possible for lengths near 2^32) reads as
/// `usize::MAX` instead of wrapping to a small number.
pub(crate) fn tile_scratch_bytes(m: usize, d: usize, dv: usize) -> usize {
    let ldv = dv.div_ceil(LANES).saturating_mul(LANES);
    let floats = [
        m.saturating_mul(d),
        d.saturating_mul(K_TILE),
        K_TILE.saturating_mul(ldv),
    ]
    .into_iter()
    .chain([Q_TILE * K_TILE, m.saturating_mul(ldv), m.saturating_mul(3)])
    .chain([LANES.saturating_mul(d)])
    // The bf16 Q tile, in f32 units: m·(d + 1) halves.
    .chain([m.saturating_mul(d.saturating_add(1)) / 2])
    .fold(0usize, usize::saturating_add);
    floats.saturating_mul(4)
}

/// A hook that edits a scaled logit tile before its softmax: called with the query ids of
/// the tile's rows, the position of its first column in the call's key list, the key ids of
/// its columns, the tile (`rows × ldk`) and `ldk`. Used to
/// add per-key log-weights and to exclude keys (−∞) without branches in the kernels.
pub(crate) type TileAdjust<'a> = &'a (dyn Fn(&[u32], usize, &[u32], &mut [f32], usize) + Sync);

/// Softmax attention of the queries `q_idx` over the keys `k_idx` (indices into the row
/// sets). For every query, in order, calls `sink(position in q_idx, result)`: the sink
/// normalises while it stores or merges (see [`RowResult`], [`ScaleStoreFn`]).
///
/// Blocking: the queries are gathered once; keys stream in tiles of `K_TILE` (each gathered
/// once, transposed) and every 64-query sub-tile is updated with an online softmax, so a
/// cluster of any size runs in bounded tiles and dense attention gathers each key tile once
/// per query block rather than once per 64 queries.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    kern: &AttentionKernels,
    loads: &Loads,
    tiles: &mut TileScratch,
    q: Rows<'_>,
    q_idx: &[u32],
    k: Rows<'_>,
    v: Rows<'_>,
    k_idx: &[u32],
    scale: f32,
    adjust: Option<TileAdjust<'_>>,
    mut sink: impl FnMut(usize, RowResult<'_>),
) {
    // Query blocks bound the per-thread scratch whatever the cluster size.
    for q0 in (0..q_idx.len()).step_by(Q_BLOCK) {
        let block = &q_idx[q0..(q0 + Q_BLOCK).min(q_idx.len())];
        attend_block(
            kern,
            loads,
            tiles,
            q,
            block,
            k,
            v,
            k_idx,
            scale,
            adjust,
            |i, result| sink(q0 + i, result),
        );
    }
}

/// [`attend`] for at most `Q_BLOCK` queries.
#[allow(clippy::too_many_arguments)]
fn attend_block(
    kern: &AttentionKernels,
    loads: &Loads,
    t: &mut TileScratch,
    q: Rows<'_>,
    q_idx: &[u32],
    k: Rows<'_>,
    v: Rows<'_>,
    k_idx: &[u32],
    scale: f32,
    adjust: Option<TileAdjust<'_>>,
    mut sink: impl FnMut(usize, RowResult<'_>),
) {
    let d = q.dim;
    let dv = v.dim;
    let ldv = round_up(dv, LANES);
    let m_total = q_idx.len();
    let n_total = k_idx.len();
    let cvt = loads.convert;
    // bf16 queries and keys go to the dot-product kernel as they are, when it is on.
    let dot = loads
        .bf16_dot
        .filter(|_| matches!((q.data, k.data), (Data::Bf16(_), Data::Bf16(_))));
    let dp = round_up(d, 2);
    {
        t.row_max.clear();
        t.row_max.resize(m_total, f32::NEG_INFINITY);
        t.row_sum.clear();
        t.row_sum.resize(m_total, 0.0);
        t.corr.resize(m_total, 0.0);
        let gather = StageTimer::start(Stage::Gather);
        if dot.is_some() {
            gather_bf16_queries(&q, q_idx, dp, &mut t.q16);
        } else {
            let q_all = t.q.get(m_total * d);
            for (i, &qi) in q_idx.iter().enumerate() {
                if let Some(&ahead) = q_idx.get(i + PREFETCH_AHEAD) {
                    prefetch_row(&q, ahead as usize);
                }
                cvt.load(q.row(qi as usize), &mut q_all[i * d..(i + 1) * d]);
            }
        }
        drop(gather);
        for k0 in (0..n_total).step_by(K_TILE) {
            let k_rows = &k_idx[k0..(k0 + K_TILE).min(n_total)];
            let n = k_rows.len();
            let ldk = round_up(n, LANES);
            let gather = StageTimer::start(Stage::Gather);
            if dot.is_some() {
                gather_bf16_keys(kern, &k, k_rows, dp, &mut t.kt, &mut t.stage);
                gather_values(cvt, &v, k_rows, &mut t.v, ldv);
            } else {
                let (kt, vt, stage) = (&mut t.kt, &mut t.v, &mut t.stage);
                gather_keys(kern, cvt, k, v, k_rows, kt, vt, stage, ldv);
            }
            drop(gather);
            let _kernels = StageTimer::start(Stage::Kernels);
            for q0 in (0..m_total).step_by(Q_TILE) {
                let m = Q_TILE.min(m_total - q0);
                let s = t.s.get(m * ldk);
                match dot {
                    Some(dot) => {
                        let q_tile = &t.q16[q0 * dp..(q0 + m) * dp];
                        let kt = as_halves(t.kt.get(dp / 2 * ldk));
                        dot(q_tile, kt, m, dp, ldk, scale, s, &mut t.queue);
                    }
                    None => {
                        let q_tile = &t.q.get(m_total * d)[q0 * d..(q0 + m) * d];
                        (kern.qk)(q_tile, t.kt.get(d * ldk), m, d, ldk, scale, s, &mut t.queue);
                    }
                }
                if let Some(adjust) = adjust {
                    adjust(&q_idx[q0..q0 + m], k0, k_rows, s, ldk);
                }
                if n < ldk {
                    for row in s.chunks_exact_mut(ldk) {
                        row[n..].fill(f32::NEG_INFINITY);
                    }
                }
                let (row_max, row_sum, corr) = (
                    &mut t.row_max[q0..q0 + m],
                    &mut t.row_sum[q0..q0 + m],
                    &mut t.corr[q0..q0 + m],
                );
                (kern.softmax)(s, m, ldk, row_max, row_sum, corr);
                let acc = &mut t.acc.get(m_total * ldv)[q0 * ldv..(q0 + m) * ldv];
                // The first key tile starts the accumulators: nothing to rescale or read.
                (kern.pv)(
                    t.s.get(m * ldk),
                    t.v.get(n * ldv),
                    m,
                    n,
                    ldk,
                    ldv,
                    (k0 > 0).then_some(&*corr),
                    acc,
                    &mut t.queue,
                );
            }
        }
        let _combine = StageTimer::start(Stage::Combine);
        let acc = t.acc.get(m_total * ldv);
        for i in 0..m_total {
            let result = RowResult {
                acc: &acc[i * ldv..i * ldv + dv],
                max: t.row_max[i],
                sum: t.row_sum[i],
            };
            sink(i, result);
        }
    }
}

/// Keys transposed per block: each block of this many keys is read row by row and written
/// one contiguous run per coordinate, so the transposition touches few cache lines at once.
const TRANSPOSE_BLOCK: usize = 8;
/// How many rows ahead the gathers prefetch: cluster rows are scattered in memory.
const PREFETCH_AHEAD: usize = 8;

/// Hints the CPU to fetch row i into L1 (a no-op off x86-64).
#[inline(always)]
fn prefetch_row(rows: &Rows<'_>, i: usize) {
    prefetch_span::<{ HINT_L1 }>(rows.row_start(i), rows.row_bytes());
}

/// Gathers keys transposed (d × ldk) and values (n × ldv), zero padded; 16-bit rows are
/// widened on the way (key rows through `stage`, one transpose block at a time).
#[allow(clippy::too_many_arguments)]
fn gather_keys(
    kern: &AttentionKernels,
    cvt: &ConvertKernels,
    k: Rows<'_>,
    v: Rows<'_>,
    k_idx: &[u32],
    kt: &mut AlignedBuf,
    vt: &mut AlignedBuf,
    stage: &mut Buf<f32>,
    ldv: usize,
) {
    let d = k.dim;
    let dv = v.dim;
    let n = k_idx.len();
    let ldk = round_up(n, LANES);
    let kt = kt.get(d * ldk);
    let vt = vt.get(n * ldv);
    let wide_rows = matches!(k.data, crate::view::Data::F32(_));
    if !wide_rows {
        stage.resize(16 * d, 0.0);
    }
    // Blocks of 16 keys go through the tier's vector transpose where it has one (16 × 16
    // values at a time, a quarter of the instructions of element moves: gathers of keys
    // already in cache, as in the §8 window tiles, run about 2× faster), the rest through
    // 8-key blocks of element moves.
    let wide = kern.transpose16.filter(|_| d >= 16);
    // One pass over blocks of keys: each block's K rows are transposed and its V rows copied
    // while the rows are in cache, and the rows a block ahead are prefetched.
    // Keys at consecutive positions are read in order, which the hardware prefetcher
    // follows; prefetch instructions for them only fill the line-fill buffers.
    let in_order = k_idx.windows(2).all(|pair| pair[1] == pair[0] + 1);
    let mut j0 = 0;
    while j0 < n {
        let block = match wide {
            Some(_) if n - j0 >= 16 => 16,
            _ => TRANSPOSE_BLOCK.min(n - j0),
        };
        if !in_order {
            for j in (j0 + PREFETCH_AHEAD..n).take(block) {
                prefetch_row(&k, k_idx[j] as usize);
                prefetch_row(&v, k_idx[j] as usize);
            }
        }
        // Consecutive positions (a decode chunk, a key block) in rows that follow each
        // other are widened and copied as one run: one conversion call per block.
        let first = k_idx[j0] as usize;
        let consecutive = k_idx[j0..j0 + block]
            .windows(2)
            .all(|pair| pair[1] == pair[0] + 1);
        // The block's key rows as f32: the caller's rows, or widened into `stage`.
        if !wide_rows {
            match consecutive.then(|| k.run(first, block)).flatten() {
                Some(run) => cvt.load(run, &mut stage[..block * d]),
                None => {
                    for (b, chunk) in stage.chunks_exact_mut(d).take(block).enumerate() {
                        cvt.load(k.row(k_idx[j0 + b] as usize), chunk);
                    }
                }
            }
        }
        let row = |b: usize| -> &[f32] {
            match k.row_f32(k_idx[j0 + b] as usize) {
                Some(row) => row,
                None => &stage[b * d..(b + 1) * d],
            }
        };
        if let (16, Some(transpose16)) = (block, wide) {
            let rows: [&[f32]; 16] = std::array::from_fn(row);
            let whole = d / 16 * 16;
            for t0 in (0..whole).step_by(16) {
                transpose16(&rows, t0, &mut kt[t0 * ldk + j0..], ldk);
            }
            transpose_by_moves(&rows, whole..d, &mut kt[j0..], ldk);
        } else if block == TRANSPOSE_BLOCK {
            let rows: [&[f32]; TRANSPOSE_BLOCK] = std::array::from_fn(row);
            transpose_by_moves(&rows, 0..d, &mut kt[j0..], ldk);
        } else {
            for j in j0..j0 + block {
                for (t, &x) in row(j - j0).iter().enumerate() {
                    kt[t * ldk + j] = x;
                }
            }
        }
        match (consecutive && ldv == dv)
            .then(|| v.run(first, block))
            .flatten()
        {
            Some(run) => cvt.load(run, &mut vt[j0 * ldv..(j0 + block) * ldv]),
            None => {
                for j in j0..j0 + block {
                    let row = &mut vt[j * ldv..(j + 1) * ldv];
                    cvt.load(v.row(k_idx[j] as usize), &mut row[..dv]);
                    row[dv..].fill(0.0);
                }
            }
        }
        j0 += block;
    }
    if n < ldk {
        for row in kt.chunks_exact_mut(ldk) {
            row[n..].fill(0.0);
        }
    }
}

/// The bf16 Q tile: each query's row, zero padded to `dp` values.
fn gather_bf16_queries(q: &Rows<'_>, q_idx: &[u32], dp: usize, q16: &mut Buf<u16>) {
    q16.clear();
    for (i, &qi) in q_idx.iter().enumerate() {
        if let Some(&ahead) = q_idx.get(i + PREFETCH_AHEAD) {
            prefetch_row(q, ahead as usize);
        }
        if let RowRef::Bf16(row) = q.row(qi as usize) {
            q16.extend_from_slice(row);
            q16.resize((i + 1) * dp, 0);
        }
    }
}

/// The bf16 Kᵀ tile of keys `k_idx` (`bf16` module layout): row p holds the pairs
/// `(k_j[2p], k_j[2p + 1])` of every key in order, zero padded to a multiple of `LANES` keys
/// and to `dp` coordinates. A pair is one 32-bit word, so this is the f32 transpose of
/// `gather_keys` over `dp / 2` words per key, moving bits only: each row is copied into
/// `stage` as words (which also aligns it), then transposed into `kt`.
fn gather_bf16_keys(
    kern: &AttentionKernels,
    k: &Rows<'_>,
    k_idx: &[u32],
    dp: usize,
    kt: &mut AlignedBuf,
    stage: &mut Buf<f32>,
) {
    let words = dp / 2;
    let n = k_idx.len();
    let ldk = round_up(n, LANES);
    let kt = kt.get(words * ldk);
    stage.resize(16 * words, 0.0);
    let wide = kern.transpose16.filter(|_| words >= 16);
    let mut j0 = 0;
    while j0 < n {
        let block = match wide {
            Some(_) if n - j0 >= 16 => 16,
            _ => TRANSPOSE_BLOCK.min(n - j0),
        };
        for j in (j0 + PREFETCH_AHEAD..n).take(block) {
            prefetch_row(k, k_idx[j] as usize);
        }
        for (b, chunk) in stage.chunks_exact_mut(words).take(block).enumerate() {
            // SAFETY: the f32 words viewed as twice as many u16 (alignment 4 ≥ 2, every bit
            // pattern valid for both), through this one exclusive borrow.
            let halves =
                unsafe { std::slice::from_raw_parts_mut(chunk.as_mut_ptr().cast::<u16>(), dp) };
            if let RowRef::Bf16(row) = k.row(k_idx[j0 + b] as usize) {
                halves[..row.len()].copy_from_slice(row);
                halves[row.len()..].fill(0);
            }
        }
        let row = |b: usize| &stage[b * words..(b + 1) * words];
        if let (16, Some(transpose16)) = (block, wide) {
            let rows: [&[f32]; 16] = std::array::from_fn(row);
            let whole = words / 16 * 16;
            for t0 in (0..whole).step_by(16) {
                transpose16(&rows, t0, &mut kt[t0 * ldk + j0..], ldk);
            }
            transpose_by_moves(&rows, whole..words, &mut kt[j0..], ldk);
        } else if block == TRANSPOSE_BLOCK {
            let rows: [&[f32]; TRANSPOSE_BLOCK] = std::array::from_fn(row);
            transpose_by_moves(&rows, 0..words, &mut kt[j0..], ldk);
        } else {
            for j in j0..j0 + block {
                for (t, &x) in row(j - j0).iter().enumerate() {
                    kt[t * ldk + j] = x;
                }
            }
        }
        j0 += block;
    }
    if n < ldk {
        for row in kt.chunks_exact_mut(ldk) {
            row[n..].fill(0.0);
        }
    }
}

/// A tile of f32 words as the u16 halves the bf16 kernel reads.
fn as_halves(words: &[f32]) -> &[u16] {
    // SAFETY: f32 storage viewed as u16 (alignment 4 ≥ 2, every bit pattern valid), shared
    // and for the same lifetime.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u16>(), 2 * words.len()) }
}

/// The V tile alone (n × ldv), widened and zero padded, with the key rows prefetched
/// ahead: what `gather_keys` does for V.
fn gather_values(
    cvt: &ConvertKernels,
    v: &Rows<'_>,
    k_idx: &[u32],
    vt: &mut AlignedBuf,
    ldv: usize,
) {
    let dv = v.dim;
    let vt = vt.get(k_idx.len() * ldv);
    for (j, &kj) in k_idx.iter().enumerate() {
        if let Some(&ahead) = k_idx.get(j + PREFETCH_AHEAD) {
            prefetch_row(v, ahead as usize);
        }
        let row = &mut vt[j * ldv..(j + 1) * ldv];
        cvt.load(v.row(kj as usize), &mut row[..dv]);
        row[dv..].fill(0.0);
    }
}

/// Coordinates `coords` of B key rows written transposed one element at a time: coordinate t
/// of row b lands in `kt[t·ldk + b]` (B constant, so the copies unroll).
fn transpose_by_moves<const B: usize>(
    rows: &[&[f32]; B],
    coords: std::ops::Range<usize>,
    kt: &mut [f32],
    ldk: usize,
) {
    for t in coords {
        for (slot, row) in kt[t * ldk..t * ldk + B].iter_mut().zip(rows) {
            *slot = row[t];
        }
    }
}
