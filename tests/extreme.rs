//! Extreme and hostile values (design §2, README "Reliability"): huge entries whose norms
//! overflow f32, logits that saturate exp, keys that all hash alike, NaN and ±∞ in Q, K and
//! V, mask bytes other than 0 and 1, lengths of 1, one query against 10⁵ keys, head dims 1
//! and 512, batch elements without a valid key, and scratch estimates for lengths near 2^32.
//! Each test asserts the behaviour the README documents: no crash, and outputs finite except
//! where an input was not (or a logit overflowed), while everything the hostile value cannot
//! reach stays bit-for-bit what it is without it.

mod common;
use common::*;
use smyrf::internals::ffi::*;
use smyrf::{Config, Plan};

/// Runs SMYRF; returns (out, lse).
fn smyrf(
    config: &Config,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&[u8]>,
) -> (Vec<f32>, Vec<f32>) {
    let plan = Plan::new(config.clone(), q.d).unwrap();
    let mut out = Tensor::zeros(q.b, q.h, q.n, v.d, false);
    let mut lse = vec![0.0f32; q.b * q.h * q.n];
    plan.attention_with(&q.view(), &k.view(), &v.view(), &mut out.view_mut(), {
        let mut options = smyrf::CallOptions::new();
        options.key_mask = mask;
        options.lse = Some(&mut lse);
        options
    })
    .unwrap();
    (out.data, lse)
}

fn dense(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&[u8]>) -> (Vec<f32>, Vec<f32>) {
    dense_scaled(q, k, v, mask, None)
}

fn dense_scaled(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&[u8]>,
    scale: Option<f32>,
) -> (Vec<f32>, Vec<f32>) {
    let mut out = Tensor::zeros(q.b, q.h, q.n, v.d, false);
    let mut lse = vec![0.0f32; q.b * q.h * q.n];
    smyrf::Plan::new(
        {
            let mut config = smyrf::Config::default();
            config.scale = scale;
            config
        },
        q.view().shape().dim,
    )
    .and_then(|plan| {
        plan.dense_attention_with(&q.view(), &k.view(), &v.view(), &mut out.view_mut(), {
            let mut options = smyrf::CallOptions::new();
            options.key_mask = mask;
            options.lse = Some(&mut lse);
            options
        })
    })
    .unwrap();
    (out.data, lse)
}

/// One cluster for these lengths: exact dense attention (design §1).
fn one_cluster(nq: usize, n_hashes: usize) -> Config {
    Config::default()
        .n_hashes(n_hashes)
        .q_cluster_size(nq)
        .seed(3)
        .num_threads(1)
}

fn clustered(cq: usize) -> Config {
    Config::default()
        .n_hashes(2)
        .q_cluster_size(cq)
        .seed(5)
        .num_threads(1)
}

/// Output rows `[dv]` of (b, h, i) in a `[B, H, N, dv]` buffer.
fn row(out: &[f32], h: usize, n: usize, dv: usize, b: usize, hi: usize, i: usize) -> &[f32] {
    let at = ((b * h + hi) * n + i) * dv;
    &out[at..at + dv]
}

/// Largest |x| over the value rows of (b, hk) that the mask lets through.
fn value_range(v: &Tensor, b: usize, hk: usize, valid: &[usize]) -> f32 {
    valid
        .iter()
        .flat_map(|&j| v.row(b, hk, j).iter().copied())
        .fold(0.0f32, |m, x| m.max(x.abs()))
}

/// f64 dense oracle over one (b, h), flattened.
fn oracle_dense(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&[u8]>,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (mut out, mut lse) = (Vec::new(), Vec::new());
    let group = q.h / k.h;
    for b in 0..q.b {
        let valid = valid_of(mask, b, k.n);
        for h in 0..q.h {
            let (o, l) = oracle_dense_head(
                &head_f64(q, b, h),
                &head_f64(k, b, h / group),
                &head_f64(v, b, h / group),
                &valid,
                scale,
            );
            out.extend(o.into_iter().flatten());
            lse.extend(l);
        }
    }
    (out, lse)
}

