//! Shared test helpers: a deterministic generator, an independent f64 oracle of design §1,
//! and comparison helpers. The oracle is written from the design text with plain loops; it
//! shares no code with the library.
//!
//! Submodules: `bits` (bitwise comparison, re-exported here), `require` (what a test does
//! when its subject cannot run here: `SMYRF_REQUIRE`), `ffi` (calling the C ABI from Rust),
//! `cbuild` (building and running C and C++ programs against the built library).
//!
//! Every integration test compiles this module on its own and uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod bits;
pub mod cbuild;
pub mod ffi;
pub mod require;
pub mod types;

pub use bits::{bits, same_bits};

/// What output buffers are filled with before a call, to show that a refused call wrote
/// nothing.
pub const SENTINEL: f32 = -12345.0;

/// The repository root (where `include/`, `c_examples/` and `scripts/` are).
pub fn repo_root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// SplitMix64: deterministic test data without dependencies.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    /// Uniform in [0, n), by remainder.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// Uniform in [0, n), by multiplying the high 32 bits (the sort tests' draws).
    pub fn below_by_multiply(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
    /// Uniform in [-scale, scale).
    pub fn symmetric(&mut self, scale: f32) -> f32 {
        self.uniform() * scale
    }
    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.uniform()).collect()
    }
}

/// A dense tensor in f32 with explicit layout, for building views.
#[derive(Clone)]
pub struct Tensor {
    pub data: Vec<f32>,
    pub b: usize,
    pub h: usize,
    pub n: usize,
    pub d: usize,
    /// true: [B, N, H, D]; false: [B, H, N, D].
    pub bnhd: bool,
}

impl Tensor {
    pub fn random(rng: &mut Rng, b: usize, h: usize, n: usize, d: usize, bnhd: bool) -> Tensor {
        Tensor {
            data: rng.vec(b * h * n * d),
            b,
            h,
            n,
            d,
            bnhd,
        }
    }
    pub fn zeros(b: usize, h: usize, n: usize, d: usize, bnhd: bool) -> Tensor {
        Tensor {
            data: vec![0.0; b * h * n * d],
            b,
            h,
            n,
            d,
            bnhd,
        }
    }
    pub fn offset(&self, b: usize, h: usize, i: usize) -> usize {
        if self.bnhd {
            ((b * self.n + i) * self.h + h) * self.d
        } else {
            ((b * self.h + h) * self.n + i) * self.d
        }
    }
    pub fn row(&self, b: usize, h: usize, i: usize) -> &[f32] {
        let o = self.offset(b, h, i);
        &self.data[o..o + self.d]
    }
    pub fn row_mut(&mut self, b: usize, h: usize, i: usize) -> &mut [f32] {
        let o = self.offset(b, h, i);
        &mut self.data[o..o + self.d]
    }
    pub fn view(&self) -> smyrf::TensorView<'_> {
        if self.bnhd {
            smyrf::TensorView::bnhd(&self.data, self.b, self.h, self.n, self.d).unwrap()
        } else {
            smyrf::TensorView::bhnd(&self.data, self.b, self.h, self.n, self.d).unwrap()
        }
    }
    pub fn view_mut(&mut self) -> smyrf::TensorViewMut<'_> {
        if self.bnhd {
            smyrf::TensorViewMut::bnhd(&mut self.data, self.b, self.h, self.n, self.d).unwrap()
        } else {
            smyrf::TensorViewMut::bhnd(&mut self.data, self.b, self.h, self.n, self.d).unwrap()
        }
    }
}

/// max |a − b| / max |b|, the design §6 error measure.
pub fn rel_err(approx: &[f32], reference: &[f64]) -> f64 {
    let diff = approx
        .iter()
        .zip(reference)
        .map(|(&a, &r)| (a as f64 - r).abs())
        .fold(0.0, f64::max);
    let scale = reference.iter().map(|r| r.abs()).fold(0.0, f64::max);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// The oracle's parameters for one call.
pub struct OracleParams<'a> {
    pub n_hashes: usize,
    pub q_cluster_size: usize,
    pub k_cluster_size: Option<usize>,
    pub scale: f64,
    /// (d + 2) × R row-major.
    pub projections: &'a [f32],
}

