//! The KV-cache index for decoding (design §10): per (batch element, key/value head) the bf16
//! bounds of every key block of the engine's cache, grown as keys are appended. It copies no
//! key or value: a decode call reads the cache through views and the index.
//!
//! A decode call runs the causal §8 blocks of its queries (sinks, window span, key blocks
//! chosen by their bounds) exactly as the causal prefill runs one tile of them: the same
//! candidates, scores, choice and attention call, so its outputs are the prefill's bits for
//! the same queries.

use super::bounds::{bound_scores, widen_bounds, BF16_INF, BF16_NEG_INF};
use super::combine::{log_sum_exp, merge_sink};
use super::Plan;
use crate::attention::{self, TileScratch};
use crate::call::{expect, mask_future, CallOptions, CallSizes, SharedSlice};
use crate::config::MAX_BLOCK_SIZE;
use crate::convert::ConvertKernels;
use crate::error::{Error, Result};
use crate::runtime::buffer::Buf;
use crate::runtime::pool::PoolRef;
use crate::runtime::threads::{for_each_index_with, Par};
use crate::sort::ordered_key;
use crate::view::{AnyView, Element, OutRows, RowWriter, Shape, TensorView, TensorViewMut};

/// The key-block bounds of an engine's K cache, `[batch][kv_heads][capacity]` keys of the
/// plan's head dim, for decode calls of that plan (design §10).
///
/// Built empty, it grows by [`KvIndex::append`]: the prefill's keys, then each decoded
/// token's. Per key it holds `4·d / block_size` bytes (bf16 lower and upper bounds), 1/16 of
/// an f16 K/V cache at the default block size; it never copies keys or values.
pub struct KvIndex {
    batch: usize,
    kv_heads: usize,
    head_dim: usize,
    block_size: usize,
    capacity: usize,
    /// Key blocks per (batch element, key/value head).
    blocks: usize,
    lengths: Vec<u32>,
    /// Component t of block β of (b, h) at `((b·kv_heads + h)·d + t)·blocks + β`, bf16 bits.
    lower: Vec<u16>,
    upper: Vec<u16>,
    convert: &'static ConvertKernels,
}

impl std::fmt::Debug for KvIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvIndex")
            .field("batch", &self.batch)
            .field("kv_heads", &self.kv_heads)
            .field("head_dim", &self.head_dim)
            .field("block_size", &self.block_size)
            .field("capacity", &self.capacity)
            .field("lengths", &self.lengths)
            .finish_non_exhaustive()
    }
}

/// A zeroed-then-filled vector, or `OutOfMemory`.
fn filled(len: usize, value: u16) -> Result<Vec<u16>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::OutOfMemory {
        what: "KV-cache index",
    })?;
    v.resize(len, value);
    Ok(v)
}

