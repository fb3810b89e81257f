//! Exact dense decode (one query per sequence): the query heads of a key/value head run as
//! the rows of one task per key chunk, the chunks merged in order. Against the f64 oracle on
//! every tier, across chunk boundaries, with masks, lengths, GQA, causal offsets, head sinks
//! and 16-bit caches; bitwise the same for any thread count.

mod common;
use common::bits::same_bits;
use common::*;
use half::f16;
use smyrf::{CallOptions, Config, Plan, TensorView, TensorViewMut};

struct Case {
    b: usize,
    hq: usize,
    hkv: usize,
    nk: usize,
    d: usize,
    dv: usize,
    masked: bool,
    lengths: bool,
    /// `Some(o)`: causal at query offset o.
    offset: Option<usize>,
    sinks: bool,
}

fn check(case: &Case) {
    let mut rng = Rng(case.nk as u64 * 31 + case.hq as u64);
    let q = Tensor::random(&mut rng, case.b, case.hq, 1, case.d, false);
    let k = Tensor::random(&mut rng, case.b, case.hkv, case.nk, case.d, true);
    let v = Tensor::random(&mut rng, case.b, case.hkv, case.nk, case.dv, true);
    let mask: Option<Vec<u8>> = case.masked.then(|| {
        (0..case.b * case.nk)
            .map(|_| (rng.below(4) != 0) as u8)
            .collect()
    });
    let lengths: Option<Vec<u32>> = case.lengths.then(|| {
        (0..case.b)
            .map(|b| (case.nk - 4321 * b).max(1) as u32)
            .collect()
    });
    let sinks: Option<Vec<f32>> = case
        .sinks
        .then(|| (0..case.hq).map(|h| h as f32 * 0.7 - 1.0).collect());
    let scale = 1.0 / (case.d as f64).sqrt();
    let mut want = vec![];
    let mut want_lse = vec![];
    for b in 0..case.b {
        let end = lengths.as_ref().map_or(case.nk, |l| l[b] as usize);
        let last = case.offset.unwrap_or(usize::MAX);
        let seen: Vec<usize> = valid_of(mask.as_deref(), b, case.nk)
            .into_iter()
            .filter(|&j| j < end && j <= last)
            .collect();
        for h in 0..case.hq {
            let hk = h / (case.hq / case.hkv);
            let (o, l) = oracle_dense_head(
                &head_f64(&q, b, h),
                &head_f64(&k, b, hk),
                &head_f64(&v, b, hk),
                &seen,
                scale,
            );
            let (mut row, mut l) = (o[0].clone(), l[0]);
            if let Some(sinks) = &sinks {
                let sink = sinks[h] as f64;
                let total = if l == f64::NEG_INFINITY {
                    sink
                } else {
                    l.max(sink) + ((l - l.max(sink)).exp() + (sink - l.max(sink)).exp()).ln()
                };
                let w = if l == f64::NEG_INFINITY {
                    0.0
                } else {
                    (l - total).exp()
                };
                row.iter_mut().for_each(|x| *x *= w);
                l = total;
            }
            want.extend(row);
            want_lse.push(l);
        }
    }
    let run = |isa, threads| {
        let plan = Plan::new(Config::default().isa(isa).num_threads(threads), case.d).unwrap();
        let mut out = Tensor::zeros(case.b, case.hq, 1, case.dv, false);
        let mut lse = vec![0.0f32; case.b * case.hq];
        let mut options = CallOptions::new().lse(&mut lse);
        options.key_mask = mask.as_deref();
        options.key_lengths = lengths.as_deref();
        options.head_sinks = sinks.as_deref();
        if let Some(offset) = case.offset {
            options = options.query_offset(offset);
        }
        plan.dense_attention_with(
            &q.view(),
            &k.view(),
            &v.view(),
            &mut out.view_mut(),
            options,
        )
        .unwrap();
        (out.data, lse)
    };
    for isa in smyrf::internals::supported_tiers() {
        let (one, lse) = run(isa, 1);
        let (three, lse3) = run(isa, 3);
        assert!(
            same_bits(&one, &three) && same_bits(&lse, &lse3),
            "{isa}: thread count"
        );
        let err = rel_err(&one, &want);
        assert!(err <= 1e-5, "{isa}: output error {err:e}");
        for (got, exp) in lse.iter().zip(&want_lse) {
            if *exp == f64::NEG_INFINITY {
                assert_eq!(*got, f32::NEG_INFINITY);
            } else {
                assert!(
                    (*got as f64 - exp).abs() <= 1e-5 * exp.abs().max(1.0),
                    "{isa}: lse {got} vs {exp}"
                );
            }
        }
    }
}

#[test]
fn decode_matches_the_oracle_within_and_across_key_chunks() {
    let base = Case {
        b: 2,
        hq: 6,
        hkv: 2,
        nk: 300,
        d: 16,
        dv: 12,
        masked: false,
        lengths: false,
        offset: None,
        sinks: false,
    };
    check(&base);
    // Several chunks, the last one partial.
    check(&Case { nk: 10_000, ..base });
    check(&Case {
        nk: 9_000,
        masked: true,
        lengths: true,
        sinks: true,
        ..base
    });
    // Causal: the keys after the query's position, chunks past it empty.
    check(&Case {
        nk: 12_000,
        offset: Some(5_000),
        hq: 4,
        hkv: 4,
        ..base
    });
    // A query that sees no key: zeros and lse −∞ (the head sink alone when there is one).
    check(&Case {
        nk: 9_000,
        masked: true,
        offset: Some(0),
        ..base
    });
}

#[test]
fn decode_reads_16_bit_caches() {
    // An f16 K/V cache, as engines keep it: the same result as the f32 call on the
    // widened values.
    let (b, hq, hkv, nk, d) = (1, 8, 2, 9_000, 32);
    let mut rng = Rng(5);
    let q = rng.vec(b * hq * d);
    let k32: Vec<f32> = rng
        .vec(b * hkv * nk * d)
        .iter()
        .map(|&x| f16::from_f32(x).to_f32())
        .collect();
    let v32: Vec<f32> = rng
        .vec(b * hkv * nk * d)
        .iter()
        .map(|&x| f16::from_f32(x).to_f32())
        .collect();
    let k16: Vec<f16> = k32.iter().map(|&x| f16::from_f32(x)).collect();
    let v16: Vec<f16> = v32.iter().map(|&x| f16::from_f32(x)).collect();
    let plan = Plan::new(Config::default(), d).unwrap();
    let qv = TensorView::bhnd(&q, b, hq, 1, d).unwrap();
    let mut wide = vec![0.0f32; b * hq * d];
    let mut narrow = vec![0.0f32; b * hq * d];
    plan.dense_attention(
        &qv,
        &TensorView::bhnd(&k32, b, hkv, nk, d).unwrap(),
        &TensorView::bhnd(&v32, b, hkv, nk, d).unwrap(),
        &mut TensorViewMut::bhnd(&mut wide, b, hq, 1, d).unwrap(),
    )
    .unwrap();
    plan.dense_attention(
        &qv,
        &TensorView::bhnd(&k16, b, hkv, nk, d).unwrap(),
        &TensorView::bhnd(&v16, b, hkv, nk, d).unwrap(),
        &mut TensorViewMut::bhnd(&mut narrow, b, hq, 1, d).unwrap(),
    )
    .unwrap();
    let wide64: Vec<f64> = wide.iter().map(|&x| x as f64).collect();
    assert!(rel_err(&narrow, &wide64) <= 1e-6);
}
