//! Causal attention (design §1, causal) against f64 oracles written from the definition:
//! query i at position `offset + i` sees the valid keys at or before it. Dense attention,
//! and SMYRF as published (clusters of §1, future keys masked inside each cluster, rounds
//! merged by log-sum-exp, the last visible key for a query its clusters left empty), on
//! every tier.

mod common;
use common::bits::same_bits;
use common::*;
use smyrf::{CallOptions, Config, Error, Plan};

#[derive(Clone)]
struct Case {
    b: usize,
    hq: usize,
    hkv: usize,
    nq: usize,
    nk: usize,
    d: usize,
    dv: usize,
    /// `None`: the default offset Nk − Nq.
    offset: Option<usize>,
    masked: bool,
    lengths: bool,
    bnhd: bool,
}

impl Case {
    fn new(nq: usize, nk: usize) -> Case {
        Case {
            b: 2,
            hq: 2,
            hkv: 1,
            nq,
            nk,
            d: 12,
            dv: 10,
            offset: None,
            masked: false,
            lengths: false,
            bnhd: false,
        }
    }

    fn offset(&self) -> usize {
        self.offset.unwrap_or(self.nk - self.nq)
    }
}

struct Data {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Option<Vec<u8>>,
    lengths: Option<Vec<u32>>,
}

fn make_data(case: &Case, seed: u64) -> Data {
    let mut rng = Rng(seed);
    let q = Tensor::random(&mut rng, case.b, case.hq, case.nq, case.d, case.bnhd);
    let k = Tensor::random(&mut rng, case.b, case.hkv, case.nk, case.d, case.bnhd);
    let v = Tensor::random(&mut rng, case.b, case.hkv, case.nk, case.dv, case.bnhd);
    // Masks that drop the first keys too, so some queries see no key at all.
    let mask = case.masked.then(|| {
        (0..case.b * case.nk)
            .map(|x| (x % case.nk >= 3 && rng.below(3) != 0) as u8)
            .collect()
    });
    let lengths = case
        .lengths
        .then(|| (0..case.b).map(|b| (case.nk - 5 * b) as u32).collect());
    Data {
        q,
        k,
        v,
        mask,
        lengths,
    }
}

/// Valid keys of batch element b under the mask and the lengths.
fn valid_keys(case: &Case, data: &Data, b: usize) -> Vec<usize> {
    let end = data.lengths.as_ref().map_or(case.nk, |l| l[b] as usize);
    valid_of(data.mask.as_deref(), b, case.nk)
        .into_iter()
        .filter(|&j| j < end)
        .collect()
}

fn options<'a>(case: &Case, data: &'a Data, lse: &'a mut [f32]) -> CallOptions<'a> {
    let mut options = CallOptions::new().lse(lse);
    options = match case.offset {
        Some(offset) => options.query_offset(offset),
        None => options.causal(),
    };
    options.key_mask = data.mask.as_deref();
    options.key_lengths = data.lengths.as_deref();
    options
}

/// Exact causal attention of query i over `valid`: (row, lse); zeros and −∞ when it sees
/// no key.
fn oracle_dense_query(
    q: &[f64],
    k: &[Vec<f64>],
    v: &[Vec<f64>],
    seen: &[usize],
    scale: f64,
) -> (Vec<f64>, f64) {
    let (o, l) = oracle_dense_head(&[q.to_vec()], k, v, seen, scale);
    (o[0].clone(), l[0])
}

/// Compares the library's output and lse with the oracle's for every (b, h, i).
fn compare(
    case: &Case,
    out: &Tensor,
    lse: &[f32],
    want: impl Fn(usize, usize, usize) -> (Vec<f64>, f64),
    what: &str,
) {
    let (mut got, mut exp, mut got_lse, mut exp_lse) = (vec![], vec![], vec![], vec![]);
    for b in 0..case.b {
        for h in 0..case.hq {
            for i in 0..case.nq {
                let (row, l) = want(b, h, i);
                let lib_lse = lse[(b * case.hq + h) * case.nq + i];
                if l == f64::NEG_INFINITY {
                    assert_eq!(lib_lse, f32::NEG_INFINITY, "{what}: lse of ({b}, {h}, {i})");
                    assert!(
                        out.row(b, h, i).iter().all(|&x| x == 0.0),
                        "{what}: a query that sees no key gets zeros"
                    );
                } else {
                    got_lse.push(lib_lse);
                    exp_lse.push(l);
                }
                got.extend_from_slice(out.row(b, h, i));
                exp.extend(row);
            }
        }
    }
    let err = rel_err(&got, &exp);
    assert!(err <= 1e-5, "{what}: output relative error {err:e}");
    if !exp_lse.is_empty() {
        let err = rel_err(&got_lse, &exp_lse);
        assert!(err <= 1e-5, "{what}: lse relative error {err:e}");
    }
}

