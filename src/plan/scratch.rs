//! The buffers of the (batch, head) tasks: kept by the plan, or carved from a caller's
//! workspace for one call; the bound on what a call allocates and the size of a workspace
//! (design §3: no allocation proportional to Nq·Nk, size known before the call).

use super::hybrid::{self, HybridScratch};
use super::Plan;
use crate::alsh;
use crate::attention::{self, TileScratch, TileShape};
use crate::call::{CallShape, CallSizes};
use crate::config;
use crate::error::{Error, Result};
use crate::runtime::arena::Arena;
use crate::runtime::buffer::Buf;
use crate::runtime::pool::FixedPool;
use crate::runtime::prefetch;
use crate::sort::{self, SortScratch};
use crate::view::DType;
use std::mem::MaybeUninit;

/// Buffers of one (batch, head) task, kept by the plan and reused across calls, or carved
/// from a call's workspace.
#[derive(Default)]
pub(super) struct HeadScratch {
    pub(super) valid: Buf<u32>,
    pub(super) q_norms: Buf<f32>,
    pub(super) k_norms: Buf<f32>,
    pub(super) hashes: Buf<f32>,
    pub(super) perm: Buf<u32>,
    pub(super) segments: Buf<usize>,
    pub(super) key_order: Buf<u32>,
    pub(super) run_max: Buf<f32>,
    pub(super) run_sum: Buf<f32>,
    /// Sort scratch of the query side and of the key side, which sort concurrently.
    pub(super) q_sort: SortScratch,
    pub(super) k_sort: SortScratch,
    pub(super) hybrid: HybridScratch,
    /// 16-bit query and key rows widened for the projection, a block at a time.
    pub(super) q_stage: Buf<f32>,
    pub(super) k_stage: Buf<f32>,
    /// The f32 output rows of a (batch, head) whose output is 16-bit.
    pub(super) out_stage: Buf<f32>,
}

impl HeadScratch {
    /// The buffers of one task carved from a workspace, each at the largest length the
    /// pipeline grows it to for a call of these sizes (with every key valid, the worst
    /// case): `head`, `hash_sides`, `sort_sides` and `cluster_rounds` size them.
    fn carve(arena: &mut Arena<'_>, config: &config::Config, sizes: &CallSizes) -> HeadScratch {
        let CallShape { nq, nk, d, .. } = sizes.shape;
        let rounds = config.n_hashes;
        // Saturating: a size past `usize::MAX` must read as too large, not wrap.
        let per_round = rounds.saturating_mul(nq.saturating_add(nk));
        let stage = |dtype: DType| match dtype {
            DType::F32 => 0,
            _ => alsh::STAGE_ROWS.saturating_mul(d),
        };
        HeadScratch {
            valid: arena.buf(nk),
            q_norms: arena.buf(nq),
            k_norms: arena.buf(nk),
            hashes: arena.buf(per_round),
            perm: arena.buf(per_round),
            segments: arena.buf(2 * rounds),
            // The §8 blocks keep their own key lists.
            key_order: arena.buf(if config.has_hybrid_blocks() { 0 } else { nk }),
            run_max: arena.buf(nq),
            run_sum: arena.buf(nq),
            q_sort: SortScratch::carve(arena, nq),
            k_sort: SortScratch::carve(arena, nk),
            hybrid: HybridScratch::carve(arena, config, nq, nk, d),
            q_stage: arena.buf(stage(sizes.q)),
            k_stage: arena.buf(stage(sizes.k)),
            out_stage: arena.buf(match sizes.out {
                DType::F32 => 0,
                _ => nq.saturating_mul(sizes.dv),
            }),
        }
    }
}

/// The scratch of one call carved from its workspace: a task set for each (batch, head)
/// task that can run at once and a tile set for each running cluster.
pub(super) struct CallPools<'a> {
    pub(super) heads: FixedPool<'a, HeadScratch>,
    pub(super) tiles: FixedPool<'a, TileScratch>,
}

impl Plan {
    /// The workspace layout of a call: `run_attention` never has more tasks running at once
    /// than the call's workers, nor more (batch, head) tasks than the call has; each running
    /// task attends one cluster (or §8 block) at a time, and a task's parallel loops have at
    /// most Nq iterations. Measuring, it counts the bytes; carving, it builds the pools.
    fn layout<'a>(&self, arena: &mut Arena<'a>, sizes: &CallSizes) -> CallPools<'a> {
        let (tasks, _) = self.tasks(sizes.shape);
        let CallShape { nq, nk, d, .. } = sizes.shape;
        let workers = sizes.workers;
        let heads = FixedPool::carve(arena, workers.min(tasks), |arena| {
            HeadScratch::carve(arena, &self.config, sizes)
        });
        let tile = TileShape {
            // With keys masked, one cluster may hold every query.
            queries: nq,
            keys: nk,
            d,
            dv: sizes.dv,
            widen_keys: sizes.k != DType::F32,
            // Only the plain cluster rounds queue the next cluster's rows.
            prefetch: !self.config.has_hybrid_blocks(),
        };
        let tile_sets = workers.min(tasks.saturating_mul(nq));
        let tiles = FixedPool::carve(arena, tile_sets, |arena| TileScratch::carve(arena, &tile));
        CallPools { heads, tiles }
    }

    /// Bytes of the workspace a call of these sizes needs, at any alignment.
    pub(super) fn workspace_bytes(&self, sizes: &CallSizes) -> usize {
        let mut arena = Arena::measuring();
        self.layout(&mut arena, sizes);
        arena.needed()
    }

    /// The call's scratch carved from `workspace`, or `WorkspaceTooSmall` (then nothing is
    /// written).
    pub(super) fn carve_workspace<'a>(
        &self,
        workspace: &'a mut [MaybeUninit<u8>],
        sizes: &CallSizes,
    ) -> Result<CallPools<'a>> {
        let needed = self.workspace_bytes(sizes);
        if workspace.len() < needed {
            return Err(Error::WorkspaceTooSmall {
                needed,
                given: workspace.len(),
            });
        }
        // SAFETY: every buffer carved goes into an item of the returned pools, which borrow
        // the workspace for 'a and drop their items with them.
        let mut arena = unsafe { Arena::over(workspace) };
        Ok(self.layout(&mut arena, sizes))
    }
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
