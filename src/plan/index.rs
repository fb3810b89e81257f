//! The KV-cache index for decoding (design §10): per (batch element, key/value head) the bf16
//! bounds of every key block of the engine's cache and, per hash round, its keys sorted by
//! hash, grown as keys are appended. It copies no key or value: a decode call reads the cache
//! through views and the index.
//!
//! A decode call runs the causal §8 blocks of its queries (sinks, window span, key blocks
//! chosen by their bounds, samples) exactly as the causal prefill runs one tile of them: the
//! same candidates, scores, choice, draw and attention call, so without hash rounds its
//! outputs are the prefill's bits for the same queries. Each hash round then adds, per query,
//! the middle keys nearest its hash in that round's order (the decode form of §1 clusters).

use super::bounds::{bound_scores, widen_bounds, BF16_INF, BF16_NEG_INF};
use super::combine::{log_sum_exp, merge_row, merge_sink};
use super::hybrid::samples::{draw_samples_into, sample_seed};
use super::Plan;
use crate::alsh::{self, ProjectFn};
use crate::attention::{self, TileScratch, TileShape};
use crate::call::{expect, mask_future, CallOptions, CallSizes, SharedSlice};
use crate::config::MAX_BLOCK_SIZE;
use crate::convert::ConvertKernels;
use crate::error::{Error, Result};
use crate::runtime::arena::Arena;
use crate::runtime::buffer::Buf;
use crate::runtime::pool::{FixedPool, PoolRef};
use crate::runtime::threads::{for_each_index_with, Par};
use crate::sort::ordered_key;
use crate::view::{AnyView, DType, Element, OutRows, RowWriter, Shape, TensorView, TensorViewMut};
use std::mem::MaybeUninit;

/// The key-block bounds and hash orders of an engine's K cache, `[batch][kv_heads][capacity]`
/// keys of the plan's head dim, for decode calls of that plan (design §10).
///
/// Built empty, it grows by [`KvIndex::append`]: the prefill's keys, then each decoded
/// token's. Per key it holds `4·d / block_size` bytes of bf16 block bounds when the plan has
/// key blocks (1/16 of an f16 K/V cache at the default block size), and 8 bytes per hash
/// round (the key's hash and position, kept sorted); it never copies keys or values.
pub struct KvIndex {
    batch: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    capacity: usize,
    /// Key blocks per (batch element, key/value head); 0 when the plan has no key blocks.
    blocks: usize,
    lengths: Vec<u32>,
    /// Component t of block β of (b, h) at `((b·kv_heads + h)·d + t)·blocks + β`, bf16 bits.
    lower: Vec<u16>,
    upper: Vec<u16>,
    /// The plan's projection, transposed (`R × (d + 2)`): the hashes are the plan's.
    projections_t: Vec<f32>,
    rounds: usize,
    /// Per (b, h): the key-norm bound M_k of the lift, a power of two at least every
    /// indexed key's squared norm (0 before the first key).
    key_bound: Vec<f32>,
    /// Per (b, h, round): every indexed key as `ordered_key(hash) << 32 | position`, in
    /// one allocation of the capacity: the first `merged` ascending, the recent keys after
    /// them ascending too. Recent keys are merged in `MERGE_EVERY` at a time, so an append
    /// costs no move of the whole order.
    orders: Vec<Vec<u64>>,
    merged: Vec<usize>,
    convert: &'static ConvertKernels,
    project: ProjectFn,
}

/// Recent keys a hash order holds before they are merged into its sorted part.
const MERGE_EVERY: usize = 256;

impl std::fmt::Debug for KvIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvIndex")
            .field("batch", &self.batch)
            .field("kv_heads", &self.kv_heads)
            .field("head_dim", &self.head_dim)
            .field("block_size", &self.block_size)
            .field("capacity", &self.capacity)
            .field("rounds", &self.rounds)
            .field("lengths", &self.lengths)
            .finish_non_exhaustive()
    }
}

/// A vector of `len` copies of `value`, or `OutOfMemory`.
fn filled<T: Clone>(len: usize, value: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::OutOfMemory {
        what: "KV-cache index",
    })?;
    v.resize(len, value);
    Ok(v)
}

/// The least power of two at or above `x` (0 for 0, +∞ for +∞): the key-norm bound is a
/// function of the largest norm alone, so any history of appends gives the same hashes.
fn power_of_two_at_least(x: f32) -> f32 {
    if x.is_nan() || x <= 0.0 {
        return 0.0;
    }
    if x == f32::INFINITY {
        return x;
    }
    let bits = x.to_bits();
    if bits & 0x007F_FFFF == 0 && bits >= 0x0080_0000 {
        return x;
    }
    let exponent = (bits >> 23).max(1);
    // The next binade's first value (+∞ past the largest finite binade).
    f32::from_bits((exponent + 1) << 23)
}

/// Whether position `j` lies in `[lo, hi)`.
#[inline(always)]
fn within(key: u64, lo: usize, hi: usize) -> bool {
    let j = key as u32 as usize;
    lo <= j && j < hi
}