#[test]
#[cfg_attr(miri, ignore = "minutes under Miri; runs natively")]
fn huge_entries_overflow_the_norms_without_breaking_anything() {
    // Entries of ±1e18 in d = 512: ‖q‖² = 5.12e38 > f32::MAX, so the norms and M are +∞;
    // uniform entries up to 1e18 in d = 64 keep the norms finite (~2e37) and M overflows
    // only in d = 512's case. A lift coordinate √(M − ‖x‖²) is then +∞ (finite norm) or 0
    // (∞ − ∞ = NaN, clamped to 0): hashes are ±∞ or the plain projection, the sort orders
    // them (ties in input order), and the clusters stay balanced but less informed. The
    // logits stay finite here (random signs keep |q·k| far below f32::MAX), so attention
    // is a saturated softmax: every output is a convex combination of value rows, finite.
    let mut rng = Rng(11);
    for (d, magnitude, signs_only) in [(512, 1e18f32, true), (64, 1e18, false), (8, 1e15, false)] {
        let n = 96;
        let mut q = Tensor::random(&mut rng, 1, 2, n, d, false);
        let mut k = Tensor::random(&mut rng, 1, 2, n, d, false);
        let v = Tensor::random(&mut rng, 1, 2, n, 8, false);
        for x in q.data.iter_mut().chain(k.data.iter_mut()) {
            *x = match signs_only {
                true => magnitude.copysign(*x),
                false => *x * magnitude,
            };
        }
        let norm = |row: &[f32]| row.iter().map(|x| x * x).sum::<f32>();
        let overflowing = (0..n)
            .filter(|&i| norm(q.row(0, 0, i)).is_infinite())
            .count();
        assert_eq!(
            overflowing == n,
            d == 512,
            "d = {d}: the case is what it says"
        );

        for config in [clustered(16), one_cluster(n, 2)] {
            let (out, lse) = smyrf(&config, &q, &k, &v, None);
            assert!(out.iter().all(|x| x.is_finite()), "d = {d}: {config:?}");
            assert!(lse.iter().all(|x| x.is_finite()), "d = {d}: {config:?}");
            for h in 0..2 {
                let bound = value_range(&v, 0, h, &(0..n).collect::<Vec<_>>()) * (1.0 + 1e-5);
                for i in 0..n {
                    assert!(row(&out, 2, n, 8, 0, h, i).iter().all(|x| x.abs() <= bound));
                }
            }
        }
        // One cluster is still the library's dense attention. (Not an f64 oracle: logits
        // near 1e37 carry f32 rounding errors near 1e30, far above the O(1) gaps a softmax
        // resolves, so which near-tied key wins is decided by rounding, in any f32
        // attention; both paths compute the same f32 logits.)
        let (out, _) = smyrf(&one_cluster(n, 1), &q, &k, &v, None);
        let (want, _) = dense(&q, &k, &v, None);
        let err = rel_err(&out, &to_f64(&want));
        assert!(err < 1e-5, "d = {d}: {err}");
    }
}

#[test]
fn a_logit_that_overflows_to_infinity_gives_nan_for_that_query_only() {
    // q = k = [1e18; 512]: q·k = 5.12e38 overflows to +∞ (finite inputs, overflowing
    // logit). The softmax subtracts its max, ∞ − ∞ = NaN: that query's output is NaN
    // (documented). A query whose logits stay finite in the same call is unaffected.
    let (n, d, dv) = (2, 512, 4);
    let mut q = Tensor::zeros(1, 1, n, d, false);
    let mut k = Tensor::zeros(1, 1, n, d, false);
    let mut v = Tensor::zeros(1, 1, n, dv, false);
    q.row_mut(0, 0, 0).fill(1e18);
    q.row_mut(0, 0, 1).fill(1e-3);
    k.row_mut(0, 0, 0).fill(1e18);
    k.row_mut(0, 0, 1).fill(-1.0);
    v.row_mut(0, 0, 0).fill(1.0);
    v.row_mut(0, 0, 1).fill(2.0);
    for (out, _) in [
        dense(&q, &k, &v, None),
        smyrf(&one_cluster(n, 1), &q, &k, &v, None),
    ] {
        assert!(out[..dv].iter().all(|x| x.is_nan()), "{out:?}");
        // Query 1: logits 1e15·√512 and −1e-3·√512, finite; the saturated softmax picks
        // key 0.
        assert_eq!(&out[dv..], &[1.0; 4], "{out:?}");
    }
}

