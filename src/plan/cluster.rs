//! Steps 4–5 of design §1 for one (batch, head): each round of each side sorted by hash,
//! balanced cuts into clusters, and exact attention inside each cluster, merged round by
//! round into the running results (step 6, `super::combine`).

use super::combine::Running;
use super::{Call, HeadScratch, Plan};
use crate::attention;
use crate::call::mask_future;
use crate::runtime::buffer::Buf;
use crate::runtime::profile::{timed, Stage};
use crate::runtime::stream;
use crate::runtime::threads::{for_each_index_with, join_if, Par};
use crate::sort;
use crate::view::RowWriter;

impl Plan {
    /// Sorts every round of each side in one batched call per side (on two threads when
    /// `split` is set): `s.perm` receives `R × Nq` query orders, then `R × n'` valid-key
    /// ranks.
    pub(super) fn sort_sides(&self, nq: usize, nv: usize, split: Par<'_>, s: &mut HeadScratch) {
        let rounds = self.config.n_hashes;
        s.segments.clear();
        s.segments.extend(std::iter::repeat_n(nq, rounds));
        s.segments.extend(std::iter::repeat_n(nv, rounds));
        s.perm.resize(s.hashes.len(), 0);
        let (q_keys, k_keys) = s.hashes.split_at(rounds * nq);
        let (q_perm, k_perm) = s.perm.split_at_mut(rounds * nq);
        let (q_segments, k_segments) = s.segments.split_at(rounds);
        let (q_sort, k_sort, sort) = (&mut s.q_sort, &mut s.k_sort, self.sort);
        join_if(
            split,
            || {
                timed(Stage::Sort, || {
                    sort::sort_segments(sort, q_keys, q_segments, q_perm, q_sort)
                })
            },
            || {
                timed(Stage::Sort, || {
                    sort::sort_segments(sort, k_keys, k_segments, k_perm, k_sort)
                })
            },
        );
    }

    /// Steps 5–6 without §8 blocks: attention inside each cluster, merged into `running`
    /// round by round.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cluster_rounds(
        &self,
        call: &Call<'_>,
        out: &RowWriter<'_>,
        b: usize,
        h: usize,
        parallel: Par<'_>,
        perm: &[u32],
        key_order: &mut Buf<u32>,
        valid: &[u32],
        clusters: usize,
        running: &Running<'_>,
    ) {
        let shape = call.shape;
        let (nq, d, nv, rounds) = (shape.nq, shape.d, valid.len(), self.config.n_hashes);
        let hk = h / shape.group();
        let (q, k, v) = (
            call.q.head_rows(b, h),
            call.k.head_rows(b, hk),
            call.v.head_rows(b, hk),
        );
        let scale = self.scale();
        // Causal: keys past a query's position leave its cluster's softmax.
        let causal = shape.causal;
        let future = |q_ids: &[u32], _at: usize, k_ids: &[u32], s: &mut [f32], ldk: usize| {
            if let Some(offset) = causal {
                mask_future(offset, q_ids, k_ids, s, ldk);
            }
        };
        key_order.resize(nv, 0);
        // Output rows on whole cache lines take streaming stores in round 0, when the head's
        // output is too large to stay in cache anyway.
        let out_streams = stream::worth_streaming(nq, v.dim)
            && (0..nq.min(2)).all(|i| stream::can_stream(out.row_start(b, h, i), v.dim));
        for r in 0..rounds {
            let q_perm = &perm[r * nq..(r + 1) * nq];
            let k_perm = &perm[rounds * nq + r * nv..rounds * nq + (r + 1) * nv];
            for (slot, &rank) in key_order.iter_mut().zip(k_perm) {
                *slot = valid[rank as usize];
            }
            let key_order = &key_order[..];
            for_each_index_with(parallel, clusters, call.tiles, |tiles, c| {
                let (q0, q1) = cut(c, nq, clusters);
                let (k0, k1) = cut(c, nv, clusters);
                let members = &q_perm[q0..q1];
                let keys = &key_order[k0..k1];
                // Cluster rows are scattered: queue the next cluster's for the kernels to
                // prefetch while this one computes (`LineQueue`).
                if c + 1 < clusters {
                    let (n0, n1) = cut(c + 1, nq, clusters);
                    let (m0, m1) = cut(c + 1, nv, clusters);
                    let (next_queries, next_keys) = (&q_perm[n0..n1], &key_order[m0..m1]);
                    // The queue drains during this cluster's Q·Kᵀ and P·V.
                    let macs = members.len() * keys.len() * (d + v.dim);
                    let steps = macs / self.attention.macs_per_step;
                    tiles.queue.refill(steps, |queue| {
                        for &i in next_queries {
                            queue.push_span(q.row_start(i as usize), q.row_bytes());
                            // Rows written by streaming stores need no fetch.
                            if !(r == 0 && out_streams) {
                                let row = out.row_start(b, h, i as usize).cast();
                                queue.push_span(row, 4 * v.dim);
                            }
                        }
                        for &j in next_keys {
                            queue.push_span(k.row_start(j as usize), k.row_bytes());
                            queue.push_span(v.row_start(j as usize), v.row_bytes());
                        }
                    });
                }
                attention::attend(
                    self.attention,
                    &self.loads,
                    tiles,
                    q,
                    members,
                    k,
                    v,
                    keys,
                    scale,
                    causal.map(|_| &future as attention::TileAdjust<'_>),
                    |i, result| {
                        let qi = members[i] as usize;
                        // SAFETY: within a round every query is in exactly one cluster, so no
                        // other thread touches row qi of (b, h) or its running result. Round
                        // 0 stores every row whole (streamed: it is never read first), later
                        // rounds merge into it.
                        unsafe {
                            let row = out.row(b, h, qi);
                            if r == 0 {
                                running.store(self.attention, qi, row, result, out_streams)
                            } else {
                                running.merge(self.attention, qi, row, result)
                            }
                        };
                    },
                );
                // Whatever the kernels did not get to, before the next cluster's gathers.
                tiles.queue.drain();
                if r == 0 {
                    // Round 0's streamed rows before anything that publishes them.
                    stream::fence();
                }
            });
        }
    }
}

/// Balanced cut points: part c of `len` items split into `parts` (design §1 step 4).
#[inline(always)]
pub(crate) fn cut(c: usize, len: usize, parts: usize) -> (usize, usize) {
    let at = |i: usize| ((i as u64 * len as u64) / parts as u64) as usize;
    (at(c), at(c + 1))
}
