//! Design §8 blocks in causal form. Query i at position p sees the valid keys at or before p;
//! in the order of those visible keys its sinks are the first `n_sinks`, its window the last
//! `window` after them, and the rest is its middle.
//!
//! Queries run in tiles of `block_tile` consecutive queries. A tile's middle is the middle of
//! its first query (every query of the tile sees all of it); its key blocks are chosen once
//! for the tile and its samples drawn once from that middle; its window span runs from the
//! first query's window start to the last query. Sinks, chosen blocks' keys, window span and
//! samples are disjoint, so the tile runs as one attention call whose hook masks each row's
//! future and adds the samples' log-weight. The cluster rounds follow, per cluster, with a
//! hook that drops each query's future, its tile's window span, chosen blocks and samples
//! (sinks are out of every cluster's key list).
//!
//! The blocks and samples are chosen in a fixed order on the task's thread, so the outputs do
//! not depend on the thread count; only the attention calls run in parallel.

use super::samples::{draw_samples_into, sample_seed};
use super::{FusedBlock, HeadBlocks, HybridScratch, SAMPLE_BATCH, SAMPLE_KEYS};
use crate::plan::bounds::{bound_scores, widen_bounds, BF16_INF, BF16_NEG_INF};
use crate::plan::combine::Running;
use crate::runtime::threads::for_each_index_with;
use crate::sort::ordered_key;

/// What each tile of a (batch, head) took, for the cluster rounds to drop.
#[derive(Clone, Copy)]
struct Taken<'a> {
    /// Queries per tile.
    tile: usize,
    /// Tile g's chosen blocks: `blocks[g·cap..][..block_lens[g]]`, ascending.
    blocks: &'a [u32],
    block_lens: &'a [u32],
    block_cap: usize,
    /// Tile g's samples: `samples[g·sample_cap..][..sample_lens[g]]`, by position.
    samples: &'a [u32],
    sample_lens: &'a [u32],
    sample_cap: usize,
    /// Where tile g's window span starts (`u32::MAX`: it has none).
    window_start: &'a [u32],
    block_size: u32,
}

