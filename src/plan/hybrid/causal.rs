//! Design §8 blocks in causal form. Query i at position p sees the valid keys at or before p;
//! in the order of those visible keys its sinks are the first `n_sinks`, its window the last
//! `window` after them, and the rest is its middle, where the key blocks, the round-0 cluster
//! and the samples find their keys. All of these are disjoint sets of one query's visible
//! keys, so they run as one attention call per query (the samples' log-weight added to their
//! logits by the hook); rounds ≥ 1 run per cluster with a hook that drops, per query, the
//! future, the window and the chosen blocks (the sinks are out of every cluster's key list).
//!
//! Each query's blocks are chosen in a fixed order on the task's thread, so the outputs do
//! not depend on the thread count; only the attention calls run in parallel.

use super::samples::{draw_samples_into, sample_seed};
use super::{FusedBlock, HeadBlocks, HybridScratch, SAMPLE_BATCH, SAMPLE_KEYS};
use crate::attention;
use crate::plan::combine::Running;
use crate::runtime::threads::for_each_index_with;
use crate::sort::ordered_key;

/// The key blocks chosen by every query of a (batch, head): query i's are
/// `blocks[i·cap..i·cap + lens[i]]`, ascending, with the position where its window starts.
#[derive(Clone, Copy)]
struct Chosen<'a> {
    blocks: &'a [u32],
    lens: &'a [u32],
    cap: usize,
    window_start: &'a [u32],
    block_size: u32,
}

impl Chosen<'_> {
    fn of(&self, qi: u32) -> &[u32] {
        let at = qi as usize * self.cap;
        &self.blocks[at..at + self.lens[qi as usize] as usize]
    }

    /// Sets −∞ on each row's logits of keys past its position, in its window or in one of
    /// its chosen blocks; `k_ids` are sorted by position, so one walk per row finds them.
    #[inline(always)]
    fn drop_columns(&self, offset: usize, q_ids: &[u32], k_ids: &[u32], s: &mut [f32], ldk: usize) {
        for (row, &qi) in s.chunks_exact_mut(ldk).zip(q_ids) {
            let last = offset.saturating_add(qi as usize).min(u32::MAX as usize) as u32;
            // Keys from the window's start on are the window's or the future's.
            let end = last.saturating_add(1).min(self.window_start[qi as usize]);
            let cut = k_ids.partition_point(|&j| j < end);
            row[cut..k_ids.len()].fill(f32::NEG_INFINITY);
            let chosen = self.of(qi);
            let mut a = 0;
            for (x, &j) in row[..cut].iter_mut().zip(&k_ids[..cut]) {
                let block = j / self.block_size;
                while a < chosen.len() && chosen[a] < block {
                    a += 1;
                }
                if a == chosen.len() {
                    break;
                }
                if chosen[a] == block {
                    *x = f32::NEG_INFINITY;
                }
            }
        }
    }
}

