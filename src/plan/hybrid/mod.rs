//! Design §8, beyond the paper: optional blocks around the SMYRF cluster rounds — sink keys,
//! a local window and unbiased residual samples. Each block is a partial softmax (its own
//! output and lse) computed by the tiled attention driver, and every block of a query, the
//! cluster rounds included, is merged by log-sum-exp as in §1 step 6.
//!
//! No key is counted twice across blocks: sinks are removed from the key lists of every other
//! block, and keys inside a query's window are set to −∞ in its cluster and sample logit
//! tiles through the driver's `TileAdjust` hook. The queries and keys of every attention call
//! are sorted by position, so a query's window is one contiguous run of columns that two
//! forward-moving cursors find: no per-logit test, no branch in the micro-kernels.
//!
//! With every block off the pipeline never enters this module, so results are exactly §1.

mod causal;
pub(crate) mod samples;
mod select;
mod sinks;
mod window;

#[cfg(feature = "internals")]
pub(crate) use samples::{draw_samples_into, sample_seed};

use crate::attention::{self, AttentionKernels, Loads, TileScratch};
use crate::config::{Config, DEFAULT_SAMPLE_GROUP};
use crate::error::{Error, Result};
use crate::plan::combine::Running;
use crate::plan::cut;
use crate::runtime::arena::Arena;
use crate::runtime::buffer::Buf;
use crate::runtime::pool::PoolRef;
use crate::runtime::threads::{for_each_index_with, Par};
use crate::view::{AnyView, RowWriter, Rows};
use window::{drop_window_columns, window_tile};

/// Round-0 blocks (sample groups) prepared before their attention runs in parallel.
const SAMPLE_BATCH: usize = 64;
/// A batch of round-0 blocks is also started once its key lists hold this many keys, which
/// bounds the scratch for large clusters.
const SAMPLE_KEYS: usize = 1 << 16;

/// Checks a call against the §8 blocks: the window of a call that is not causal needs
/// aligned query and key positions; key blocks need a causal call; a causal call takes
/// neither selected keys nor mean-query sinks, which read every query.
pub(crate) fn check_call(config: &Config, nq: usize, nk: usize, causal: bool) -> Result<()> {
    if causal {
        if config.n_selected > 0 || config.sinks_use_mean_query() {
            return Err(Error::CausalBlocks);
        }
        return Ok(());
    }
    if config.window > 0 && nq != nk {
        return Err(Error::WindowNeedsSelfAttention { nq, nk });
    }
    if config.n_blocks > 0 {
        return Err(Error::OptionNeeds {
            option: "n_blocks",
            needs: "a causal call",
        });
    }
    if config.n_hashes == 0 {
        return Err(Error::OptionNeeds {
            option: "n_hashes = 0",
            needs: "a causal call",
        });
    }
    Ok(())
}

/// Queries of the largest attention call a §8 block makes (for the scratch bound).
pub(crate) fn largest_block_queries(config: &Config, nq: usize) -> usize {
    let mut m = 0;
    if config.window > 0 {
        m = m.max(window_tile(config.window / 2).min(nq));
    }
    if config.n_samples > 0 {
        m = m.max(sample_group(config).min(nq));
    }
    if config.n_selected > 0 {
        m = m.max(1);
    }
    // A causal call's tiles, whichever blocks are on.
    m.max(config.causal_tile().min(nq))
}

/// Bytes of the §8 scratch of one (batch, head) task.
pub(crate) fn scratch_bytes(config: &Config, nq: usize, nk: usize, head_dim: usize) -> usize {
    if !config.has_hybrid_blocks() {
        return 0;
    }
    // Saturating: lengths near 2^32 must not wrap to a small bound. A batch of round-0
    // blocks holds at most SAMPLE_BATCH key lists (sinks, cluster, samples: each part at most
    // n' keys), and never more than one list past SAMPLE_KEYS.
    let block_keys = nk
        .saturating_mul(3 * SAMPLE_BATCH)
        .min(SAMPLE_KEYS.saturating_add(nk.saturating_mul(3)));
    [
        // Query ids, query groups, group members; group and cluster bounds, cursors.
        nq.saturating_mul(4 * 3),
        nq.saturating_add(1).saturating_mul(8 * 4),
        // Sink flags; key clusters, candidates, cluster keys, eligible keys, swap log.
        nk.saturating_mul(1 + 4 * 5),
        nk.saturating_mul(8),         // sink scores
        block_keys.saturating_mul(4), // key lists of a batch of round-0 blocks
        head_dim.saturating_mul(8),   // mean query, one widened row
        SAMPLE_BATCH * std::mem::size_of::<FusedBlock>(),
        selection_bytes(config, nq, nk, head_dim),
        key_block_bytes(config, nq, nk, head_dim),
    ]
    .into_iter()
    .fold(0, usize::saturating_add)
}

