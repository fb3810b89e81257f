//! Results do not depend on where the caller's buffers start: output rows on whole cache
//! lines take streaming stores in the first round (src/stream.rs; heads of at least 2 MiB of
//! output, so 16384 rows of 32 here), others plain stores, and inputs at any 4-byte offset
//! span one cache line more per row for the prefetches. Every supported tier, one and two
//! threads, R = 1, 2, 3: bit-identical outputs and lse.

mod common;
use common::{bits, Rng};
use smyrf::Isa;
use smyrf::{Config, Plan, TensorView, TensorViewMut};

/// `len` floats starting `skew` bytes past a 64-byte boundary, inside `store`.
fn placed(store: &mut Vec<f32>, len: usize, skew: usize) -> std::ops::Range<usize> {
    store.clear();
    store.resize(len + 64, 0.0);
    let to_line = (64 - store.as_ptr() as usize % 64) % 64 / 4;
    let start = to_line + skew / 4;
    start..start + len
}

#[test]
fn outputs_are_the_same_at_every_buffer_alignment() {
    let (b, h, n, d) = (1, 2, 16384, 32);
    let len = b * h * n * d;
    let mut rng = Rng(9);
    let (q, k, v) = (rng.vec(len), rng.vec(len), rng.vec(len));
    for isa in Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
        for (rounds, threads) in [(1, 1), (2, 2), (3, 1)] {
            let plan = Plan::new(
                Config::default()
                    .n_hashes(rounds)
                    .q_cluster_size(64)
                    .num_threads(threads)
                    .isa(isa),
                d,
            )
            .unwrap();
            let mut reference: Option<(Vec<u32>, Vec<u32>)> = None;
            for skew in [0, 16, 48] {
                let (mut qs, mut ks, mut vs, mut os) = (vec![], vec![], vec![], vec![]);
                let (qr, kr, vr, or) = (
                    placed(&mut qs, len, (skew + 16) % 64),
                    placed(&mut ks, len, skew),
                    placed(&mut vs, len, (skew + 32) % 64),
                    placed(&mut os, len, skew),
                );
                qs[qr.clone()].copy_from_slice(&q);
                ks[kr.clone()].copy_from_slice(&k);
                vs[vr.clone()].copy_from_slice(&v);
                os[or.clone()].fill(f32::NAN);
                let mut lse = vec![f32::NAN; b * h * n];
                let qv = TensorView::bhnd(&qs[qr], b, h, n, d).unwrap();
                let kv = TensorView::bhnd(&ks[kr], b, h, n, d).unwrap();
                let vv = TensorView::bhnd(&vs[vr], b, h, n, d).unwrap();
                let mut ov = TensorViewMut::bhnd(&mut os[or.clone()], b, h, n, d).unwrap();
                plan.attention_with(
                    &qv,
                    &kv,
                    &vv,
                    &mut ov,
                    smyrf::CallOptions::new().lse(&mut lse),
                )
                .unwrap();
                let got = (bits(&os[or]), bits(&lse));
                assert!(got.0.iter().all(|&x| !f32::from_bits(x).is_nan()));
                match &reference {
                    None => reference = Some(got),
                    Some(expected) => assert!(
                        *expected == got,
                        "{isa}, R = {rounds}, {threads} threads: output differs at skew {skew}"
                    ),
                }
            }
        }
    }
}
