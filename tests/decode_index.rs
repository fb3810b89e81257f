//! Decode through the KV-cache index (design §10): against the causal prefill's tile of the
//! same queries (bitwise, every tier, f32 and f16 caches, GQA, head sinks, lse, samples),
//! against the f64 oracle when every block is taken and for hash rounds (the decode form of
//! §1 clusters), appends against one rebuild (bitwise, re-hashes included), any thread count
//! the same bits, and every bad input refused with nothing written.

mod common;
use common::bits::same_bits;
use common::*;
use half::f16;
use smyrf::{CallOptions, Config, Error, KvIndex, Plan, TensorView, TensorViewMut};

/// Causal blocks without rounds or samples: what a decode call runs.
fn blocks(nq: usize) -> Config {
    Config::default()
        .n_hashes(0)
        .n_sinks(2)
        .window(9)
        .n_blocks(3)
        .block_size(8)
        .block_tile(nq)
}

struct Data {
    q: Tensor,
    k: Tensor,
    v: Tensor,
}

fn data(seed: u64, b: usize, hq: usize, hkv: usize, n: usize, d: usize) -> Data {
    let mut rng = Rng(seed);
    Data {
        q: Tensor::random(&mut rng, b, hq, n, d, false),
        k: Tensor::random(&mut rng, b, hkv, n, d, true),
        v: Tensor::random(&mut rng, b, hkv, n, d + 3, false),
    }
}

/// The last `nq` query rows of `t` as their own tensor.
fn last_rows(t: &Tensor, nq: usize) -> Tensor {
    let mut out = Tensor::zeros(t.b, t.h, nq, t.d, t.bnhd);
    for b in 0..t.b {
        for h in 0..t.h {
            for i in 0..nq {
                out.row_mut(b, h, i)
                    .copy_from_slice(t.row(b, h, t.n - nq + i));
            }
        }
    }
    out
}

fn index_of(plan: &Plan, data: &Data, capacity: usize) -> KvIndex {
    let mut index = KvIndex::new(plan, data.k.b, data.k.h, capacity).unwrap();
    let lengths = vec![data.k.n as u32; data.k.b];
    index.append(&data.k.view(), &lengths).unwrap();
    index
}

/// Decode of the last `nq` queries equals the prefill's last tile, bitwise.
fn check_against_prefill(config: Config, data: &Data, nq: usize, sinks: bool) {
    let (b, hq, n, dv) = (data.q.b, data.q.h, data.q.n, data.v.d);
    assert_eq!(n % nq, 0, "the last tile must be the decoded queries");
    let head_sinks: Vec<f32> = (0..hq).map(|h| h as f32 * 0.3 - 0.5).collect();
    for isa in smyrf::internals::supported_tiers() {
        let plan = Plan::new(config.clone().isa(isa), data.q.d).unwrap();
        let mut full = Tensor::zeros(b, hq, n, dv, false);
        let mut full_lse = vec![0.0f32; b * hq * n];
        let mut options = CallOptions::new().causal().lse(&mut full_lse);
        if sinks {
            options = options.head_sinks(&head_sinks);
        }
        plan.attention_with(
            &data.q.view(),
            &data.k.view(),
            &data.v.view(),
            &mut full.view_mut(),
            options,
        )
        .unwrap();
        let index = index_of(&plan, data, n + 5);
        let q = last_rows(&data.q, nq);
        for threads in [1, 3] {
            let plan = Plan::new(config.clone().isa(isa).num_threads(threads), data.q.d).unwrap();
            let mut out = Tensor::zeros(b, hq, nq, dv, false);
            let mut lse = vec![0.0f32; b * hq * nq];
            let mut options = CallOptions::new().lse(&mut lse);
            if sinks {
                options = options.head_sinks(&head_sinks);
            }
            plan.decode(
                &index,
                &q.view(),
                &data.k.view(),
                &data.v.view(),
                &mut out.view_mut(),
                options,
            )
            .unwrap();
            for bb in 0..b {
                for h in 0..hq {
                    for i in 0..nq {
                        let want = full.row(bb, h, n - nq + i);
                        assert!(
                            same_bits(out.row(bb, h, i), want),
                            "{isa} {threads} threads: (b {bb}, h {h}, query {i}) differs from the prefill"
                        );
                        let (a, w) = (
                            lse[(bb * hq + h) * nq + i],
                            full_lse[(bb * hq + h) * n + n - nq + i],
                        );
                        assert_eq!(a.to_bits(), w.to_bits(), "{isa}: lse");
                    }
                }
            }
        }
    }
}

