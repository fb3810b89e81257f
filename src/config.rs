//! The user-facing configuration (design §1 parameters, §3 public surface) and its validation.

use crate::error::{Error, Result};
use crate::isa::Isa;

/// Largest number of hash rounds a plan accepts; far beyond any useful setting, it keeps
/// allocations sized by `n_hashes` bounded.
pub const MAX_HASHES: usize = 1024;
/// Largest head dimension a plan accepts.
pub const MAX_HEAD_DIM: usize = 1 << 16;
/// Largest owned thread pool a plan builds.
pub const MAX_THREADS: usize = 1024;

/// How SMYRF attention is computed. `Config::default()` gives the paper's usual setting;
/// the setters change one field each and chain:
/// `Config::default().n_hashes(4).q_cluster_size(32).seed(7)`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Hash rounds R ≥ 1 (default 2). Each round clusters queries and keys independently; the
    /// rounds are merged by log-sum-exp (design §1 step 6). R = 0 (no clusters, only the
    /// design §8 blocks) is accepted with a §8 block on, for causal calls.
    pub n_hashes: usize,
    /// Queries per cluster, cq ≥ 1 (default 64).
    pub q_cluster_size: usize,
    /// Keys per cluster, ck ≥ 1; `None` means `max(1, round(cq · Nk / Nq))` (design §1 step 4).
    pub k_cluster_size: Option<usize>,
    /// Logit scale, finite and ≥ 0; `None` means `1 / sqrt(head_dim)`.
    pub scale: Option<f32>,
    /// Seed of the Gaussian projection matrix (Xoshiro256++) and of the design §8 residual
    /// samples.
    pub seed: u64,
    /// 0: rayon's global pool; 1: run on the caller's thread; n > 1: a pool of n threads
    /// owned by the plan.
    pub num_threads: usize,
    /// Kernel tier; `None` (auto) takes `SMYRF_ISA` from the environment when set, else the
    /// best tier the CPU supports.
    pub isa: Option<Isa>,
    /// Design §8 sink keys per (batch, kv-head) that every query attends to (default 0: off).
    /// More than the valid keys means all of them.
    pub n_sinks: usize,
    /// How the sinks are chosen (default: the first valid positions).
    pub sink_selection: SinkSelection,
    /// Design §8 local window (default 0: off): query i also attends to the valid keys j with
    /// |j − i| ≤ window / 2. Self-attention only: a call with Nq ≠ Nk is refused.
    pub window: usize,
    /// Design §8 residual samples per query (default 0: off): keys drawn uniformly without
    /// replacement from the valid keys outside the sinks and the query's round-0 cluster,
    /// weighted so that the block is an unbiased estimate of the mass the other blocks miss.
    pub n_samples: usize,
    /// Consecutive queries of a round-0 cluster (in sorted order) that share one draw of
    /// samples; 0 (default) means [`DEFAULT_SAMPLE_GROUP`].
    pub sample_group: usize,
    /// Design §8 selected keys per query (default 0: off): the valid keys outside the sinks
    /// and the query's window with the largest approximate logit, computed on the
    /// `select_dims` components of the query largest in magnitude; the query attends to them
    /// exactly and the cluster and sample blocks drop them.
    pub n_selected: usize,
    /// Query components the selection scores keys on; 0 (default) means `ceil(head_dim / 4)`,
    /// more than `head_dim` means all of them.
    pub select_dims: usize,
    /// Design §8 key blocks per query (default 0: off; causal calls only): the keys are
    /// grouped in blocks of `block_size` consecutive positions, each with the element-wise
    /// minimum and maximum of its valid keys; a query ranks the blocks holding visible keys
    /// outside its sinks and window by the upper bound Σ_t max(q_t·min_t, q_t·max_t) of its
    /// logits there and attends exactly to the keys of the `n_blocks` best.
    pub n_blocks: usize,
    /// Consecutive positions per key block; 0 (default) means [`DEFAULT_BLOCK_SIZE`].
    pub block_size: usize,
    /// Consecutive queries of a causal call with §8 blocks that share one attention call:
    /// one choice of key blocks (ranked by the bound of the sum of their queries), one draw
    /// of samples and one window span (from the first query's window start to the last
    /// query); 0 (default) means [`DEFAULT_BLOCK_TILE`], 1 gives each query its own.
    pub block_tile: usize,
    /// With bf16 queries and keys, compute Q·Kᵀ by widening to f32 like every other type
    /// (the same bits as the f32 call on the widened values) instead of with AVX-512 BF16's
    /// `vdpbf16ps`, which sums products in pairs of its own order and flushes subnormals
    /// (within 1e-5 of the f64 result). Default false: the dot-product instruction where the
    /// CPU has it and it pays (it issues at two thirds of the f32 FMA rate or more, timed
    /// once per process; some cores issue it at a quarter).
    pub bf16_exact: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            n_hashes: 2,
            q_cluster_size: 64,
            k_cluster_size: None,
            scale: None,
            seed: 0,
            num_threads: 0,
            isa: None,
            n_sinks: 0,
            sink_selection: SinkSelection::First,
            window: 0,
            n_samples: 0,
            sample_group: 0,
            n_selected: 0,
            select_dims: 0,
            n_blocks: 0,
            block_size: 0,
            block_tile: 0,
            bf16_exact: false,
        }
    }
}