fn check_dense(case: &Case) {
    let data = make_data(case, 7);
    let scale = 1.0 / (case.d as f64).sqrt();
    let want = |b: usize, h: usize, i: usize| {
        let q = head_f64(&data.q, b, h);
        let hk = h / (case.hq / case.hkv);
        let (k, v) = (head_f64(&data.k, b, hk), head_f64(&data.v, b, hk));
        let seen: Vec<usize> = valid_keys(case, &data, b)
            .into_iter()
            .filter(|&j| j <= case.offset() + i)
            .collect();
        oracle_dense_query(&q[i], &k, &v, &seen, scale)
    };
    for isa in smyrf::internals::supported_tiers() {
        for threads in [1, 3] {
            let plan = Plan::new(Config::default().isa(isa).num_threads(threads), case.d).unwrap();
            let mut out = Tensor::zeros(case.b, case.hq, case.nq, case.dv, case.bnhd);
            let mut lse = vec![0.0f32; case.b * case.hq * case.nq];
            plan.dense_attention_with(
                &data.q.view(),
                &data.k.view(),
                &data.v.view(),
                &mut out.view_mut(),
                options(case, &data, &mut lse),
            )
            .unwrap();
            compare(
                case,
                &out,
                &lse,
                want,
                &format!("dense {isa} {threads} threads"),
            );
        }
    }
}

#[test]
fn causal_dense_matches_the_oracle() {
    // Self-attention, across several query blocks and key tiles.
    check_dense(&Case::new(300, 300));
    // Chunked prefill and decode: bottom-right alignment.
    check_dense(&Case::new(37, 290));
    check_dense(&Case::new(1, 200));
    // An explicit offset, queries past the last key included.
    check_dense(&Case {
        offset: Some(150),
        ..Case::new(80, 200)
    });
    check_dense(&Case {
        offset: Some(0),
        ..Case::new(64, 64)
    });
    // Masks that leave early queries without a visible key, lengths, GQA, BNHD.
    check_dense(&Case {
        masked: true,
        lengths: true,
        hq: 4,
        hkv: 2,
        bnhd: true,
        ..Case::new(140, 140)
    });
}

#[test]
fn causal_dense_with_head_sinks() {
    let case = Case::new(70, 90);
    let data = make_data(&case, 3);
    let sinks = [0.5f32, f32::NEG_INFINITY];
    let scale = 1.0 / (case.d as f64).sqrt();
    let plan = Plan::new(Config::default(), case.d).unwrap();
    let mut out = Tensor::zeros(case.b, case.hq, case.nq, case.dv, false);
    let mut lse = vec![0.0f32; case.b * case.hq * case.nq];
    plan.dense_attention_with(
        &data.q.view(),
        &data.k.view(),
        &data.v.view(),
        &mut out.view_mut(),
        CallOptions::new().causal().head_sinks(&sinks).lse(&mut lse),
    )
    .unwrap();
    compare(
        &case,
        &out,
        &lse,
        |b, h, i| {
            let q = head_f64(&data.q, b, h);
            let (k, v) = (head_f64(&data.k, b, 0), head_f64(&data.v, b, 0));
            let seen: Vec<usize> = (0..=case.offset() + i).collect();
            let (row, l) = oracle_dense_query(&q[i], &k, &v, &seen, scale);
            // The sink joins the denominator: rows scale by e^l / (e^l + e^sink).
            let sink = sinks[h] as f64;
            let total = if sink == f64::NEG_INFINITY {
                l
            } else {
                l.max(sink) + ((l - l.max(sink)).exp() + (sink - l.max(sink)).exp()).ln()
            };
            let w = (l - total).exp();
            (row.iter().map(|x| x * w).collect(), total)
        },
        "dense with head sinks",
    );
}