/// Stable argsort of f64 keys (ties keep index order).
pub fn stable_argsort(keys: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..keys.len()).collect();
    idx.sort_by(|&a, &b| keys[a].partial_cmp(&keys[b]).unwrap().then(a.cmp(&b)));
    idx
}

/// Hashes per design §1 steps 1–3 for one (b, h): (query hashes [R][Nq], key hashes [R][n']).
pub fn oracle_hashes(
    q: &[Vec<f64>],
    k_valid: &[Vec<f64>],
    projections: &[f32],
    rounds: usize,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let d = q[0].len();
    let a = |t: usize, r: usize| projections[t * rounds + r] as f64;
    let norm = |x: &Vec<f64>| x.iter().map(|v| v * v).sum::<f64>();
    let max_q = q.iter().map(norm).fold(f64::NEG_INFINITY, f64::max);
    let max_k = k_valid.iter().map(norm).fold(f64::NEG_INFINITY, f64::max);
    let m = max_q + max_k;
    let mut hq = vec![vec![0.0; q.len()]; rounds];
    let mut hk = vec![vec![0.0; k_valid.len()]; rounds];
    for r in 0..rounds {
        for (i, x) in q.iter().enumerate() {
            let lifted = (m - norm(x)).max(0.0).sqrt();
            hq[r][i] = (0..d).map(|t| a(t, r) * x[t]).sum::<f64>() + a(d + 1, r) * lifted;
        }
        for (j, x) in k_valid.iter().enumerate() {
            let lifted = (m - norm(x)).max(0.0).sqrt();
            hk[r][j] = (0..d).map(|t| a(t, r) * x[t]).sum::<f64>() + a(d, r) * lifted;
        }
    }
    (hq, hk)
}

/// Whether every cluster cut of every round of one (b, h) falls between clearly different
/// hashes (`k_valid`: its valid keys), so that the f32 library and the f64 oracle form the
/// same clusters (design §6). Cases that fail are skipped for another seed.
pub fn cuts_well_separated(
    q: &[Vec<f64>],
    k_valid: &[Vec<f64>],
    projections: &[f32],
    rounds: usize,
    clusters: usize,
) -> bool {
    let (hq, hk) = oracle_hashes(q, k_valid, projections, rounds);
    for r in 0..rounds {
        for hashes in [&hq[r], &hk[r]] {
            let len = hashes.len();
            let order = stable_argsort(hashes);
            let scale = hashes.iter().map(|x| x.abs()).fold(0.0, f64::max).max(1.0);
            for c in 1..clusters {
                let at = c * len / clusters;
                if at > 0
                    && at < len
                    && (hashes[order[at]] - hashes[order[at - 1]]).abs() < 1e-4 * scale
                {
                    return false;
                }
            }
        }
    }
    true
}