/// Setters named after the fields, so a configuration reads as one expression.
impl Config {
    /// Sets [`Config::n_hashes`].
    #[must_use]
    pub fn n_hashes(mut self, rounds: usize) -> Self {
        self.n_hashes = rounds;
        self
    }
    /// Sets [`Config::q_cluster_size`].
    #[must_use]
    pub fn q_cluster_size(mut self, queries: usize) -> Self {
        self.q_cluster_size = queries;
        self
    }
    /// Sets [`Config::k_cluster_size`] to `Some(keys)`.
    #[must_use]
    pub fn k_cluster_size(mut self, keys: usize) -> Self {
        self.k_cluster_size = Some(keys);
        self
    }
    /// Sets [`Config::scale`] to `Some(scale)`.
    #[must_use]
    pub fn scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }
    /// Sets [`Config::seed`].
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Sets [`Config::num_threads`].
    #[must_use]
    pub fn num_threads(mut self, threads: usize) -> Self {
        self.num_threads = threads;
        self
    }
    /// Sets [`Config::isa`] to `Some(isa)`: the plan runs that tier or is refused.
    #[must_use]
    pub fn isa(mut self, isa: Isa) -> Self {
        self.isa = Some(isa);
        self
    }
    /// Sets [`Config::n_sinks`].
    #[must_use]
    pub fn n_sinks(mut self, sinks: usize) -> Self {
        self.n_sinks = sinks;
        self
    }
    /// Sets [`Config::sink_selection`].
    #[must_use]
    pub fn sink_selection(mut self, selection: SinkSelection) -> Self {
        self.sink_selection = selection;
        self
    }
    /// Sets [`Config::window`].
    #[must_use]
    pub fn window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }
    /// Sets [`Config::n_samples`].
    #[must_use]
    pub fn n_samples(mut self, samples: usize) -> Self {
        self.n_samples = samples;
        self
    }
    /// Sets [`Config::bf16_exact`].
    #[must_use]
    pub fn bf16_exact(mut self, exact: bool) -> Self {
        self.bf16_exact = exact;
        self
    }

    /// Sets [`Config::n_selected`].
    #[must_use]
    pub fn n_selected(mut self, keys: usize) -> Self {
        self.n_selected = keys;
        self
    }
    /// Sets [`Config::select_dims`].
    #[must_use]
    pub fn select_dims(mut self, dims: usize) -> Self {
        self.select_dims = dims;
        self
    }
    /// Sets [`Config::n_blocks`].
    #[must_use]
    pub fn n_blocks(mut self, blocks: usize) -> Self {
        self.n_blocks = blocks;
        self
    }
    /// Sets [`Config::block_size`].
    #[must_use]
    pub fn block_size(mut self, positions: usize) -> Self {
        self.block_size = positions;
        self
    }
    /// Sets [`Config::block_tile`].
    #[must_use]
    pub fn block_tile(mut self, queries: usize) -> Self {
        self.block_tile = queries;
        self
    }
    /// Sets [`Config::sample_group`].
    #[must_use]
    pub fn sample_group(mut self, queries: usize) -> Self {
        self.sample_group = queries;
        self
    }
}