/// Bytes of the selection's scratch: the transposed candidate keys, their scores and sort
/// keys, the query's components, and every query's selected keys.
fn selection_bytes(config: &Config, nq: usize, nk: usize, d: usize) -> usize {
    if config.n_selected == 0 {
        return 0;
    }
    [
        nk.saturating_mul(d).saturating_mul(4),
        nk.saturating_mul(4 + 8),
        d.saturating_mul(8 + 4),
        nq.saturating_mul(config.n_selected.min(nk))
            .saturating_mul(4),
        nq.saturating_mul(4),
    ]
    .into_iter()
    .fold(0, usize::saturating_add)
}

/// Bytes of the causal blocks' scratch: each key block's ranks and bf16 bounds, their scores
/// and sort keys, a widened row and the tile's query sum, and every tile's chosen blocks, samples and window start (at
/// most one tile per query).
fn key_block_bytes(config: &Config, nq: usize, nk: usize, d: usize) -> usize {
    let nb = key_block_count(config, nk);
    [
        nb.saturating_add(1).saturating_mul(4),
        nb.saturating_mul(d).saturating_mul(4),
        nb.saturating_mul(4 + 8),
        d.saturating_mul(8),
        nq.saturating_mul(config.n_blocks.min(nb)).saturating_mul(4),
        nq.saturating_mul(config.n_samples.min(nk))
            .saturating_mul(4),
        nq.saturating_mul(12),
    ]
    .into_iter()
    .fold(0, usize::saturating_add)
}

/// Key blocks of `nk` keys when the block is on, else 0.
fn key_block_count(config: &Config, nk: usize) -> usize {
    if config.n_blocks == 0 {
        0
    } else {
        nk.div_ceil(config.key_block_size())
    }
}

fn sample_group(config: &Config) -> usize {
    if config.sample_group == 0 {
        DEFAULT_SAMPLE_GROUP
    } else {
        config.sample_group
    }
}

/// Buffers of the §8 blocks of one (batch, head) task, reused across calls.
#[derive(Default)]
pub(crate) struct HybridScratch {
    query_ids: Buf<u32>,
    sinks: Buf<u32>,
    is_sink: Buf<bool>,
    /// The (batch element, key/value head) that `sinks` and `is_sink` were selected for: the
    /// query heads of one key/value head share them.
    sinks_of: Option<(usize, usize)>,
    /// Valid keys that are not sinks, by position.
    candidates: Buf<u32>,
    /// The current round's partition of the queries into attention calls: call g holds
    /// `group_members[group_bounds[g]..group_bounds[g + 1]]`, by position, and belongs to
    /// cluster `group_cluster[g]`.
    group_members: Buf<u32>,
    group_bounds: Buf<usize>,
    group_cluster: Buf<u32>,
    query_group: Buf<u32>,
    /// The current round's cluster key lists without sinks, by position, cluster after
    /// cluster; `key_cluster` is the cluster of every valid key position.
    cluster_keys: Buf<u32>,
    cluster_bounds: Buf<usize>,
    key_cluster: Buf<u32>,
    cursor: Buf<usize>,
    eligible: Buf<u32>,
    swaps: Buf<u32>,
    /// Key lists of a batch of round-0 blocks, one after the other.
    block_keys: Buf<u32>,
    /// One 16-bit row widened to f32 (the sink selection's scores and mean query).
    row: Buf<f32>,
    blocks: Buf<FusedBlock>,
    scores: Buf<u64>,
    mean_query: Buf<f32>,
    /// The selection's candidate keys as f32, component-major, and the (batch element,
    /// key/value head) they belong to.
    kt: Buf<f32>,
    kt_of: Option<(usize, usize)>,
    sel_scores: Buf<f32>,
    sel_pool: Buf<u64>,
    sel_dims: Buf<u64>,
    sel_query: Buf<f32>,
    /// Query i's selected keys: `selected[i·selected_cap..][..selected_lens[i]]`.
    selected: Buf<u32>,
    selected_lens: Buf<u32>,
    selected_cap: usize,
    /// Causal key blocks of the (batch element, key/value head) `bounds_of`: block β holds
    /// the valid ranks `ranks[β]..ranks[β + 1]`, and component t of its bounds is
    /// `bound_min[t·nb + β]`, `bound_max[t·nb + β]`.
    bounds_of: Option<(usize, usize)>,
    ranks: Buf<u32>,
    bound_min: Buf<u16>,
    bound_max: Buf<u16>,
    /// One key widened to f32.
    wide: Buf<f32>,
    /// Causal tile g's chosen blocks, `chosen[g·chosen_cap..][..chosen_lens[g]]`, ascending;
    /// its samples, `tile_samples[g·sample_cap..][..sample_lens[g]]`, by position; the
    /// position where its window span starts (`u32::MAX`: none).
    chosen: Buf<u32>,
    chosen_lens: Buf<u32>,
    chosen_cap: usize,
    tile_samples: Buf<u32>,
    sample_lens: Buf<u32>,
    sample_cap: usize,
    window_start: Buf<u32>,
}

