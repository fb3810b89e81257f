//! Design §8 local window: query i also attends to the valid keys j with |j − i| ≤ window/2,
//! in tiles of consecutive queries; the cluster and sample blocks drop those keys.

use super::HeadBlocks;
use crate::attention::LANES;
use crate::plan::combine::Running;
use crate::runtime::threads::for_each_index_with;

/// Consecutive queries per window tile: a tile of T queries attends to the T + 2·half keys
/// of its band, so T is small (few logits outside each query's own window) and chosen so
/// that the band fills whole 16-key vectors of the logit tile.
pub(super) fn window_tile(half: usize) -> usize {
    let tile = LANES - 2 * (half % (LANES / 2)); // LANES − (2·half mod LANES), overflow-free
    if tile < LANES / 2 {
        tile + LANES
    } else {
        tile
    }
}

impl HeadBlocks<'_> {
    /// Tiles of consecutive queries against the contiguous run of candidate keys covering
    /// their band; the hook keeps each query's own window.
    pub(super) fn window_block(
        &self,
        query_ids: &[u32],
        candidates: &[u32],
        running: &Running<'_>,
    ) {
        let half = self.half();
        let keep_window =
            move |q_ids: &[u32], _: usize, k_ids: &[u32], s: &mut [f32], ldk: usize| {
                let n = k_ids.len();
                let mut window = WindowCursor::default();
                for (row, &qi) in s.chunks_exact_mut(ldk).zip(q_ids) {
                    let (a, z) = window.advance(k_ids, qi, half);
                    row[..a].fill(f32::NEG_INFINITY);
                    row[z..n].fill(f32::NEG_INFINITY);
                }
            };
        let tile = window_tile(half as usize);
        let tasks = self.nq.div_ceil(tile);
        for_each_index_with(self.parallel, tasks, self.tiles, |tiles, t| {
            let (q0, q1) = (t * tile, ((t + 1) * tile).min(self.nq));
            let lo = (q0 as u32).saturating_sub(half);
            let hi = (q1 as u32 - 1).saturating_add(half);
            let a = candidates.partition_point(|&j| j < lo);
            let z = a + candidates[a..].partition_point(|&j| j <= hi);
            self.block(
                tiles,
                &query_ids[q0..q1],
                &candidates[a..z],
                Some(&keep_window),
                running,
            );
        });
    }
}

/// The run of position-sorted keys inside the windows of queries visited in increasing
/// position: two cursors that only move forward.
#[derive(Default)]
struct WindowCursor {
    a: usize,
    z: usize,
}

impl WindowCursor {
    /// The columns `[a, z)` of `k_ids` (sorted) inside query `qi`'s window; `qi` must not
    /// decrease between calls.
    #[inline(always)]
    fn advance(&mut self, k_ids: &[u32], qi: u32, half: u32) -> (usize, usize) {
        let (lo, hi) = (qi.saturating_sub(half), qi.saturating_add(half));
        let n = k_ids.len();
        while self.a < n && k_ids[self.a] < lo {
            self.a += 1;
        }
        self.z = self.z.max(self.a);
        while self.z < n && k_ids[self.z] <= hi {
            self.z += 1;
        }
        (self.a, self.z)
    }
}

/// Sets −∞ on the logits of keys inside each row's window: `k_ids` (sorted by position) are
/// the columns from `col0` on, `q_ids` the rows (sorted by position).
#[inline(always)]
pub(super) fn drop_window_columns(
    q_ids: &[u32],
    k_ids: &[u32],
    col0: usize,
    s: &mut [f32],
    ldk: usize,
    half: u32,
) {
    if k_ids.is_empty() {
        return;
    }
    let mut window = WindowCursor::default();
    for (row, &qi) in s.chunks_exact_mut(ldk).zip(q_ids) {
        let (a, z) = window.advance(k_ids, qi, half);
        row[col0 + a..col0 + z].fill(f32::NEG_INFINITY);
    }
}