#[test]
fn a_query_whose_every_logit_is_minus_infinity_gets_nan_like_dense() {
    // q0 = [−∞, 0, 0, 0] against keys with a positive first coordinate: every logit of q0 is
    // −∞, its softmax 0/0. Dense attention writes NaN and lse −∞; SMYRF must write the row
    // too (never leave the caller's buffer as it was), in every round layout.
    let (n, d, dv) = (32, 4, 4);
    let mut rng = Rng(16);
    let (mut q, mut k, v) = two_by_two(&mut rng, n, d);
    for b in 0..2 {
        for h in 0..2 {
            for i in 0..n {
                k.row_mut(b, h, i)[0] = 1.0 + i as f32 * 0.01;
            }
        }
    }
    q.row_mut(0, 0, 0)
        .copy_from_slice(&[f32::NEG_INFINITY, 0.0, 0.0, 0.0]);
    let (dense_out, dense_lse) = dense(&q, &k, &v, None);
    assert!(dense_out[..dv].iter().all(|x| x.is_nan()) && dense_lse[0] == f32::NEG_INFINITY);
    for config in [one_cluster(n, 1), one_cluster(n, 3), clustered(8)] {
        let plan = Plan::new(config.clone(), d).unwrap();
        let mut out = Tensor::zeros(q.b, q.h, q.n, dv, false);
        out.data.fill(7.0);
        let mut lse = vec![7.0f32; q.b * q.h * n];
        plan.attention_with(
            &q.view(),
            &k.view(),
            &v.view(),
            &mut out.view_mut(),
            smyrf::CallOptions::new().lse(&mut lse),
        )
        .unwrap();
        assert!(
            out.data[..dv].iter().all(|x| x.is_nan()),
            "{config:?}: {:?}",
            &out.data[..dv]
        );
        assert_eq!(lse[0], f32::NEG_INFINITY, "{config:?}");
        // Every other row written, finite.
        assert!(
            out.data[dv..].iter().all(|x| x.is_finite() && *x != 7.0),
            "{config:?}"
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "minutes under Miri; runs natively")]
fn logits_that_saturate_exp_give_the_argmax_value_row() {
    // Logits ~±1e4 (scale 1e3): exp underflows to 0 for every key but the best, so the
    // output is the best key's value row exactly and lse its logit (+ ln R for R rounds).
    let mut rng = Rng(12);
    let (n, d, dv) = (40, 8, 5);
    let q = Tensor::random(&mut rng, 2, 2, n, d, false);
    let k = Tensor::random(&mut rng, 2, 2, n, d, false);
    let v = Tensor::random(&mut rng, 2, 2, n, dv, false);
    let scale = 1e3;
    let config = (one_cluster(n, 2)).scale(scale);
    let (out, lse) = smyrf(&config, &q, &k, &v, None);
    let mut saturated = 0;
    for b in 0..2 {
        for h in 0..2 {
            for i in 0..n {
                let logit = |j: usize| {
                    let dot: f64 = (q.row(b, h, i).iter().zip(k.row(b, h, j)))
                        .map(|(&a, &c)| a as f64 * c as f64)
                        .sum();
                    dot * scale as f64
                };
                let best = (0..n)
                    .max_by(|&a, &c| logit(a).partial_cmp(&logit(c)).unwrap())
                    .unwrap();
                let second = (0..n)
                    .filter(|&j| j != best)
                    .map(logit)
                    .fold(f64::NEG_INFINITY, f64::max);
                if logit(best) - second < 120.0 {
                    continue; // not saturated for this query: e^-120 is not below f32 rounding
                }
                saturated += 1;
                let got = row(&out, 2, n, dv, b, h, i);
                assert_eq!(got, v.row(b, h, best), "b {b} h {h} i {i}");
                let want_lse = logit(best) + 2f64.ln();
                let lse = lse[(b * 2 + h) * n + i] as f64;
                assert!((lse - want_lse).abs() <= 1e-5 * want_lse.abs().max(1.0));
            }
        }
    }
    assert!(saturated > 100, "only {saturated} saturated queries");
    // Dense agrees, and a clustered run is finite.
    let (want, _) = dense_scaled(&q, &k, &v, None, Some(scale));
    assert!(rel_err(&out, &to_f64(&want)) < 1e-5);
    let (clustered_out, clustered_lse) = smyrf(&(clustered(8)).scale(scale), &q, &k, &v, None);
    assert!(clustered_out
        .iter()
        .chain(&clustered_lse)
        .all(|x| x.is_finite()));
}

fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&x| x as f64).collect()
}

