//! The buffers a plan keeps for its (batch, head) tasks, and the bound on what a call
//! allocates (design §3: no allocation proportional to Nq·Nk, size known before the call).

use super::hybrid::{self, HybridScratch};
use super::Plan;
use crate::attention;
use crate::config;
use crate::runtime::prefetch;
use crate::sort::{self, SortScratch};

/// Buffers of one (batch, head) task, kept by the plan and reused across calls.
#[derive(Default)]
pub(super) struct HeadScratch {
    pub(super) valid: Vec<u32>,
    pub(super) q_norms: Vec<f32>,
    pub(super) k_norms: Vec<f32>,
    pub(super) hashes: Vec<f32>,
    pub(super) perm: Vec<u32>,
    pub(super) segments: Vec<usize>,
    pub(super) key_order: Vec<u32>,
    pub(super) run_max: Vec<f32>,
    pub(super) run_sum: Vec<f32>,
    /// Sort scratch of the query side and of the key side, which sort concurrently.
    pub(super) q_sort: SortScratch,
    pub(super) k_sort: SortScratch,
    pub(super) hybrid: HybridScratch,
    /// 16-bit query and key rows widened for the projection, a block at a time.
    pub(super) q_stage: Vec<f32>,
    pub(super) k_stage: Vec<f32>,
    /// The f32 output rows of a (batch, head) whose output is 16-bit.
    pub(super) out_stage: Vec<f32>,
}

impl Plan {
    /// Upper bound, in bytes, of the scratch the plan holds for calls with these lengths
    /// (kept and reused by later calls): per thread one (batch, head) task set,
    /// O(R·(Nq + Nk)), and one set of attention tiles. Never proportional to Nq·Nk. It holds
    /// for any number of concurrent calls with at least as many (batch, head) tasks as
    /// threads; a call with fewer tasks spreads each task over the threads, and concurrent
    /// calls of that kind may hold one task set more each.
    pub fn scratch_bytes(&self, nq: usize, nk: usize, dv: usize) -> usize {
        let rounds = self.config.n_hashes;
        // Saturating throughout: lengths near 2^32 must not wrap to a small bound.
        let per_token = 4 // norms
            + 4 * rounds // hashes
            + 4 * rounds // permutations
            + 4 // key order (keys), running maxima (queries)
            + 4; // running sums (queries)
        let per_head = nq
            .saturating_add(nk)
            .saturating_mul(per_token)
            .saturating_add(8 * 2 * rounds) // segment lengths
            // Each side's sort, the two running at once.
            .saturating_add(sort::scratch_bytes(nq))
            .saturating_add(sort::scratch_bytes(nk));
        let threads = self.threads.count();
        let ck = config::key_cluster_size(&self.config, nq.max(1), nk);
        let largest_cluster = nq.div_ceil(config::cluster_count(ck, nk.max(1), nq.max(1)));
        let largest_call = largest_cluster.max(hybrid::largest_block_queries(&self.config, nq));
        // `attend` never gathers more than `Q_BLOCK` queries at once.
        let tiles =
            attention::tile_scratch_bytes(largest_call.min(attention::Q_BLOCK), self.head_dim, dv)
                // The prefetch queue of the next cluster.
                .saturating_add(prefetch::QUEUE_BYTES);
        // 16-bit inputs widened for the projection, a 16-bit output staged in f32.
        let staging = (2 * crate::alsh::STAGE_ROWS)
            .saturating_mul(self.head_dim)
            .saturating_add(nq.saturating_mul(dv))
            .saturating_mul(4);
        let per_head = per_head
            .saturating_add(hybrid::scratch_bytes(&self.config, nq, nk, self.head_dim))
            .saturating_add(staging);
        threads.saturating_mul(per_head.saturating_add(tiles))
    }
}