impl KvIndex {
    /// An empty index for `batch` sequences of `kv_heads` key/value heads, each up to
    /// `capacity` keys, for decode calls of `plan` (its head dim, block size, hash rounds
    /// and projection).
    pub fn new(plan: &Plan, batch: usize, kv_heads: usize, capacity: usize) -> Result<KvIndex> {
        for (what, n) in [
            ("index batch", batch),
            ("index kv_heads", kv_heads),
            ("index capacity", capacity),
        ] {
            if n == 0 {
                return Err(Error::ZeroSize { what });
            }
        }
        if capacity > MAX_BLOCK_SIZE {
            return Err(Error::InvalidConfig {
                field: "index capacity",
                reason: "must be at most 2^32 - 1 (positions are 32-bit)",
            });
        }
        let (head_dim, block_size) = (plan.head_dim, plan.config.key_block_size());
        let blocks = if plan.config.n_blocks > 0 {
            capacity.div_ceil(block_size)
        } else {
            0
        };
        let rounds = plan.config.n_hashes;
        let overflow = Error::SizeOverflow {
            what: "KV-cache index",
        };
        let fits = |n: usize, bytes: usize| n <= isize::MAX as usize / bytes;
        let heads = batch
            .checked_mul(kv_heads)
            .filter(|&n| fits(n, 64))
            .ok_or(overflow.clone())?;
        let len = heads
            .checked_mul(head_dim)
            .and_then(|n| n.checked_mul(blocks))
            .filter(|&n| fits(n, 2))
            .ok_or(overflow.clone())?;
        let lists = heads.checked_mul(rounds).ok_or(overflow.clone())?;
        lists
            .checked_mul(capacity)
            .filter(|&n| fits(n, 8))
            .ok_or(overflow)?;
        let mut orders = Vec::new();
        orders
            .try_reserve_exact(lists)
            .map_err(|_| Error::OutOfMemory {
                what: "KV-cache index",
            })?;
        for _ in 0..lists {
            let mut order = Vec::new();
            order
                .try_reserve_exact(capacity)
                .map_err(|_| Error::OutOfMemory {
                    what: "KV-cache index",
                })?;
            orders.push(order);
        }
        Ok(KvIndex {
            batch,
            kv_heads,
            head_dim,
            block_size,
            capacity,
            blocks,
            lengths: filled(batch, 0)?,
            lower: filled(len, BF16_INF)?,
            upper: filled(len, BF16_NEG_INF)?,
            projections_t: plan.projections_t.clone(),
            rounds,
            key_bound: filled(heads, 0.0)?,
            orders,
            merged: filled(lists, 0)?,
            convert: plan.loads.convert,
            project: plan.alsh.project,
        })
    }

    /// Keys indexed per batch element.
    pub fn lengths(&self) -> &[u32] {
        &self.lengths
    }

    /// Keys each batch element can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions per key block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Hash rounds the index keeps (the plan's `n_hashes`).
    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// Bytes the index holds: the bounds for its capacity, the hash orders as allocated and
    /// the lengths.
    pub fn memory_bytes(&self) -> usize {
        let orders: usize = self.orders.iter().map(|list| list.capacity() * 8).sum();
        (self.lower.len() + self.upper.len()) * 2
            + orders
            + self.merged.len() * std::mem::size_of::<usize>()
            + (self.lengths.len() + self.key_bound.len()) * 4
            + self.projections_t.len() * 4
    }

    /// Indexes the keys of each batch element b from its current length up to `lengths[b]`,
    /// read from `keys` (`[batch, kv_heads, ≥ lengths[b], d]`, the engine's K cache: key j at
    /// position j). A length below the current one (positions out of order), past the
    /// capacity or past the view is an error, and nothing changes.
    pub fn append<T: Element>(&mut self, keys: &TensorView<'_, T>, lengths: &[u32]) -> Result<()> {
        self.append_erased(keys.erase(), lengths)
    }

    pub(crate) fn append_erased(&mut self, keys: AnyView<'_>, lengths: &[u32]) -> Result<()> {
        let shape = keys.shape;
        self.check_cache(shape)?;
        expect("lengths (one per batch element)", self.batch, lengths.len())?;
        for (b, (&new, &old)) in lengths.iter().zip(&self.lengths).enumerate() {
            let new = new as usize;
            if new < old as usize {
                return Err(Error::IndexOrder {
                    batch: b,
                    length: new,
                    indexed: old as usize,
                });
            }
            if new > self.capacity {
                return Err(Error::IndexCapacity {
                    batch: b,
                    length: new,
                    capacity: self.capacity,
                });
            }
            if new > shape.seq_len {
                return Err(Error::KeyLength {
                    batch: b,
                    length: new as i64,
                    nk: shape.seq_len,
                });
            }
        }
        let (d, p, blocks) = (self.head_dim, self.block_size, self.blocks);
        let mut wide = vec![0.0f32; d];
        let mut hashing = Hashing::default();
        for (b, &new) in lengths.iter().enumerate() {
            let (old, new) = (self.lengths[b] as usize, new as usize);
            for h in 0..self.kv_heads {
                let rows = keys.head_rows(b, h);
                if blocks > 0 {
                    let base = (b * self.kv_heads + h) * d * blocks;
                    for j in old..new {
                        let key = match rows.row_f32(j) {
                            Some(key) => key,
                            None => {
                                self.convert.load(rows.row(j), &mut wide);
                                &wide[..]
                            }
                        };
                        let at = base + j / p;
                        for (t, &x) in key.iter().enumerate() {
                            let i = at + t * blocks;
                            widen_bounds(&mut self.lower[i], &mut self.upper[i], x);
                        }
                    }
                }
                if self.rounds > 0 && new > old {
                    self.hash_keys(rows, b, h, old, new, &mut hashing);
                }
            }
            self.lengths[b] = new as u32;
        }
        Ok(())
    }

    /// The hash orders' slot of (b, h, round r).
    fn list(&self, b: usize, h: usize, r: usize) -> usize {
        (b * self.kv_heads + h) * self.rounds + r
    }