#[test]
#[cfg_attr(miri, ignore = "minutes under Miri; runs natively")]
fn all_equal_hashes_cluster_by_position() {
    // Every query and every key identical, so every hash ties: the stable sort keeps input
    // order and cluster c holds positions [c·N/C, (c+1)·N/C) on both sides. All logits of a
    // query are equal, so its output is the mean of its cluster's value rows.
    let mut rng = Rng(13);
    for (nq, nk, cq, masked) in [(64, 64, 16, false), (50, 90, 7, false), (60, 80, 10, true)] {
        let d = 6;
        let mut q = Tensor::zeros(1, 1, nq, d, false);
        let mut k = Tensor::zeros(1, 1, nk, d, false);
        let row_q: Vec<f32> = rng.vec(d);
        let row_k: Vec<f32> = rng.vec(d);
        for i in 0..nq {
            q.row_mut(0, 0, i).copy_from_slice(&row_q);
        }
        for j in 0..nk {
            k.row_mut(0, 0, j).copy_from_slice(&row_k);
        }
        let v = Tensor::random(&mut rng, 1, 1, nk, 3, false);
        let mask: Option<Vec<u8>> = masked.then(|| (0..nk).map(|j| (j % 3 != 1) as u8).collect());
        let valid = valid_of(mask.as_deref(), 0, nk);
        let config = clustered(cq);
        let (out, _) = smyrf(&config, &q, &k, &v, mask.as_deref());
        let ck = ((cq as f64 * nk as f64 / nq as f64).round() as usize).max(1);
        let nv = valid.len();
        let clusters = nv.div_ceil(ck).min(nv).min(nq).max(1);
        assert!(clusters > 1);
        for c in 0..clusters {
            let keys = &valid[c * nv / clusters..(c + 1) * nv / clusters];
            let mean: Vec<f64> = (0..3)
                .map(|t| keys.iter().map(|&j| v.row(0, 0, j)[t] as f64).sum::<f64>())
                .map(|sum| sum / keys.len() as f64)
                .collect();
            for i in c * nq / clusters..(c + 1) * nq / clusters {
                let got = row(&out, 1, nq, 3, 0, 0, i);
                for (g, m) in got.iter().zip(&mean) {
                    assert!(
                        (*g as f64 - m).abs() < 1e-5,
                        "nq {nq} cluster {c} query {i}"
                    );
                }
            }
        }
    }
    // All-zero queries and keys tie as well (every hash is +0.0).
    let q = Tensor::zeros(1, 1, 32, 4, false);
    let v = Tensor::random(&mut rng, 1, 1, 32, 2, false);
    let (out, lse) = smyrf(&clustered(8), &q, &q, &v, None);
    assert!(out.iter().chain(&lse).all(|x| x.is_finite()));
}

/// A clean case with two batch elements, two query heads over two key/value heads; returns
/// (q, k, v) of `[2, 2, n, d]`.
fn two_by_two(rng: &mut Rng, n: usize, d: usize) -> (Tensor, Tensor, Tensor) {
    (
        Tensor::random(rng, 2, 2, n, d, false),
        Tensor::random(rng, 2, 2, n, d, false),
        Tensor::random(rng, 2, 2, n, d, false),
    )
}