impl Config {
    /// Checks every field; the same checks run when a plan is built.
    pub fn validate(&self) -> Result<()> {
        if self.n_hashes == 0 && !self.has_hybrid_blocks() {
            return Err(Error::InvalidConfig {
                field: "n_hashes",
                reason: "must be at least 1 (0 only with design §8 blocks, in causal calls)",
            });
        }
        if self.n_hashes > MAX_HASHES {
            return Err(Error::InvalidConfig {
                field: "n_hashes",
                reason: "must be at most 1024",
            });
        }
        if self.q_cluster_size == 0 {
            return Err(Error::InvalidConfig {
                field: "q_cluster_size",
                reason: "must be at least 1",
            });
        }
        if self.k_cluster_size == Some(0) {
            return Err(Error::InvalidConfig {
                field: "k_cluster_size",
                reason: "must be at least 1 (use None for the default)",
            });
        }
        validate_scale(self.scale)?;
        if self.num_threads > MAX_THREADS {
            return Err(Error::InvalidConfig {
                field: "num_threads",
                reason: "must be at most 1024",
            });
        }
        validate_blocks(self)
    }
}

/// A scale must be finite and non-negative (design §2).
pub(crate) fn validate_scale(scale: Option<f32>) -> Result<()> {
    match scale {
        Some(s) if !s.is_finite() => Err(Error::InvalidConfig {
            field: "scale",
            reason: "must be finite",
        }),
        Some(s) if s < 0.0 => Err(Error::InvalidConfig {
            field: "scale",
            reason: "must not be negative",
        }),
        _ => Ok(()),
    }
}

/// The scale a call uses: the given one, or 1/sqrt(d).
pub(crate) fn effective_scale(scale: Option<f32>, head_dim: usize) -> f32 {
    scale.unwrap_or_else(|| (1.0 / (head_dim as f64).sqrt()) as f32)
}

/// Keys per cluster ck (design §1 step 4).
pub(crate) fn key_cluster_size(config: &Config, nq: usize, nk: usize) -> usize {
    config.k_cluster_size.unwrap_or_else(|| {
        let ck = (config.q_cluster_size as f64 * nk as f64 / nq as f64).round();
        (ck as usize).max(1)
    })
}

/// Cluster count C = min(ceil(n' / ck), n', Nq), at least 1 (design §1 step 4).
pub(crate) fn cluster_count(ck: usize, n_valid: usize, nq: usize) -> usize {
    n_valid.div_ceil(ck).min(n_valid).min(nq).max(1)
}

/// How the sink keys of a (batch, kv-head) are chosen (design §8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SinkSelection {
    /// The first `n_sinks` valid positions: the classic attention sinks (CLS, BOS).
    #[default]
    First,
    /// The first valid position plus the `n_sinks − 1` valid keys with the largest inner
    /// product with the mean query of the (batch, kv-head) — the mean over every query of
    /// every query head that reads this key/value head. Ties go to the lower position.
    /// Measured better than `First` from about 8 sinks up, worse below.
    MeanQuery,
}

/// Queries that share one draw of residual samples when `sample_group` is 0.
pub const DEFAULT_SAMPLE_GROUP: usize = 64;
/// Positions per key block when `block_size` is 0.
pub const DEFAULT_BLOCK_SIZE: usize = 16;
/// Queries per causal block tile when `block_tile` is 0.
pub const DEFAULT_BLOCK_TILE: usize = 16;
/// Largest `n_sinks`, `window`, `n_samples`, `sample_group`, `n_selected`, `select_dims`,
/// `n_blocks`, `block_size` and `block_tile` a plan accepts (positions are 32-bit).
pub const MAX_BLOCK_SIZE: usize = u32::MAX as usize;
/// Queries per tile in `Config::causal`: smaller tiles choose key blocks closer to each query.
const PRESET_BLOCK_TILE: usize = 4;