    /// Hashes the keys `old..new` of (b, h) into every round's order: the key side of the
    /// XBOX+ lift with the key-norm bound M_k. A key whose squared norm passes M_k raises it
    /// to the next power of two and re-hashes every key of (b, h); powers of two keep that
    /// to one re-hash per doubling of the largest norm.
    fn hash_keys(
        &mut self,
        rows: crate::view::Rows<'_>,
        b: usize,
        h: usize,
        old: usize,
        new: usize,
        s: &mut Hashing,
    ) {
        let bh = b * self.kv_heads + h;
        let raw = |from: usize, s: &mut Hashing| {
            s.ids.clear();
            s.ids.extend(from as u32..new as u32);
            let n = s.ids.len();
            s.norms.clear();
            s.norms.resize(n, 0.0);
            s.hashes.clear();
            s.hashes.resize(self.rounds * n, 0.0);
            alsh::project_rows(
                self.project,
                self.convert,
                rows,
                Some(&s.ids),
                &self.projections_t,
                &mut s.norms,
                &mut s.hashes,
                &mut s.stage,
            );
        };
        raw(old, s);
        let largest = s.norms.iter().copied().fold(0.0f32, f32::max);
        let mut from = old;
        if largest > self.key_bound[bh] {
            self.key_bound[bh] = power_of_two_at_least(largest);
            if old > 0 {
                from = 0;
                raw(0, s);
            }
        }
        let width = self.head_dim + 2;
        let lift = alsh::lift_column(alsh::Side::Key, self.head_dim);
        alsh::apply_lift(
            &mut s.hashes,
            &s.norms,
            self.key_bound[bh],
            &self.projections_t,
            width,
            lift,
        );
        let n = new - from;
        for r in 0..self.rounds {
            let at = self.list(b, h, r);
            let order = &mut self.orders[at];
            if from == 0 {
                order.clear();
                self.merged[at] = 0;
            }
            // Within the capacity reserved at creation: no allocation.
            order.extend(
                s.hashes[r * n..(r + 1) * n]
                    .iter()
                    .zip(from as u32..)
                    .map(|(&x, j)| (u64::from(ordered_key(x)) << 32) | u64::from(j)),
            );
            let merged = self.merged[at];
            if order.len() - merged <= MERGE_EVERY {
                order[merged..].sort_unstable();
            } else {
                order[merged..].sort_unstable();
                // Two ascending runs: the stable sort merges them in linear time.
                order.sort();
                self.merged[at] = order.len();
            }
        }
    }

    /// Empties batch element `b` (a new sequence in its slot).
    pub fn reset(&mut self, b: usize) -> Result<()> {
        if b >= self.batch {
            return Err(Error::ShapeMismatch {
                what: "index batch element (must be below the index's batch)",
                expected: self.batch,
                found: b,
            });
        }
        let used = (self.lengths[b] as usize).div_ceil(self.block_size);
        let (d, blocks) = (self.head_dim, self.blocks);
        if blocks > 0 {
            for h in 0..self.kv_heads {
                for t in 0..d {
                    let at = ((b * self.kv_heads + h) * d + t) * blocks;
                    self.lower[at..at + used].fill(BF16_INF);
                    self.upper[at..at + used].fill(BF16_NEG_INF);
                }
            }
        }
        for h in 0..self.kv_heads {
            self.key_bound[b * self.kv_heads + h] = 0.0;
            for r in 0..self.rounds {
                let at = self.list(b, h, r);
                self.orders[at].clear();
                self.merged[at] = 0;
            }
        }
        self.lengths[b] = 0;
        Ok(())
    }

    /// A K or V cache view against the index: its batch, heads and (for K) head dim.
    fn check_cache(&self, shape: Shape) -> Result<()> {
        expect(
            "cache batch (must equal the index's batch)",
            self.batch,
            shape.batch,
        )?;
        expect(
            "cache heads (must equal the index's kv_heads)",
            self.kv_heads,
            shape.heads,
        )?;
        expect(
            "k.dim (must equal the index's head dim)",
            self.head_dim,
            shape.dim,
        )
    }
}

/// Buffers of the hashing of appended keys.
#[derive(Default)]
struct Hashing {
    ids: Vec<u32>,
    norms: Vec<f32>,
    hashes: Vec<f32>,
    stage: Buf<f32>,
}

/// Buffers of one decode task, reused across calls.
#[derive(Default)]
pub(crate) struct DecodeScratch {
    tiles: TileScratch,
    query_sum: Buf<f32>,
    wide: Buf<f32>,
    scores: Buf<f32>,
    pool: Buf<u64>,
    chosen: Buf<u32>,
    keys: Buf<u32>,
    members: Buf<u32>,
    run_max: Buf<f32>,
    run_sum: Buf<f32>,
    /// f32 rows of a 16-bit output, or of the projection of 16-bit queries.
    stage: Buf<f32>,
    proj_stage: Buf<f32>,
    eligible: Buf<u32>,
    swaps: Buf<u32>,
    /// The drawn samples by position.
    samples: Buf<u32>,
    q_norms: Buf<f32>,
    q_hashes: Buf<f32>,
    below: Buf<u64>,
    above: Buf<u64>,
}

/// Merges one attention result into a query's row and (max, sum) pair: the first result
/// that saw a key is stored, later ones blended by lse, ones that saw none skipped (a row
/// nothing reaches gets its last key, so every row is written).
fn fold(
    kern: &attention::AttentionKernels,
    row: &mut [f32],
    run_max: &mut f32,
    run_sum: &mut f32,
    result: attention::RowResult<'_>,
) {
    if result.sum == 0.0 {
        return;
    }
    if *run_max == f32::NEG_INFINITY {
        (kern.scale_store)(row, result.acc, result.inv_sum(), false);
        (*run_max, *run_sum) = (result.max, result.sum);
    } else {
        merge_row(
            kern, row, run_max, run_sum, result.acc, result.max, result.sum,
        );
    }
}

/// The `ck` keys of `middle` nearest `probe` in the union of two ascending orders, into
/// `s.keys` as positions: up to ⌊ck/2⌋ below the probe and the rest above, more below where
/// too few lie above and the other way round.
fn nearest(
    sorted: &[u64],
    recent: &[u64],
    probe: u64,
    middle: &std::ops::Range<usize>,
    ck: usize,
    s: &mut DecodeScratch,
) {
    let (lo, hi) = (middle.start, middle.end);
    let (a0, z0) = (
        sorted.partition_point(|&x| x < probe),
        recent.partition_point(|&x| x < probe),
    );
    s.below.clear();
    let (mut a, mut z) = (a0, z0);
    while s.below.len() < ck && (a > 0 || z > 0) {
        let key = if z == 0 || (a > 0 && sorted[a - 1] > recent[z - 1]) {
            a -= 1;
            sorted[a]
        } else {
            z -= 1;
            recent[z]
        };
        if within(key, lo, hi) {
            s.below.push(key);
        }
    }
    s.above.clear();
    let (mut a, mut z) = (a0, z0);
    while s.above.len() < ck && (a < sorted.len() || z < recent.len()) {
        let key = if z == recent.len() || (a < sorted.len() && sorted[a] < recent[z]) {
            a += 1;
            sorted[a - 1]
        } else {
            z += 1;
            recent[z - 1]
        };
        if within(key, lo, hi) {
            s.above.push(key);
        }
    }
    let mut take_below = s.below.len().min(ck / 2);
    let take_above = s.above.len().min(ck - take_below);
    take_below = s.below.len().min(ck - take_above);
    s.keys.clear();
    s.keys.extend(
        s.below[..take_below]
            .iter()
            .chain(&s.above[..take_above])
            .map(|&key| key as u32),
    );
}

