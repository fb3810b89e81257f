//! The SMYRF pipeline (design §1): a plan holds the configuration, the projection matrix, the
//! chosen kernels and the threads; each call runs norms → hashes → sort → clusters →
//! attention → round combine for every (batch, query head).
//!
//! Work on threads: the (batch, head) tasks run in parallel, and within each, every round's
//! clusters. When a call has fewer tasks than threads, each task also projects and sorts its
//! query side and its key side on two threads. Every task computes the same values whichever
//! thread runs it, so outputs are bitwise the same for any thread count.

use crate::alsh::{self, AlshKernels};
use crate::attention::{self, AttentionKernels, Loads, TileScratch};
use crate::call::{extend_valid_keys, CallOptions, CallShape, CallSizes, KeyLimit, SharedSlice};
use crate::config::{self, Config, MAX_HEAD_DIM};
use crate::dense;
use crate::error::{Error, Result};
use crate::isa::Isa;
use crate::runtime::pool::{Pool, PoolRef};
use crate::runtime::threads::{for_each_index, Par, Threads};
use crate::simd::Tier;
use crate::sort::{self, SortKernels};
use crate::view::{AnyView, DType, Element, OutRows, RowWriter, Shape, TensorView, TensorViewMut};
use combine::Running;
pub(crate) mod bounds;
mod cluster;
pub(crate) mod combine;
mod hash;
pub(crate) mod hybrid;
mod index;
pub use index::KvIndex;
mod scratch;