impl Config {
    /// The §8 hybrid preset for a key budget of K keys per query (each key costs d + dv
    /// multiply-adds): `n_selected = K/2` keys chosen per query by an approximate logit on
    /// `ceil(d/4)` of its components, `n_samples = K/2` residual samples drawn per query, and
    /// one hash round with clusters of one query (one key): the clusters of plain SMYRF
    /// give way to the blocks that find and estimate the mass they miss. The selection's
    /// scoring costs another `Nk·ceil(d/4)` multiply-adds per query (about Nk/8 keys).
    /// Every other field is the default.
    ///
    /// Tuned end to end (`python -m smyrf.eval`, all-MiniLM-L6-v2 with every attention
    /// layer replaced, BENCHMARKS.md): at K = L/4 the mean embedding cosine to the exact
    /// model is 0.993, 0.996 and 0.998 for L = 128, 256 and 512. Sinks and a window add
    /// nothing once keys are selected per query, and fewer samples raise the variance.
    pub fn hybrid(key_budget: usize) -> Config {
        let k = key_budget.clamp(1, MAX_BLOCK_SIZE);
        Config {
            n_hashes: 1,
            q_cluster_size: 1,
            n_selected: k / 2,
            n_samples: k - k / 2,
            ..Config::default()
        }
    }

    /// The causal preset for a key budget of K keys per query: `max(1, K/256)` sinks, a
    /// recent window of `max(1, K/8)` keys, `(K − sinks − window)/16` key blocks of 16
    /// positions chosen by their logit bound, in tiles of 4 queries, and no hash rounds or
    /// samples (so it also serves `Plan::decode`).
    ///
    /// Measured end to end (`python -m smyrf.eval`, SmolLM2-135M with every attention layer
    /// replaced, BENCHMARKS.md): at N = 4096, K = 256 the perplexity is 1.089× dense at
    /// 12.4 % of dense causal attention's flops; K = 128 gives 1.26× at 6.4 %.
    pub fn causal(key_budget: usize) -> Config {
        let k = key_budget.clamp(1, MAX_BLOCK_SIZE);
        let p = DEFAULT_BLOCK_SIZE;
        // One sink token is the sink on the models measured; keys go to blocks before
        // the window.
        let sinks = (k / 256).max(1);
        let window = (k / 8).max(1).min(k - sinks.min(k));
        Config {
            n_hashes: 0,
            q_cluster_size: 1,
            n_sinks: sinks.min(k),
            window,
            n_blocks: (k - sinks.min(k) - window) / p,
            block_tile: PRESET_BLOCK_TILE,
            ..Config::default()
        }
    }

    /// Whether the §8 sinks are chosen with the mean query (more than the first position).
    pub(crate) fn sinks_use_mean_query(&self) -> bool {
        self.n_sinks > 1 && self.sink_selection == SinkSelection::MeanQuery
    }

    /// Whether any §8 block is on.
    pub fn has_hybrid_blocks(&self) -> bool {
        self.n_sinks > 0
            || self.window > 0
            || self.n_samples > 0
            || self.n_selected > 0
            || self.n_blocks > 0
    }

    /// Positions per key block.
    pub(crate) fn key_block_size(&self) -> usize {
        match self.block_size {
            0 => DEFAULT_BLOCK_SIZE,
            p => p,
        }
    }

    /// Queries per causal block tile.
    pub(crate) fn causal_tile(&self) -> usize {
        match self.block_tile {
            0 => DEFAULT_BLOCK_TILE,
            t => t,
        }
    }

    /// Query components the §8 selection scores keys on, for head dimension `d`.
    pub(crate) fn selection_dims(&self, d: usize) -> usize {
        match self.select_dims {
            0 => d.div_ceil(4),
            dims => dims.min(d),
        }
    }
}

/// Checks the §8 fields of a configuration (called by `Config::validate`).
fn validate_blocks(config: &Config) -> Result<()> {
    for (field, value) in [
        ("n_sinks", config.n_sinks),
        ("window", config.window),
        ("n_samples", config.n_samples),
        ("sample_group", config.sample_group),
        ("n_selected", config.n_selected),
        ("select_dims", config.select_dims),
        ("n_blocks", config.n_blocks),
        ("block_size", config.block_size),
        ("block_tile", config.block_tile),
    ] {
        if value > MAX_BLOCK_SIZE {
            return Err(Error::InvalidConfig {
                field,
                reason: "must be at most 2^32 - 1",
            });
        }
    }
    Ok(())
}