/// Design §1, causal, in f64: each round's clusters as in the oracle of `common`, each
/// query's softmax over the keys of its cluster at or before its position, the rounds that
/// saw a key merged by log-sum-exp; with none, the last valid key at or before it.
#[allow(clippy::too_many_arguments)]
fn oracle_causal_smyrf(
    q: &[Vec<f64>],
    k: &[Vec<f64>],
    v: &[Vec<f64>],
    valid: &[usize],
    offset: usize,
    rounds: usize,
    clusters_of: impl Fn(usize) -> usize,
    projections: &[f32],
    scale: f64,
) -> Vec<(Vec<f64>, f64)> {
    let (nq, nv, dv) = (q.len(), valid.len(), v[0].len());
    if nv == 0 {
        return vec![(vec![0.0; dv], f64::NEG_INFINITY); nq];
    }
    let k_valid: Vec<Vec<f64>> = valid.iter().map(|&j| k[j].clone()).collect();
    let (hq, hk) = oracle_hashes(q, &k_valid, projections, rounds);
    let clusters = clusters_of(nv);
    let mut per_round = vec![vec![(vec![0.0; dv], f64::NEG_INFINITY); nq]; rounds];
    for r in 0..rounds {
        let (q_order, k_order) = (stable_argsort(&hq[r]), stable_argsort(&hk[r]));
        for c in 0..clusters {
            let members = &q_order[c * nq / clusters..(c + 1) * nq / clusters];
            let keys = &k_order[c * nv / clusters..(c + 1) * nv / clusters];
            for &i in members {
                let seen: Vec<usize> = keys
                    .iter()
                    .map(|&s| valid[s])
                    .filter(|&j| j <= offset + i)
                    .collect();
                if !seen.is_empty() {
                    per_round[r][i] = oracle_dense_query(&q[i], k, v, &seen, scale);
                }
            }
        }
    }
    (0..nq)
        .map(|i| {
            let lses: Vec<f64> = (0..rounds).map(|r| per_round[r][i].1).collect();
            let top = lses.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if top == f64::NEG_INFINITY {
                return match valid.iter().rev().find(|&&j| j <= offset + i) {
                    Some(&j) => oracle_dense_query(&q[i], k, v, &[j], scale),
                    None => (vec![0.0; dv], f64::NEG_INFINITY),
                };
            }
            let total = top + lses.iter().map(|l| (l - top).exp()).sum::<f64>().ln();
            let mut row = vec![0.0; dv];
            for round in &per_round {
                let (round_row, round_lse) = &round[i];
                let w = (round_lse - total).exp();
                for (o, x) in row.iter_mut().zip(round_row) {
                    *o += w * x;
                }
            }
            (row, total)
        })
        .collect()
}

/// Whether every head's cluster cuts are well separated (`cuts_well_separated`).
fn well_separated(case: &Case, data: &Data, projections: &[f32], rounds: usize, cq: usize) -> bool {
    for b in 0..case.b {
        let valid = valid_keys(case, data, b);
        let nv = valid.len();
        if nv == 0 {
            continue;
        }
        let clusters = clusters_for(case, cq, nv);
        for h in 0..case.hq {
            let q = head_f64(&data.q, b, h);
            let k = head_f64(&data.k, b, h / (case.hq / case.hkv));
            let kv: Vec<Vec<f64>> = valid.iter().map(|&j| k[j].clone()).collect();
            if !cuts_well_separated(&q, &kv, projections, rounds, clusters) {
                return false;
            }
        }
    }
    true
}

/// Clusters of §1 step 4 for `nv` valid keys (the key cluster size derived from cq).
fn clusters_for(case: &Case, cq: usize, nv: usize) -> usize {
    let ck = ((cq as f64 * case.nk as f64 / case.nq as f64).round() as usize).max(1);
    nv.div_ceil(ck).min(nv).min(case.nq).max(1)
}