impl Taken<'_> {
    /// Sets −∞ on each row's logits of keys past its position, in its tile's window span,
    /// chosen blocks or samples; `k_ids` are sorted by position, so one walk per row finds
    /// them.
    #[inline(always)]
    fn drop_columns(&self, offset: usize, q_ids: &[u32], k_ids: &[u32], s: &mut [f32], ldk: usize) {
        for (row, &qi) in s.chunks_exact_mut(ldk).zip(q_ids) {
            let g = qi as usize / self.tile;
            let last = offset.saturating_add(qi as usize).min(u32::MAX as usize) as u32;
            // Keys from the window span on are the window's or the future's.
            let end = last.saturating_add(1).min(self.window_start[g]);
            let cut = k_ids.partition_point(|&j| j < end);
            row[cut..k_ids.len()].fill(f32::NEG_INFINITY);
            let blocks = &self.blocks[g * self.block_cap..][..self.block_lens[g] as usize];
            let samples = &self.samples[g * self.sample_cap..][..self.sample_lens[g] as usize];
            let (mut a, mut z) = (0, 0);
            for (x, &j) in row[..cut].iter_mut().zip(&k_ids[..cut]) {
                let block = j / self.block_size;
                while a < blocks.len() && blocks[a] < block {
                    a += 1;
                }
                while z < samples.len() && samples[z] < j {
                    z += 1;
                }
                if (a < blocks.len() && blocks[a] == block)
                    || (z < samples.len() && samples[z] == j)
                {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
    }
}

impl HeadBlocks<'_> {
    /// Every block of every query of (b, h) for a causal call whose query 0 sits at
    /// `offset`; merge order per query: its tile's call, then rounds 0 to R − 1.
    pub(super) fn run_causal(&self, offset: usize, running: &Running<'_>, s: &mut HybridScratch) {
        if self.config.n_blocks > 0 {
            self.block_bounds(s);
        }
        let nq = self.nq;
        let tiles = nq.div_ceil(self.config.causal_tile());
        s.chosen_cap = self.config.n_blocks.min(s.block_count());
        s.chosen.resize(tiles * s.chosen_cap, 0);
        s.chosen_lens.clear();
        s.chosen_lens.resize(tiles, 0);
        s.sample_cap = self.config.n_samples.min(self.nk);
        s.tile_samples.resize(tiles * s.sample_cap, 0);
        s.sample_lens.clear();
        s.sample_lens.resize(tiles, 0);
        s.window_start.clear();
        s.window_start.resize(tiles, u32::MAX);
        s.query_ids.clear();
        s.query_ids.extend(0..nq as u32);
        s.block_keys.clear();
        s.blocks.clear();
        for g in 0..tiles {
            self.gather(offset, g, s);
            if s.blocks.len() == SAMPLE_BATCH || s.block_keys.len() >= SAMPLE_KEYS {
                self.run_gathered(offset, s, running);
                s.block_keys.clear();
                s.blocks.clear();
            }
        }
        self.run_gathered(offset, s, running);
        for r in 0..self.config.n_hashes {
            self.causal_round(offset, r, s, running);
        }
    }

    /// Tile g's call, appended to `s.block_keys` as `[k0, k1)` sinks and chosen blocks'
    /// keys, `[k1, k2)` the window span (both by position), `[k2, k3)` samples.
    fn gather(&self, offset: usize, g: usize, s: &mut HybridScratch) {
        let valid = self.valid;
        let tile = self.config.causal_tile();
        let (i0, i1) = (g * tile, ((g + 1) * tile).min(self.nq) - 1);
        let seen = |i: usize| {
            let last = offset.saturating_add(i).min(u32::MAX as usize) as u32;
            valid.partition_point(|&j| j <= last)
        };
        let (first_seen, last_seen) = (seen(i0), seen(i1));
        let sinks = s.sinks.len().min(last_seen);
        let middle_end = sinks.max(first_seen.saturating_sub(self.config.window));
        if middle_end < last_seen {
            s.window_start[g] = valid[middle_end];
        }
        let k0 = s.block_keys.len();
        s.block_keys.extend_from_slice(&valid[..sinks]);
        let middle = sinks..middle_end;
        let p = self.config.key_block_size();
        if s.chosen_cap > 0 && !middle.is_empty() {
            let (lo, hi) = (
                valid[middle.start] as usize / p,
                valid[middle.end - 1] as usize / p,
            );
            self.choose_blocks(g, i0..=i1, lo, hi, s);
            let at = g * s.chosen_cap;
            for &block in &s.chosen[at..at + s.chosen_lens[g] as usize] {
                let (r0, r1) = s.block_ranks(block as usize);
                let (r0, r1) = (r0.max(middle.start), r1.min(middle.end));
                if r0 < r1 {
                    s.block_keys.extend_from_slice(&valid[r0..r1]);
                }
            }
        }
        let k1 = s.block_keys.len();
        s.block_keys
            .extend_from_slice(&valid[middle_end..last_seen]);
        let k2 = s.block_keys.len();
        let mut log_weight = 0.0;
        if s.sample_cap > 0 && !middle.is_empty() {
            let at = g * s.chosen_cap;
            let chosen = &s.chosen[at..at + s.chosen_lens[g] as usize];
            s.eligible.clear();
            let mut a = 0;
            for &j in &valid[middle] {
                let block = j as usize / p;
                while a < chosen.len() && (chosen[a] as usize) < block {
                    a += 1;
                }
                if a == chosen.len() || chosen[a] as usize != block {
                    s.eligible.push(j);
                }
            }
            let n = s.sample_cap.min(s.eligible.len());
            if n > 0 {
                log_weight = (s.eligible.len() as f64 / n as f64).ln() as f32;
                draw_samples_into(
                    sample_seed(self.config.seed, self.b, self.h, g),
                    &mut s.eligible,
                    n,
                    &mut s.swaps,
                    &mut s.block_keys,
                );
                let row = &mut s.tile_samples[g * s.sample_cap..][..n];
                row.copy_from_slice(&s.block_keys[k2..k2 + n]);
                row.sort_unstable();
                s.sample_lens[g] = n as u32;
            }
        }
        s.blocks.push(FusedBlock {
            group: g,
            k0,
            k1,
            k2,
            k3: s.block_keys.len(),
            log_weight,
            pad: 0,
        });
    }

    /// Tile g's key blocks among `lo..=hi` (those holding its middle): all of them when
    /// they are few enough, else the `n_blocks` holding valid keys with the largest upper
    /// bound of the logits of the sum of its queries (ties: the lower block), ascending.
    fn choose_blocks(
        &self,
        g: usize,
        queries: std::ops::RangeInclusive<usize>,
        lo: usize,
        hi: usize,
        s: &mut HybridScratch,
    ) {
        let (cap, at) = (s.chosen_cap, g * s.chosen_cap);
        let count = hi - lo + 1;
        if count <= cap {
            for (slot, block) in s.chosen[at..].iter_mut().zip(lo..=hi) {
                *slot = block as u32;
            }
            s.chosen_lens[g] = count as u32;
            return;
        }
        let d = self.q.dim;
        // The queries summed in order, in f32: the same bits on every tier.
        s.sel_query.clear();
        s.sel_query.resize(d, 0.0);
        s.wide.resize(d, 0.0);
        for i in queries {
            let query = match self.q.row_f32(i) {
                Some(query) => query,
                None => {
                    self.loads.convert.load(self.q.row(i), &mut s.wide[..d]);
                    &s.wide[..d]
                }
            };
            for (sum, &x) in s.sel_query.iter_mut().zip(query) {
                *sum += x;
            }
        }
        let nb = s.block_count();
        s.sel_scores.clear();
        s.sel_scores.resize(count, 0.0);
        bound_scores(
            self.kern,
            &s.sel_query,
            &s.bound_min[lo..],
            &s.bound_max[lo..],
            nb,
            &mut s.sel_scores,
        );
        s.sel_pool.clear();
        let (ranks, scores) = (&s.ranks, &s.sel_scores);
        s.sel_pool.extend(
            (lo..=hi)
                .filter(|&block| ranks[block] < ranks[block + 1])
                .map(|block| (u64::from(!ordered_key(scores[block - lo])) << 32) | block as u64),
        );
        let m = cap.min(s.sel_pool.len());
        if m < s.sel_pool.len() {
            s.sel_pool.select_nth_unstable(m);
        }
        let row = &mut s.chosen[at..at + m];
        for (slot, &key) in row.iter_mut().zip(&s.sel_pool[..m]) {
            *slot = key as u32;
        }
        row.sort_unstable();
        s.chosen_lens[g] = m as u32;
    }

    /// Each key block's first valid rank and the element-wise minimum and maximum of its
    /// valid keys, rounded outward to bf16, component-major; the query heads of one key/value head share them.
    fn block_bounds(&self, s: &mut HybridScratch) {
        let kv_head = (self.b, self.h / self.group);
        if s.bounds_of == Some(kv_head) {
            return;
        }
        s.bounds_of = Some(kv_head);
        let (p, d) = (self.config.key_block_size(), self.k.dim);
        let nb = self.nk.div_ceil(p);
        let valid = self.valid;
        s.ranks.clear();
        s.ranks.extend(
            (0..=nb).map(|block| valid.partition_point(|&j| (j as usize) < block * p) as u32),
        );
        s.bound_min.clear();
        s.bound_min.resize(nb * d, BF16_INF);
        s.bound_max.clear();
        s.bound_max.resize(nb * d, BF16_NEG_INF);
        s.wide.resize(d, 0.0);
        for block in 0..nb {
            for &j in &valid[s.ranks[block] as usize..s.ranks[block + 1] as usize] {
                let key = match self.k.row_f32(j as usize) {
                    Some(key) => key,
                    None => {
                        self.loads
                            .convert
                            .load(self.k.row(j as usize), &mut s.wide[..d]);
                        &s.wide[..d]
                    }
                };
                for (t, &x) in key.iter().enumerate() {
                    let at = t * nb + block;
                    widen_bounds(&mut s.bound_min[at], &mut s.bound_max[at], x);
                }
            }
        }
    }

    /// The tile calls gathered so far, in parallel.
    fn run_gathered(&self, offset: usize, s: &HybridScratch, running: &Running<'_>) {
        let tile = self.config.causal_tile();
        for_each_index_with(self.parallel, s.blocks.len(), self.tiles, |tiles, at| {
            let block = s.blocks[at];
            let keys = &s.block_keys[block.k0..block.k3];
            let g = block.group;
            let members = &s.query_ids[g * tile..((g + 1) * tile).min(self.nq)];
            let hook = |q_ids: &[u32], from: usize, k_ids: &[u32], t: &mut [f32], ldk: usize| {
                // `from`: where this key tile starts in `keys`; its columns split into the
                // by-position part [0, c) and the samples [c, n).
                let n = k_ids.len();
                let c = (block.k2 - block.k0).saturating_sub(from).min(n);
                crate::call::mask_future(offset, q_ids, &k_ids[..c], t, ldk);
                if block.log_weight != 0.0 {
                    for row in t.chunks_exact_mut(ldk) {
                        for x in &mut row[c..n] {
                            *x += block.log_weight;
                        }
                    }
                }
            };
            self.block(tiles, members, keys, Some(&hook), running);
        });
    }

    /// Round r: each cluster's keys (no sinks) with, per query, the future and what its
    /// tile took dropped.
    fn causal_round(&self, offset: usize, r: usize, s: &mut HybridScratch, running: &Running<'_>) {
        self.build_round(r, usize::MAX, s);
        let s = &*s;
        let taken = Taken {
            tile: self.config.causal_tile(),
            blocks: &s.chosen,
            block_lens: &s.chosen_lens,
            block_cap: s.chosen_cap,
            samples: &s.tile_samples,
            sample_lens: &s.sample_lens,
            sample_cap: s.sample_cap,
            window_start: &s.window_start,
            block_size: self.config.key_block_size().min(u32::MAX as usize) as u32,
        };
        let drop = move |q_ids: &[u32], _: usize, k_ids: &[u32], t: &mut [f32], ldk: usize| {
            taken.drop_columns(offset, q_ids, k_ids, t, ldk);
        };
        for_each_index_with(self.parallel, self.clusters, self.tiles, |tiles, c| {
            let members = &s.group_members[s.group_bounds[c]..s.group_bounds[c + 1]];
            let keys = &s.cluster_keys[s.cluster_bounds[c]..s.cluster_bounds[c + 1]];
            self.block(tiles, members, keys, Some(&drop), running);
        });
    }
}

impl HybridScratch {
    fn block_count(&self) -> usize {
        self.ranks.len().saturating_sub(1)
    }

    /// The valid ranks `[r0, r1)` of key block `block`.
    fn block_ranks(&self, block: usize) -> (usize, usize) {
        (self.ranks[block] as usize, self.ranks[block + 1] as usize)
    }
}
