//! Design §8 selected keys: per query, the candidate keys outside its window with the
//! largest approximate logit, scored on the query's components largest in magnitude against
//! a transposed f32 copy of the candidate keys, then attended to exactly. The cluster and
//! sample blocks drop them, so no key is counted twice.

use super::{HeadBlocks, HybridScratch};
use crate::plan::combine::Running;
use crate::runtime::threads::for_each_index_with;
use crate::sort::ordered_key;

/// The selected keys of every query of a (batch, head): query i's are
/// `keys[i·cap..i·cap + lens[i]]`, by position.
#[derive(Clone, Copy)]
pub(super) struct Selected<'a> {
    pub(super) keys: &'a [u32],
    pub(super) lens: &'a [u32],
    pub(super) cap: usize,
}

impl Selected<'_> {
    fn of(&self, qi: u32) -> &[u32] {
        let at = qi as usize * self.cap;
        &self.keys[at..at + self.lens[qi as usize] as usize]
    }

    /// Sets −∞ on the logits of each row's selected keys: `k_ids` (sorted by position) are
    /// the columns from `col0` on, `q_ids` the rows. Both lists are sorted, so one merge walk
    /// per row finds them.
    #[inline(always)]
    pub(super) fn drop_columns(
        &self,
        q_ids: &[u32],
        k_ids: &[u32],
        col0: usize,
        s: &mut [f32],
        ldk: usize,
    ) {
        if k_ids.is_empty() {
            return;
        }
        for (row, &qi) in s.chunks_exact_mut(ldk).zip(q_ids) {
            let chosen = self.of(qi);
            let (mut a, mut c) = (0, 0);
            while a < chosen.len() && c < k_ids.len() {
                match chosen[a].cmp(&k_ids[c]) {
                    std::cmp::Ordering::Less => a += 1,
                    std::cmp::Ordering::Greater => c += 1,
                    std::cmp::Ordering::Equal => {
                        row[col0 + c] = f32::NEG_INFINITY;
                        a += 1;
                        c += 1;
                    }
                }
            }
        }
    }
}

impl HeadBlocks<'_> {
    /// Chooses every query's selected keys into `s.selected` and attends to them.
    pub(super) fn selected_block(&self, s: &mut HybridScratch, running: &Running<'_>) {
        self.transpose_candidates(s);
        let (nq, nc, d) = (self.nq, s.candidates.len(), self.q.dim);
        let cap = self.config.n_selected.min(self.nk);
        let dims = self.config.selection_dims(d);
        let half = self.half();
        s.selected_cap = cap;
        s.selected.resize(nq * cap, 0);
        s.selected_lens.clear();
        s.selected_lens.resize(nq, 0);
        s.sel_query.resize(d, 0.0);
        s.sel_scores.resize(nc, 0.0);
        for i in 0..nq {
            let query = match self.q.row_f32(i) {
                Some(query) => query,
                None => {
                    self.loads.convert.load(self.q.row(i), &mut s.sel_query);
                    &s.sel_query[..]
                }
            };
            // The components largest in magnitude (ties: the lower index), summed in index
            // order so the scores do not depend on the selection's internal order.
            s.sel_dims.clear();
            s.sel_dims.extend(
                query
                    .iter()
                    .enumerate()
                    .map(|(t, &x)| (u64::from(!ordered_key(x.abs())) << 32) | t as u64),
            );
            if dims < d {
                s.sel_dims.select_nth_unstable(dims);
            }
            s.sel_dims.resize(dims, 0);
            s.sel_dims.sort_unstable_by_key(|&key| key as u32);
            s.sel_scores.fill(0.0);
            for &key in &s.sel_dims {
                let t = key as u32 as usize;
                let qt = query[t];
                // Element-wise multiply and add, never fused: the same bits on every tier.
                for (score, &k) in s.sel_scores.iter_mut().zip(&s.kt[t * nc..(t + 1) * nc]) {
                    *score += qt * k;
                }
            }
            // The window's keys are the window block's; the selection takes the rest.
            let (a, z) = if self.config.window > 0 {
                let (lo, hi) = (
                    (i as u32).saturating_sub(half),
                    (i as u32).saturating_add(half),
                );
                let a = s.candidates.partition_point(|&j| j < lo);
                (a, a + s.candidates[a..].partition_point(|&j| j <= hi))
            } else {
                (0, 0)
            };
            // Descending score, then ascending position: a total order, so the choice is
            // deterministic whatever the selection algorithm.
            s.sel_pool.clear();
            let (scores, candidates) = (&s.sel_scores, &s.candidates);
            s.sel_pool.extend(
                (0..a)
                    .chain(z..nc)
                    .map(|c| (u64::from(!ordered_key(scores[c])) << 32) | u64::from(candidates[c])),
            );
            let m = cap.min(s.sel_pool.len());
            if m < s.sel_pool.len() {
                s.sel_pool.select_nth_unstable(m);
            }
            let row = &mut s.selected[i * cap..i * cap + m];
            for (slot, &key) in row.iter_mut().zip(&s.sel_pool[..m]) {
                *slot = key as u32;
            }
            row.sort_unstable();
            s.selected_lens[i] = m as u32;
        }
        let selected = s.selected();
        for_each_index_with(self.parallel, nq, self.tiles, |tiles, i| {
            let qi = [i as u32];
            self.block(tiles, &qi, selected.of(i as u32), None, running);
        });
    }

    /// The candidate keys of this (batch, key/value head) as f32, component-major
    /// (`kt[t·nc + c]` is component t of candidate c), so that scoring reads whole rows.
    /// The query heads of one key/value head share it.
    fn transpose_candidates(&self, s: &mut HybridScratch) {
        let kv_head = (self.b, self.h / self.group);
        if s.kt_of == Some(kv_head) {
            return;
        }
        s.kt_of = Some(kv_head);
        let (nc, d) = (s.candidates.len(), self.k.dim);
        s.kt.resize(nc * d, 0.0);
        s.sel_query.resize(d, 0.0);
        for (c, &j) in s.candidates.iter().enumerate() {
            let key = match self.k.row_f32(j as usize) {
                Some(key) => key,
                None => {
                    self.loads
                        .convert
                        .load(self.k.row(j as usize), &mut s.sel_query);
                    &s.sel_query[..]
                }
            };
            for (t, &x) in key.iter().enumerate() {
                s.kt[t * nc + c] = x;
            }
        }
    }
}

impl HybridScratch {
    pub(super) fn selected(&self) -> Selected<'_> {
        Selected {
            keys: &self.selected,
            lens: &self.selected_lens,
            cap: self.selected_cap,
        }
    }
}