fn check_smyrf(case: &Case, rounds: usize, cq: usize) {
    let scale = 1.0 / (case.d as f64).sqrt();
    for isa in smyrf::internals::supported_tiers() {
        let config = Config::default()
            .n_hashes(rounds)
            .q_cluster_size(cq)
            .isa(isa);
        let plan = Plan::new(config.clone().num_threads(1), case.d).unwrap();
        let projections = plan.projections().to_vec();
        let data = (0..40)
            .map(|seed| make_data(case, 100 + seed))
            .find(|data| well_separated(case, data, &projections, rounds, cq))
            .expect("no seed gave well separated cluster boundaries");
        let mut want = vec![];
        for b in 0..case.b {
            let valid = valid_keys(case, &data, b);
            for h in 0..case.hq {
                let hk = h / (case.hq / case.hkv);
                want.push(oracle_causal_smyrf(
                    &head_f64(&data.q, b, h),
                    &head_f64(&data.k, b, hk),
                    &head_f64(&data.v, b, hk),
                    &valid,
                    case.offset(),
                    rounds,
                    |nv| clusters_for(case, cq, nv),
                    &projections,
                    scale,
                ));
            }
        }
        let mut first: Option<Vec<f32>> = None;
        for threads in [1, 3] {
            let plan = Plan::new(config.clone().num_threads(threads), case.d).unwrap();
            let mut out = Tensor::zeros(case.b, case.hq, case.nq, case.dv, case.bnhd);
            let mut lse = vec![0.0f32; case.b * case.hq * case.nq];
            plan.attention_with(
                &data.q.view(),
                &data.k.view(),
                &data.v.view(),
                &mut out.view_mut(),
                options(case, &data, &mut lse),
            )
            .unwrap();
            let what = format!("SMYRF R={rounds} c={cq} {isa} {threads} threads");
            compare(
                case,
                &out,
                &lse,
                |b, h, i| want[b * case.hq + h][i].clone(),
                &what,
            );
            let bits = out.data.clone();
            match &first {
                None => first = Some(bits),
                Some(first) => assert!(same_bits(first, &bits), "{what}: thread count"),
            }
        }
    }
}

#[test]
fn causal_smyrf_with_one_cluster_is_causal_dense() {
    // One cluster holds every key: the oracle is exact causal attention.
    check_smyrf(&Case::new(120, 120), 1, 1000);
    check_smyrf(
        &Case {
            masked: true,
            ..Case::new(50, 130)
        },
        2,
        1000,
    );
}

#[test]
fn causal_smyrf_matches_the_oracle() {
    check_smyrf(&Case::new(96, 96), 1, 16);
    check_smyrf(&Case::new(96, 96), 3, 12);
    // Many queries whose clusters hold only later keys take the fallback.
    check_smyrf(&Case::new(64, 64), 2, 4);
    check_smyrf(
        &Case {
            masked: true,
            lengths: true,
            hq: 4,
            hkv: 2,
            bnhd: true,
            ..Case::new(80, 100)
        },
        2,
        10,
    );
    check_smyrf(
        &Case {
            offset: Some(30),
            ..Case::new(40, 90)
        },
        2,
        8,
    );
}

#[test]
fn causal_calls_refuse_bad_offsets_and_blocks_and_write_nothing() {
    let case = Case::new(20, 10);
    let data = make_data(&case, 1);
    let plan = Plan::new(Config::default(), case.d).unwrap();
    let mut out = Tensor::zeros(case.b, case.hq, case.nq, case.dv, false);
    out.data.fill(7.0);
    let run = |plan: &Plan, out: &mut Tensor, options: CallOptions<'_>, dense: bool| {
        let (q, k, v) = (data.q.view(), data.k.view(), data.v.view());
        if dense {
            plan.dense_attention_with(&q, &k, &v, &mut out.view_mut(), options)
        } else {
            plan.attention_with(&q, &k, &v, &mut out.view_mut(), options)
        }
    };
    for dense in [false, true] {
        // More queries than keys at the default offset: query 0 would sit before key 0.
        let err = run(&plan, &mut out, CallOptions::new().causal(), dense).unwrap_err();
        assert_eq!(err, Error::CausalOffset { nq: 20, nk: 10 });
        let mut options = CallOptions::new();
        options.query_offset = Some(3);
        let err = run(&plan, &mut out, options, dense).unwrap_err();
        assert!(matches!(
            err,
            Error::OptionNeeds {
                option: "query_offset",
                ..
            }
        ));
        // With an explicit offset the same shapes are served.
        run(
            &plan,
            &mut out.clone(),
            CallOptions::new().query_offset(0),
            dense,
        )
        .unwrap();
    }
    let hybrid = Plan::new(Config::hybrid(8), case.d).unwrap();
    let err = run(&hybrid, &mut out, CallOptions::new().query_offset(0), false).unwrap_err();
    assert_eq!(err, Error::CausalBlocks);
    assert!(
        out.data.iter().all(|&x| x == 7.0),
        "a refused call wrote its output"
    );
}