#[test]
fn decode_equals_the_prefill_of_the_same_queries() {
    let d = data(1, 2, 4, 2, 240, 16);
    check_against_prefill(blocks(1), &d, 1, false);
    check_against_prefill(blocks(4), &d, 4, true);
    // Blocks alone, sinks and window alone, a window wider than the sequence.
    check_against_prefill(blocks(1).n_sinks(0).window(0), &d, 1, false);
    check_against_prefill(blocks(2).n_blocks(0), &d, 2, false);
    check_against_prefill(blocks(1).window(1000), &d, 1, true);
    // More blocks than the middle holds: all of them.
    check_against_prefill(blocks(1).n_blocks(40), &d, 1, false);
    // Samples: the same draw as the prefill's tile, with and without blocks.
    check_against_prefill(blocks(1).n_samples(5), &d, 1, false);
    check_against_prefill(blocks(4).n_samples(11), &d, 4, true);
    check_against_prefill(blocks(2).n_blocks(0).n_samples(300), &d, 2, false);
    // One query head of one sequence over 600 candidate blocks: with 3 threads its scores
    // are computed in pieces of key blocks (split-KV), with the same bits.
    check_against_prefill(
        blocks(1).block_size(2).n_samples(3),
        &data(9, 1, 1, 1, 1200, 16),
        1,
        true,
    );
    // Partial last block, head dim not a multiple of any vector.
    check_against_prefill(
        blocks(3).block_size(7),
        &data(2, 1, 3, 1, 201, 13),
        3,
        false,
    );
}

#[test]
fn decode_over_a_16_bit_cache_equals_the_prefill() {
    let d = data(3, 1, 4, 2, 160, 32);
    let k16: Vec<f16> = d.k.data.iter().map(|&x| f16::from_f32(x)).collect();
    let v16: Vec<f16> = d.v.data.iter().map(|&x| f16::from_f32(x)).collect();
    let kv = TensorView::bnhd(&k16, 1, 2, 160, 32).unwrap();
    let vv = TensorView::bhnd(&v16, 1, 2, 160, 35).unwrap();
    for isa in smyrf::internals::supported_tiers() {
        let plan = Plan::new(blocks(1).isa(isa), 32).unwrap();
        let mut full = vec![f16::ZERO; 4 * 160 * 35];
        plan.attention_with(
            &d.q.view(),
            &kv,
            &vv,
            &mut TensorViewMut::bhnd(&mut full, 1, 4, 160, 35).unwrap(),
            CallOptions::new().causal(),
        )
        .unwrap();
        let mut index = KvIndex::new(&plan, 1, 2, 200).unwrap();
        index.append(&kv, &[160]).unwrap();
        let q = last_rows(&d.q, 1);
        let mut out = vec![f16::ZERO; 4 * 35];
        plan.decode(
            &index,
            &q.view(),
            &kv,
            &vv,
            &mut TensorViewMut::bhnd(&mut out, 1, 4, 1, 35).unwrap(),
            CallOptions::new(),
        )
        .unwrap();
        for h in 0..4 {
            let want = &full[(h * 160 + 159) * 35..][..35];
            let got = &out[h * 35..][..35];
            assert!(
                want.iter()
                    .zip(got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa}: head {h}"
            );
        }
    }
}