impl HybridScratch {
    /// The buffers carved from a workspace for a (batch, head) task of `nq` queries over `nk`
    /// keys of dim `d`, each at the largest length `HeadBlocks::run` grows it to (with every
    /// key valid, the worst case); nothing when no block is on.
    pub(crate) fn carve(
        arena: &mut Arena<'_>,
        config: &Config,
        nq: usize,
        nk: usize,
        d: usize,
    ) -> HybridScratch {
        if !config.has_hybrid_blocks() {
            return HybridScratch::default();
        }
        let on = |yes: bool, n: usize| if yes { n } else { 0 };
        let (sampling, mean, selecting) = (
            config.n_samples > 0,
            config.sinks_use_mean_query(),
            config.n_selected > 0,
        );
        let nb = key_block_count(config, nk);
        let blocking = nb > 0;
        // Every cluster and every query group holds at least one query, and a cluster at
        // least one key.
        let (groups, clusters) = (nq, nq.min(nk));
        HybridScratch {
            query_ids: arena.buf(nq),
            sinks: arena.buf(config.n_sinks.min(nk)),
            is_sink: arena.buf(nk),
            sinks_of: None,
            candidates: arena.buf(nk),
            group_members: arena.buf(nq),
            group_bounds: arena.buf(groups + 1),
            group_cluster: arena.buf(groups),
            query_group: arena.buf(nq),
            cluster_keys: arena.buf(nk),
            cluster_bounds: arena.buf(clusters + 1),
            key_cluster: arena.buf(nk),
            cursor: arena.buf(groups.max(clusters) + 1),
            eligible: arena.buf(on(sampling, nk)),
            swaps: arena.buf(on(sampling, config.n_samples.min(nk))),
            block_keys: arena.buf(batch_keys(nq, nk)),
            row: arena.buf(on(mean, d)),
            blocks: arena.buf(SAMPLE_BATCH.min(groups)),
            scores: arena.buf(on(mean, nk)),
            mean_query: arena.buf(on(mean, d)),
            kt: arena.buf(on(selecting, nk.saturating_mul(d))),
            kt_of: None,
            sel_scores: arena.buf(on(selecting, nk).max(nb)),
            sel_pool: arena.buf(on(selecting, nk).max(nb)),
            sel_dims: arena.buf(on(selecting, d)),
            sel_query: arena.buf(on(selecting || blocking, d)),
            selected: arena.buf(on(selecting, nq.saturating_mul(config.n_selected.min(nk)))),
            selected_lens: arena.buf(on(selecting, nq)),
            selected_cap: 0,
            bounds_of: None,
            ranks: arena.buf(on(blocking, nb + 1)),
            bound_min: arena.buf(nb.saturating_mul(d)),
            bound_max: arena.buf(nb.saturating_mul(d)),
            wide: arena.buf(on(blocking, d)),
            chosen: arena.buf(nq.saturating_mul(config.n_blocks.min(nb))),
            chosen_lens: arena.buf(on(blocking, nq)),
            chosen_cap: 0,
            tile_samples: arena.buf(nq.saturating_mul(config.n_samples.min(nk))),
            sample_lens: arena.buf(on(sampling, nq)),
            sample_cap: 0,
            window_start: arena.buf(nq),
        }
    }

    /// Drops the remembered sink selection: the next head selects its own.
    pub(crate) fn forget_sinks(&mut self) {
        self.sinks_of = None;
        self.kt_of = None;
        self.bounds_of = None;
    }
}