/// The design §8 blocks in causal form, as the oracle reads them.
#[derive(Clone, Copy)]
struct Blocks {
    sinks: usize,
    window: usize,
    n_blocks: usize,
    block_size: usize,
    /// Queries per tile.
    tile: usize,
    /// Residual samples: either none or more than any tile's eligible keys (then every
    /// eligible key is drawn with weight one, and the oracle is exact).
    samples: usize,
}

impl Blocks {
    fn config(&self, rounds: usize, cq: usize) -> Config {
        Config::default()
            .n_hashes(rounds)
            .q_cluster_size(cq)
            .n_sinks(self.sinks)
            .window(self.window)
            .n_blocks(self.n_blocks)
            .block_size(self.block_size)
            .block_tile(self.tile)
            .n_samples(self.samples)
    }
}

/// The largest bf16 value at or below `x`, as f32: round to nearest, then step down if that
/// went up.
fn bf16_floor(x: f32) -> f32 {
    let r = half::bf16::from_f32(x);
    if r.to_f32() <= x {
        return r.to_f32();
    }
    let bits = r.to_bits();
    let down = match bits {
        0 => 0x8001,
        b if b & 0x8000 == 0 => b - 1,
        b => b + 1,
    };
    half::bf16::from_bits(down).to_f32()
}

/// The smallest bf16 value at or above `x`, as f32.
fn bf16_ceil(x: f32) -> f32 {
    -bf16_floor(-x)
}

/// A tile's key blocks among those holding its middle (design §8, causal): all of them when
/// they are few, else the `n_blocks` with the largest f32 upper bound
/// Σ_t max(s_t·min_t, s_t·max_t) of the sum s of the tile's queries (summed in query order,
/// the bound in component order), the bounds rounded outward to bf16, ties to the lower
/// block.
fn oracle_chosen_blocks(
    queries: &[Vec<f32>],
    k: &[Vec<f32>],
    valid: &[usize],
    middle: &[usize],
    p: &Blocks,
) -> Vec<usize> {
    let block = |j: usize| j / p.block_size;
    let (lo, hi) = (
        block(valid[middle[0]]),
        block(valid[*middle.last().unwrap()]),
    );
    if hi - lo < p.n_blocks {
        return (lo..=hi).collect();
    }
    let mut sum = vec![0.0f32; queries[0].len()];
    for q in queries {
        for (s, &x) in sum.iter_mut().zip(q) {
            *s += x;
        }
    }
    let mut scored: Vec<(f32, usize)> = (lo..=hi)
        .filter_map(|beta| {
            let keys: Vec<&Vec<f32>> = valid
                .iter()
                .filter(|&&j| block(j) == beta)
                .map(|&j| &k[j])
                .collect();
            if keys.is_empty() {
                return None;
            }
            let mut score = 0.0f32;
            for (t, &st) in sum.iter().enumerate() {
                let mn = keys.iter().map(|key| key[t]).fold(f32::INFINITY, f32::min);
                let mx = keys
                    .iter()
                    .map(|key| key[t])
                    .fold(f32::NEG_INFINITY, f32::max);
                score += (st * bf16_floor(mn)).max(st * bf16_ceil(mx));
            }
            Some((score, beta))
        })
        .collect();
    scored.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
    let mut chosen: Vec<usize> = scored
        .iter()
        .take(p.n_blocks)
        .map(|&(_, beta)| beta)
        .collect();
    chosen.sort_unstable();
    chosen
}