/// With every block of the middle taken, decode is exact causal attention: the f64 oracle.
#[test]
fn decode_taking_every_block_is_exact_attention() {
    let d = data(4, 2, 2, 1, 130, 8);
    for isa in smyrf::internals::supported_tiers() {
        let plan = Plan::new(blocks(2).n_blocks(1000).isa(isa), 8).unwrap();
        let mut index = KvIndex::new(&plan, 2, 1, 130).unwrap();
        // Sequences of different lengths: each one's queries sit at its last positions.
        let lengths = [130u32, 77];
        index.append(&d.k.view(), &lengths).unwrap();
        let q = Tensor::random(&mut Rng(5), 2, 2, 2, 8, false);
        let mut out = Tensor::zeros(2, 2, 2, d.v.d, false);
        plan.decode(
            &index,
            &q.view(),
            &d.k.view(),
            &d.v.view(),
            &mut out.view_mut(),
            CallOptions::new(),
        )
        .unwrap();
        for (b, &len) in lengths.iter().enumerate() {
            let len = len as usize;
            for h in 0..2 {
                let (qh, kh, vh) = (
                    head_f64(&q, b, h),
                    head_f64(&d.k, b, 0),
                    head_f64(&d.v, b, 0),
                );
                for i in 0..2 {
                    let seen: Vec<usize> = (0..=len - 2 + i).collect();
                    let (want, _) =
                        oracle_dense_head(&qh[i..i + 1], &kh, &vh, &seen, 1.0 / 8f64.sqrt());
                    let err = rel_err(out.row(b, h, i), &want[0]);
                    assert!(err < 1e-5, "{isa}: b {b} h {h} query {i}: {err:e}");
                }
            }
        }
    }
}

/// Appending token by token gives the index one append of every key gives, so decode gives
/// the same bits.
#[test]
fn appends_then_decode_equals_rebuild_then_decode() {
    let d = data(6, 2, 2, 2, 150, 16);
    let plan = Plan::new(blocks(1), 16).unwrap();
    let rebuilt = index_of(&plan, &d, 150);
    let mut grown = KvIndex::new(&plan, 2, 2, 150).unwrap();
    grown.append(&d.k.view(), &[40, 3]).unwrap();
    for step in 1..=110u32 {
        let lengths = [(40 + step).min(150), (3 + step * 2).min(150)];
        grown.append(&d.k.view(), &lengths).unwrap();
    }
    assert_eq!(grown.lengths(), rebuilt.lengths());
    let q = Tensor::random(&mut Rng(7), 2, 2, 1, 16, false);
    let decode = |index: &KvIndex| {
        let mut out = Tensor::zeros(2, 2, 1, d.v.d, false);
        plan.decode(
            index,
            &q.view(),
            &d.k.view(),
            &d.v.view(),
            &mut out.view_mut(),
            CallOptions::new(),
        )
        .unwrap();
        out.data
    };
    assert!(same_bits(&decode(&grown), &decode(&rebuilt)));
    // A reset slot regrown is the same index again.
    grown.reset(1).unwrap();
    assert_eq!(grown.lengths(), &[150, 0]);
    grown.append(&d.k.view(), &[150, 150]).unwrap();
    assert!(same_bits(&decode(&grown), &decode(&rebuilt)));
}

#[test]
fn index_memory_is_a_sixteenth_of_an_f16_cache() {
    let plan = Plan::new(Config::causal(256), 64).unwrap();
    let index = KvIndex::new(&plan, 1, 3, 32768).unwrap();
    let cache = 3 * 32768 * 64 * 2 * 2;
    assert!(
        index.memory_bytes() <= cache / 16 + 64,
        "{}",
        index.memory_bytes()
    );
    // Two hash rounds add 16 bytes per key: 1/8 of the cache with the bounds.
    let plan = Plan::new(Config::causal(256).n_hashes(2), 64).unwrap();
    let mut index = KvIndex::new(&plan, 1, 3, 32768).unwrap();
    let keys = Tensor::random(&mut Rng(3), 1, 3, 32768, 64, false);
    index.append(&keys.view(), &[32768]).unwrap();
    let bytes = index.memory_bytes();
    assert!(bytes <= cache / 8 + 1024, "{bytes}");
    assert!(bytes >= cache / 16 + 3 * 32768 * 16, "{bytes}");
}