/// Design §1 for one (b, h), in f64: returns (out [Nq][dv], lse [Nq]). `valid` lists the
/// valid key indices. When `orders` is given it supplies each round's sorted query and
/// valid-key orders (to share the library's order on near-ties, design §6).
pub fn oracle_head(
    q: &[Vec<f64>],
    k: &[Vec<f64>],
    v: &[Vec<f64>],
    valid: &[usize],
    p: &OracleParams<'_>,
    orders: Option<&[(Vec<usize>, Vec<usize>)]>,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let nq = q.len();
    let nk = k.len();
    let dv = v[0].len();
    let nv = valid.len();
    if nv == 0 {
        return (vec![vec![0.0; dv]; nq], vec![f64::NEG_INFINITY; nq]);
    }
    let k_valid: Vec<Vec<f64>> = valid.iter().map(|&j| k[j].clone()).collect();
    let (hq, hk) = oracle_hashes(q, &k_valid, p.projections, p.n_hashes);
    let ck = p.k_cluster_size.unwrap_or_else(|| {
        ((p.q_cluster_size as f64 * nk as f64 / nq as f64).round() as usize).max(1)
    });
    let clusters = nv.div_ceil(ck).min(nv).min(nq).max(1);
    let mut round_out = vec![vec![vec![0.0; dv]; nq]; p.n_hashes];
    let mut round_lse = vec![vec![0.0; nq]; p.n_hashes];
    for r in 0..p.n_hashes {
        let (q_order, k_order) = match orders {
            Some(o) => (o[r].0.clone(), o[r].1.clone()),
            None => (stable_argsort(&hq[r]), stable_argsort(&hk[r])),
        };
        for c in 0..clusters {
            let q_members = &q_order[c * nq / clusters..(c + 1) * nq / clusters];
            let k_members = &k_order[c * nv / clusters..(c + 1) * nv / clusters];
            for &i in q_members {
                let logits: Vec<f64> = k_members
                    .iter()
                    .map(|&s| {
                        let j = valid[s];
                        p.scale * q[i].iter().zip(&k[j]).map(|(a, b)| a * b).sum::<f64>()
                    })
                    .collect();
                let mx = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
                let lse = mx + sum.ln();
                for (l, &s) in logits.iter().zip(k_members) {
                    let w = (l - lse).exp();
                    for (o, x) in round_out[r][i].iter_mut().zip(&v[valid[s]]) {
                        *o += w * x;
                    }
                }
                round_lse[r][i] = lse;
            }
        }
    }
    let mut out = vec![vec![0.0; dv]; nq];
    let mut lse = vec![0.0; nq];
    for i in 0..nq {
        let mx = (0..p.n_hashes)
            .map(|r| round_lse[r][i])
            .fold(f64::NEG_INFINITY, f64::max);
        let total = mx
            + (0..p.n_hashes)
                .map(|r| (round_lse[r][i] - mx).exp())
                .sum::<f64>()
                .ln();
        for r in 0..p.n_hashes {
            let w = (round_lse[r][i] - total).exp();
            for (o, x) in out[i].iter_mut().zip(&round_out[r][i]) {
                *o += w * x;
            }
        }
        lse[i] = total;
    }
    (out, lse)
}

/// Exact softmax attention of one (b, h) in f64 over the valid keys.
pub fn oracle_dense_head(
    q: &[Vec<f64>],
    k: &[Vec<f64>],
    v: &[Vec<f64>],
    valid: &[usize],
    scale: f64,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let dv = v[0].len();
    let mut out = vec![vec![0.0; dv]; q.len()];
    let mut lse = vec![f64::NEG_INFINITY; q.len()];
    if valid.is_empty() {
        return (out, lse);
    }
    for (i, qi) in q.iter().enumerate() {
        let logits: Vec<f64> = valid
            .iter()
            .map(|&j| scale * qi.iter().zip(&k[j]).map(|(a, b)| a * b).sum::<f64>())
            .collect();
        let mx = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
        for (l, &j) in logits.iter().zip(valid) {
            let w = (l - mx).exp() / sum;
            for (o, x) in out[i].iter_mut().zip(&v[j]) {
                *o += w * x;
            }
        }
        lse[i] = mx + sum.ln();
    }
    (out, lse)
}

/// Rows of (b, h) as f64 vectors.
pub fn head_f64(t: &Tensor, b: usize, h: usize) -> Vec<Vec<f64>> {
    (0..t.n)
        .map(|i| t.row(b, h, i).iter().map(|&x| x as f64).collect())
        .collect()
}

/// Valid key indices of batch element b.
pub fn valid_of(mask: Option<&[u8]>, b: usize, nk: usize) -> Vec<usize> {
    match mask {
        None => (0..nk).collect(),
        Some(m) => (0..nk).filter(|&j| m[b * nk + j] != 0).collect(),
    }
}
