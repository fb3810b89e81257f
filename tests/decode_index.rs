//! Decode through the KV-cache index (design §10): against the causal prefill's tile of the
//! same queries (bitwise, every tier, f32 and f16 caches, GQA, head sinks, lse), against the
//! f64 oracle when every block is taken, appends against one rebuild (bitwise), any thread
//! count the same bits, and every bad input refused with nothing written.

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
        index.memory_bytes() * 16 <= cache + 64,
        "{}",
        index.memory_bytes()
    );
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
    let mut workspace = vec![0u8; 1 << 16];
    for options in [
        CallOptions::new().key_mask(&mask),
        CallOptions::new().key_lengths(&[32]),
        CallOptions::new().causal(),
        CallOptions::new().query_offset(3),
        CallOptions::new().workspace(&mut workspace),
    ] {
        assert!(matches!(
            decode(&plan, &index, &q, options),
            Err(Error::OptionNeeds { .. })
        ));
    }
    for config in [blocks(1).n_hashes(1), blocks(1).n_samples(4)] {
        let plan = Plan::new(config, 8).unwrap();
        assert!(matches!(
            decode(&plan, &index, &q, CallOptions::new()),
            Err(Error::OptionNeeds { .. })
        ));
    }
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