/// Keys a batch of round-0 blocks holds at once. A block's sinks, cluster keys and samples
/// are disjoint sets of valid keys, so at most n' ≤ Nk; a batch is run once it holds
/// `SAMPLE_BATCH` blocks (never more than there are query groups) or `SAMPLE_KEYS` keys, so
/// it never holds more than one block past `SAMPLE_KEYS − 1` keys.
fn batch_keys(nq: usize, nk: usize) -> usize {
    SAMPLE_BATCH
        .min(nq)
        .saturating_mul(nk)
        .min((SAMPLE_KEYS - 1).saturating_add(nk))
}

/// One round-0 attention call: the queries of group `group` against `block_keys[k0..k3]` =
/// sinks `[k0, k1)`, the cluster's keys `[k1, k2)` and the group's samples `[k2, k3)`,
/// whose logits get `log_weight`.
#[derive(Clone, Copy)]
#[repr(C)]
struct FusedBlock {
    group: usize,
    k0: usize,
    k1: usize,
    k2: usize,
    k3: usize,
    log_weight: f32,
    /// Zero: no padding byte is left unwritten in a caller's workspace.
    pad: u32,
}

/// Everything the §8 blocks of one (batch element b, query head h) need, prepared by the
/// pipeline after it sorted the rounds (design §1 steps 1–4).
pub(crate) struct HeadBlocks<'a> {
    pub(crate) config: &'a Config,
    pub(crate) kern: &'a AttentionKernels,
    pub(crate) loads: &'a Loads,
    pub(crate) scale: f32,
    /// All queries, for the mean query of a GQA group.
    pub(crate) q_view: &'a AnyView<'a>,
    pub(crate) q: Rows<'a>,
    pub(crate) k: Rows<'a>,
    pub(crate) v: Rows<'a>,
    pub(crate) b: usize,
    pub(crate) h: usize,
    /// Query heads per key/value head.
    pub(crate) group: usize,
    pub(crate) nq: usize,
    pub(crate) nk: usize,
    pub(crate) valid: &'a [u32],
    /// `R × Nq` sorted query orders, round after round.
    pub(crate) q_perm: &'a [u32],
    /// `R × n'` sorted valid-key ranks, round after round.
    pub(crate) k_perm: &'a [u32],
    pub(crate) clusters: usize,
    pub(crate) out: &'a RowWriter<'a>,
    /// Tile scratch for the block calls: the plan's or the call's workspace.
    pub(crate) tiles: PoolRef<'a, TileScratch>,
    pub(crate) parallel: Par<'a>,
    /// A causal call's position of query 0.
    pub(crate) causal: Option<usize>,
}