pub(crate) use cluster::cut;
use scratch::{CallPools, HeadScratch};

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
    loads: Loads,
    threads: Threads,
    /// Per-task buffers: at most one per thread (see `attention_with`).
    scratch: Pool<HeadScratch>,
    /// Tile buffers and prefetch queue of each running cluster: at most one per thread.
    tiles: Pool<TileScratch>,
    /// Buffers of each running dense task: at most one per thread.
    dense: Pool<dense::DenseScratch>,
    /// Buffers of each running decode task: at most one per thread.
    decode: Pool<index::DecodeScratch>,
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
        let loads = Loads::new(tier, config.bf16_exact);
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
            loads,
            scratch: Pool::default(),
            tiles: Pool::default(),
            dense: Pool::default(),
            decode: Pool::default(),
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

    /// SMYRF attention without a mask or lse output: writes `out` (`[B, Hq, Nq, dv]`). Q, K,
    /// V and out may each be f32, f16 or bf16; the arithmetic is f32. On error nothing is
    /// written.
    pub fn attention<TQ: Element, TK: Element, TV: Element, TO: Element>(
        &self,
        q: &TensorView<'_, TQ>,
        k: &TensorView<'_, TK>,
        v: &TensorView<'_, TV>,
        out: &mut TensorViewMut<'_, TO>,
    ) -> Result<()> {
        self.attention_with(q, k, v, out, CallOptions::new())
    }

    /// SMYRF attention with the key mask, key lengths, head sinks and lse output of
    /// `options`. On error nothing is written.
    pub fn attention_with<TQ: Element, TK: Element, TV: Element, TO: Element>(
        &self,
        q: &TensorView<'_, TQ>,
        k: &TensorView<'_, TK>,
        v: &TensorView<'_, TV>,
        out: &mut TensorViewMut<'_, TO>,
        options: CallOptions<'_>,
    ) -> Result<()> {
        let out_shape = out.shape();
        self.run_attention(
            q.erase(),
            k.erase(),
            v.erase(),
            out_shape,
            out.rows_writer(),
            options,
        )
    }

    /// Bytes of the workspace (see [`CallOptions::workspace`]) that
    /// [`Plan::attention_with`] needs for these views and options: with at least that much,
    /// at any alignment, the call allocates nothing. It depends on the shapes, the element
    /// types, the plan's config and threads and the options' `parallel_for` (how many tasks
    /// run at once), not on the data, the mask or the key lengths. With `num_threads = 0` it
    /// is the size for the rayon pool the caller is on. The views and options are checked
    /// as the call checks them.
    pub fn workspace_size<TQ: Element, TK: Element, TV: Element, TO: Element>(
        &self,
        q: &TensorView<'_, TQ>,
        k: &TensorView<'_, TK>,
        v: &TensorView<'_, TV>,
        out: &TensorViewMut<'_, TO>,
        options: &CallOptions<'_>,
    ) -> Result<usize> {
        self.workspace_size_of(
            [q.shape(), k.shape(), v.shape(), out.shape()],
            [TQ::DTYPE, TK::DTYPE, TV::DTYPE, TO::DTYPE],
            options,
        )
    }

    /// [`Plan::workspace_size`] from the tensors' shapes and element types alone.
    pub(crate) fn workspace_size_of(
        &self,
        shapes: [Shape; 4],
        types: [DType; 4],
        options: &CallOptions<'_>,
    ) -> Result<usize> {
        let sizes = self.check_sizes(shapes, types, options)?;
        Ok(self.workspace_bytes(&sizes))
    }

    /// The checks of a SMYRF call: views and options against each other, then the plan.
    fn check_sizes(
        &self,
        shapes: [Shape; 4],
        types: [DType; 4],
        options: &CallOptions<'_>,
    ) -> Result<CallSizes> {
        let workers = self.workers(options);
        let sizes = CallSizes::check(shapes, types, options, workers)?;
        let shape = sizes.shape;
        if shape.d != self.head_dim {
            return Err(Error::HeadDimMismatch {
                plan: self.head_dim,
                found: shape.d,
            });
        }
        hybrid::check_call(&self.config, shape.nq, shape.nk, shape.causal.is_some())?;
        Ok(sizes)
    }

    /// How many of a call's tasks may run at once: the engine's workers, or the plan's
    /// threads.
    fn workers(&self, options: &CallOptions<'_>) -> usize {
        options
            .parallel_for
            .map_or(self.threads.count(), |e| e.workers().max(1))
    }

    /// A call's (batch, head) tasks and the query heads each runs. Sinks chosen by the mean
    /// query belong to the key/value head: then one task runs every query head of a
    /// key/value head and selects them once.
    fn tasks(&self, shape: CallShape) -> (usize, usize) {
        let heads_per_task = if self.config.sinks_use_mean_query() {
            shape.group()
        } else {
            1
        };
        (shape.batch * shape.q_heads / heads_per_task, heads_per_task)
    }

    /// [`Plan::attention_with`] with the element types erased: compiled once.
    pub(crate) fn run_attention(
        &self,
        q: AnyView<'_>,
        k: AnyView<'_>,
        v: AnyView<'_>,
        out_shape: crate::view::Shape,
        out: OutRows<'_>,
        options: CallOptions<'_>,
    ) -> Result<()> {
        let sizes = self.check_sizes(
            [q.shape, k.shape, v.shape, out_shape],
            [q.data.dtype(), k.data.dtype(), v.data.dtype(), out.dtype()],
            &options,
        )?;
        let (shape, workers) = (sizes.shape, sizes.workers);
        let CallOptions {
            key_mask,
            key_lengths,
            head_sinks,
            lse,
            parallel_for: engine,
            workspace,
            ..
        } = options;
        // A workspace too small is refused here, before anything is written.
        let carved: Option<CallPools<'_>> = match workspace {
            Some(workspace) => Some(self.carve_workspace(workspace, &sizes)?),
            None => None,
        };
        let (heads, tiles) = match &carved {
            Some(pools) => (PoolRef::Fixed(&pools.heads), PoolRef::Fixed(&pools.tiles)),
            None => (PoolRef::Heap(&self.scratch), PoolRef::Heap(&self.tiles)),
        };
        let lse = lse.map(SharedSlice::new);
        let (tasks, heads_per_task) = self.tasks(shape);
        let call = Call {
            shape,
            q: &q,
            k: &k,
            v: &v,
            key_mask,
            key_lengths,
            head_sinks,
            out: &out,
            lse: lse.as_ref(),
            split_sides: tasks < workers,
            tiles,
        };
        let job = |par: Par<'_>| {
            // With a task for every thread, each task runs on one thread: a thread never
            // waits inside a task's parallel loop, where it could pick up another task, so
            // no more tasks run at once than there are threads (`scratch_bytes` and the
            // workspace layout rely on it). With fewer tasks than threads, the clusters of
            // each task share out the threads instead: nested on rayon, one level at a time
            // on an engine's workers (whose pool need not allow a task to start parallel
            // work).
            let few = tasks < workers;
            let (outer, inner) = match par {
                Par::Serial => (Par::Serial, Par::Serial),
                Par::Rayon => (par, if few { par } else { Par::Serial }),
                Par::Engine(_) if few => (Par::Serial, par),
                Par::Engine(_) => (par, Par::Serial),
            };
            for_each_index(outer, tasks, |task| {
                let first = task * heads_per_task;
                let mut scratch = heads.take();
                scratch.hybrid.forget_sinks();
                for bh in first..first + heads_per_task {
                    let (b, h) = (bh / shape.q_heads, bh % shape.q_heads);
                    self.head(&call, b, h, inner, &mut scratch);
                }
            })
        };
        match engine {
            Some(engine) => job(Par::Engine(engine)),
            None => self.threads.run(job),
        }
        Ok(())
    }

    /// Exact dense attention, softmax(scale · Q·Kᵀ) V, with the plan's scale, tier and threads
    /// (its SMYRF parameters play no part). On error nothing is written.
    pub fn dense_attention<TQ: Element, TK: Element, TV: Element, TO: Element>(
        &self,
        q: &TensorView<'_, TQ>,
        k: &TensorView<'_, TK>,
        v: &TensorView<'_, TV>,
        out: &mut TensorViewMut<'_, TO>,
    ) -> Result<()> {
        self.dense_attention_with(q, k, v, out, CallOptions::new())
    }

    /// Bytes of the workspace [`Plan::dense_attention_with`] needs for these views and
    /// options, as [`Plan::workspace_size`] is for SMYRF attention.
    pub fn dense_workspace_size<TQ: Element, TK: Element, TV: Element, TO: Element>(
        &self,
        q: &TensorView<'_, TQ>,
        k: &TensorView<'_, TK>,
        v: &TensorView<'_, TV>,
        out: &TensorViewMut<'_, TO>,
        options: &CallOptions<'_>,
    ) -> Result<usize> {
        let sizes = CallSizes::check(
            [q.shape(), k.shape(), v.shape(), out.shape()],
            [TQ::DTYPE, TK::DTYPE, TV::DTYPE, TO::DTYPE],
            options,
            self.workers(options),
        )?;
        Ok(dense::workspace_bytes(&sizes))
    }

    /// [`Plan::dense_attention`] with the options of [`Plan::attention_with`].
    pub fn dense_attention_with<TQ: Element, TK: Element, TV: Element, TO: Element>(
        &self,
        q: &TensorView<'_, TQ>,
        k: &TensorView<'_, TK>,
        v: &TensorView<'_, TV>,
        out: &mut TensorViewMut<'_, TO>,
        options: CallOptions<'_>,
    ) -> Result<()> {
        let scale = Some(self.scale());
        let kernels = dense::DenseKernels {
            attention: self.attention,
            loads: self.loads,
        };
        let scratch = &self.dense;
        let out_shape = out.shape();
        let out = out.rows_writer();
        let (q, k, v) = (q.erase(), k.erase(), v.erase());
        let engine = options.parallel_for;
        let job = |par: Par<'_>| {
            dense::dense_attention(
                kernels,
                scratch,
                par,
                dense::DenseCall {
                    q,
                    k,
                    v,
                    out_shape,
                    out,
                    scale,
                },
                options,
            )
        };
        match engine {
            Some(engine) => job(Par::Engine(engine)),
            None => self.threads.run(job),
        }
    }

    /// Design §1 for one (batch element b, query head h), then its head sink and lse. A
    /// 16-bit output is computed in f32 staging rows and rounded once, at the end.
    fn head(&self, call: &Call<'_>, b: usize, h: usize, parallel: Par<'_>, s: &mut HeadScratch) {
        // The valid-key list lives in the reused scratch: no allocation per call.
        let mut valid = std::mem::take(&mut s.valid);
        let nk = call.shape.nk;
        let limit = KeyLimit::of(b, nk, call.key_mask, call.key_lengths);
        valid.clear();
        extend_valid_keys(nk, limit, &mut valid);
        match call.out {
            OutRows::F32(out) => {
                self.head_with(call, out, b, h, parallel, s, &valid);
                self.finish_head(call, out, b, h, s);
            }
            OutRows::F16(out) | OutRows::Bf16(out) => {
                let (nq, dv) = (call.shape.nq, call.v.shape.dim);
                let mut stage = std::mem::take(&mut s.out_stage);
                stage.resize(nq * dv, 0.0);
                let staging = RowWriter::staging(&mut stage, nq, dv);
                self.head_with(call, &staging, b, h, parallel, s, &valid);
                self.finish_head(call, &staging, b, h, s);
                let narrow = match call.out {
                    OutRows::F16(_) => self.loads.convert.narrow_f16,
                    _ => self.loads.convert.narrow_bf16,
                };
                for (i, row) in stage.chunks_exact(dv).enumerate() {
                    // SAFETY: this task alone owns the rows of (b, h).
                    narrow(row, unsafe { out.row(b, h, i) });
                }
                s.out_stage = stage;
            }
        }
        s.valid = valid;
    }

    /// The head sink merged into every query of (b, h), and the lse written.
    fn finish_head(
        &self,
        call: &Call<'_>,
        out: &RowWriter<'_>,
        b: usize,
        h: usize,
        s: &mut HeadScratch,
    ) {
        let nq = call.shape.nq;
        if let Some(&sink) = call.head_sinks.map(|sinks| &sinks[h]) {
            // The combined (max, sum) counts every round's softmax mass, R rounds of about
            // the same keys; the sink joins it once, as one logit seen in every round
            // (design §1), so that one cluster stays exact attention with a sink.
            let sink = sink + (self.config.n_hashes.max(1) as f32).ln();
            for i in 0..nq {
                // SAFETY: this task alone owns the rows of (b, h).
                let row = unsafe { out.row(b, h, i) };
                combine::merge_sink(row, &mut s.run_max[i], &mut s.run_sum[i], sink);
            }
        }
        if let Some(lse) = call.lse {
            let offset = (b * call.shape.q_heads + h) * nq;
            // SAFETY: this task alone owns the lse entries of (b, h).
            let lse = unsafe { lse.range(offset, nq) };
            combine::log_sum_exp(&s.run_max[..nq], &s.run_sum[..nq], lse);
        }
    }

    /// Steps 1–6 into `out`, leaving each query's (max, sum) in `s.run_max`, `s.run_sum`.
    #[allow(clippy::too_many_arguments)]
    fn head_with(
        &self,
        call: &Call<'_>,
        out: &RowWriter<'_>,
        b: usize,
        h: usize,
        parallel: Par<'_>,
        s: &mut HeadScratch,
        valid: &[u32],
    ) {
        let shape = call.shape;
        let nq = shape.nq;
        let hk = h / shape.group();
        let q = call.q.head_rows(b, h);
        let k = call.k.head_rows(b, hk);
        let v = call.v.head_rows(b, hk);
        let nv = valid.len();
        s.run_max.resize(nq, 0.0);
        s.run_sum.resize(nq, 0.0);
        if nv == 0 {
            // Design §2: a batch element without valid keys gets zeros, not an error.
            for i in 0..nq {
                // SAFETY: this task alone owns the rows of (b, h).
                unsafe { out.row(b, h, i) }.fill(0.0);
            }
            s.run_max.fill(f32::NEG_INFINITY);
            s.run_sum.fill(0.0);
            return;
        }

        // Steps 1–4: norms, hashes with the lift folded in, each round of each side sorted.
        let rounds = self.config.n_hashes;
        let split = if call.split_sides {
            parallel
        } else {
            Par::Serial
        };
        if rounds > 0 {
            self.hash_sides(q, nq, k, shape.nk, valid, split, s);
            self.sort_sides(nq, nv, split, s);
        }
        let ck = config::key_cluster_size(&self.config, nq, shape.nk);
        let clusters = config::cluster_count(ck, nv, nq);
        // Steps 5–6 merge into each query's running result (`Running`): (max, sum) pairs in
        // `run_max` and `run_sum`, turned into log-sum-exps at the end.
        let running = Running::new(&mut s.run_max, &mut s.run_sum);
        if self.config.has_hybrid_blocks() {
            // Design §8: sinks, window and residual samples around the cluster rounds.
            let blocks = hybrid::HeadBlocks {
                config: &self.config,
                kern: self.attention,
                loads: &self.loads,
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
                out,
                tiles: call.tiles,
                parallel,
                causal: shape.causal,
            };
            blocks.run(&running, &mut s.hybrid);
        } else {
            let perm = &s.perm[..];
            self.cluster_rounds(
                call,
                out,
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
        if shape.causal.is_some() {
            self.causal_fallback(call, out, b, h, valid, s);
        }
    }

    /// Design §1, causal: a query whose clusters held no key at or before its position
    /// attends to the last valid key there (zeros and −∞ when there is none).
    fn causal_fallback(
        &self,
        call: &Call<'_>,
        out: &RowWriter<'_>,
        b: usize,
        h: usize,
        valid: &[u32],
        s: &mut HeadScratch,
    ) {
        let shape = call.shape;
        let hk = h / shape.group();
        let (q, k, v) = (
            call.q.head_rows(b, h),
            call.k.head_rows(b, hk),
            call.v.head_rows(b, hk),
        );
        let (run_max, run_sum) = (&mut s.run_max, &mut s.run_sum);
        let scale = self.scale();
        let mut tiles = call.tiles.take();
        for i in 0..shape.nq {
            if run_sum[i] != 0.0 {
                continue;
            }
            // SAFETY: this task alone owns the rows of (b, h).
            let row = unsafe { out.row(b, h, i) };
            let last = shape.last_visible(i).unwrap_or(u32::MAX);
            let seen = valid.partition_point(|&j| j <= last);
            let Some(&j) = seen.checked_sub(1).map(|at| &valid[at]) else {
                row.fill(0.0);
                continue;
            };
            let query = [i as u32];
            attention::attend(
                self.attention,
                &self.loads,
                &mut tiles,
                q,
                &query,
                k,
                v,
                &[j],
                scale,
                None,
                |_, result| {
                    (self.attention.scale_store)(row, result.acc, result.inv_sum(), false);
                    (run_max[i], run_sum[i]) = (result.max, result.sum);
                },
            );
        }
    }
}

/// Everything one call's tasks share.
struct Call<'a> {
    shape: CallShape,
    q: &'a AnyView<'a>,
    k: &'a AnyView<'a>,
    v: &'a AnyView<'a>,
    key_mask: Option<&'a [u8]>,
    key_lengths: Option<&'a [u32]>,
    head_sinks: Option<&'a [f32]>,
    out: &'a OutRows<'a>,
    lse: Option<&'a SharedSlice<'a>>,
    /// Fewer tasks than threads: each head projects and sorts its query and key sides on
    /// two threads. With enough tasks to go round, the tasks alone keep the threads busy.
    split_sides: bool,
    /// Where the running clusters take their tiles.
    tiles: PoolRef<'a, TileScratch>,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls from several threads at once into one plan's pool, each with more (batch ×
    /// head) tasks than the pool has threads: a worker that waited inside a task's parallel
    /// loop would pick up another call's task meanwhile, holding two sets. No more task
    /// scratch sets or tile sets are ever made than there are threads, which is what
    /// `Plan::scratch_bytes` counts.
    #[test]
    // Seconds of real threads natively; Miri would take hours and rayon's epoch GC breaks its
    // default aliasing model (TESTING.md, Miri).
    #[cfg_attr(miri, ignore)]
    fn no_more_scratch_sets_than_threads() {
        let (b, h, n, d) = (2, 2, 2048, 8);
        let data: Vec<f32> = (0..b * h * n * d)
            .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let view = TensorView::bhnd(&data, b, h, n, d).unwrap();
        let threads = 2;
        for config in [
            Config::default().q_cluster_size(8),
            Config::default()
                .q_cluster_size(8)
                .n_sinks(2)
                .window(4)
                .n_samples(2),
        ] {
            let plan = Plan::new(config.num_threads(threads), d).unwrap();
            std::thread::scope(|scope| {
                for _ in 0..4 {
                    scope.spawn(|| {
                        let mut out = vec![0.0f32; data.len()];
                        for _ in 0..10 {
                            let mut o = TensorViewMut::bhnd(&mut out, b, h, n, d).unwrap();
                            plan.attention(&view, &view, &view, &mut o).unwrap();
                        }
                    });
                }
            });
            let (sets, tiles) = (plan.scratch.made(), plan.tiles.made());
            assert!(sets <= threads, "{sets} task sets");
            assert!(tiles <= threads, "{tiles} tile sets");
        }
    }
}