#[test]
fn bad_input_is_refused_and_nothing_changes() {
    let d = data(8, 1, 2, 1, 64, 8);
    let plan = Plan::new(blocks(1), 8).unwrap();
    let mut index = KvIndex::new(&plan, 1, 1, 64).unwrap();
    index.append(&d.k.view(), &[32]).unwrap();
    // Appends: out of order, past the capacity, past the view, wrong count or shape.
    assert!(matches!(
        index.append(&d.k.view(), &[31]),
        Err(Error::IndexOrder { indexed: 32, .. })
    ));
    let big = Tensor::random(&mut Rng(9), 1, 1, 80, 8, false);
    assert!(matches!(
        index.append(&big.view(), &[70]),
        Err(Error::IndexCapacity { capacity: 64, .. })
    ));
    let short = Tensor::random(&mut Rng(9), 1, 1, 20, 8, false);
    assert!(matches!(
        index.append(&short.view(), &[40]),
        Err(Error::KeyLength { .. })
    ));
    assert!(index.append(&d.k.view(), &[40, 40]).is_err());
    let other = Tensor::random(&mut Rng(9), 1, 2, 64, 8, false);
    assert!(index.append(&other.view(), &[40]).is_err());
    assert_eq!(index.lengths(), &[32]);
    assert!(index.reset(1).is_err());

    let q = Tensor::random(&mut Rng(10), 1, 2, 1, 8, false);
    let decode = |plan: &Plan, index: &KvIndex, q: &Tensor, options: CallOptions<'_>| {
        let mut out = Tensor::zeros(1, q.h, q.n, d.v.d, false);
        out.data.fill(SENTINEL);
        let r = plan.decode(
            index,
            &q.view(),
            &d.k.view(),
            &d.v.view(),
            &mut out.view_mut(),
            options,
        );
        assert!(out.data.iter().all(|&x| x == SENTINEL), "written on error");
        r
    };
    let mask = vec![1u8; 64];
    let mut workspace = vec![0u8; 16];
    assert!(matches!(
        decode(
            &plan,
            &index,
            &q,
            CallOptions::new().workspace(&mut workspace)
        ),
        Err(Error::WorkspaceTooSmall { .. })
    ));
    for options in [
        CallOptions::new().key_mask(&mask),
        CallOptions::new().key_lengths(&[32]),
        CallOptions::new().causal(),
        CallOptions::new().query_offset(3),
    ] {
        assert!(matches!(
            decode(&plan, &index, &q, options),
            Err(Error::OptionNeeds { .. })
        ));
    }
    // A plan of other hash rounds, another projection, or key blocks over an index
    // built without them.
    let rounds = Plan::new(blocks(1).n_hashes(1), 8).unwrap();
    assert!(matches!(
        decode(&rounds, &index, &q, CallOptions::new()),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut hashed = KvIndex::new(&rounds, 1, 1, 64).unwrap();
    hashed.append(&d.k.view(), &[32]).unwrap();
    let reseeded = Plan::new(blocks(1).n_hashes(1).seed(99), 8).unwrap();
    assert!(matches!(
        decode(&reseeded, &hashed, &q, CallOptions::new()),
        Err(Error::InvalidConfig {
            field: "projection",
            ..
        })
    ));
    let bare = Plan::new(blocks(1).n_blocks(0), 8).unwrap();
    let mut bare_index = KvIndex::new(&bare, 1, 1, 64).unwrap();
    bare_index.append(&d.k.view(), &[32]).unwrap();
    assert!(matches!(
        decode(&plan, &bare_index, &q, CallOptions::new()),
        Err(Error::OptionNeeds {
            option: "n_blocks",
            ..
        })
    ));
    // An index of another block size or head dim.
    let other = Plan::new(blocks(1).block_size(4), 8).unwrap();
    assert!(matches!(
        decode(&other, &index, &q, CallOptions::new()),
        Err(Error::ShapeMismatch { .. })
    ));
    let wide = Plan::new(blocks(1), 16).unwrap();
    let wide_index = KvIndex::new(&wide, 1, 1, 64).unwrap();
    assert!(matches!(
        decode(&plan, &wide_index, &q, CallOptions::new()),
        Err(Error::HeadDimMismatch { .. })
    ));
    // More queries than indexed keys, a cache view shorter than the index.
    let many = Tensor::random(&mut Rng(11), 1, 2, 33, 8, false);
    assert!(matches!(
        decode(&plan, &index, &many, CallOptions::new()),
        Err(Error::CausalOffset { nq: 33, nk: 32 })
    ));
    let mut out = Tensor::zeros(1, 2, 1, d.v.d, false);
    assert!(plan
        .decode(
            &index,
            &q.view(),
            &short.view(),
            &Tensor::random(&mut Rng(1), 1, 1, 20, d.v.d, false).view(),
            &mut out.view_mut(),
            CallOptions::new(),
        )
        .is_err());
    // Zero sizes.
    assert!(KvIndex::new(&plan, 0, 1, 8).is_err());
    assert!(KvIndex::new(&plan, 1, 1, 0).is_err());
}

/// Causal hash rounds: sinks and window, then `rounds` rounds of clusters of `ck` keys.
fn hashed(rounds: usize, ck: usize, nq: usize) -> Config {
    Config::default()
        .n_hashes(rounds)
        .k_cluster_size(ck)
        .n_sinks(1)
        .window(6)
        .block_tile(nq)
        .seed(rounds as u64 * 31 + ck as u64)
}

/// The f64 decode form of one hash round for the query `q` at position `pos`: the `ck` keys
/// of the middle `[lo, hi)` nearest its hash, or `None` when a hash near a cut is too close
/// to call (the f32 library may order it either way).
fn oracle_round(
    queries: &[Vec<f64>],
    i: usize,
    keys: &[Vec<f64>],
    (projections, rounds, r): (&[f32], usize, usize),
    (lo, hi): (usize, usize),
    ck: usize,
) -> Option<Vec<usize>> {
    let q = &queries[i][..];
    let d = q.len();
    let a = |t: usize| projections[t * rounds + r] as f64;
    let norm = |x: &[f64]| x.iter().map(|v| v * v).sum::<f64>();
    // The key-norm bound: the least power of two at or above every key's squared norm.
    let largest = keys.iter().map(|k| norm(k)).fold(0.0, f64::max);
    let bound = 2f64.powi(largest.log2().ceil() as i32);
    let hash = |x: &[f64], lift: f64, column: usize| {
        (0..d).map(|t| a(t) * x[t]).sum::<f64>() + a(column) * lift.max(0.0).sqrt()
    };
    // The query side's bound: the largest squared norm of the call's queries of this head.
    let m_q = queries.iter().map(|x| norm(x)).fold(0.0, f64::max);
    let hq = hash(q, m_q - norm(q), d + 1);
    let mut order: Vec<(f64, usize)> = (lo..hi)
        .map(|j| (hash(&keys[j], bound - norm(&keys[j]), d), j))
        .collect();
    order.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap().then(x.1.cmp(&y.1)));
    let m = order.partition_point(|x| x.0 <= hq);
    let n = order.len();
    let take = ck.min(n);
    let start = m.saturating_sub(ck / 2).min(n - take);
    let scale = order.iter().map(|x| x.0.abs()).fold(1.0, f64::max);
    let close = |x: f64, y: f64| (x - y).abs() < 1e-5 * scale;
    // The probe and both ends of the segment must sit clearly apart from their neighbours.
    for at in [m, start, start + take] {
        if at > 0 && at < n && close(order[at - 1].0, order[at].0) {
            return None;
        }
    }
    if (m > 0 && close(order[m - 1].0, hq)) || (m < n && close(order[m].0, hq)) {
        return None;
    }
    Some(order[start..start + take].iter().map(|x| x.1).collect())
}