impl HeadBlocks<'_> {
    /// Runs every block and merges each into the output rows of (b, h) and their running
    /// results (a query no block reached keeps a zero row and (−∞, 0)).
    ///
    /// Blocks that share their queries share one attention call, which computes exactly the
    /// log-sum-exp merge of their separate softmaxes: the sinks, round 0's cluster and the
    /// residual samples of a sample group run as one call (the samples' log-weight added to
    /// their logits by the hook). Per query the merge order is: the window, the selected keys,
    /// round 0 (sinks, cluster, samples), rounds 1 to R − 1.
    ///
    /// Every attention call gets its queries and keys sorted by position, so the hook finds
    /// a query's window as one run of columns, moving two cursors down the rows.
    pub(crate) fn run(&self, running: &Running<'_>, s: &mut HybridScratch) {
        let (b, h, nq) = (self.b, self.h, self.nq);
        for i in 0..nq {
            // SAFETY: this task alone owns the rows of (b, h).
            unsafe { self.out.row(b, h, i) }.fill(0.0);
        }
        self.select_sinks(s);
        s.candidates.clear();
        s.candidates.extend(
            self.valid
                .iter()
                .copied()
                .filter(|&j| !s.is_sink[j as usize]),
        );
        if let Some(offset) = self.causal {
            self.run_causal(offset, running, s);
            return;
        }

        if self.config.window > 0 {
            s.query_ids.clear();
            s.query_ids.extend(0..nq as u32);
            self.window_block(&s.query_ids, &s.candidates, running);
        }
        if self.config.n_selected > 0 {
            self.selected_block(s, running);
        }
        self.round_zero(s, running);
        for r in 1..self.config.n_hashes {
            self.cluster_round(r, s, running);
        }
    }

    /// Window half-width: keys with |j − i| ≤ window/2 are in query i's window.
    fn half(&self) -> u32 {
        (self.config.window / 2).min(u32::MAX as usize) as u32
    }

    /// Attention of `members` over `keys`, merged into the running results.
    fn block(
        &self,
        tiles: &mut TileScratch,
        members: &[u32],
        keys: &[u32],
        adjust: Option<attention::TileAdjust<'_>>,
        running: &Running<'_>,
    ) {
        if keys.is_empty() || members.is_empty() {
            return;
        }
        let (b, h) = (self.b, self.h);
        attention::attend(
            self.kern,
            self.loads,
            tiles,
            self.q,
            members,
            self.k,
            self.v,
            keys,
            self.scale,
            adjust,
            |i, result| {
                let qi = members[i] as usize;
                // SAFETY: within one phase of `run` every query belongs to exactly one task,
                // so no other thread touches row qi of (b, h) or its running result.
                unsafe { running.merge(self.kern, qi, self.out.row(b, h, qi), result) };
            },
        );
    }

    /// Round r's attention calls: the queries of every cluster, cut into groups of at most
    /// `group_size` consecutive sorted queries, each group's members by position; and every
    /// cluster's keys without sinks, by position. Counting sorts, O(Nq + Nk).
    fn build_round(&self, r: usize, group_size: usize, s: &mut HybridScratch) {
        let (nq, nv, clusters) = (self.nq, self.valid.len(), self.clusters);
        let q_perm = &self.q_perm[r * nq..(r + 1) * nq];
        let k_perm = &self.k_perm[r * nv..(r + 1) * nv];

        s.group_bounds.clear();
        s.group_cluster.clear();
        s.query_group.resize(nq, 0);
        for c in 0..clusters {
            let (q0, q1) = cut(c, nq, clusters);
            let mut g0 = q0;
            while g0 < q1 {
                let g1 = q1.min(g0.saturating_add(group_size));
                let g = s.group_bounds.len() as u32;
                for &i in &q_perm[g0..g1] {
                    s.query_group[i as usize] = g;
                }
                s.group_bounds.push(g0);
                s.group_cluster.push(c as u32);
                g0 = g1;
            }
        }
        s.group_bounds.push(nq);
        s.cursor.clear();
        s.cursor.extend_from_slice(&s.group_bounds);
        s.group_members.resize(nq, 0);
        for (i, &g) in s.query_group.iter().enumerate() {
            let slot = &mut s.cursor[g as usize];
            s.group_members[*slot] = i as u32;
            *slot += 1;
        }

        s.key_cluster.resize(self.nk, 0);
        s.cursor.clear();
        s.cursor.resize(clusters + 1, 0);
        for c in 0..clusters {
            let (k0, k1) = cut(c, nv, clusters);
            for &rank in &k_perm[k0..k1] {
                let j = self.valid[rank as usize] as usize;
                s.key_cluster[j] = c as u32;
                s.cursor[c + 1] += usize::from(!s.is_sink[j]);
            }
        }
        for c in 0..clusters {
            s.cursor[c + 1] += s.cursor[c];
        }
        s.cluster_bounds.clear();
        s.cluster_bounds.extend_from_slice(&s.cursor);
        s.cluster_keys.resize(s.candidates.len(), 0);
        for &j in &s.candidates {
            let slot = &mut s.cursor[s.key_cluster[j as usize] as usize];
            s.cluster_keys[*slot] = j;
            *slot += 1;
        }
    }

    /// Round r ≥ 1 (design §1 step 5) without the sinks and, per query, without the keys of
    /// its window.
    fn cluster_round(&self, r: usize, s: &mut HybridScratch, running: &Running<'_>) {
        self.build_round(r, usize::MAX, s);
        let s = &*s;
        let (half, window) = (self.half(), self.config.window > 0);
        let selected = (self.config.n_selected > 0).then(|| s.selected());
        let drop_blocks =
            move |q_ids: &[u32], _: usize, k_ids: &[u32], t: &mut [f32], ldk: usize| {
                if window {
                    drop_window_columns(q_ids, k_ids, 0, t, ldk, half);
                }
                if let Some(selected) = &selected {
                    selected.drop_columns(q_ids, k_ids, 0, t, ldk);
                }
            };
        let adjust: Option<attention::TileAdjust<'_>> = if window || selected.is_some() {
            Some(&drop_blocks)
        } else {
            None
        };
        for_each_index_with(self.parallel, self.clusters, self.tiles, |tiles, c| {
            // Without sample groups, group c is cluster c.
            let members = &s.group_members[s.group_bounds[c]..s.group_bounds[c + 1]];
            let keys = &s.cluster_keys[s.cluster_bounds[c]..s.cluster_bounds[c + 1]];
            self.block(tiles, members, keys, adjust, running);
        });
    }
}
