//! Design §8 (sinks, local window, residual samples) against an independent f64 oracle, plus
//! the properties the design promises: all blocks off is exactly §1, the window is refused
//! for cross-attention, results do not depend on the thread count, and the sample block is
//! an unbiased estimate of the softmax mass the other blocks miss.

mod common;
use common::*;
use smyrf::DEFAULT_SAMPLE_GROUP;
use smyrf::{Config, Error, Plan, SinkSelection};

/// The §8 parameters of one oracle call.
#[derive(Clone, Copy, Debug)]
struct Blocks {
    n_sinks: usize,
    selection: SinkSelection,
    window: usize,
    n_samples: usize,
    sample_group: usize,
    seed: u64,
    n_selected: usize,
    select_dims: usize,
}

const OFF: Blocks = Blocks {
    n_sinks: 0,
    selection: SinkSelection::First,
    window: 0,
    n_samples: 0,
    sample_group: 0,
    seed: 0,
    n_selected: 0,
    select_dims: 0,
};

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The sinks of design §8, by position; `group_queries` holds every query of every query
/// head that reads this key/value head (for the mean query).
fn oracle_sinks(
    k: &[Vec<f64>],
    valid: &[usize],
    group_queries: &[Vec<f64>],
    blocks: &Blocks,
) -> Vec<usize> {
    let n = blocks.n_sinks.min(valid.len());
    if n == 0 {
        return Vec::new();
    }
    let mut sinks = match blocks.selection {
        SinkSelection::First => valid[..n].to_vec(),
        SinkSelection::MeanQuery => {
            let d = k[0].len();
            let mut mean = vec![0.0; d];
            for q in group_queries {
                for (m, x) in mean.iter_mut().zip(q) {
                    *m += x / group_queries.len() as f64;
                }
            }
            let mut rest: Vec<(f64, usize)> =
                valid[1..].iter().map(|&j| (dot(&k[j], &mean), j)).collect();
            rest.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
            let mut s = vec![valid[0]];
            s.extend(rest[..n - 1].iter().map(|&(_, j)| j));
            s
        }
        other => panic!("no oracle for {other:?}"),
    };
    sinks.sort_unstable();
    sinks
}