/// What every task of one decode call shares.
struct DecodeCall<'a> {
    index: &'a KvIndex,
    q: &'a AnyView<'a>,
    k: &'a AnyView<'a>,
    v: &'a AnyView<'a>,
    out: &'a OutRows<'a>,
    head_sinks: Option<&'a [f32]>,
    lse: Option<&'a SharedSlice<'a>>,
    nq: usize,
    q_heads: usize,
    group: usize,
    /// Task t's candidate-block scores at `scores[starts[t]..]`, computed ahead in key
    /// ranges when the call has too few tasks to keep every thread busy (split-KV); empty
    /// otherwise.
    starts: &'a [usize],
    scores: Option<&'a SharedSlice<'a>>,
}

impl DecodeScratch {
    /// One task's buffers carved from a workspace, each at the largest length a decode call
    /// of these sizes grows it to: every key list holds distinct positions below the cache
    /// view's length Nk.
    fn carve(arena: &mut Arena<'_>, plan: &Plan, sizes: &CallSizes) -> DecodeScratch {
        let c = &plan.config;
        let (nq, nk, d, dv) = (sizes.shape.nq, sizes.shape.nk, sizes.shape.d, sizes.dv);
        let blocks = nk.div_ceil(c.key_block_size());
        let cluster = plan.decode_cluster_size().min(nk);
        let samples = c.n_samples.min(nk);
        let sixteen = |dtype: DType, n: usize| if dtype == DType::F32 { 0 } else { n };
        DecodeScratch {
            tiles: TileScratch::carve(
                arena,
                &TileShape {
                    queries: nq,
                    keys: nk,
                    d,
                    dv,
                    widen_keys: sizes.k != DType::F32,
                    prefetch: false,
                },
            ),
            query_sum: arena.buf(d),
            wide: arena.buf(d),
            scores: arena.buf(blocks),
            pool: arena.buf(blocks),
            chosen: arena.buf(c.n_blocks.min(blocks)),
            keys: arena.buf(nk.max(1)),
            members: arena.buf(nq),
            run_max: arena.buf(nq),
            run_sum: arena.buf(nq),
            stage: arena.buf(sixteen(sizes.out, nq.saturating_mul(dv))),
            proj_stage: arena.buf(sixteen(sizes.q, alsh::STAGE_ROWS.saturating_mul(d))),
            eligible: arena.buf(if samples > 0 { nk } else { 0 }),
            swaps: arena.buf(samples),
            samples: arena.buf(samples),
            q_norms: arena.buf(nq),
            q_hashes: arena.buf(c.n_hashes.saturating_mul(nq)),
            below: arena.buf(cluster),
            above: arena.buf(cluster),
        }
    }
}

/// The scratch of one decode call: a task set per running task, and the split-KV scores.
struct DecodePools<'a> {
    tasks: Option<FixedPool<'a, DecodeScratch>>,
    starts: Buf<usize>,
    pieces: Buf<ScorePiece>,
    scores: Buf<f32>,
}

/// Candidate blocks scored per split-KV piece: at d = 64, 64 KiB of bounds read per piece.
const SPLIT_BLOCKS: usize = 256;

/// One piece of split-KV scoring: task `task`'s candidate blocks `lo..hi`, whose scores go
/// to `scores[row..]`.
#[derive(Clone, Copy)]
struct ScorePiece {
    task: usize,
    lo: usize,
    hi: usize,
    row: usize,
}

impl Plan {
    /// Decode attention through a KV-cache index (design §10): the `Nq` queries of each
    /// batch element b (`q`, `[B, Hq, Nq, d]`) sit at the last `Nq` of its
    /// `index.lengths()[b]` indexed positions and attend causally to those keys of the
    /// cache (`k`, `v`: `[B, Hkv, ≥ length, d]`) by the plan's sinks, window and key blocks,
    /// as the causal prefill's tile of those queries does. The options may carry head
    /// sinks, an lse output, a parallel-for and a workspace (sized by
    /// [`Plan::decode_workspace_size`]); masks, key lengths and offsets belong to calls
    /// without an index. On error nothing is written.
    pub fn decode<TQ: Element, TK: Element, TV: Element, TO: Element>(
        &self,
        index: &KvIndex,
        q: &TensorView<'_, TQ>,
        k: &TensorView<'_, TK>,
        v: &TensorView<'_, TV>,
        out: &mut TensorViewMut<'_, TO>,
        options: CallOptions<'_>,
    ) -> Result<()> {
        let out_shape = out.shape();
        self.run_decode(
            index,
            q.erase(),
            k.erase(),
            v.erase(),
            out_shape,
            out.rows_writer(),
            options,
        )
    }

    /// The checks of a decode call, in the order the errors are reported.
    fn check_decode(
        &self,
        index: &KvIndex,
        sizes: &CallSizes,
        options: &CallOptions<'_>,
    ) -> Result<()> {
        self.check_decode_plan(index, sizes, options)?;
        let shape = sizes.shape;
        for (b, &len) in index.lengths.iter().enumerate() {
            let len = len as usize;
            if len > shape.nk {
                return Err(Error::KeyLength {
                    batch: b,
                    length: len as i64,
                    nk: shape.nk,
                });
            }
            if shape.nq > len {
                return Err(Error::CausalOffset {
                    nq: shape.nq,
                    nk: len,
                });
            }
        }
        Ok(())
    }

