//! The SMYRF pipeline (design §1): a plan holds the configuration, the projection matrix, the
//! chosen kernels and the threads; each call runs norms → hashes → sort → clusters →
//! attention → round combine for every (batch, query head).
//!
//! Work on threads: the (batch, head) tasks run in parallel, and within each, every round's
//! clusters. When a call has fewer tasks than threads, each task also projects and sorts its
//! query side and its key side on two threads. Every task computes the same values whichever
//! thread runs it, so outputs are bitwise the same for any thread count.

use crate::alsh::{self, AlshKernels};
use crate::attention::{self, AttentionKernels, Rows, TileScratch};
use crate::call::{check_call, valid_keys_into, CallOptions, CallShape, SharedSlice};
use crate::config::{self, Config, MAX_HEAD_DIM};
use crate::dense;
use crate::error::{Error, Result};
use crate::isa::Isa;
use crate::runtime::pool::Pool;
use crate::runtime::prefetch;
use crate::runtime::profile::{timed, Stage, StageTimer};
use crate::runtime::stream;
use crate::runtime::threads::{for_each_index, for_each_index_with, join_if, Threads};
use crate::simd::Tier;
use crate::sort::{self, SortKernels, SortScratch};
use crate::view::{RowWriter, TensorView, TensorViewMut};
use combine::Running;
use hybrid::HybridScratch;
pub(crate) mod combine;
pub(crate) mod hybrid;

use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

/// A SMYRF attention plan: built once, then called any number of times, from any number of
/// threads at once.
pub struct Plan {
    config: Config,
    head_dim: usize,
    /// `(d + 2) × R`, row-major: `projections[t · R + r] = A[t, r]`.
    projections: Vec<f32>,
    /// `R × (d + 2)`: round r's column of A, contiguous for the projection kernels.
    projections_t: Vec<f32>,
    tier: Tier,
    alsh: &'static AlshKernels,
    attention: &'static AttentionKernels,
    sort: &'static SortKernels,
    threads: Threads,
    /// Per-task buffers: at most one per thread (see `attention_with`).
    scratch: Pool<HeadScratch>,
    /// Tile buffers and prefetch queue of each running cluster: at most one per thread.
    tiles: Pool<TileScratch>,
}

/// Buffers of one (batch, head) task, kept by the plan and reused across calls.
#[derive(Default)]
struct HeadScratch {
    valid: Vec<u32>,
    q_norms: Vec<f32>,
    k_norms: Vec<f32>,
    hashes: Vec<f32>,
    perm: Vec<u32>,
    segments: Vec<usize>,
    key_order: Vec<u32>,
    run_max: Vec<f32>,
    run_sum: Vec<f32>,
    /// Sort scratch of the query side and of the key side, which sort concurrently.
    q_sort: SortScratch,
    k_sort: SortScratch,
    hybrid: HybridScratch,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("config", &self.config)
            .field("head_dim", &self.head_dim)
            .field("isa", &self.tier.isa())
            .finish_non_exhaustive()
    }
}

/// Draws the `(d + 2) × R` projection matrix from `seed` (design §1 step 3), row-major.
pub fn gaussian_projections(seed: u64, head_dim: usize, n_hashes: usize) -> Vec<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..(head_dim + 2) * n_hashes)
        .map(|_| {
            let x: f64 = StandardNormal.sample(&mut rng);
            x as f32
        })
        .collect()
}

impl Plan {
    /// Builds a plan for head dim `head_dim`, drawing the projection matrix from `config.seed`.
    pub fn new(config: Config, head_dim: usize) -> Result<Plan> {
        check_plan_args(&config, head_dim)?;
        let projections = gaussian_projections(config.seed, head_dim, config.n_hashes);
        Plan::build(config, head_dim, projections)
    }

    /// Builds a plan from a caller-supplied projection matrix, `(head_dim + 2) × n_hashes`
    /// row-major (`projections[t · n_hashes + r] = A[t, r]`).
    pub fn with_projections(config: Config, head_dim: usize, projections: &[f32]) -> Result<Plan> {
        check_plan_args(&config, head_dim)?;
        let expected = (head_dim + 2) * config.n_hashes;
        if projections.len() != expected {
            return Err(Error::ProjectionLength {
                expected,
                found: projections.len(),
            });
        }
        Plan::build(config, head_dim, projections.to_vec())
    }