/// Softmax over keys counted with multiplicities, in f64.
fn oracle_counted(
    q: &[f64],
    keys: &[Vec<f64>],
    values: &[Vec<f64>],
    counted: &[usize],
) -> Vec<f64> {
    let scale = 1.0 / (q.len() as f64).sqrt();
    let logits: Vec<f64> = counted
        .iter()
        .map(|&j| scale * q.iter().zip(&keys[j]).map(|(a, b)| a * b).sum::<f64>())
        .collect();
    let top = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = logits.iter().map(|&s| (s - top).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut out = vec![0.0; values[0].len()];
    for (&j, &w) in counted.iter().zip(&weights) {
        for (o, &x) in out.iter_mut().zip(&values[j]) {
            *o += w / total * x;
        }
    }
    out
}

/// Hash rounds in decode against the f64 oracle: per query, sinks, window span and each
/// round's cluster of the middle, keys counted once per block that holds them.
#[test]
fn decode_hash_rounds_match_the_oracle() {
    let (b, hq, hkv, n, d) = (2, 4, 2, 200, 12);
    let data = data(21, b, hq, hkv, n, d);
    let mut checked = 0;
    let mut cases = 0;
    for (rounds, ck, nq) in [(1, 16, 1), (3, 9, 1), (2, 40, 3), (4, 1, 2), (1, 500, 1)] {
        let config = hashed(rounds, ck, nq);
        let q = Tensor::random(&mut Rng(rounds as u64 + 40), b, hq, nq, d, false);
        let lengths = [n as u32, 131];
        for isa in smyrf::internals::supported_tiers() {
            let mut outs = Vec::new();
            for threads in [1, 3] {
                let plan = Plan::new(config.clone().isa(isa).num_threads(threads), d).unwrap();
                let mut index = KvIndex::new(&plan, b, hkv, n).unwrap();
                index.append(&data.k.view(), &lengths).unwrap();
                let mut out = Tensor::zeros(b, hq, nq, data.v.d, false);
                plan.decode(
                    &index,
                    &q.view(),
                    &data.k.view(),
                    &data.v.view(),
                    &mut out.view_mut(),
                    CallOptions::new(),
                )
                .unwrap();
                outs.push(out);
            }
            assert!(same_bits(&outs[0].data, &outs[1].data), "{isa}: threads");
            let out = &outs[0];
            let plan = Plan::new(config.clone().isa(isa), d).unwrap();
            for (bb, &len) in lengths.iter().enumerate() {
                let len = len as usize;
                let offset = len - nq;
                let (sinks, middle_end) = (1, (offset + 1).saturating_sub(6).max(1));
                for h in 0..hq {
                    let (qh, kh, vh) = (
                        head_f64(&q, bb, h),
                        head_f64(&data.k, bb, h / (hq / hkv)),
                        head_f64(&data.v, bb, h / (hq / hkv)),
                    );
                    let keys = &kh[..len];
                    for i in 0..nq {
                        cases += 1;
                        let mut counted: Vec<usize> = (0..sinks).collect();
                        counted.extend(middle_end..=offset + i);
                        let mut separated = true;
                        for r in 0..rounds {
                            match oracle_round(
                                &qh,
                                i,
                                keys,
                                (plan.projections(), rounds, r),
                                (sinks, middle_end),
                                ck,
                            ) {
                                Some(cluster) => counted.extend(cluster),
                                None => separated = false,
                            }
                        }
                        if !separated {
                            continue;
                        }
                        checked += 1;
                        let want = oracle_counted(&qh[i], &kh, &vh, &counted);
                        let err = rel_err(out.row(bb, h, i), &want);
                        assert!(
                            err < 1e-5,
                            "{isa} R {rounds} ck {ck}: b {bb} h {h} query {i}: {err:e}"
                        );
                    }
                }
            }
        }
    }
    assert!(checked * 10 >= cases * 9, "{checked} of {cases} checked");
}

/// Key blocks plus one round whose cluster holds the whole middle: the round adds exactly
/// the middle keys the blocks did not take, so the decode is exact causal attention.
#[test]
fn a_round_over_the_whole_middle_completes_the_blocks() {
    let data = data(22, 1, 2, 1, 150, 8);
    for isa in smyrf::internals::supported_tiers() {
        let config = blocks(1).n_hashes(1).k_cluster_size(1000).isa(isa);
        let plan = Plan::new(config, 8).unwrap();
        let index = index_of(&plan, &data, 150);
        let q = last_rows(&data.q, 1);
        let mut out = Tensor::zeros(1, 2, 1, data.v.d, false);
        plan.decode(
            &index,
            &q.view(),
            &data.k.view(),
            &data.v.view(),
            &mut out.view_mut(),
            CallOptions::new(),
        )
        .unwrap();
        for h in 0..2 {
            let (qh, kh, vh) = (
                head_f64(&q, 0, h),
                head_f64(&data.k, 0, 0),
                head_f64(&data.v, 0, 0),
            );
            let seen: Vec<usize> = (0..150).collect();
            let (want, _) = oracle_dense_head(&qh, &kh, &vh, &seen, 1.0 / 8f64.sqrt());
            let err = rel_err(out.row(0, h, 0), &want[0]);
            assert!(err < 1e-5, "{isa}: head {h}: {err:e}");
        }
    }
}

/// Hash orders grown token by token, through merges of the recent keys and re-hashes as
/// the largest key norm doubles, are the orders of one append of every key.
#[test]
fn appends_with_rounds_equal_rebuild_bitwise() {
    let mut data = data(23, 1, 2, 2, 700, 16);
    // Later keys grow, so the key-norm bound rises several times.
    for h in 0..2 {
        for j in 0..700 {
            let grow = 1.0 + (j / 100) as f32;
            for x in data.k.row_mut(0, h, j) {
                *x *= grow;
            }
        }
    }
    let config = hashed(2, 24, 1).n_blocks(2).block_size(16).n_samples(3);
    let plan = Plan::new(config, 16).unwrap();
    let rebuilt = index_of(&plan, &data, 700);
    let mut grown = KvIndex::new(&plan, 1, 2, 700).unwrap();
    grown.append(&data.k.view(), &[5]).unwrap();
    for len in 6..=700u32 {
        grown.append(&data.k.view(), &[len]).unwrap();
    }
    let q = Tensor::random(&mut Rng(24), 1, 2, 1, 16, false);
    let decode = |index: &KvIndex| {
        let mut out = Tensor::zeros(1, 2, 1, data.v.d, false);
        plan.decode(
            index,
            &q.view(),
            &data.k.view(),
            &data.v.view(),
            &mut out.view_mut(),
            CallOptions::new(),
        )
        .unwrap();
        out.data
    };
    let want = decode(&rebuilt);
    assert!(same_bits(&decode(&grown), &want));
    // Without the rounds the output differs: they take part.
    let plain = Plan::new(hashed(0, 24, 1).n_blocks(2).block_size(16).n_samples(3), 16).unwrap();
    let mut out = Tensor::zeros(1, 2, 1, data.v.d, false);
    plain
        .decode(
            &index_of(&plain, &data, 700),
            &q.view(),
            &data.k.view(),
            &data.v.view(),
            &mut out.view_mut(),
            CallOptions::new(),
        )
        .unwrap();
    assert!(!same_bits(&out.data, &want));
}

/// A decode call in a workspace of `decode_workspace_size` bytes (at any offset) gives the
/// bits of the call without one; one byte less is refused and writes nothing. The size
/// depends on the views, not on the index's lengths.
#[test]
fn decode_in_a_caller_workspace_gives_the_same_bits() {
    let data = data(31, 1, 4, 2, 900, 16);
    let configs = [
        blocks(1),
        blocks(2).n_samples(5),
        hashed(2, 16, 1).n_blocks(3).block_size(4),
        // One sequence of one head on 3 threads: split-KV scoring.
        blocks(1).block_size(2),
    ];
    let k16: Vec<f16> = data.k.data.iter().map(|&x| f16::from_f32(x)).collect();
    let kv16 = TensorView::bhnd(&k16, 1, 2, 900, 16).unwrap();
    for (c, config) in configs.into_iter().enumerate() {
        let heads = if c == 3 { 1 } else { 4 };
        let kv_heads = heads.min(2);
        let plan = Plan::new(config.num_threads(3), 16).unwrap();
        let mut index = KvIndex::new(&plan, 1, kv_heads, 900).unwrap();
        let k =
            TensorView::bhnd(&data.k.data[..kv_heads * 900 * 16], 1, kv_heads, 900, 16).unwrap();
        let v_len = kv_heads * 900 * data.v.d;
        let v = TensorView::bhnd(&data.v.data[..v_len], 1, kv_heads, 900, data.v.d).unwrap();
        let q_data = Tensor::random(&mut Rng(32), 1, heads, 1, 16, false);
        let mut want = vec![0.0f32; heads * data.v.d];
        let mut got = vec![0.0f32; heads * data.v.d];
        let dv = data.v.d;
        let mut sizes = Vec::new();
        for len in [300u32, 899] {
            index.append(&k, &[len]).unwrap();
            let bytes = plan
                .decode_workspace_size(
                    &index,
                    &q_data.view(),
                    &k,
                    &v,
                    &one_query_view(&mut got, heads, dv),
                    &CallOptions::new(),
                )
                .unwrap();
            sizes.push(bytes);
            plan.decode(
                &index,
                &q_data.view(),
                &k,
                &v,
                &mut one_query_view(&mut want, heads, dv),
                CallOptions::new(),
            )
            .unwrap();
            for offset in [0, 3] {
                let mut workspace = vec![0u8; bytes + offset];
                got.fill(SENTINEL);
                plan.decode(
                    &index,
                    &q_data.view(),
                    &k,
                    &v,
                    &mut one_query_view(&mut got, heads, dv),
                    CallOptions::new().workspace(&mut workspace[offset..]),
                )
                .unwrap();
                assert!(same_bits(&got, &want), "config {c}, length {len}");
            }
            let mut short = vec![0u8; bytes - 1];
            got.fill(SENTINEL);
            assert!(matches!(
                plan.decode(
                    &index,
                    &q_data.view(),
                    &k,
                    &v,
                    &mut one_query_view(&mut got, heads, dv),
                    CallOptions::new().workspace(&mut short),
                ),
                Err(Error::WorkspaceTooSmall { .. })
            ));
            assert!(got.iter().all(|&x| x == SENTINEL), "written on error");
        }
        assert_eq!(sizes[0], sizes[1], "the size depends on the views only");
        // A 16-bit cache and output need their staging too.
        if c == 0 {
            let mut out16 = vec![f16::ZERO; heads * data.v.d];
            let mut out16_ws = vec![f16::ZERO; heads * data.v.d];
            let mut idx16 = KvIndex::new(&plan, 1, kv_heads, 900).unwrap();
            idx16.append(&kv16, &[899]).unwrap();
            let bytes = plan
                .decode_workspace_size(
                    &idx16,
                    &q_data.view(),
                    &kv16,
                    &v,
                    &one_query_view(&mut out16, heads, dv),
                    &CallOptions::new(),
                )
                .unwrap();
            plan.decode(
                &idx16,
                &q_data.view(),
                &kv16,
                &v,
                &mut one_query_view(&mut out16, heads, dv),
                CallOptions::new(),
            )
            .unwrap();
            let mut workspace = vec![0u8; bytes];
            plan.decode(
                &idx16,
                &q_data.view(),
                &kv16,
                &v,
                &mut one_query_view(&mut out16_ws, heads, dv),
                CallOptions::new().workspace(&mut workspace),
            )
            .unwrap();
            assert!(out16
                .iter()
                .zip(&out16_ws)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}

/// An output view of one query per head.
fn one_query_view<T: smyrf::Element>(
    buf: &mut [T],
    heads: usize,
    dv: usize,
) -> TensorViewMut<'_, T> {
    TensorViewMut::bhnd(buf, 1, heads, 1, dv).unwrap()
}