    /// The checks of a decode call that do not read the index's lengths: the options, the
    /// plan against the index, the views against both.
    fn check_decode_plan(
        &self,
        index: &KvIndex,
        sizes: &CallSizes,
        options: &CallOptions<'_>,
    ) -> Result<()> {
        let refused = [
            ("key_mask", options.key_mask.is_some()),
            ("key_lengths", options.key_lengths.is_some()),
            ("causal", options.causal || options.query_offset.is_some()),
        ];
        if let Some(&(option, _)) = refused.iter().find(|(_, set)| *set) {
            return Err(Error::OptionNeeds {
                option,
                needs: "a call without an index (a decode call is causal over each sequence's indexed keys)",
            });
        }
        let c = &self.config;
        if c.n_selected > 0 || c.sinks_use_mean_query() {
            return Err(Error::CausalBlocks);
        }
        if index.rounds != c.n_hashes {
            return Err(Error::ShapeMismatch {
                what: "index hash rounds (must equal the plan's n_hashes)",
                expected: c.n_hashes,
                found: index.rounds,
            });
        }
        let same_projection = index
            .projections_t
            .iter()
            .zip(&self.projections_t)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same_projection {
            return Err(Error::InvalidConfig {
                field: "projection",
                reason: "must be the one the index was built with (same seed or matrix)",
            });
        }
        if c.n_blocks > 0 && index.blocks == 0 {
            return Err(Error::OptionNeeds {
                option: "n_blocks",
                needs: "an index built for a plan with key blocks",
            });
        }
        if index.head_dim != self.head_dim {
            return Err(Error::HeadDimMismatch {
                plan: self.head_dim,
                found: index.head_dim,
            });
        }
        if c.n_blocks > 0 {
            expect(
                "index block_size (must equal the plan's block_size)",
                c.key_block_size(),
                index.block_size,
            )?;
        }
        let shape = sizes.shape;
        index.check_cache(Shape {
            batch: shape.batch,
            heads: shape.kv_heads,
            dim: shape.d,
            ..Shape::bhnd(1, 1, 1, 1)
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_decode(
        &self,
        index: &KvIndex,
        q: AnyView<'_>,
        k: AnyView<'_>,
        v: AnyView<'_>,
        out_shape: Shape,
        out: OutRows<'_>,
        options: CallOptions<'_>,
    ) -> Result<()> {
        let sizes = CallSizes::check(
            [q.shape, k.shape, v.shape, out_shape],
            [q.data.dtype(), k.data.dtype(), v.data.dtype(), out.dtype()],
            &options,
            self.workers(&options),
        )?;
        if sizes.shape.d != self.head_dim {
            return Err(Error::HeadDimMismatch {
                plan: self.head_dim,
                found: sizes.shape.d,
            });
        }
        self.check_decode(index, &sizes, &options)?;
        let shape = sizes.shape;
        let CallOptions {
            head_sinks,
            lse,
            parallel_for: engine,
            ..
        } = options;
        let lse = lse.map(SharedSlice::new);
        let tasks = shape.batch * shape.q_heads;
        let mut pools = match options.workspace {
            Some(workspace) => self.carve_decode(workspace, &sizes)?,
            None => DecodePools {
                tasks: None,
                starts: Buf::default(),
                pieces: Buf::default(),
                scores: Buf::default(),
            },
        };
        // Split-KV: with fewer tasks than twice the threads, the candidate-block scores (the
        // work that grows with the context) are computed ahead in pieces of key blocks. Each
        // block's score is its own sum, so the pieces give the bits one pass gives.
        let mut total = 0;
        let workers = sizes.workers;
        if self.splits_scores(tasks, workers) {
            for task in 0..tasks {
                pools.starts.push(total);
                let b = task / shape.q_heads;
                if let Some((lo, hi)) = self.scored_blocks(index, b, shape.nq) {
                    let per = (hi - lo + 1)
                        .div_ceil((2 * workers).div_ceil(tasks))
                        .max(SPLIT_BLOCKS);
                    for at in (lo..=hi).step_by(per) {
                        pools.pieces.push(ScorePiece {
                            task,
                            lo: at,
                            hi: (at + per).min(hi + 1),
                            row: total + at - lo,
                        });
                    }
                    total += hi - lo + 1;
                }
            }
        }
        pools.scores.resize(total, 0.0);
        let DecodePools {
            tasks: fixed,
            starts,
            pieces,
            mut scores,
        } = pools;
        let pool = match &fixed {
            Some(fixed) => PoolRef::Fixed(fixed),
            None => PoolRef::Heap(&self.decode),
        };
        let scores = SharedSlice::new(&mut scores);
        let call = DecodeCall {
            index,
            q: &q,
            k: &k,
            v: &v,
            out: &out,
            head_sinks,
            lse: lse.as_ref(),
            nq: shape.nq,
            q_heads: shape.q_heads,
            group: shape.group(),
            starts: &starts,
            scores: (!pieces.is_empty()).then_some(&scores),
        };
        // One task per (b, query head), query heads of one key/value head adjacent; each
        // task's choices and sums run on its thread, so the bits do not depend on the count.
        let job = |par: Par<'_>| {
            if !pieces.is_empty() {
                for_each_index_with(par, pieces.len(), pool, |s, at| {
                    self.score_piece(&call, pieces[at], &scores, s);
                });
            }
            for_each_index_with(par, tasks, pool, |s, task| {
                let (b, h) = (task / shape.q_heads, task % shape.q_heads);
                self.decode_head(&call, b, h, s);
            })
        };
        match engine {
            Some(engine) => job(Par::Engine(engine)),
            None => self.threads.run(job),
        }
        Ok(())
    }

    /// Whether a call of `tasks` (sequence, query head) tasks on `workers` threads scores
    /// its candidate blocks ahead, in split-KV pieces.
    fn splits_scores(&self, tasks: usize, workers: usize) -> bool {
        self.config.n_blocks > 0 && workers > 1 && tasks < 2 * workers
    }

    /// The workspace layout of a decode call: a task set per task that runs at once, and
    /// the split-KV lists at their largest (every task scoring every block of a cache view
    /// of Nk keys). Measuring, it counts the bytes; carving, it builds them.
    fn decode_layout<'a>(&self, arena: &mut Arena<'a>, sizes: &CallSizes) -> DecodePools<'a> {
        let shape = sizes.shape;
        let tasks = shape.batch * shape.q_heads;
        let split = self.splits_scores(tasks, sizes.workers);
        let blocks = shape.nk.div_ceil(self.config.key_block_size());
        let per_task = |n: usize| if split { tasks.saturating_mul(n) } else { 0 };
        // The split-KV pieces run as a loop of their own, which may have more tasks.
        let pieces = per_task(blocks.div_ceil(SPLIT_BLOCKS));
        let fixed = FixedPool::carve(arena, sizes.workers.min(tasks.max(pieces)), |arena| {
            DecodeScratch::carve(arena, self, sizes)
        });
        DecodePools {
            tasks: Some(fixed),
            starts: arena.buf(per_task(1)),
            pieces: arena.buf(pieces),
            scores: arena.buf(per_task(blocks)),
        }
    }