/// The outputs of every (b, h) other than (0, 0) are bit-for-bit the clean run's; those of
/// (0, 0) are finite or NaN (or ±∞ when `inf_allowed`), and at most `max_affected` of its
/// queries are not finite.
fn check_contained(
    clean: &[f32],
    got: &[f32],
    n: usize,
    d: usize,
    max_affected: usize,
    inf_allowed: bool,
    what: &str,
) {
    let head = n * d;
    assert!(
        same_bits(&clean[head..], &got[head..]),
        "{what}: spread past its head"
    );
    let mut affected = 0;
    for i in 0..n {
        let r = &got[i * d..(i + 1) * d];
        if r.iter().all(|x| x.is_finite()) {
            continue;
        }
        affected += 1;
        for x in r {
            assert!(
                x.is_finite() || x.is_nan() || (inf_allowed && x.is_infinite()),
                "{what}: query {i} got {x}"
            );
        }
    }
    assert!(
        affected <= max_affected,
        "{what}: {affected} queries affected"
    );
}

#[test]
fn nan_and_infinity_in_q_k_v_stay_in_their_head_and_cluster() {
    let mut rng = Rng(14);
    // Miri interprets every operation: a smaller case and NaN only there.
    let (n, d, cq) = if cfg!(miri) { (8, 4, 4) } else { (64, 8, 8) };
    let values: &[f32] = match cfg!(miri) {
        true => &[f32::NAN],
        false => &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY],
    };
    let (q, k, v) = two_by_two(&mut rng, n, d);
    // Batch element 0, heads 0: only query head 0 reads key/value head 0 (no GQA here).
    let one = one_cluster(n, 2);
    let many = clustered(cq); // clusters of cq queries, 2 rounds
    let clean_one = smyrf(&one, &q, &k, &v, None).0;
    let clean_many = smyrf(&many, &q, &k, &v, None).0;
    let clean_dense = dense(&q, &k, &v, None).0;
    for (tensor, value) in ["q", "k", "v"]
        .into_iter()
        .flat_map(|t| values.iter().map(move |&x| (t, x)))
    {
        let (mut q2, mut k2, mut v2) = (q.clone(), k.clone(), v.clone());
        // One element of row 5 of (b 0, h 0).
        let target = match tensor {
            "q" => &mut q2,
            "k" => &mut k2,
            _ => &mut v2,
        };
        target.row_mut(0, 0, 5)[2] = value;
        let what = format!("{value} in {tensor}");
        // A bad query affects itself only; a bad key or value every query that meets it:
        // with one cluster all of its head, with clusters of cq and 2 rounds at most one
        // cluster's queries per round. ±∞ in V may give ±∞ (a positive weight times ∞).
        let (max_one, max_many) = match tensor {
            "q" => (1, 1),
            _ => (n, 2 * cq),
        };
        let inf_allowed = tensor == "v";
        let got = smyrf(&one, &q2, &k2, &v2, None).0;
        check_contained(&clean_one, &got, n, d, max_one, inf_allowed, &what);
        let got = smyrf(&many, &q2, &k2, &v2, None).0;
        check_contained(&clean_many, &got, n, d, max_many, inf_allowed, &what);
        let got = dense(&q2, &k2, &v2, None).0;
        check_contained(&clean_dense, &got, n, d, max_one, inf_allowed, &what);
        if tensor == "q" {
            // With one cluster the other queries of the head see the same keys in the same
            // order (M ignores a NaN norm; an infinite one only saturates the lift): exact.
            let got = smyrf(&one, &q2, &k2, &v2, None).0;
            for i in (0..n).filter(|&i| i != 5) {
                let (a, b) = (&got[i * d..(i + 1) * d], &clean_one[i * d..(i + 1) * d]);
                assert!(rel_err(a, &to_f64(b)) < 1e-6, "{what}: query {i}");
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "minutes under Miri; runs natively")]
fn every_value_non_finite_is_contained_too() {
    // A whole head of NaN keys, or of +∞ queries: no panic, the head's outputs are NaN or
    // finite, the other heads and batch elements are untouched.
    let mut rng = Rng(15);
    let (n, d) = (48, 4);
    let (q, k, v) = two_by_two(&mut rng, n, d);
    for config in [one_cluster(n, 3), clustered(6)] {
        let clean = smyrf(&config, &q, &k, &v, None).0;
        for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for side in 0..2 {
                let (mut q2, mut k2) = (q.clone(), k.clone());
                let t = if side == 0 { &mut q2 } else { &mut k2 };
                for i in 0..n {
                    t.row_mut(0, 0, i).fill(value);
                }
                let got = smyrf(&config, &q2, &k2, &v, None).0;
                check_contained(&clean, &got, n, d, n, false, &format!("all {value}"));
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "minutes under Miri; runs natively")]
fn mask_bytes_other_than_one_count_as_valid() {
    let mut rng = Rng(16);
    let (n, d) = (70, 8);
    let (q, k, v) = two_by_two(&mut rng, n, d);
    let bytes: Vec<u8> = (0..2 * n)
        .map(|j| [0, 1, 2, 127, 128, 255, 0][j % 7])
        .collect();
    let ones: Vec<u8> = bytes.iter().map(|&x| (x != 0) as u8).collect();
    for config in [clustered(10), one_cluster(n, 2)] {
        let a = smyrf(&config, &q, &k, &v, Some(&bytes));
        let b = smyrf(&config, &q, &k, &v, Some(&ones));
        assert!(same_bits(&a.0, &b.0) && same_bits(&a.1, &b.1));
    }
    let a = dense(&q, &k, &v, Some(&bytes));
    let b = dense(&q, &k, &v, Some(&ones));
    assert!(same_bits(&a.0, &b.0) && same_bits(&a.1, &b.1));
}

#[test]
fn lengths_of_one() {
    // One query, one key, d = dv = 1: the softmax of one logit is 1, so out = v exactly;
    // lse is the logit, plus ln R for R equal rounds.
    let q = Tensor {
        data: vec![0.5],
        b: 1,
        h: 1,
        n: 1,
        d: 1,
        bnhd: false,
    };
    let k = Tensor {
        data: vec![-3.0],
        ..q.clone()
    };
    let v = Tensor {
        data: vec![7.25],
        ..q.clone()
    };
    for rounds in [1, 2, 5] {
        let (out, lse) = smyrf(&one_cluster(1, rounds), &q, &k, &v, None);
        // Exact for 1 and 2 rounds; 5 equal rounds merge with weights that sum to 1 only
        // up to rounding.
        assert!((out[0] - 7.25).abs() <= 7.25 * 1e-6, "{out:?}");
        assert!(rounds > 2 || out == [7.25]);
        let want = -1.5 + (rounds as f32).ln();
        assert!((lse[0] - want).abs() < 1e-6, "{} vs {want}", lse[0]);
    }
    let (out, lse) = dense(&q, &k, &v, None);
    assert_eq!((out, lse), (vec![7.25], vec![-1.5]));
    // A masked-out single key: zeros and −∞.
    let (out, lse) = smyrf(&one_cluster(1, 2), &q, &k, &v, Some(&[0]));
    assert_eq!((out, lse), (vec![0.0], vec![f32::NEG_INFINITY]));
}

#[test]
#[cfg_attr(miri, ignore = "minutes under Miri; runs natively")]
fn one_query_against_a_hundred_thousand_keys() {
    // Nq = 1 caps the cluster count at 1 (C ≤ Nq): SMYRF is exact attention over all 10⁵
    // keys, streamed through 391 key tiles with an online softmax.
    let mut rng = Rng(17);
    let nk = 100_000;
    let (d, dv) = (16, 4);
    let q = Tensor::random(&mut rng, 1, 1, 1, d, false);
    let k = Tensor::random(&mut rng, 1, 1, nk, d, false);
    let v = Tensor::random(&mut rng, 1, 1, nk, dv, false);
    let mask: Vec<u8> = (0..nk).map(|j| (j % 5 != 0) as u8).collect();
    for mask in [None, Some(&mask[..])] {
        let config = (clustered(1)).q_cluster_size(1).k_cluster_size(64);
        let (out, lse) = smyrf(&config, &q, &k, &v, mask);
        let (want, want_lse) = oracle_dense(&q, &k, &v, mask, 0.25);
        assert!(rel_err(&out, &want) < 1e-5, "{}", rel_err(&out, &want));
        assert!((lse[0] as f64 - want_lse[0] - 2f64.ln()).abs() < 1e-4);
    }
}

#[test]
#[cfg_attr(miri, ignore = "minutes under Miri; runs natively")]
fn head_dims_one_and_512_match_the_oracle() {
    let mut rng = Rng(18);
    for d in [1, 512] {
        let (nq, nk) = (40, 56);
        let q = Tensor::random(&mut rng, 2, 2, nq, d, true);
        let k = Tensor::random(&mut rng, 2, 1, nk, d, false);
        let v = Tensor::random(&mut rng, 2, 1, nk, 3, true);
        let mask: Vec<u8> = (0..2 * nk).map(|j| (j % 4 != 3) as u8).collect();
        // One cluster against the f64 dense oracle.
        let (out, _) = smyrf(&one_cluster(nq, 2), &q, &k, &v, Some(&mask));
        let (want, _) = oracle_dense(&q, &k, &v, Some(&mask), 1.0 / (d as f64).sqrt());
        assert!(rel_err(&out, &want) < 1e-5, "d = {d}");
        // Several clusters: finite, and within the value range of each batch element.
        let (out, lse) = smyrf(&clustered(8), &q, &k, &v, Some(&mask));
        assert!(out.iter().chain(&lse).all(|x| x.is_finite()), "d = {d}");
        let bound = v.data.iter().fold(0.0f32, |m, x| m.max(x.abs())) * (1.0 + 1e-5);
        assert!(out.iter().all(|x| x.abs() <= bound), "d = {d}");
    }
}

#[test]
fn batch_elements_without_valid_keys_get_zeros_and_leave_the_others_alone() {
    let mut rng = Rng(19);
    let (n, d) = (if cfg!(miri) { 10 } else { 50 }, 8);
    let (q, k, v) = two_by_two(&mut rng, n, d);
    // Batch element 1 fully masked; element 0 partly.
    let mask: Vec<u8> = (0..2 * n).map(|j| (j < n && j % 3 != 0) as u8).collect();
    let half = 2 * n * d; // outputs of batch element 0
    for config in [clustered(10), one_cluster(n, 2)] {
        let (out, lse) = smyrf(&config, &q, &k, &v, Some(&mask));
        assert!(out[half..].iter().all(|&x| x == 0.0));
        assert!(lse[2 * n..].iter().all(|&x| x == f32::NEG_INFINITY));
        assert!(out[..half]
            .iter()
            .chain(&lse[..2 * n])
            .all(|x| x.is_finite()));
        // Batch element 0 alone gives the same bits.
        let slice = |t: &Tensor| Tensor {
            data: t.data[..t.data.len() / 2].to_vec(),
            b: 1,
            ..t.clone()
        };
        let (alone, alone_lse) = smyrf(
            &config,
            &slice(&q),
            &slice(&k),
            &slice(&v),
            Some(&mask[..n]),
        );
        assert!(same_bits(&alone, &out[..half]) && same_bits(&alone_lse, &lse[..2 * n]));
    }
    // Every batch element empty: all zeros, no error.
    let none = vec![0u8; 2 * n];
    let (out, lse) = smyrf(&clustered(10), &q, &k, &v, Some(&none));
    assert!(out.iter().all(|&x| x == 0.0) && lse.iter().all(|&x| x == f32::NEG_INFINITY));
    let (out, lse) = dense(&q, &k, &v, Some(&none));
    assert!(out.iter().all(|&x| x == 0.0) && lse.iter().all(|&x| x == f32::NEG_INFINITY));
}

#[test]
fn scratch_estimates_saturate_instead_of_wrapping() {
    // Regression (found by fuzz/c_abi): lengths just below 2^32 made the estimate's
    // products overflow usize (a panic in debug builds, a small wrong number in release).
    let big = u32::MAX as usize;
    // One cluster of all Nq queries: attention runs in query blocks of 256, so the per-thread
    // P·V accumulator is 256 rows of dv floats; the per-token buffers are O(R·(Nq + Nk)).
    let plan = Plan::new(one_cluster(big, 4), 64).unwrap();
    let accumulator = 4 * 256 * (big.div_ceil(16) * 16) as u128 + 4 * 2 * big as u128;
    let bound = plan.scratch_bytes(big, big, big);
    assert!(
        bound as u128 >= accumulator.min(usize::MAX as u128),
        "{bound}"
    );
    assert_eq!(
        plan.scratch_bytes(usize::MAX, usize::MAX, usize::MAX),
        usize::MAX
    );
    // Through the C ABI, at the largest lengths it accepts.
    let config = smyrf_config {
        q_cluster_size: u32::MAX,
        ..smyrf_config_default()
    };
    let mut c_plan = std::ptr::null_mut();
    // SAFETY: valid config and out pointer.
    assert_eq!(
        unsafe { smyrf_plan_create(&config, 64, &mut c_plan) },
        smyrf_status::SMYRF_OK
    );
    let mut bytes = 0usize;
    // SAFETY: a live plan and a writable usize.
    let status = unsafe { smyrf_plan_scratch_bytes(c_plan, big, big, big, &mut bytes) };
    assert_eq!(status, smyrf_status::SMYRF_OK);
    assert!(
        bytes as u128 >= accumulator.min(usize::MAX as u128),
        "{bytes}"
    );
    // Small lengths are unchanged by the saturation: positive and far below the limit.
    let mut small = 0usize;
    // SAFETY: as above.
    let status = unsafe { smyrf_plan_scratch_bytes(c_plan, 100, 100, 8, &mut small) };
    assert_eq!(status, smyrf_status::SMYRF_OK);
    assert!(small > 0 && small < 1 << 30);
    // SAFETY: destroyed once.
    unsafe { smyrf_plan_destroy(c_plan) };
}

#[test]
fn a_mask_sized_for_the_query_batch_is_never_overrun() {
    // Regression (found by Miri, design §2): with k.batch > q.batch the C ABI viewed the
    // mask as k.batch · Nk bytes before refusing the mismatch, a slice past the end of a
    // mask sized B · Nk with B = q.batch (undefined behaviour even unread). The call must be
    // refused having looked at no more than min(q.batch, k.batch) · Nk bytes.
    let (n, d) = (4, 2);
    let q = vec![0.5f32; n * d];
    let kv = vec![0.25f32; 2 * n * d];
    let mask = vec![1u8; n]; // q.batch · Nk
    let mut out = vec![0.0f32; n * d];
    let view = |data: *const f32, batch: usize| smyrf_tensor {
        struct_size: std::mem::size_of::<smyrf_tensor>(),
        data: data.cast(),
        dtype: 0,
        batch,
        heads: 1,
        seq_len: n,
        dim: d,
        batch_stride: n * d,
        head_stride: n * d,
        seq_stride: d,
    };
    let (tq, tk) = (view(q.as_ptr(), 1), view(kv.as_ptr(), 2));
    let to = smyrf_tensor_mut {
        struct_size: std::mem::size_of::<smyrf_tensor_mut>(),
        data: out.as_mut_ptr().cast(),
        dtype: 0,
        batch: 1,
        heads: 1,
        seq_len: n,
        dim: d,
        batch_stride: n * d,
        head_stride: n * d,
        seq_stride: d,
    };
    let mut args = smyrf_call_args_default();
    args.key_mask = mask.as_ptr();
    // SAFETY: every buffer holds what its own shape names; the mask holds q.batch · Nk.
    let status = unsafe { smyrf_dense_attention(&tq, &tk, &tk, 0.0, &to, &args) };
    assert_eq!(status, smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT);
    assert!(out.iter().all(|&x| x == 0.0));
}