/// The selected keys of query `qi` (design §8), by position: the `n_selected` candidates
/// with the largest approximate logit. The score is computed as the design states it, in
/// f32 with the components in increasing index order, so it has the library's bits and the
/// choice needs no separation margin.
fn oracle_selected(
    qi: &[f64],
    k: &[Vec<f64>],
    candidates: &[usize],
    blocks: &Blocks,
    in_window: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let d = qi.len();
    let r = match blocks.select_dims {
        0 => d.div_ceil(4),
        n => n.min(d),
    };
    let mut dims: Vec<usize> = (0..d).collect();
    dims.sort_by(|&a, &b| {
        (qi[b].abs() as f32)
            .total_cmp(&(qi[a].abs() as f32))
            .then(a.cmp(&b))
    });
    dims.truncate(r);
    dims.sort_unstable();
    let mut scored: Vec<(f32, usize)> = candidates
        .iter()
        .filter(|&&j| !in_window(j))
        .map(|&j| {
            let mut score = 0.0f32;
            for &t in &dims {
                score += qi[t] as f32 * k[j][t] as f32;
            }
            (score, j)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut chosen: Vec<usize> = scored
        .iter()
        .take(blocks.n_selected)
        .map(|&(_, j)| j)
        .collect();
    chosen.sort_unstable();
    chosen
}

/// Softmax of query `qi` over `keys` (position, log-weight): (lse, output), lse −∞ when
/// there is no key.
fn oracle_block(
    qi: &[f64],
    k: &[Vec<f64>],
    v: &[Vec<f64>],
    keys: &[(usize, f64)],
    scale: f64,
) -> (f64, Vec<f64>) {
    let dv = v[0].len();
    if keys.is_empty() {
        return (f64::NEG_INFINITY, vec![0.0; dv]);
    }
    let logits: Vec<f64> = keys
        .iter()
        .map(|&(j, w)| scale * dot(qi, &k[j]) + w)
        .collect();
    let mx = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = mx + logits.iter().map(|l| (l - mx).exp()).sum::<f64>().ln();
    let mut out = vec![0.0; dv];
    for (l, &(j, _)) in logits.iter().zip(keys) {
        let p = (l - lse).exp();
        for (o, x) in out.iter_mut().zip(&v[j]) {
            *o += p * x;
        }
    }
    (lse, out)
}

/// Design §1 with the §8 blocks for one (b, h), in f64, written from the design text with
/// plain loops. The samples come from `smyrf::internals::draw_samples` given the eligible keys
/// the oracle computes itself.
#[allow(clippy::too_many_arguments)]
fn oracle_hybrid_head(
    q: &[Vec<f64>],
    k: &[Vec<f64>],
    v: &[Vec<f64>],
    valid: &[usize],
    group_queries: &[Vec<f64>],
    p: &OracleParams<'_>,
    blocks: &Blocks,
    (b, h): (usize, usize),
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let (nq, nk, dv, nv) = (q.len(), k.len(), v[0].len(), valid.len());
    if nv == 0 {
        return (vec![vec![0.0; dv]; nq], vec![f64::NEG_INFINITY; nq]);
    }
    let sinks = oracle_sinks(k, valid, group_queries, blocks);
    let is_sink = |j: usize| sinks.contains(&j);
    let half = blocks.window / 2;
    let in_window = |i: usize, j: usize| blocks.window > 0 && i.abs_diff(j) <= half;

    let k_valid: Vec<Vec<f64>> = valid.iter().map(|&j| k[j].clone()).collect();
    let (hq, hk) = oracle_hashes(q, &k_valid, p.projections, p.n_hashes);
    let ck = p.k_cluster_size.unwrap_or_else(|| {
        ((p.q_cluster_size as f64 * nk as f64 / nq as f64).round() as usize).max(1)
    });
    let clusters = nv.div_ceil(ck).min(nv).min(nq).max(1);

    let candidates: Vec<usize> = valid.iter().copied().filter(|&j| !is_sink(j)).collect();
    let selected: Vec<Vec<usize>> = (0..nq)
        .map(|i| {
            if blocks.n_selected == 0 {
                return Vec::new();
            }
            oracle_selected(&q[i], k, &candidates, blocks, |j| in_window(i, j))
        })
        .collect();
    let is_selected = |i: usize, j: usize| selected[i].binary_search(&j).is_ok();

    // Every block of every query: (lse, output).
    let mut per_query: Vec<Vec<(f64, Vec<f64>)>> = vec![Vec::new(); nq];
    for (i, blocks_of_i) in per_query.iter_mut().enumerate() {
        if !sinks.is_empty() {
            let keys: Vec<(usize, f64)> = sinks.iter().map(|&j| (j, 0.0)).collect();
            blocks_of_i.push(oracle_block(&q[i], k, v, &keys, p.scale));
        }
        if blocks.window > 0 {
            let keys: Vec<(usize, f64)> = valid
                .iter()
                .filter(|&&j| !is_sink(j) && in_window(i, j))
                .map(|&j| (j, 0.0))
                .collect();
            blocks_of_i.push(oracle_block(&q[i], k, v, &keys, p.scale));
        }
        if !selected[i].is_empty() {
            let keys: Vec<(usize, f64)> = selected[i].iter().map(|&j| (j, 0.0)).collect();
            blocks_of_i.push(oracle_block(&q[i], k, v, &keys, p.scale));
        }
    }
    let group_size = if blocks.sample_group == 0 {
        DEFAULT_SAMPLE_GROUP
    } else {
        blocks.sample_group
    };
    let mut group_id = 0;
    for r in 0..p.n_hashes {
        let q_order = stable_argsort(&hq[r]);
        let k_order = stable_argsort(&hk[r]);
        for c in 0..clusters {
            let members = &q_order[c * nq / clusters..(c + 1) * nq / clusters];
            let cluster_keys: Vec<usize> = k_order[c * nv / clusters..(c + 1) * nv / clusters]
                .iter()
                .map(|&s| valid[s])
                .collect();
            for &i in members {
                let keys: Vec<(usize, f64)> = cluster_keys
                    .iter()
                    .filter(|&&j| !is_sink(j) && !in_window(i, j) && !is_selected(i, j))
                    .map(|&j| (j, 0.0))
                    .collect();
                per_query[i].push(oracle_block(&q[i], k, v, &keys, p.scale));
            }
            if r != 0 || blocks.n_samples == 0 {
                continue;
            }
            let eligible: Vec<u32> = valid
                .iter()
                .filter(|&&j| !is_sink(j) && !cluster_keys.contains(&j))
                .map(|&j| j as u32)
                .collect();
            let n = blocks.n_samples.min(eligible.len());
            for group in members.chunks(group_size) {
                let drawn = if n > 0 {
                    smyrf::internals::draw_samples(blocks.seed, b, h, group_id, &eligible, n)
                } else {
                    Vec::new()
                };
                group_id += 1;
                if drawn.is_empty() {
                    continue;
                }
                let weight = (eligible.len() as f64 / n as f64).ln();
                for &i in group {
                    let keys: Vec<(usize, f64)> = drawn
                        .iter()
                        .map(|&j| j as usize)
                        .filter(|&j| !in_window(i, j) && !is_selected(i, j))
                        .map(|j| (j, weight))
                        .collect();
                    per_query[i].push(oracle_block(&q[i], k, v, &keys, p.scale));
                }
            }
        }
    }
    let mut out = vec![vec![0.0; dv]; nq];
    let mut lse = vec![f64::NEG_INFINITY; nq];
    for i in 0..nq {
        let mx = per_query[i]
            .iter()
            .map(|b| b.0)
            .fold(f64::NEG_INFINITY, f64::max);
        if mx == f64::NEG_INFINITY {
            continue;
        }
        let total = mx
            + per_query[i]
                .iter()
                .map(|b| (b.0 - mx).exp())
                .sum::<f64>()
                .ln();
        for (block_lse, o) in &per_query[i] {
            let w = (block_lse - total).exp();
            for (x, y) in out[i].iter_mut().zip(o) {
                *x += w * y;
            }
        }
        lse[i] = total;
    }
    (out, lse)
}

#[derive(Clone)]
struct Case {
    b: usize,
    hq: usize,
    hkv: usize,
    nq: usize,
    nk: usize,
    d: usize,
    dv: usize,
    rounds: usize,
    cq: usize,
    bnhd: bool,
    masked: bool,
    blocks: Blocks,
}

impl Case {
    fn new(n: usize, rounds: usize, cq: usize, blocks: Blocks) -> Case {
        Case {
            b: 2,
            hq: 2,
            hkv: 2,
            nq: n,
            nk: n,
            d: 16,
            dv: 16,
            rounds,
            cq,
            bnhd: false,
            masked: false,
            blocks,
        }
    }

    fn config(&self, threads: usize) -> Config {
        Config::default()
            .n_hashes(self.rounds)
            .q_cluster_size(self.cq)
            .seed(self.blocks.seed)
            .num_threads(threads)
            .n_sinks(self.blocks.n_sinks)
            .sink_selection(self.blocks.selection)
            .window(self.blocks.window)
            .n_samples(self.blocks.n_samples)
            .sample_group(self.blocks.sample_group)
            .n_selected(self.blocks.n_selected)
            .select_dims(self.blocks.select_dims)
    }
}

struct Data {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Option<Vec<u8>>,
}

fn make_data(case: &Case, seed: u64) -> Data {
    let mut rng = Rng(seed);
    let q = Tensor::random(&mut rng, case.b, case.hq, case.nq, case.d, case.bnhd);
    let k = Tensor::random(&mut rng, case.b, case.hkv, case.nk, case.d, case.bnhd);
    let v = Tensor::random(&mut rng, case.b, case.hkv, case.nk, case.dv, case.bnhd);
    let mask = case.masked.then(|| {
        (0..case.b * case.nk)
            .map(|_| (rng.below(4) != 0) as u8)
            .collect()
    });
    Data { q, k, v, mask }
}

/// All query rows of the query heads that read key/value head `hk`.
fn group_queries(case: &Case, data: &Data, b: usize, hk: usize) -> Vec<Vec<f64>> {
    let group = case.hq / case.hkv;
    (hk * group..(hk + 1) * group)
        .flat_map(|h| head_f64(&data.q, b, h))
        .collect()
}

/// Whether f32 rounding could change a discrete choice the oracle makes in f64 (design §6):
/// hash gaps at every cluster cut and, in round 0, at every sample-group cut, and the score
/// gap at the mean-query sink cut.
fn well_separated(case: &Case, data: &Data, projections: &[f32]) -> bool {
    let blocks = &case.blocks;
    let group_size = if blocks.sample_group == 0 {
        DEFAULT_SAMPLE_GROUP
    } else {
        blocks.sample_group
    };
    for b in 0..case.b {
        let valid = valid_of(data.mask.as_deref(), b, case.nk);
        let nv = valid.len();
        if nv == 0 {
            continue;
        }
        for h in 0..case.hq {
            let hk = h / (case.hq / case.hkv);
            let q = head_f64(&data.q, b, h);
            let k = head_f64(&data.k, b, hk);
            if blocks.selection == SinkSelection::MeanQuery && blocks.n_sinks > 1 {
                let gq = group_queries(case, data, b, hk);
                let d = case.d;
                let mean: Vec<f64> = (0..d)
                    .map(|t| gq.iter().map(|x| x[t]).sum::<f64>() / gq.len() as f64)
                    .collect();
                let mut scores: Vec<f64> = valid[1..].iter().map(|&j| dot(&k[j], &mean)).collect();
                scores.sort_by(|a, b| b.partial_cmp(a).unwrap());
                let at = blocks.n_sinks - 1;
                if at < scores.len() && (scores[at - 1] - scores[at]).abs() < 1e-4 {
                    return false;
                }
            }
            let kv: Vec<Vec<f64>> = valid.iter().map(|&j| k[j].clone()).collect();
            let (hq, hkh) = oracle_hashes(&q, &kv, projections, case.rounds);
            let ck = ((case.cq as f64 * case.nk as f64 / case.nq as f64).round() as usize).max(1);
            let clusters = nv.div_ceil(ck).min(nv).min(case.nq).max(1);
            for r in 0..case.rounds {
                for (hashes, len, is_query) in [(&hq[r], case.nq, true), (&hkh[r], nv, false)] {
                    let order = stable_argsort(hashes);
                    let scale = hashes.iter().map(|x| x.abs()).fold(0.0, f64::max).max(1.0);
                    let mut cuts: Vec<usize> = (1..clusters).map(|c| c * len / clusters).collect();
                    if r == 0 && is_query && blocks.n_samples > 0 {
                        for c in 0..clusters {
                            let (q0, q1) = (c * len / clusters, (c + 1) * len / clusters);
                            cuts.extend((q0 + group_size..q1).step_by(group_size));
                        }
                    }
                    for at in cuts {
                        if at == 0 || at >= len {
                            continue;
                        }
                        if (hashes[order[at]] - hashes[order[at - 1]]).abs() < 1e-4 * scale {
                            return false;
                        }
                    }
                }
            }
        }
    }
    true
}

/// Runs the library (every tier this CPU has) and the oracle; outputs must match to 1e-5
/// relative (design §6) and lse to 1e-5 absolute.
fn check_case(case: &Case) {
    for isa in smyrf::internals::supported_tiers() {
        let plan = Plan::new((case.config(0)).isa(isa), case.d).unwrap();
        let projections = plan.projections().to_vec();
        let data = (0..40)
            .map(|s| make_data(case, 7000 + s))
            .find(|d| well_separated(case, d, &projections))
            .expect("no seed gave well separated data");
        let mut out = Tensor::zeros(case.b, case.hq, case.nq, case.dv, case.bnhd);
        let mut lse = vec![0.0f32; case.b * case.hq * case.nq];
        plan.attention_with(
            &data.q.view(),
            &data.k.view(),
            &data.v.view(),
            &mut out.view_mut(),
            {
                let mut options = smyrf::CallOptions::new();
                options.key_mask = data.mask.as_deref();
                options.lse = Some(&mut lse);
                options
            },
        )
        .unwrap();
        let params = OracleParams {
            n_hashes: case.rounds,
            q_cluster_size: case.cq,
            k_cluster_size: None,
            scale: 1.0 / (case.d as f64).sqrt(),
            projections: &projections,
        };
        let (mut got, mut want) = (Vec::new(), Vec::new());
        for b in 0..case.b {
            let valid = valid_of(data.mask.as_deref(), b, case.nk);
            for h in 0..case.hq {
                let hk = h / (case.hq / case.hkv);
                let (o, l) = oracle_hybrid_head(
                    &head_f64(&data.q, b, h),
                    &head_f64(&data.k, b, hk),
                    &head_f64(&data.v, b, hk),
                    &valid,
                    &group_queries(case, &data, b, hk),
                    &params,
                    &case.blocks,
                    (b, h),
                );
                for i in 0..case.nq {
                    got.extend_from_slice(out.row(b, h, i));
                    want.extend_from_slice(&o[i]);
                    let got_lse = lse[(b * case.hq + h) * case.nq + i] as f64;
                    assert!(
                        got_lse == l[i] || (got_lse - l[i]).abs() <= 1e-5 * l[i].abs().max(1.0),
                        "{isa:?} {:?}: lse (b {b}, h {h}, i {i}) {got_lse} vs {}",
                        case.blocks,
                        l[i]
                    );
                }
            }
        }
        assert!(got.iter().all(|x| x.is_finite()), "non-finite output");
        let err = rel_err(&got, &want);
        assert!(err <= 1e-5, "{isa:?} {:?}: rel err {err}", case.blocks);
    }
}

fn sinks(n: usize, selection: SinkSelection) -> Blocks {
    Blocks {
        n_sinks: n,
        selection,
        ..OFF
    }
}

fn window(w: usize) -> Blocks {
    Blocks { window: w, ..OFF }
}

fn samples(n: usize, group: usize, seed: u64) -> Blocks {
    Blocks {
        n_samples: n,
        sample_group: group,
        seed,
        ..OFF
    }
}

fn all_blocks(seed: u64) -> Blocks {
    Blocks {
        n_sinks: 5,
        selection: SinkSelection::MeanQuery,
        window: 12,
        n_samples: 9,
        sample_group: 7,
        seed,
        ..OFF
    }
}

fn selected(n: usize, dims: usize) -> Blocks {
    Blocks {
        n_selected: n,
        select_dims: dims,
        ..OFF
    }
}

#[test]
fn sinks_alone_match_the_oracle() {
    check_case(&Case::new(96, 1, 16, sinks(4, SinkSelection::First)));
    check_case(&Case::new(96, 2, 16, sinks(6, SinkSelection::MeanQuery)));
    let mut cross = Case::new(80, 2, 16, sinks(3, SinkSelection::MeanQuery));
    cross.nk = 130;
    cross.masked = true;
    check_case(&cross);
}

#[test]
fn window_alone_matches_the_oracle() {
    check_case(&Case::new(100, 1, 16, window(8)));
    check_case(&Case::new(100, 2, 24, window(13)));
    let mut masked = Case::new(150, 1, 20, window(40));
    masked.masked = true;
    check_case(&masked);
    // A window wider than a key tile of the driver, and one of a single key.
    check_case(&Case::new(300, 1, 64, window(300)));
    check_case(&Case::new(64, 1, 16, window(1)));
}

#[test]
fn samples_alone_match_the_oracle() {
    check_case(&Case::new(96, 1, 16, samples(7, 5, 11)));
    check_case(&Case::new(96, 2, 24, samples(20, 0, 12)));
    let mut cross = Case::new(64, 1, 8, samples(10, 3, 13));
    cross.nk = 150;
    cross.masked = true;
    check_case(&cross);
    // More samples than eligible keys: every eligible key, weight 1.
    check_case(&Case::new(40, 1, 10, samples(1000, 4, 14)));
}

#[test]
fn selected_keys_match_the_oracle() {
    check_case(&Case::new(96, 1, 16, selected(10, 0)));
    check_case(&Case::new(96, 2, 24, selected(7, 3)));
    // Every component, more than the head dimension, and more keys than there are.
    check_case(&Case::new(64, 1, 8, selected(12, 16)));
    check_case(&Case::new(64, 1, 8, selected(5, 1000)));
    check_case(&Case::new(40, 1, 8, selected(1000, 2)));
    let mut cross = Case::new(64, 2, 8, selected(9, 0));
    cross.nk = 150;
    cross.masked = true;
    cross.hq = 4;
    cross.bnhd = true;
    check_case(&cross);
    // The preset's shape: clusters of one query, selected keys and samples per query.
    check_case(&Case::new(
        40,
        1,
        2,
        Blocks {
            n_selected: 12,
            n_samples: 12,
            seed: 5,
            ..OFF
        },
    ));
}

#[test]
fn selected_keys_with_every_other_block_match_the_oracle() {
    let with_selection = |seed| Blocks {
        n_selected: 8,
        select_dims: 5,
        ..all_blocks(seed)
    };
    check_case(&Case::new(120, 2, 20, with_selection(31)));
    let mut gqa = Case::new(90, 1, 15, with_selection(32));
    gqa.hq = 4;
    gqa.masked = true;
    gqa.d = 7;
    gqa.dv = 33;
    check_case(&gqa);
}

#[test]
fn all_blocks_together_match_the_oracle() {
    check_case(&Case::new(120, 1, 20, all_blocks(21)));
    check_case(&Case::new(120, 2, 20, all_blocks(22)));
    let mut gqa = Case::new(90, 1, 15, all_blocks(23));
    gqa.hq = 4;
    gqa.hkv = 2;
    gqa.bnhd = true;
    gqa.masked = true;
    gqa.d = 7;
    gqa.dv = 33;
    check_case(&gqa);
    let mut odd = Case::new(
        77,
        3,
        9,
        Blocks {
            selection: SinkSelection::First,
            ..all_blocks(24)
        },
    );
    odd.masked = true;
    check_case(&odd);
}

#[test]
fn blocks_that_swallow_every_key_leave_nothing_behind() {
    // A window over the whole sequence leaves the cluster and sample blocks without keys
    // (lse −∞ for every query); sinks covering every valid key do the same to everything
    // else. Both must reduce to dense attention without NaN.
    let mut whole = Case::new(
        70,
        2,
        10,
        Blocks {
            window: 200,
            n_samples: 5,
            sample_group: 4,
            seed: 3,
            ..OFF
        },
    );
    whole.masked = true;
    check_case(&whole);
    check_case(&Case::new(50, 1, 10, sinks(500, SinkSelection::First)));
    check_case(&Case::new(50, 1, 10, sinks(500, SinkSelection::MeanQuery)));
}

fn run(config: Config, data: &Data, case: &Case) -> (Vec<f32>, Vec<f32>) {
    let plan = Plan::new(config, case.d).unwrap();
    let mut out = Tensor::zeros(case.b, case.hq, case.nq, case.dv, case.bnhd);
    let mut lse = vec![0.0f32; case.b * case.hq * case.nq];
    plan.attention_with(
        &data.q.view(),
        &data.k.view(),
        &data.v.view(),
        &mut out.view_mut(),
        {
            let mut options = smyrf::CallOptions::new();
            options.key_mask = data.mask.as_deref();
            options.lse = Some(&mut lse);
            options
        },
    )
    .unwrap();
    (out.data, lse)
}

#[test]
fn all_blocks_off_is_bitwise_plain_smyrf() {
    let mut case = Case::new(200, 2, 32, OFF);
    case.masked = true;
    let data = make_data(&case, 5);
    let plain = run(case.config(0), &data, &case);
    // Fields that only matter when a block is on.
    let off = (case.config(0))
        .sink_selection(SinkSelection::MeanQuery)
        .sample_group(7);
    assert!(!off.has_hybrid_blocks());
    let got = run(off, &data, &case);
    assert!(plain
        .0
        .iter()
        .zip(&got.0)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(plain
        .1
        .iter()
        .zip(&got.1)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn window_needs_self_attention() {
    let mut case = Case::new(64, 1, 16, window(8));
    case.nk = 65;
    let data = make_data(&case, 9);
    let plan = Plan::new(case.config(1), case.d).unwrap();
    let mut out = Tensor::zeros(case.b, case.hq, case.nq, case.dv, case.bnhd);
    out.data.fill(7.0);
    let err = plan
        .attention(
            &data.q.view(),
            &data.k.view(),
            &data.v.view(),
            &mut out.view_mut(),
        )
        .unwrap_err();
    assert_eq!(err, Error::WindowNeedsSelfAttention { nq: 64, nk: 65 });
    assert!(err.to_string().contains("self-attention"), "{err}");
    assert!(
        out.data.iter().all(|&x| x == 7.0),
        "output written on error"
    );
    // Without the window the same call runs.
    let plan = Plan::new((case.config(1)).window(0).n_sinks(2).n_samples(4), case.d).unwrap();
    plan.attention(
        &data.q.view(),
        &data.k.view(),
        &data.v.view(),
        &mut out.view_mut(),
    )
    .unwrap();
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut case = Case::new(333, 2, 24, all_blocks(77));
    case.hq = 4;
    case.hkv = 2;
    case.masked = true;
    let data = make_data(&case, 31);
    let reference = run(case.config(1), &data, &case);
    for threads in [2, 4] {
        let got = run(case.config(threads), &data, &case);
        assert!(
            reference
                .0
                .iter()
                .zip(&got.0)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "output differs with {threads} threads"
        );
        assert!(
            reference
                .1
                .iter()
                .zip(&got.1)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "lse differs with {threads} threads"
        );
    }
    // The seed does change the samples.
    let other = run((case.config(1)).seed(78), &data, &case);
    assert_ne!(reference.0, other.0);
}

#[test]
fn draws_are_uniform_without_replacement() {
    let eligible: Vec<u32> = (100..120).collect();
    let mut counts = [0usize; 20];
    let draws = 4000;
    for group in 0..draws {
        let s = smyrf::internals::draw_samples(1, 2, 3, group, &eligible, 5);
        let mut sorted = s.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 5, "a key drawn twice: {s:?}");
        for j in s {
            counts[(j - 100) as usize] += 1;
        }
    }
    // Each key is drawn with probability 5/20: mean 1000, sd ≈ 27.
    for c in counts {
        assert!((c as f64 - 1000.0).abs() < 6.0 * 27.4, "{counts:?}");
    }
    assert_eq!(
        smyrf::internals::draw_samples(1, 2, 3, 9, &eligible, 50).len(),
        20
    );
}

/// E[exp(lse_samples)] equals the softmax mass of the keys no other block holds. With
/// fixed projections, exp(L_with) − exp(L_without) is the sample block's mass for one seed;
/// its mean over 2000 seeds must match exp(L_dense) − exp(L_without) to a few standard
/// errors, while a missing or wrong log-weight would be off by far more.
#[test]
fn samples_estimate_the_residual_mass_without_bias() {
    let (n, d) = (48, 8);
    let mut rng = Rng(404);
    let mut q = Tensor::random(&mut rng, 1, 1, n, d, false);
    let k = Tensor::random(&mut rng, 1, 1, n, d, false);
    let v = Tensor::random(&mut rng, 1, 1, n, d, false);
    // Fairly diffuse attention with a few heavier keys, so the residual is large and uneven.
    for x in q.data.iter_mut() {
        *x *= 2.0;
    }
    let mask: Vec<u8> = (0..n).map(|j| (j % 7 != 3) as u8).collect();
    let projections = smyrf::gaussian_projections(99, d, 1);
    let base = Config::default()
        .n_hashes(1)
        .q_cluster_size(8)
        .n_sinks(2)
        .window(6)
        .num_threads(1);
    let lse_of = |config: Config| {
        let plan = Plan::with_projections(config, d, &projections).unwrap();
        let mut out = Tensor::zeros(1, 1, n, d, false);
        let mut lse = vec![0.0f32; n];
        plan.attention_with(
            &q.view(),
            &k.view(),
            &v.view(),
            &mut out.view_mut(),
            smyrf::CallOptions::new().key_mask(&mask).lse(&mut lse),
        )
        .unwrap();
        lse
    };
    let without = lse_of(base.clone());
    let valid = valid_of(Some(&mask), 0, n);
    let (_, dense_lse) = oracle_dense_head(
        &head_f64(&q, 0, 0),
        &head_f64(&k, 0, 0),
        &head_f64(&v, 0, 0),
        &valid,
        1.0 / (d as f64).sqrt(),
    );
    let residual: Vec<f64> = (0..n)
        .map(|i| dense_lse[i].exp() - (without[i] as f64).exp())
        .collect();
    let seeds = 2000;
    let (mut sum, mut sum_sq) = (vec![0.0f64; n], vec![0.0f64; n]);
    for seed in 0..seeds {
        let with = lse_of((base.clone()).n_samples(4).sample_group(3).seed(seed));
        for i in 0..n {
            let est = (with[i] as f64).exp() - (without[i] as f64).exp();
            sum[i] += est;
            sum_sq[i] += est * est;
        }
    }
    let mut tolerances = Vec::new();
    for i in 0..n {
        let mean = sum[i] / seeds as f64;
        let var =
            (sum_sq[i] / seeds as f64 - mean * mean).max(0.0) * seeds as f64 / (seeds - 1) as f64;
        let standard_error = (var / seeds as f64).sqrt();
        // f32 lse rounding on the subtraction, far below the statistical error.
        let rounding = 1e-5 * dense_lse[i].exp();
        let tolerance = 5.0 * standard_error + rounding;
        assert!(residual[i] > 0.0, "query {i}: no residual mass");
        assert!(
            (mean - residual[i]).abs() <= tolerance,
            "query {i}: mean sample mass {mean} vs residual {} (tolerance {tolerance})",
            residual[i]
        );
        tolerances.push(tolerance / residual[i]);
    }
    // The test has power: 4 samples of ~30 eligible keys carry weight ~7.5, so dropping the
    // log-weight would be off by ~85%; the tolerance is a few percent.
    tolerances.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert!(
        tolerances[n / 2] < 0.1,
        "median relative tolerance {}",
        tolerances[n / 2]
    );
}

#[test]
fn config_validation_and_preset() {
    let preset = Config::hybrid(128);
    assert_eq!(
        (
            preset.n_sinks,
            preset.window,
            preset.n_hashes,
            preset.q_cluster_size,
            preset.n_selected,
            preset.select_dims,
            preset.n_samples
        ),
        (0, 0, 1, 1, 64, 0, 64)
    );
    let odd = Config::hybrid(33);
    assert_eq!((odd.n_selected, odd.n_samples), (16, 17));
    assert!(Config::hybrid(0).validate().is_ok());
    assert!(Config::hybrid(usize::MAX).validate().is_ok());
    assert!(!Config::default().has_hybrid_blocks());
    assert!(preset.has_hybrid_blocks());
    #[cfg(target_pointer_width = "64")]
    for field in [
        "n_sinks",
        "window",
        "n_samples",
        "sample_group",
        "n_selected",
        "select_dims",
    ] {
        let mut c = Config::default();
        let big = u32::MAX as usize + 1;
        match field {
            "n_sinks" => c.n_sinks = big,
            "window" => c.window = big,
            "n_samples" => c.n_samples = big,
            "n_selected" => c.n_selected = big,
            "select_dims" => c.select_dims = big,
            _ => c.sample_group = big,
        }
        assert!(
            matches!(c.validate(), Err(Error::InvalidConfig { field: f, .. }) if f == field),
            "{field}"
        );
    }
}

/// The C ABI: the preset mirrors the Rust one, unknown sink selections are refused, and the
/// window with cross-attention reports an invalid argument.
#[test]
fn c_abi_hybrid_fields() {
    use smyrf::internals::ffi::*;
    use std::ptr::null_mut;
    let preset = smyrf_config_hybrid(128);
    assert_eq!(
        (
            preset.n_sinks,
            preset.window,
            preset.n_selected,
            preset.select_dims,
            preset.n_samples,
            preset.n_hashes,
            preset.q_cluster_size
        ),
        (0, 0, 64, 0, 64, 1, 1)
    );
    // A window on top of the preset: cross-attention is refused below.
    let c = smyrf_config {
        window: 8,
        ..preset
    };
    let d = smyrf_config_default();
    assert_eq!(
        (
            d.n_sinks,
            d.sink_selection,
            d.window,
            d.n_samples,
            d.sample_group,
            d.n_selected,
            d.select_dims
        ),
        (0, 0, 0, 0, 0, 0, 0)
    );
    let mut bad = c;
    bad.sink_selection = 2;
    let mut plan = null_mut();
    // SAFETY: valid config and out pointer.
    let status = unsafe { smyrf_plan_create(&bad, 8, &mut plan) };
    assert_eq!(status, smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT);
    assert!(plan.is_null());

    // SAFETY: valid config and out pointer.
    assert_eq!(
        unsafe { smyrf_plan_create(&c, 8, &mut plan) },
        smyrf_status::SMYRF_OK
    );
    let (nq, nk) = (16usize, 20usize);
    let q = vec![0.5f32; nq * 8];
    let kv = vec![0.25f32; nk * 8];
    let mut out = vec![3.0f32; nq * 8];
    let tensor = |data: &[f32], n: usize| smyrf_tensor {
        struct_size: std::mem::size_of::<smyrf_tensor>(),
        data: data.as_ptr().cast(),
        dtype: 0,
        batch: 1,
        heads: 1,
        seq_len: n,
        dim: 8,
        batch_stride: n * 8,
        head_stride: n * 8,
        seq_stride: 8,
    };
    let (tq, tk) = (tensor(&q, nq), tensor(&kv, nk));
    let to = smyrf_tensor_mut {
        struct_size: std::mem::size_of::<smyrf_tensor_mut>(),
        data: out.as_mut_ptr().cast(),
        dtype: 0,
        batch: 1,
        heads: 1,
        seq_len: nq,
        dim: 8,
        batch_stride: nq * 8,
        head_stride: nq * 8,
        seq_stride: 8,
    };
    // SAFETY: every pointer describes a live buffer of the stated extent.
    let status = unsafe { smyrf_attention(plan, &tq, &tk, &tk, &to, std::ptr::null()) };
    assert_eq!(status, smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT);
    // SAFETY: the message is a NUL-terminated string owned by the library.
    let message = unsafe { std::ffi::CStr::from_ptr(smyrf_last_error_message()) };
    assert!(
        message.to_string_lossy().contains("self-attention"),
        "{message:?}"
    );
    assert!(out.iter().all(|&x| x == 3.0));
    // SAFETY: a live plan, destroyed once.
    unsafe { smyrf_plan_destroy(plan) };
}

#[test]
fn hostile_inputs_do_not_break_the_blocks() {
    // NaN and infinities in Q and K (design §2): no panic, and a batch element without any
    // valid key still gets zeros and lse −∞ with every block on.
    let mut case = Case::new(90, 2, 16, all_blocks(5));
    case.masked = true;
    let mut data = make_data(&case, 12);
    data.q.data[7] = f32::NAN;
    data.k.data[40] = f32::INFINITY;
    data.k.data[41] = f32::NEG_INFINITY;
    let mask = data.mask.as_mut().unwrap();
    mask[case.nk..].fill(0);
    let (out, lse) = run(case.config(0), &data, &case);
    let per_batch = case.hq * case.nq;
    assert!(lse[per_batch..].iter().all(|&x| x == f32::NEG_INFINITY));
    let out_tensor = Tensor {
        data: out,
        ..Tensor::zeros(case.b, case.hq, case.nq, case.dv, case.bnhd)
    };
    for h in 0..case.hq {
        for i in 0..case.nq {
            assert!(out_tensor.row(1, h, i).iter().all(|&x| x == 0.0));
        }
    }
}