/// Causal §8 in f64 for one (b, h): per query, its visible sinks, its tile's window span up
/// to its position, its tile's chosen blocks (and every other middle key when sampling) as
/// one softmax; each round over its cluster's keys in its tile's middle that the tile did
/// not take; all merged by log-sum-exp, with the last visible key when nothing was seen.
#[allow(clippy::too_many_arguments)]
fn oracle_causal_blocks(
    qf: &[Vec<f32>],
    kf: &[Vec<f32>],
    v: &[Vec<f64>],
    valid: &[usize],
    offset: usize,
    rounds: usize,
    clusters: usize,
    projections: &[f32],
    scale: f64,
    p: &Blocks,
) -> Vec<(Vec<f64>, f64)> {
    let widen = |x: &[Vec<f32>]| -> Vec<Vec<f64>> {
        x.iter()
            .map(|r| r.iter().map(|&a| a as f64).collect())
            .collect()
    };
    let (q, k) = (widen(qf), widen(kf));
    let (nq, nv, dv) = (q.len(), valid.len(), v[0].len());
    if nv == 0 {
        return vec![(vec![0.0; dv], f64::NEG_INFINITY); nq];
    }
    let k_valid: Vec<Vec<f64>> = valid.iter().map(|&j| k[j].clone()).collect();
    let (hq, hk) = oracle_hashes(&q, &k_valid, projections, rounds);
    // cluster[r] of every query and of every valid rank.
    let mut q_cluster = vec![vec![0; nq]; rounds];
    let mut k_cluster = vec![vec![0; nv]; rounds];
    for r in 0..rounds {
        let (q_order, k_order) = (stable_argsort(&hq[r]), stable_argsort(&hk[r]));
        for c in 0..clusters {
            for &i in &q_order[c * nq / clusters..(c + 1) * nq / clusters] {
                q_cluster[r][i] = c;
            }
            for &s in &k_order[c * nv / clusters..(c + 1) * nv / clusters] {
                k_cluster[r][s] = c;
            }
        }
    }
    let seen = |i: usize| valid.iter().filter(|&&j| j <= offset + i).count();
    let to_keys = |ranks: &[usize]| -> Vec<usize> { ranks.iter().map(|&s| valid[s]).collect() };
    (0..nq)
        .map(|i| {
            let (i0, i1) = (i / p.tile * p.tile, ((i / p.tile + 1) * p.tile).min(nq) - 1);
            let sinks = p.sinks.min(seen(i1));
            let middle_end = sinks.max(seen(i0).saturating_sub(p.window));
            let middle: Vec<usize> = (sinks..middle_end).collect();
            let chosen = if p.n_blocks > 0 && !middle.is_empty() {
                oracle_chosen_blocks(&qf[i0..=i1], kf, valid, &middle, p)
            } else {
                vec![]
            };
            let is_chosen = |s: usize| chosen.contains(&(valid[s] / p.block_size));
            let taken = |s: usize| is_chosen(s) || p.samples > 0;
            let mut fused: Vec<usize> =
                (0..sinks.min(seen(i))).chain(middle_end..seen(i)).collect();
            fused.extend(middle.iter().copied().filter(|&s| taken(s)));
            let mut parts = vec![];
            if !fused.is_empty() {
                parts.push(oracle_dense_query(&q[i], &k, v, &to_keys(&fused), scale));
            }
            for r in 0..rounds {
                let keys: Vec<usize> = middle
                    .iter()
                    .copied()
                    .filter(|&s| !taken(s) && k_cluster[r][s] == q_cluster[r][i])
                    .collect();
                if !keys.is_empty() {
                    parts.push(oracle_dense_query(&q[i], &k, v, &to_keys(&keys), scale));
                }
            }
            if parts.is_empty() {
                return match valid.iter().rev().find(|&&j| j <= offset + i) {
                    Some(&j) => oracle_dense_query(&q[i], &k, v, &[j], scale),
                    None => (vec![0.0; dv], f64::NEG_INFINITY),
                };
            }
            let top = parts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            let total = top + parts.iter().map(|p| (p.1 - top).exp()).sum::<f64>().ln();
            let mut row = vec![0.0; dv];
            for (part_row, part_lse) in &parts {
                let w = (part_lse - total).exp();
                for (o, x) in row.iter_mut().zip(part_row) {
                    *o += w * x;
                }
            }
            (row, total)
        })
        .collect()
}

fn head_f32(t: &Tensor, b: usize, h: usize) -> Vec<Vec<f32>> {
    (0..t.n).map(|i| t.row(b, h, i).to_vec()).collect()
}