    fn build(config: Config, head_dim: usize, projections: Vec<f32>) -> Result<Plan> {
        let tier = Tier::resolve(config.isa)?;
        let rounds = config.n_hashes;
        let width = head_dim + 2;
        let mut projections_t = vec![0.0; projections.len()];
        for t in 0..width {
            for r in 0..rounds {
                projections_t[r * width + t] = projections[t * rounds + r];
            }
        }
        Ok(Plan {
            threads: Threads::new(config.num_threads)?,
            config,
            head_dim,
            projections,
            projections_t,
            tier,
            alsh: alsh::kernels(tier),
            attention: attention::kernels(tier),
            sort: sort::kernels(tier),
            scratch: Pool::default(),
            tiles: Pool::default(),
        })
    }

    /// The configuration the plan was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The head dim d of queries and keys.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The projection matrix A, `(d + 2) × R` row-major.
    pub fn projections(&self) -> &[f32] {
        &self.projections
    }

    /// The kernel tier the plan runs.
    pub fn isa(&self) -> Isa {
        self.tier.isa()
    }

    /// The logit scale the plan applies.
    pub fn scale(&self) -> f32 {
        config::effective_scale(self.config.scale, self.head_dim)
    }

    /// Upper bound, in bytes, of the scratch one call with these lengths allocates (reused
    /// by later calls): per concurrent (batch, head) task O(R·(Nq + Nk)), plus one set of
    /// attention tiles per thread. Never proportional to Nq·Nk.
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
        let per_head =
            per_head.saturating_add(hybrid::scratch_bytes(&self.config, nq, nk, self.head_dim));
        threads.saturating_mul(per_head.saturating_add(tiles))
    }

    /// SMYRF attention without a mask or lse output: writes `out` (`[B, Hq, Nq, dv]`). On
    /// error nothing is written.
    pub fn attention(
        &self,
        q: &TensorView<'_>,
        k: &TensorView<'_>,
        v: &TensorView<'_>,
        out: &mut TensorViewMut<'_>,
    ) -> Result<()> {
        self.attention_with(q, k, v, out, CallOptions::new())
    }

    /// SMYRF attention with the optional key mask and lse output of `options`. On error
    /// nothing is written.
    pub fn attention_with(
        &self,
        q: &TensorView<'_>,
        k: &TensorView<'_>,
        v: &TensorView<'_>,
        out: &mut TensorViewMut<'_>,
        options: CallOptions<'_>,
    ) -> Result<()> {
        let CallOptions { key_mask, lse } = options;
        let shape = check_call(q, k, v, key_mask, out, lse.as_deref())?;
        if shape.d != self.head_dim {
            return Err(Error::HeadDimMismatch {
                plan: self.head_dim,
                found: shape.d,
            });
        }
        hybrid::check_call(&self.config, shape.nq, shape.nk)?;
        let writer = out.rows_writer();
        let lse = lse.map(SharedSlice::new);
        let call = Call {
            shape,
            q,
            k,
            v,
            key_mask,
            out: &writer,
            lse: lse.as_ref(),
            split_sides: shape.batch * shape.q_heads < self.threads.count(),
        };
        let tasks = shape.batch * shape.q_heads;
        self.threads.run(|parallel| {
            // With a task for every thread, each task runs on one thread: a thread never
            // waits inside a task's parallel loop, where it could pick up another task, so
            // no more tasks run at once than there are threads (`scratch_bytes` relies on
            // it). With fewer tasks than threads, the clusters of each task share out the
            // threads instead.
            let inner = parallel && tasks < self.threads.count();
            for_each_index(parallel, tasks, |task| {
                let (b, h) = (task / shape.q_heads, task % shape.q_heads);
                let mut scratch = self.scratch.take();
                self.head(&call, b, h, inner, &mut scratch);
            })
        });
        Ok(())
    }

    /// Exact dense attention, softmax(scale · Q·Kᵀ) V, with the plan's scale, tier and threads
    /// (its SMYRF parameters play no part). On error nothing is written.
    pub fn dense_attention(
        &self,
        q: &TensorView<'_>,
        k: &TensorView<'_>,
        v: &TensorView<'_>,
        out: &mut TensorViewMut<'_>,
    ) -> Result<()> {
        self.dense_attention_with(q, k, v, out, CallOptions::new())
    }

    /// [`Plan::dense_attention`] with the optional key mask and lse output of `options`.
    pub fn dense_attention_with(
        &self,
        q: &TensorView<'_>,
        k: &TensorView<'_>,
        v: &TensorView<'_>,
        out: &mut TensorViewMut<'_>,
        options: CallOptions<'_>,
    ) -> Result<()> {
        let CallOptions { key_mask, lse } = options;
        let scale = Some(self.scale());
        self.threads.run(|parallel| {
            dense::dense_attention(
                self.attention,
                &self.tiles,
                parallel,
                q,
                k,
                v,
                key_mask,
                scale,
                out,
                lse,
            )
        })
    }

    /// Design §1 for one (batch element b, query head h).
    fn head(&self, call: &Call<'_>, b: usize, h: usize, parallel: bool, s: &mut HeadScratch) {
        // The valid-key list lives in the reused scratch: no allocation per call.
        let mut valid = std::mem::take(&mut s.valid);
        let nk = call.shape.nk;
        valid_keys_into(
            nk,
            call.key_mask.map(|m| &m[b * nk..(b + 1) * nk]),
            &mut valid,
        );
        self.head_with(call, b, h, parallel, s, &valid);
        s.valid = valid;
    }

    fn head_with(
        &self,
        call: &Call<'_>,
        b: usize,
        h: usize,
        parallel: bool,
        s: &mut HeadScratch,
        valid: &[u32],
    ) {
        let shape = call.shape;
        let (nq, d) = (shape.nq, shape.d);
        let hk = h / shape.group();
        let q = head_rows(call.q, b, h);
        let k = head_rows(call.k, b, hk);
        let v = head_rows(call.v, b, hk);
        let nv = valid.len();
        let lse_offset = (b * shape.q_heads + h) * nq;
        if nv == 0 {
            // Design §2: a batch element without valid keys gets zeros, not an error.
            for i in 0..nq {
                // SAFETY: this task alone owns the rows of (b, h).
                unsafe { call.out.row(b, h, i) }.fill(0.0);
            }
            if let Some(lse) = call.lse {
                // SAFETY: this task alone owns the lse entries of (b, h).
                unsafe { lse.range(lse_offset, nq) }.fill(f32::NEG_INFINITY);
            }
            return;
        }

        // Steps 1–3: norms, M over valid keys, hashes with the lift folded in. Stage timers
        // run inside the closures that may go to another thread, so that each thread's time
        // is counted.
        let rounds = self.config.n_hashes;
        s.q_norms.resize(nq, 0.0);
        s.k_norms.resize(nv, 0.0);
        s.hashes.resize(rounds * (nq + nv), 0.0);
        let (q_hashes, k_hashes) = s.hashes.split_at_mut(rounds * nq);
        let a_t = &self.projections_t[..];
        // Every key valid (no mask, or a mask of ones): the list is the identity, and the
        // kernel's contiguous-row path skips the index lookups.
        let key_ids = (nv < shape.nk).then_some(valid);
        let project = self.alsh.project;
        let (q_norms, k_norms) = (&mut s.q_norms, &mut s.k_norms);
        let split = parallel && call.split_sides;
        join_if(
            split,
            || {
                timed(Stage::Projection, || {
                    project(q, None, a_t, q_norms, q_hashes)
                })
            },
            || {
                timed(Stage::Projection, || {
                    project(k, key_ids, a_t, k_norms, k_hashes)
                })
            },
        );
        let lift = StageTimer::start(Stage::Projection);
        let max_of = |xs: &[f32]| xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let m = max_of(&s.q_norms) + max_of(&s.k_norms);
        let width = d + 2;
        let lift_q = alsh::lift_column(alsh::Side::Query, d);
        let lift_k = alsh::lift_column(alsh::Side::Key, d);
        alsh::apply_lift(q_hashes, &s.q_norms, m, a_t, width, lift_q);
        alsh::apply_lift(k_hashes, &s.k_norms, m, a_t, width, lift_k);
        drop(lift);

        // Step 4: every round of each side sorted in one batched call.
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
        let ck = config::key_cluster_size(&self.config, nq, shape.nk);
        let clusters = config::cluster_count(ck, nv, nq);
        // Steps 5–6 merge into each query's running result (`Running`): (max, sum) pairs in
        // `run_max` and `run_sum`, turned into log-sum-exps at the end.
        s.run_max.resize(nq, 0.0);
        s.run_sum.resize(nq, 0.0);
        let running = Running::new(&mut s.run_max, &mut s.run_sum);
        if self.config.has_hybrid_blocks() {
            // Design §8: sinks, window and residual samples around the cluster rounds.
            let blocks = hybrid::HeadBlocks {
                config: &self.config,
                kern: self.attention,
                scale: self.scale(),
                q_view: call.q,
                q,
                k,
                v,
                b,
                h,
                group: shape.group(),
                nq,
                nk: shape.nk,
                valid,
                q_perm: &s.perm[..rounds * nq],
                k_perm: &s.perm[rounds * nq..],
                clusters,
                out: call.out,
                tiles: &self.tiles,
                parallel,
            };
            blocks.run(&running, &mut s.hybrid);
        } else {
            let perm = &s.perm[..];
            self.cluster_rounds(
                call,
                b,
                h,
                parallel,
                perm,
                &mut s.key_order,
                valid,
                clusters,
                &running,
            );
        }
        if let Some(lse) = call.lse {
            // SAFETY: this task alone owns the lse entries of (b, h).
            let lse = unsafe { lse.range(lse_offset, nq) };
            combine::log_sum_exp(&s.run_max, &s.run_sum, lse);
        }
    }

    /// Steps 5–6 without §8 blocks: attention inside each cluster, merged into `running`
    /// round by round.
    #[allow(clippy::too_many_arguments)]
    fn cluster_rounds(
        &self,
        call: &Call<'_>,
        b: usize,
        h: usize,
        parallel: bool,
        perm: &[u32],
        key_order: &mut Vec<u32>,
        valid: &[u32],
        clusters: usize,
        running: &Running<'_>,
    ) {
        let shape = call.shape;
        let (nq, d, nv, rounds) = (shape.nq, shape.d, valid.len(), self.config.n_hashes);
        let hk = h / shape.group();
        let (q, k, v) = (
            head_rows(call.q, b, h),
            head_rows(call.k, b, hk),
            head_rows(call.v, b, hk),
        );
        let scale = self.scale();
        key_order.resize(nv, 0);
        // Output rows on whole cache lines take streaming stores in round 0, when the head's
        // output is too large to stay in cache anyway.
        let out_streams = stream::worth_streaming(nq, v.dim)
            && (0..nq.min(2)).all(|i| stream::can_stream(call.out.row_start(b, h, i), v.dim));
        for r in 0..rounds {
            let q_perm = &perm[r * nq..(r + 1) * nq];
            let k_perm = &perm[rounds * nq + r * nv..rounds * nq + (r + 1) * nv];
            for (slot, &rank) in key_order.iter_mut().zip(k_perm) {
                *slot = valid[rank as usize];
            }
            let key_order = &key_order[..];
            for_each_index_with(parallel, clusters, &self.tiles, |tiles, c| {
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
                            queue.push_span(q.row_start(i as usize), d);
                            // Rows written by streaming stores need no fetch.
                            if !(r == 0 && out_streams) {
                                queue.push_span(call.out.row_start(b, h, i as usize), v.dim);
                            }
                        }
                        for &j in next_keys {
                            queue.push_span(k.row_start(j as usize), d);
                            queue.push_span(v.row_start(j as usize), v.dim);
                        }
                    });
                }
                attention::attend(
                    self.attention,
                    tiles,
                    q,
                    members,
                    k,
                    v,
                    keys,
                    scale,
                    None,
                    |i, result| {
                        let qi = members[i] as usize;
                        // SAFETY: within a round every query is in exactly one cluster, so no
                        // other thread touches row qi of (b, h) or its running result. Round
                        // 0 stores every row whole (streamed: it is never read first), later
                        // rounds merge into it.
                        unsafe {
                            let row = call.out.row(b, h, qi);
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

/// Everything one call's tasks share.
struct Call<'a> {
    shape: CallShape,
    q: &'a TensorView<'a>,
    k: &'a TensorView<'a>,
    v: &'a TensorView<'a>,
    key_mask: Option<&'a [u8]>,
    out: &'a RowWriter<'a>,
    lse: Option<&'a SharedSlice<'a>>,
    /// Fewer heads than threads: each head projects and sorts its query and key sides on
    /// two threads. With enough heads to go round, the heads alone keep the threads busy
    /// (splitting then measured 1–3 % slower at 8 heads on 2 threads, within noise).
    split_sides: bool,
}

fn check_plan_args(config: &Config, head_dim: usize) -> Result<()> {
    config.validate()?;
    if head_dim == 0 {
        return Err(Error::ZeroSize { what: "head_dim" });
    }
    if head_dim > MAX_HEAD_DIM {
        return Err(Error::InvalidConfig {
            field: "head_dim",
            reason: "must be at most 65536",
        });
    }
    Ok(())
}

/// Rows of head h of batch element b.
pub(crate) fn head_rows<'a>(view: &TensorView<'a>, b: usize, h: usize) -> Rows<'a> {
    let shape = view.shape();
    Rows {
        data: view.data(),
        base: shape.row_offset(b, h, 0),
        stride: shape.seq_stride,
        dim: shape.dim,
    }
}

/// Balanced cut points: part c of `len` items split into `parts` (design §1 step 4).
#[inline(always)]
pub(crate) fn cut(c: usize, len: usize, parts: usize) -> (usize, usize) {
    let at = |i: usize| ((i as u64 * len as u64) / parts as u64) as usize;
    (at(c), at(c + 1))
}