    /// The decode call's scratch carved from `workspace`, or `WorkspaceTooSmall` (then
    /// nothing is written).
    fn carve_decode<'a>(
        &self,
        workspace: &'a mut [MaybeUninit<u8>],
        sizes: &CallSizes,
    ) -> Result<DecodePools<'a>> {
        let needed = self.decode_bytes(sizes);
        if workspace.len() < needed {
            return Err(Error::WorkspaceTooSmall {
                needed,
                given: workspace.len(),
            });
        }
        // SAFETY: every buffer carved goes into the returned pools, which borrow the
        // workspace for 'a and drop their items with them.
        let mut arena = unsafe { Arena::over(workspace) };
        Ok(self.decode_layout(&mut arena, sizes))
    }

    fn decode_bytes(&self, sizes: &CallSizes) -> usize {
        let mut arena = Arena::measuring();
        self.decode_layout(&mut arena, sizes);
        arena.needed()
    }

    /// Bytes of the workspace (see [`CallOptions::workspace`]) with which
    /// [`Plan::decode`] on these views and options allocates nothing, at any alignment. It
    /// depends on the shapes (the cache views' length Nk bounds every sequence), the element
    /// types, the plan and the options' `parallel_for`, not on the data or the index's
    /// lengths, so one workspace serves every step of a generation over the same views.
    pub fn decode_workspace_size<TQ: Element, TK: Element, TV: Element, TO: Element>(
        &self,
        index: &KvIndex,
        q: &TensorView<'_, TQ>,
        k: &TensorView<'_, TK>,
        v: &TensorView<'_, TV>,
        out: &TensorViewMut<'_, TO>,
        options: &CallOptions<'_>,
    ) -> Result<usize> {
        self.decode_workspace_size_of(
            index,
            [q.shape(), k.shape(), v.shape(), out.shape()],
            [TQ::DTYPE, TK::DTYPE, TV::DTYPE, TO::DTYPE],
            options,
        )
    }

    /// [`Plan::decode_workspace_size`] from the tensors' shapes and element types alone.
    pub(crate) fn decode_workspace_size_of(
        &self,
        index: &KvIndex,
        shapes: [Shape; 4],
        types: [DType; 4],
        options: &CallOptions<'_>,
    ) -> Result<usize> {
        let sizes = CallSizes::check(shapes, types, options, self.workers(options))?;
        if sizes.shape.d != self.head_dim {
            return Err(Error::HeadDimMismatch {
                plan: self.head_dim,
                found: sizes.shape.d,
            });
        }
        self.check_decode_plan(index, &sizes, options)?;
        Ok(self.decode_bytes(&sizes))
    }

    /// The candidate blocks `lo..=hi` that the queries of sequence b score, when there are
    /// more than `n_blocks` of them (else they are all taken, unscored).
    fn scored_blocks(&self, index: &KvIndex, b: usize, nq: usize) -> Option<(usize, usize)> {
        let c = &self.config;
        let len = index.lengths[b] as usize;
        let sinks = c.n_sinks.min(len);
        let middle_end = sinks.max((len - nq + 1).saturating_sub(c.window));
        let p = c.key_block_size();
        if c.n_blocks == 0 || sinks >= middle_end {
            return None;
        }
        let (lo, hi) = (sinks / p, (middle_end - 1) / p);
        (hi - lo + 1 > c.n_blocks).then_some((lo, hi))
    }

    /// The scores of one split-KV piece into its task's row of `scores`.
    fn score_piece(
        &self,
        call: &DecodeCall<'_>,
        piece: ScorePiece,
        scores: &SharedSlice<'_>,
        s: &mut DecodeScratch,
    ) {
        let (index, d) = (call.index, self.head_dim);
        let (b, h) = (piece.task / call.q_heads, piece.task % call.q_heads);
        let hk = h / call.group;
        self.query_sum(call, b, h, s);
        let base = (b * index.kv_heads + hk) * d * index.blocks + piece.lo;
        // SAFETY: the pieces of a task cover disjoint block ranges of its row, and tasks'
        // rows are disjoint: no two pieces write one entry.
        let out = unsafe { scores.range(piece.row, piece.hi - piece.lo) };
        bound_scores(
            self.attention,
            &s.query_sum,
            &index.lower[base..],
            &index.upper[base..],
            index.blocks,
            out,
        );
    }

    /// The queries of (b, h) summed in order, in f32, as the prefill sums its tile's, into
    /// `s.query_sum`.
    fn query_sum(&self, call: &DecodeCall<'_>, b: usize, h: usize, s: &mut DecodeScratch) {
        let d = self.head_dim;
        let q = call.q.head_rows(b, h);
        s.query_sum.clear();
        s.query_sum.resize(d, 0.0);
        s.wide.clear();
        s.wide.resize(d, 0.0);
        for i in 0..call.nq {
            let query = match q.row_f32(i) {
                Some(query) => query,
                None => {
                    self.loads.convert.load(q.row(i), &mut s.wide[..d]);
                    &s.wide[..d]
                }
            };
            for (sum, &x) in s.query_sum.iter_mut().zip(query) {
                *sum += x;
            }
        }
    }

    /// One (batch element, query head) of a decode call.
    fn decode_head(&self, call: &DecodeCall<'_>, b: usize, h: usize, s: &mut DecodeScratch) {
        let nq = call.nq;
        let dv = call.v.shape.dim;
        s.run_max.clear();
        s.run_max.resize(nq, f32::NEG_INFINITY);
        s.run_sum.clear();
        s.run_sum.resize(nq, 0.0);
        match call.out {
            OutRows::F32(out) => {
                self.decode_rows(call, out, b, h, s);
            }
            OutRows::F16(out) | OutRows::Bf16(out) => {
                let mut stage = std::mem::take(&mut s.stage);
                stage.clear();
                stage.resize(nq * dv, 0.0);
                let staging = RowWriter::staging(&mut stage, nq, dv);
                self.decode_rows(call, &staging, b, h, s);
                let narrow = match call.out {
                    OutRows::F16(_) => self.loads.convert.narrow_f16,
                    _ => self.loads.convert.narrow_bf16,
                };
                for (i, row) in stage.chunks_exact(dv).enumerate() {
                    // SAFETY: this task alone owns the rows of (b, h).
                    narrow(row, unsafe { out.row(b, h, i) });
                }
                s.stage = stage;
            }
        }
        if let Some(lse) = call.lse {
            let at = (b * call.q_heads + h) * nq;
            // SAFETY: this task alone owns the lse entries of (b, h).
            let lse = unsafe { lse.range(at, nq) };
            log_sum_exp(&s.run_max, &s.run_sum, lse);
        }
    }

    /// The queries of (b, h) as one causal tile (design §8, causal form), then each hash
    /// round (§10), into `out`, their (max, sum) pairs into `s.run_max`, `s.run_sum`, then
    /// the head sink.
    fn decode_rows(
        &self,
        call: &DecodeCall<'_>,
        out: &RowWriter<'_>,
        b: usize,
        h: usize,
        s: &mut DecodeScratch,
    ) {
        let (index, nq, c) = (call.index, call.nq, &self.config);
        let len = index.lengths[b] as usize;
        let offset = len - nq;
        let hk = h / call.group;
        let (q, k, v) = (
            call.q.head_rows(b, h),
            call.k.head_rows(b, hk),
            call.v.head_rows(b, hk),
        );
        // Every key before `len` is valid: query i sees offset + i + 1 of them.
        let (first_seen, last_seen) = (offset + 1, len);
        let sinks = c.n_sinks.min(last_seen);
        let middle_end = sinks.max(first_seen.saturating_sub(c.window));
        s.keys.clear();
        s.keys.extend(0..sinks as u32);
        let p = c.key_block_size();
        s.chosen.clear();
        if c.n_blocks > 0 && sinks < middle_end {
            let (lo, hi) = (sinks / p, (middle_end - 1) / p);
            self.choose_decode_blocks(call, b, h, hk, lo, hi, s);
            for &block in s.chosen.iter() {
                let start = (block as usize * p).max(sinks);
                let end = ((block as usize + 1) * p).min(middle_end);
                s.keys.extend(start as u32..end as u32);
            }
        }
        s.keys.extend(middle_end as u32..last_seen as u32);
        let by_position = s.keys.len();
        // Samples: one draw from the middle outside the chosen blocks, seeded by the tile
        // the prefill would number these queries with.
        let mut log_weight = 0.0f32;
        s.samples.clear();
        if c.n_samples > 0 && sinks < middle_end {
            s.eligible.clear();
            let mut a = 0;
            for j in sinks as u32..middle_end as u32 {
                let block = j / p as u32;
                while a < s.chosen.len() && s.chosen[a] < block {
                    a += 1;
                }
                if a == s.chosen.len() || s.chosen[a] != block {
                    s.eligible.push(j);
                }
            }
            let n = c.n_samples.min(s.eligible.len());
            if n > 0 {
                log_weight = (s.eligible.len() as f64 / n as f64).ln() as f32;
                let tile = offset / c.causal_tile();
                draw_samples_into(
                    sample_seed(c.seed, b, h, tile),
                    &mut s.eligible,
                    n,
                    &mut s.swaps,
                    &mut s.keys,
                );
                s.samples.extend_from_slice(&s.keys[by_position..]);
                s.samples.sort_unstable();
            }
        }
        s.members.clear();
        s.members.extend(0..nq as u32);
        let hook = |q_ids: &[u32], from: usize, k_ids: &[u32], t: &mut [f32], ldk: usize| {
            // `from`: where this key tile starts in the key list; its columns split into the
            // by-position part [0, cut) and the samples [cut, n).
            let n = k_ids.len();
            let cut = by_position.saturating_sub(from).min(n);
            mask_future(offset, q_ids, &k_ids[..cut], t, ldk);
            if log_weight != 0.0 {
                for row in t.chunks_exact_mut(ldk) {
                    for x in &mut row[cut..n] {
                        *x += log_weight;
                    }
                }
            }
        };
        let kern = self.attention;
        {
            let DecodeScratch {
                tiles,
                keys,
                members,
                run_max,
                run_sum,
                ..
            } = s;
            attention::attend(
                kern,
                &self.loads,
                tiles,
                q,
                members,
                k,
                v,
                keys,
                self.scale(),
                Some(&hook),
                |i, result| {
                    // SAFETY: this task alone owns the rows of (b, h).
                    let row = unsafe { out.row(b, h, i) };
                    fold(kern, row, &mut run_max[i], &mut run_sum[i], result);
                },
            );
        }
        if index.rounds > 0 && sinks < middle_end {
            self.decode_rounds(call, out, b, h, hk, sinks..middle_end, s);
        }
        for i in 0..nq {
            if s.run_sum[i] == 0.0 {
                // No block reached the query: its last visible key (design §1).
                s.keys.clear();
                s.keys.push((offset + i) as u32);
                self.merge_keys(call, out, b, h, i, s);
            }
        }
        if let Some(&sink) = call.head_sinks.map(|sinks| &sinks[h]) {
            // One logit seen in every round, as in the prefill (design §1).
            let sink = sink + (c.n_hashes.max(1) as f32).ln();
            for i in 0..nq {
                // SAFETY: this task alone owns the rows of (b, h).
                let row = unsafe { out.row(b, h, i) };
                merge_sink(row, &mut s.run_max[i], &mut s.run_sum[i], sink);
            }
        }
    }

    /// Every hash round of the queries of (b, h): per query, the `ck` keys of the middle
    /// nearest its hash in the round's order (half below, half above, more from one side
    /// where the other runs out), less the chosen blocks and samples, merged by lse.
    #[allow(clippy::too_many_arguments)]
    fn decode_rounds(
        &self,
        call: &DecodeCall<'_>,
        out: &RowWriter<'_>,
        b: usize,
        h: usize,
        hk: usize,
        middle: std::ops::Range<usize>,
        s: &mut DecodeScratch,
    ) {
        let (index, nq) = (call.index, call.nq);
        let rounds = index.rounds;
        let q = call.q.head_rows(b, h);
        s.q_norms.clear();
        s.q_norms.resize(nq, 0.0);
        s.q_hashes.clear();
        s.q_hashes.resize(rounds * nq, 0.0);
        alsh::project_rows(
            self.alsh.project,
            self.loads.convert,
            q,
            None,
            &self.projections_t,
            &mut s.q_norms,
            &mut s.q_hashes,
            &mut s.proj_stage,
        );
        // The query side of the lift with its own bound, the largest of these queries'
        // norms: ‖F(q) − G(k)‖² = M_q + M_k − 2·q·k still orders keys by inner product.
        let m_q = s.q_norms.iter().copied().fold(0.0f32, f32::max);
        let width = self.head_dim + 2;
        let lift = alsh::lift_column(alsh::Side::Query, self.head_dim);
        alsh::apply_lift(
            &mut s.q_hashes,
            &s.q_norms,
            m_q,
            &self.projections_t,
            width,
            lift,
        );
        let ck = self.decode_cluster_size();
        let p = self.config.key_block_size() as u32;
        for r in 0..rounds {
            let at = index.list(b, hk, r);
            let (sorted, recent) = index.orders[at].split_at(index.merged[at]);
            for i in 0..nq {
                let probe = (u64::from(ordered_key(s.q_hashes[r * nq + i])) << 32) | 0xFFFF_FFFF;
                nearest(sorted, recent, probe, &middle, ck, s);
                let mut kept = 0;
                for t in 0..s.keys.len() {
                    let j = s.keys[t];
                    if s.chosen.binary_search(&(j / p)).is_err()
                        && s.samples.binary_search(&j).is_err()
                    {
                        s.keys[kept] = j;
                        kept += 1;
                    }
                }
                s.keys.resize(kept, 0);
                s.keys.sort_unstable();
                self.merge_keys(call, out, b, h, i, s);
            }
        }
    }

    /// Keys per hash-round cluster of a decode: `k_cluster_size`, else `q_cluster_size`
    /// (what a self-attention prefill of the sequence derives).
    fn decode_cluster_size(&self) -> usize {
        self.config
            .k_cluster_size
            .unwrap_or(self.config.q_cluster_size)
            .max(1)
    }

    /// Query i of (b, h) attends to `s.keys`, merged by lse into its row and pair.
    #[allow(clippy::too_many_arguments)]
    fn merge_keys(
        &self,
        call: &DecodeCall<'_>,
        out: &RowWriter<'_>,
        b: usize,
        h: usize,
        i: usize,
        s: &mut DecodeScratch,
    ) {
        let hk = h / call.group;
        let kern = self.attention;
        let DecodeScratch {
            tiles,
            keys,
            run_max,
            run_sum,
            ..
        } = s;
        attention::attend(
            kern,
            &self.loads,
            tiles,
            call.q.head_rows(b, h),
            &[i as u32],
            call.k.head_rows(b, hk),
            call.v.head_rows(b, hk),
            keys,
            self.scale(),
            None,
            |_, result| {
                // SAFETY: this task alone owns the rows of (b, h).
                let row = unsafe { out.row(b, h, i) };
                fold(kern, row, &mut run_max[i], &mut run_sum[i], result);
            },
        );
    }

    /// The key blocks `lo..=hi` of (b, kv head hk) that the queries of head h take into
    /// `s.chosen`, ascending: all of them when there are at most `n_blocks`, else the
    /// `n_blocks` with the largest bound for the sum of the queries (ties: the lower block).
    #[allow(clippy::too_many_arguments)]
    fn choose_decode_blocks(
        &self,
        call: &DecodeCall<'_>,
        b: usize,
        h: usize,
        hk: usize,
        lo: usize,
        hi: usize,
        s: &mut DecodeScratch,
    ) {
        let (index, n_blocks) = (call.index, self.config.n_blocks);
        let count = hi - lo + 1;
        s.chosen.clear();
        if count <= n_blocks {
            s.chosen.extend(lo as u32..=hi as u32);
            return;
        }
        let d = self.head_dim;
        s.scores.clear();
        s.scores.resize(count, 0.0);
        match call.scores {
            Some(scores) => {
                let at = call.starts[b * call.q_heads + h];
                // SAFETY: the scoring pieces ended before the decode tasks began, and no
                // task writes this row again.
                s.scores.copy_from_slice(unsafe { scores.range(at, count) });
            }
            None => {
                self.query_sum(call, b, h, s);
                let base = (b * index.kv_heads + hk) * d * index.blocks + lo;
                bound_scores(
                    self.attention,
                    &s.query_sum,
                    &index.lower[base..],
                    &index.upper[base..],
                    index.blocks,
                    &mut s.scores,
                );
            }
        }
        s.pool.clear();
        let scores = &s.scores;
        s.pool.extend(
            (lo..=hi)
                .map(|block| (u64::from(!ordered_key(scores[block - lo])) << 32) | block as u64),
        );
        s.pool.select_nth_unstable(n_blocks);
        s.chosen
            .extend(s.pool[..n_blocks].iter().map(|&key| key as u32));
        s.chosen.sort_unstable();
    }
}