/// Runs `blocks` on every tier and 1 and 3 threads against the oracle; the thread counts
/// give the same bits.
fn check_blocks(case: &Case, rounds: usize, cq: usize, blocks: Blocks) {
    let scale = 1.0 / (case.d as f64).sqrt();
    for isa in smyrf::internals::supported_tiers() {
        let config = blocks.config(rounds, cq).isa(isa);
        let plan = Plan::new(config.clone().num_threads(1), case.d).unwrap();
        let projections = plan.projections().to_vec();
        let data = (0..40)
            .map(|seed| make_data(case, 300 + seed))
            .find(|data| well_separated(case, data, &projections, rounds, cq))
            .expect("no seed gave well separated cluster boundaries");
        let mut want = vec![];
        for b in 0..case.b {
            let valid = valid_keys(case, &data, b);
            let clusters = clusters_for(case, cq, valid.len().max(1));
            for h in 0..case.hq {
                let hk = h / (case.hq / case.hkv);
                want.push(oracle_causal_blocks(
                    &head_f32(&data.q, b, h),
                    &head_f32(&data.k, b, hk),
                    &head_f64(&data.v, b, hk),
                    &valid,
                    case.offset(),
                    rounds,
                    clusters,
                    &projections,
                    scale,
                    &blocks,
                ));
            }
        }
        let mut first: Option<Vec<f32>> = None;
        for threads in [1, 3] {
            let plan = Plan::new(config.clone().num_threads(threads), case.d).unwrap();
            let mut out = Tensor::zeros(case.b, case.hq, case.nq, case.dv, case.bnhd);
            let mut lse = vec![0.0f32; case.b * case.hq * case.nq];
            plan.attention_with(
                &data.q.view(),
                &data.k.view(),
                &data.v.view(),
                &mut out.view_mut(),
                options(case, &data, &mut lse),
            )
            .unwrap();
            let what = format!(
                "blocks s={} w={} nb={} P={} T={} samples={} R={rounds} c={cq} {isa} {threads} threads",
                blocks.sinks, blocks.window, blocks.n_blocks, blocks.block_size, blocks.tile, blocks.samples
            );
            compare(
                case,
                &out,
                &lse,
                |b, h, i| want[b * case.hq + h][i].clone(),
                &what,
            );
            let bits = out.data.clone();
            match &first {
                None => first = Some(bits),
                Some(first) => assert!(same_bits(first, &bits), "{what}: thread count"),
            }
        }
    }
}

const MIX: Blocks = Blocks {
    sinks: 2,
    window: 9,
    n_blocks: 3,
    block_size: 8,
    tile: 1,
    samples: 0,
};

#[test]
fn causal_blocks_each_alone_match_the_oracle() {
    let case = Case::new(90, 90);
    let none = Blocks {
        sinks: 0,
        window: 0,
        n_blocks: 0,
        block_size: 8,
        tile: 1,
        samples: 0,
    };
    check_blocks(&case, 1, 1, Blocks { sinks: 3, ..none });
    check_blocks(&case, 1, 1, Blocks { window: 7, ..none });
    check_blocks(
        &case,
        1,
        1,
        Blocks {
            n_blocks: 2,
            ..none
        },
    );
    // One position per block: the bound is the logit itself, so the blocks are exact top-k.
    check_blocks(
        &case,
        1,
        1,
        Blocks {
            n_blocks: 5,
            block_size: 1,
            ..none
        },
    );
}

#[test]
fn causal_blocks_together_match_the_oracle() {
    check_blocks(&Case::new(100, 100), 1, 1, MIX);
    // No cluster rounds: the blocks alone.
    check_blocks(&Case::new(100, 100), 0, 1, Blocks { tile: 16, ..MIX });
    check_blocks(&Case::new(1, 100), 0, 1, MIX);
    // Rounds over larger clusters drop each query's future and what its tile took.
    check_blocks(&Case::new(96, 96), 3, 12, MIX);
    check_blocks(&Case::new(96, 96), 2, 12, Blocks { tile: 16, ..MIX });
    // Chunked prefill (bottom-right), an explicit offset with queries past the last key.
    check_blocks(&Case::new(37, 150), 2, 6, MIX);
    check_blocks(
        &Case {
            offset: Some(40),
            ..Case::new(60, 80)
        },
        2,
        6,
        MIX,
    );
    // Masks that leave queries without keys, lengths, GQA, BNHD; blocks of odd size.
    check_blocks(
        &Case {
            masked: true,
            lengths: true,
            hq: 4,
            hkv: 2,
            bnhd: true,
            ..Case::new(80, 100)
        },
        2,
        10,
        Blocks {
            block_size: 5,
            tile: 4,
            ..MIX
        },
    );
}