impl KvIndex {
    /// An empty index for `batch` sequences of `kv_heads` key/value heads, each up to
    /// `capacity` keys, with the head dim and block size of `plan`.
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
        let blocks = capacity.div_ceil(block_size);
        let len = batch
            .checked_mul(kv_heads)
            .and_then(|n| n.checked_mul(head_dim))
            .and_then(|n| n.checked_mul(blocks))
            .filter(|&n| n <= isize::MAX as usize / 2)
            .ok_or(Error::SizeOverflow {
                what: "KV-cache index",
            })?;
        Ok(KvIndex {
            batch,
            kv_heads,
            head_dim,
            block_size,
            capacity,
            blocks,
            lengths: vec![0; batch],
            lower: filled(len, BF16_INF)?,
            upper: filled(len, BF16_NEG_INF)?,
            convert: plan.loads.convert,
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

    /// Bytes the index holds for its capacity (the bounds and the lengths).
    pub fn memory_bytes(&self) -> usize {
        (self.lower.len() + self.upper.len()) * 2 + self.lengths.len() * 4
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
        for (b, &new) in lengths.iter().enumerate() {
            let old = self.lengths[b] as usize;
            for h in 0..self.kv_heads {
                let rows = keys.head_rows(b, h);
                let base = (b * self.kv_heads + h) * d * blocks;
                for j in old..new as usize {
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
            self.lengths[b] = new;
        }
        Ok(())
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
        for h in 0..self.kv_heads {
            for t in 0..d {
                let at = ((b * self.kv_heads + h) * d + t) * blocks;
                self.lower[at..at + used].fill(BF16_INF);
                self.upper[at..at + used].fill(BF16_NEG_INF);
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
    /// f32 rows of a 16-bit output.
    stage: Buf<f32>,
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
}

impl Plan {
    /// Decode attention through a KV-cache index (design §10): the `Nq` queries of each
    /// batch element b (`q`, `[B, Hq, Nq, d]`) sit at the last `Nq` of its
    /// `index.lengths()[b]` indexed positions and attend causally to those keys of the
    /// cache (`k`, `v`: `[B, Hkv, ≥ length, d]`) by the plan's sinks, window and key blocks,
    /// as the causal prefill's tile of those queries does. The options may carry head
    /// sinks, an lse output and a parallel-for; masks, key lengths, offsets and workspaces
    /// belong to calls without an index. On error nothing is written.
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
        let refused = [
            ("key_mask", options.key_mask.is_some()),
            ("key_lengths", options.key_lengths.is_some()),
            ("causal", options.causal || options.query_offset.is_some()),
            ("workspace", options.workspace.is_some()),
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
        if c.n_hashes > 0 || c.n_samples > 0 {
            return Err(Error::OptionNeeds {
                option: if c.n_hashes > 0 {
                    "n_hashes"
                } else {
                    "n_samples"
                },
                needs:
                    "a prefill call (a decode call runs sinks, window and key blocks; set it to 0)",
            });
        }
        // A plan without rounds has some block on (`Config::validate`): after the refusals
        // above, sinks, a window or key blocks, so every query sees a key.
        if index.head_dim != self.head_dim {
            return Err(Error::HeadDimMismatch {
                plan: self.head_dim,
                found: index.head_dim,
            });
        }
        expect(
            "index block_size (must equal the plan's block_size)",
            c.key_block_size(),
            index.block_size,
        )?;
        let shape = sizes.shape;
        index.check_cache(Shape {
            batch: shape.batch,
            heads: shape.kv_heads,
            dim: shape.d,
            ..Shape::bhnd(1, 1, 1, 1)
        })?;
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
        };
        let tasks = shape.batch * shape.q_heads;
        // One task per (b, query head), query heads of one key/value head adjacent; each
        // task's choices and sums run on its thread, so the bits do not depend on the count.
        let job = |par: Par<'_>| {
            for_each_index_with(par, tasks, PoolRef::Heap(&self.decode), |s, task| {
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

    /// The queries of (b, h) as one causal tile (design §8, causal form) into `out`, their
    /// (max, sum) pairs into `s.run_max`, `s.run_sum`, then the head sink.
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
        s.members.clear();
        s.members.extend(0..nq as u32);
        let hook = |q_ids: &[u32], _: usize, k_ids: &[u32], t: &mut [f32], ldk: usize| {
            mask_future(offset, q_ids, k_ids, t, ldk);
        };
        let kern = self.attention;
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
                (kern.scale_store)(row, result.acc, result.inv_sum(), false);
                (run_max[i], run_sum[i]) = (result.max, result.sum);
            },
        );
        if let Some(&sink) = call.head_sinks.map(|sinks| &sinks[h]) {
            for i in 0..nq {
                // SAFETY: this task alone owns the rows of (b, h).
                let row = unsafe { out.row(b, h, i) };
                merge_sink(row, &mut run_max[i], &mut run_sum[i], sink);
            }
        }
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
        let q = call.q.head_rows(b, h);
        // The queries summed in order, in f32, as the prefill sums its tile's.
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
        let base = (b * index.kv_heads + hk) * d * index.blocks + lo;
        s.scores.clear();
        s.scores.resize(count, 0.0);
        bound_scores(
            self.attention,
            &s.query_sum,
            &index.lower[base..],
            &index.upper[base..],
            index.blocks,
            &mut s.scores,
        );
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