impl HeadBlocks<'_> {
    /// Every block of every query of (b, h) for a causal call whose query 0 sits at
    /// `offset`; merge order per query: the fused call, then rounds 1 to R − 1.
    pub(super) fn run_causal(&self, offset: usize, running: &Running<'_>, s: &mut HybridScratch) {
        if self.config.n_blocks > 0 {
            self.block_bounds(s);
        }
        let nq = self.nq;
        let cap = self.config.n_blocks.min(s.block_count());
        s.chosen_cap = cap;
        s.chosen.resize(nq * cap, 0);
        s.chosen_lens.clear();
        s.chosen_lens.resize(nq, 0);
        s.window_start.clear();
        s.window_start.resize(nq, u32::MAX);
        self.build_round(0, usize::MAX, s);
        s.block_keys.clear();
        s.blocks.clear();
        for i in 0..nq {
            self.gather(offset, i, s);
            if s.blocks.len() == SAMPLE_BATCH || s.block_keys.len() >= SAMPLE_KEYS {
                self.run_gathered(s, running);
                s.block_keys.clear();
                s.blocks.clear();
            }
        }
        self.run_gathered(s, running);
        for r in 1..self.config.n_hashes {
            self.causal_round(offset, r, s, running);
        }
    }

    /// Query i's fused call: its visible sinks, its window, the keys of its chosen blocks,
    /// of its round-0 cluster and its samples, appended to `s.block_keys`.
    fn gather(&self, offset: usize, i: usize, s: &mut HybridScratch) {
        let valid = self.valid;
        let last = offset.saturating_add(i).min(u32::MAX as usize) as u32;
        let seen = valid.partition_point(|&j| j <= last);
        let sinks = s.sinks.len().min(seen);
        let middle_end = sinks.max(seen.saturating_sub(self.config.window));
        if middle_end < seen {
            s.window_start[i] = valid[middle_end];
        }
        let k0 = s.block_keys.len();
        s.block_keys.extend_from_slice(&valid[..sinks]);
        s.block_keys.extend_from_slice(&valid[middle_end..seen]);
        let middle = sinks..middle_end;
        if middle.is_empty() {
            s.blocks.push(FusedBlock {
                group: i,
                k0,
                k1: k0,
                k2: s.block_keys.len(),
                k3: s.block_keys.len(),
                log_weight: 0.0,
                pad: 0,
            });
            return;
        }
        let p = self.config.key_block_size();
        if s.chosen_cap > 0 {
            self.choose_blocks(
                i,
                valid[middle.start] as usize / p,
                valid[middle.end - 1] as usize / p,
                s,
            );
            let at = i * s.chosen_cap;
            for &block in &s.chosen[at..at + s.chosen_lens[i] as usize] {
                let (r0, r1) = s.block_ranks(block as usize);
                let (r0, r1) = (r0.max(middle.start), r1.min(middle.end));
                if r0 < r1 {
                    s.block_keys.extend_from_slice(&valid[r0..r1]);
                }
            }
        }
        let at = i * s.chosen_cap;
        let chosen = &s.chosen[at..at + s.chosen_lens[i] as usize];
        let not_chosen = |j: u32, a: &mut usize| {
            let block = j as usize / p;
            while *a < chosen.len() && (chosen[*a] as usize) < block {
                *a += 1;
            }
            *a == chosen.len() || chosen[*a] as usize != block
        };
        // Round 0's cluster: its keys (no sinks, by position) in the query's middle.
        let c = s.group_cluster[s.query_group[i] as usize] as usize;
        let end = valid[middle.end - 1];
        let mut a = 0;
        for &j in &s.cluster_keys[s.cluster_bounds[c]..s.cluster_bounds[c + 1]] {
            if j > end {
                break;
            }
            if not_chosen(j, &mut a) {
                s.block_keys.push(j);
            }
        }
        let k2 = s.block_keys.len();
        let mut log_weight = 0.0;
        if self.config.n_samples > 0 {
            s.eligible.clear();
            let mut a = 0;
            for &j in &valid[middle] {
                if s.key_cluster[j as usize] as usize != c && not_chosen(j, &mut a) {
                    s.eligible.push(j);
                }
            }
            let n = self.config.n_samples.min(s.eligible.len());
            if n > 0 {
                log_weight = (s.eligible.len() as f64 / n as f64).ln() as f32;
                draw_samples_into(
                    sample_seed(self.config.seed, self.b, self.h, i),
                    &mut s.eligible,
                    n,
                    &mut s.swaps,
                    &mut s.block_keys,
                );
            }
        }
        s.blocks.push(FusedBlock {
            group: i,
            k0,
            k1: k0,
            k2,
            k3: s.block_keys.len(),
            log_weight,
            pad: 0,
        });
    }

    /// Query i's key blocks among `lo..=hi` (those holding its middle): all of them when
    /// they are few enough, else the `n_blocks` holding valid keys with the largest upper
    /// bound of its logits (ties: the lower block), ascending.
    fn choose_blocks(&self, i: usize, lo: usize, hi: usize, s: &mut HybridScratch) {
        let (cap, at) = (s.chosen_cap, i * s.chosen_cap);
        let count = hi - lo + 1;
        if count <= cap {
            for (slot, block) in s.chosen[at..].iter_mut().zip(lo..=hi) {
                *slot = block as u32;
            }
            s.chosen_lens[i] = count as u32;
            return;
        }
        let d = self.q.dim;
        let query = match self.q.row_f32(i) {
            Some(query) => query,
            None => {
                s.sel_query.resize(d, 0.0);
                self.loads.convert.load(self.q.row(i), &mut s.sel_query);
                &s.sel_query[..]
            }
        };
        let nb = s.block_count();
        s.sel_scores.clear();
        s.sel_scores.resize(count, 0.0);
        for (t, &qt) in query.iter().enumerate() {
            let (lower, upper) = (&s.bound_min[t * nb + lo..], &s.bound_max[t * nb + lo..]);
            // Multiplies, max and adds in component order, never fused: every tier gets the
            // same scores.
            for ((score, &mn), &mx) in s.sel_scores.iter_mut().zip(lower).zip(upper) {
                *score += (qt * mn).max(qt * mx);
            }
        }
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
        s.chosen_lens[i] = m as u32;
    }

    /// Each key block's first valid rank and the element-wise minimum and maximum of its
    /// valid keys, component-major; the query heads of one key/value head share them.
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
        s.bound_min.resize(nb * d, f32::INFINITY);
        s.bound_max.clear();
        s.bound_max.resize(nb * d, f32::NEG_INFINITY);
        s.wide.resize(d, 0.0);
        for block in 0..nb {
            for &j in &valid[s.ranks[block] as usize..s.ranks[block + 1] as usize] {
                let key = match self.k.row_f32(j as usize) {
                    Some(key) => key,
                    None => {
                        self.loads.convert.load(self.k.row(j as usize), &mut s.wide);
                        &s.wide[..]
                    }
                };
                for (t, &x) in key.iter().enumerate() {
                    let at = t * nb + block;
                    s.bound_min[at] = s.bound_min[at].min(x);
                    s.bound_max[at] = s.bound_max[at].max(x);
                }
            }
        }
    }

    /// The fused calls gathered so far, one query each, in parallel.
    fn run_gathered(&self, s: &HybridScratch, running: &Running<'_>) {
        for_each_index_with(self.parallel, s.blocks.len(), self.tiles, |tiles, at| {
            let block = s.blocks[at];
            let keys = &s.block_keys[block.k0..block.k3];
            let query = [block.group as u32];
            let weigh = |_: &[u32], from: usize, k_ids: &[u32], t: &mut [f32], ldk: usize| {
                // `from`: where this key tile starts in `keys`; samples are its tail.
                let c = (block.k2 - block.k0).saturating_sub(from).min(k_ids.len());
                for row in t.chunks_exact_mut(ldk) {
                    for x in &mut row[c..k_ids.len()] {
                        *x += block.log_weight;
                    }
                }
            };
            let hook = (block.log_weight != 0.0).then_some(&weigh as attention::TileAdjust<'_>);
            self.block(tiles, &query, keys, hook, running);
        });
    }

    /// Round r ≥ 1: each cluster's keys (no sinks) with, per query, the future, the window
    /// and the chosen blocks dropped.
    fn causal_round(&self, offset: usize, r: usize, s: &mut HybridScratch, running: &Running<'_>) {
        self.build_round(r, usize::MAX, s);
        let s = &*s;
        let chosen = Chosen {
            blocks: &s.chosen,
            lens: &s.chosen_lens,
            cap: s.chosen_cap,
            window_start: &s.window_start,
            block_size: self.config.key_block_size().min(u32::MAX as usize) as u32,
        };
        let drop = move |q_ids: &[u32], _: usize, k_ids: &[u32], t: &mut [f32], ldk: usize| {
            chosen.drop_columns(offset, q_ids, k_ids, t, ldk);
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