#[test]
fn causal_blocks_with_every_eligible_key_sampled_are_causal_dense() {
    // Samples past the eligible count draw them all at weight one: every visible key is
    // counted once, so the result is exact causal attention.
    let all = Blocks {
        samples: 1000,
        ..MIX
    };
    check_blocks(&Case::new(70, 70), 1, 4, all);
    check_blocks(&Case::new(70, 70), 2, 4, Blocks { tile: 8, ..all });
    check_blocks(
        &Case {
            masked: true,
            ..Case::new(40, 90)
        },
        1,
        4,
        all,
    );
}

#[test]
fn causal_samples_are_the_same_draws_on_every_tier_and_thread_count() {
    let case = Case {
        hq: 4,
        hkv: 2,
        ..Case::new(120, 120)
    };
    let data = make_data(&case, 5);
    let config = Blocks { samples: 6, ..MIX }.config(2, 8);
    let run = |config: Config| {
        let plan = Plan::new(config, case.d).unwrap();
        let mut out = Tensor::zeros(case.b, case.hq, case.nq, case.dv, false);
        let (q, k, v) = (data.q.view(), data.k.view(), data.v.view());
        plan.attention_with(&q, &k, &v, &mut out.view_mut(), CallOptions::new().causal())
            .unwrap();
        out.data
    };
    let portable = run(config.clone().isa(smyrf::Isa::Portable).num_threads(1));
    let dense = {
        let plan = Plan::new(Config::default(), case.d).unwrap();
        let mut out = Tensor::zeros(case.b, case.hq, case.nq, case.dv, false);
        let (q, k, v) = (data.q.view(), data.k.view(), data.v.view());
        plan.dense_attention_with(&q, &k, &v, &mut out.view_mut(), CallOptions::new().causal())
            .unwrap();
        out.data
    };
    // The samples estimate what the other blocks miss: the output moves off exact attention
    // (so they ran), but stays near it.
    let off: f64 = portable
        .iter()
        .zip(&dense)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    assert!(off > 1e-4 && off < 1.0, "samples moved the output by {off}");
    for isa in smyrf::internals::supported_tiers() {
        let one = run(config.clone().isa(isa).num_threads(1));
        let three = run(config.clone().isa(isa).num_threads(3));
        assert!(
            same_bits(&one, &three),
            "{isa}: thread count changed the bits"
        );
        let wide: Vec<f64> = portable.iter().map(|&x| x as f64).collect();
        let err = rel_err(&one, &wide);
        assert!(err <= 1e-5, "{isa} against portable: {err:e}");
    }
}

#[test]
fn causal_blocks_refusals_write_nothing() {
    let case = Case::new(20, 20);
    let data = make_data(&case, 1);
    let mut out = Tensor::zeros(case.b, case.hq, case.nq, case.dv, false);
    out.data.fill(7.0);
    let mut run = |config: Config, options: CallOptions<'_>| {
        let plan = Plan::new(config, case.d).unwrap();
        let (q, k, v) = (data.q.view(), data.k.view(), data.v.view());
        plan.attention_with(&q, &k, &v, &mut out.view_mut(), options)
            .unwrap_err()
    };
    // Selected keys and mean-query sinks read every key or query: no causal form.
    let err = run(Config::hybrid(8), CallOptions::new().causal());
    assert_eq!(err, Error::CausalBlocks);
    let mean = Config::default()
        .n_sinks(4)
        .sink_selection(smyrf::SinkSelection::MeanQuery);
    assert_eq!(run(mean, CallOptions::new().causal()), Error::CausalBlocks);
    // Key blocks are the causal selection only.
    let err = run(Config::default().n_blocks(2), CallOptions::new());
    assert!(
        matches!(
            err,
            Error::OptionNeeds {
                option: "n_blocks",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        out.data.iter().all(|&x| x == 7.0),
        "a refused call wrote its output"
    );
}
