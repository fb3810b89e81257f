//! What an inference engine brings to a call: 16-bit tensors, key lengths, head sinks and its
//! own workers (design §1, §3). Each is checked against an independent form of the same
//! call: the f32 path on values converted beforehand (bitwise: the arithmetic is the same),
//! a prefix mask, the f64 oracle, and the library's own threads.

mod common;

use common::bits::same_bits;
use common::types::{round_to, to, Elem};
use common::{head_f64, oracle_dense_head, Rng, Tensor};
use half::{bf16, f16};
use smyrf::internals::supported_tiers;
use smyrf::{CallOptions, Config, Isa, ParallelFor, Plan, Shape, TensorView, TensorViewMut};

struct Case {
    b: usize,
    hq: usize,
    hkv: usize,
    nq: usize,
    nk: usize,
    d: usize,
    dv: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Case {
    fn new(
        seed: u64,
        (b, hq, hkv, nq, nk, d, dv): (usize, usize, usize, usize, usize, usize, usize),
    ) -> Case {
        let mut rng = Rng(seed);
        let mut gen = |len: usize| (0..len).map(|_| rng.symmetric(1.5)).collect::<Vec<f32>>();
        Case {
            b,
            hq,
            hkv,
            nq,
            nk,
            d,
            dv,
            q: gen(b * hq * nq * d),
            k: gen(b * hkv * nk * d),
            v: gen(b * hkv * nk * dv),
        }
    }
}

/// Runs `case` with Q, K, V of types TQ, TK, TV and an output of type TO, through SMYRF (or
/// dense attention with `dense`), returning the output widened to f32.
fn run<TQ: Elem, TK: Elem, TV: Elem, TO: Elem>(
    plan: &Plan,
    case: &Case,
    dense: bool,
    options: CallOptions<'_>,
) -> Vec<f32> {
    let (q, k, v) = (to::<TQ>(&case.q), to::<TK>(&case.k), to::<TV>(&case.v));
    let mut out = vec![TO::default(); case.b * case.hq * case.nq * case.dv];
    let qv = TensorView::new(&q, Shape::bhnd(case.b, case.hq, case.nq, case.d)).unwrap();
    let kv = TensorView::new(&k, Shape::bhnd(case.b, case.hkv, case.nk, case.d)).unwrap();
    let vv = TensorView::new(&v, Shape::bhnd(case.b, case.hkv, case.nk, case.dv)).unwrap();
    let mut ov = TensorViewMut::bhnd(&mut out, case.b, case.hq, case.nq, case.dv).unwrap();
    if dense {
        plan.dense_attention_with(&qv, &kv, &vv, &mut ov, options)
            .unwrap();
    } else {
        plan.attention_with(&qv, &kv, &vv, &mut ov, options)
            .unwrap();
    }
    out.into_iter().map(TO::to_f32).collect()
}

/// The f32 call on inputs pre-rounded to TQ, TK, TV, its output rounded to TO.
fn reference<TQ: Elem, TK: Elem, TV: Elem, TO: Elem>(
    plan: &Plan,
    case: &Case,
    dense: bool,
) -> Vec<f32> {
    let rounded = Case {
        q: round_to::<TQ>(&case.q),
        k: round_to::<TK>(&case.k),
        v: round_to::<TV>(&case.v),
        ..*case
    };
    let out = run::<f32, f32, f32, f32>(plan, &rounded, dense, CallOptions::new());
    round_to::<TO>(&out)
}

macro_rules! each_output {
    ($plan:expr, $case:expr, $dense:expr, $tq:ty, $tk:ty, $tv:ty) => {
        each_output!(@one $plan, $case, $dense, $tq, $tk, $tv, f32);
        each_output!(@one $plan, $case, $dense, $tq, $tk, $tv, f16);
        each_output!(@one $plan, $case, $dense, $tq, $tk, $tv, bf16);
    };
    (@one $plan:expr, $case:expr, $dense:expr, $tq:ty, $tk:ty, $tv:ty, $to:ty) => {{
        let got = run::<$tq, $tk, $tv, $to>($plan, $case, $dense, CallOptions::new());
        let want = reference::<$tq, $tk, $tv, $to>($plan, $case, $dense);
        assert!(
            same_bits(&got, &want),
            "{} q={} k={} v={} out={} dense={}",
            $plan.isa(),
            stringify!($tq),
            stringify!($tk),
            stringify!($tv),
            stringify!($to),
            $dense
        );
    }};
}

macro_rules! each_input {
    ($plan:expr, $case:expr, $dense:expr) => {
        each_input!(@q $plan, $case, $dense, f32);
        each_input!(@q $plan, $case, $dense, f16);
        each_input!(@q $plan, $case, $dense, bf16);
    };
    (@q $plan:expr, $case:expr, $dense:expr, $tq:ty) => {
        each_input!(@k $plan, $case, $dense, $tq, f32);
        each_input!(@k $plan, $case, $dense, $tq, f16);
        each_input!(@k $plan, $case, $dense, $tq, bf16);
    };
    (@k $plan:expr, $case:expr, $dense:expr, $tq:ty, $tk:ty) => {
        each_output!($plan, $case, $dense, $tq, $tk, f32);
        each_output!($plan, $case, $dense, $tq, $tk, f16);
        each_output!($plan, $case, $dense, $tq, $tk, bf16);
    };
}

#[test]
fn every_element_type_combination_matches_the_f32_path_on_converted_values() {
    // GQA, a cluster count that leaves ragged tiles, d and dv off the vector widths.
    let case = Case::new(11, (2, 4, 2, 150, 150, 20, 12));
    for isa in supported_tiers() {
        for config in [
            Config::default().q_cluster_size(32),
            // The §8 blocks widen key and query rows for their sink scores and mean query.
            Config::default()
                .q_cluster_size(32)
                .n_sinks(9)
                .sink_selection(smyrf::SinkSelection::MeanQuery)
                .window(8)
                .n_samples(4),
            // Selected keys score 16-bit rows widened to f32.
            Config::hybrid(24).select_dims(5),
        ] {
            // The bf16 dot-product kernel sums in its own order: off for the bitwise check.
            let plan = Plan::new(config.isa(isa).num_threads(2).bf16_exact(true), case.d).unwrap();
            each_input!(&plan, &case, false);
            each_input!(&plan, &case, true);
        }
    }
}

#[test]
fn long_16_bit_rows_take_the_staged_projection_in_several_blocks() {
    // More than one block of staged rows (64) and a head dim past one projection segment.
    let case = Case::new(5, (1, 1, 1, 300, 200, 160, 8));
    for isa in supported_tiers() {
        let config = Config::default()
            .q_cluster_size(50)
            .isa(isa)
            .bf16_exact(true);
        let plan = Plan::new(config, case.d).unwrap();
        each_output!(&plan, &case, false, f16, bf16, f16);
        each_output!(&plan, &case, false, bf16, bf16, f32);
    }
}

/// Softmax with a sink logit in f64: the sink joins the denominator, carries no value.
fn oracle_with_sink(
    case: &Case,
    b: usize,
    h: usize,
    valid: &[usize],
    sink: f64,
    scale: f64,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let tensor = |data: &[f32], heads: usize, n: usize, d: usize| Tensor {
        data: data.to_vec(),
        b: case.b,
        h: heads,
        n,
        d,
        bnhd: false,
    };
    let q = head_f64(&tensor(&case.q, case.hq, case.nq, case.d), b, h);
    let hk = h / (case.hq / case.hkv);
    let k = head_f64(&tensor(&case.k, case.hkv, case.nk, case.d), b, hk);
    let v = head_f64(&tensor(&case.v, case.hkv, case.nk, case.dv), b, hk);
    let (mut out, mut lse) = oracle_dense_head(&q, &k, &v, valid, scale);
    for (row, l) in out.iter_mut().zip(&mut lse) {
        let merged = if *l == f64::NEG_INFINITY {
            sink
        } else {
            l.max(sink) + ((*l - l.max(sink)).exp() + (sink - l.max(sink)).exp()).ln()
        };
        let keep = if *l == f64::NEG_INFINITY {
            0.0
        } else {
            (*l - merged).exp()
        };
        for x in row.iter_mut() {
            *x *= keep;
        }
        *l = merged;
    }
    (out, lse)
}

#[test]
fn head_sinks_enter_the_softmax_once() {
    let case = Case::new(3, (2, 4, 2, 96, 96, 16, 16));
    let sinks = [0.5f32, -2.0, 3.0, f32::NEG_INFINITY];
    // One batch element without valid keys: its rows stay zero and its lse is the sink.
    let lengths = [96u32, 0];
    let scale = 1.0 / (case.d as f64).sqrt();
    for isa in supported_tiers() {
        // One cluster holding every key, over two rounds: SMYRF computes dense attention,
        // the sink included (a sink merged against the two rounds' mass as if it were one
        // round's would weigh half as much). Its lse is the dense one plus ln 2.
        let smyrf = Plan::new(
            Config::default().n_hashes(2).q_cluster_size(4096).isa(isa),
            case.d,
        )
        .unwrap();
        for dense in [false, true] {
            let mut lse = vec![0.0f32; case.b * case.hq * case.nq];
            let options = CallOptions::new()
                .head_sinks(&sinks)
                .key_lengths(&lengths)
                .lse(&mut lse);
            let out = run::<f32, f32, f32, f32>(&smyrf, &case, dense, options);
            for b in 0..case.b {
                let valid: Vec<usize> = (0..lengths[b] as usize).collect();
                for h in 0..case.hq {
                    let (want, want_lse) =
                        oracle_with_sink(&case, b, h, &valid, sinks[h] as f64, scale);
                    for i in 0..case.nq {
                        let at = ((b * case.hq + h) * case.nq + i) * case.dv;
                        for c in 0..case.dv {
                            let err = (out[at + c] as f64 - want[i][c]).abs();
                            assert!(
                                err < 2e-5,
                                "{isa} dense={dense} b{b} h{h} q{i} c{c}: {} vs {}",
                                out[at + c],
                                want[i][c]
                            );
                        }
                        let mut l = lse[(b * case.hq + h) * case.nq + i] as f64;
                        if !dense {
                            l -= 2f64.ln();
                        }
                        if want_lse[i] == f64::NEG_INFINITY {
                            assert_eq!(l, f64::NEG_INFINITY);
                        } else {
                            assert!(
                                (l - want_lse[i]).abs() < 1e-4,
                                "{isa} lse {l} vs {}",
                                want_lse[i]
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn the_bf16_dot_product_kernel_is_within_1e_5_of_f64_on_the_converted_values() {
    // One cluster holding every key (SMYRF is then dense attention), and dense attention:
    // all-bf16 inputs through `vdpbf16ps` where the CPU has it, against f64 on the same
    // bf16 values. d odd exercises the zero-padded last pair; 200 keys a ragged key tile.
    // Forced on where it does not pay (the other tests here run f32 or `bf16_exact` plans).
    smyrf::internals::bf16_dot::force();
    for (d, dv) in [(64, 64), (33, 16)] {
        let case = Case::new(17, (2, 4, 2, 80, 200, d, dv));
        let rounded = Case {
            q: round_to::<bf16>(&case.q),
            k: round_to::<bf16>(&case.k),
            v: round_to::<bf16>(&case.v),
            ..case
        };
        let scale = 1.0 / (d as f64).sqrt();
        for isa in supported_tiers() {
            let plan = Plan::new(
                Config::default().n_hashes(1).q_cluster_size(4096).isa(isa),
                d,
            )
            .unwrap();
            for dense in [false, true] {
                let got = run::<bf16, bf16, bf16, f32>(&plan, &rounded, dense, CallOptions::new());
                let mut worst = 0.0f64;
                let mut top = 0.0f64;
                for b in 0..rounded.b {
                    let valid: Vec<usize> = (0..rounded.nk).collect();
                    for h in 0..rounded.hq {
                        let (want, _) =
                            oracle_with_sink(&rounded, b, h, &valid, f64::NEG_INFINITY, scale);
                        for (i, row) in want.iter().enumerate() {
                            let at = ((b * rounded.hq + h) * rounded.nq + i) * dv;
                            for (c, &x) in row.iter().enumerate() {
                                worst = worst.max((got[at + c] as f64 - x).abs());
                                top = top.max(x.abs());
                            }
                        }
                    }
                }
                assert!(
                    worst / top < 1e-5,
                    "{isa} d={d} dense={dense}: {}",
                    worst / top
                );
            }
            // The exact path is the f32 call's bits; the dot-product path is a different sum.
            let exact = Plan::new(
                Config::default()
                    .n_hashes(1)
                    .q_cluster_size(4096)
                    .isa(isa)
                    .bf16_exact(true),
                d,
            )
            .unwrap();
            let widened = run::<f32, f32, f32, f32>(&exact, &rounded, false, CallOptions::new());
            let via_exact =
                run::<bf16, bf16, bf16, f32>(&exact, &rounded, false, CallOptions::new());
            assert!(same_bits(&widened, &via_exact), "{isa}");
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512 && std::arch::is_x86_feature_detected!("avx512bf16") {
                let via_dot =
                    run::<bf16, bf16, bf16, f32>(&plan, &rounded, false, CallOptions::new());
                assert!(
                    !same_bits(&via_dot, &via_exact),
                    "the dot-product kernel ran"
                );
            }
        }
    }
}

#[test]
fn a_head_sink_joins_the_merged_rounds_not_each_round() {
    // Over R rounds the sink enters the merged result once, as a logit seen in every round:
    // out' = out · e^(lse − lse') with lse' = log(e^lse + R·e^sink), from the sink-free
    // call's out and lse.
    let case = Case::new(9, (1, 2, 1, 256, 256, 16, 16));
    let sinks = [1.0f32, -0.5];
    for isa in supported_tiers() {
        let plan = Plan::new(
            Config::default().n_hashes(3).q_cluster_size(32).isa(isa),
            case.d,
        )
        .unwrap();
        let n = case.hq * case.nq;
        let (mut lse0, mut lse1) = (vec![0.0f32; n], vec![0.0f32; n]);
        let plain =
            run::<f32, f32, f32, f32>(&plan, &case, false, CallOptions::new().lse(&mut lse0));
        let sunk = run::<f32, f32, f32, f32>(
            &plan,
            &case,
            false,
            CallOptions::new().head_sinks(&sinks).lse(&mut lse1),
        );
        for r in 0..n {
            let (l, sink) = (lse0[r] as f64, sinks[r / case.nq] as f64 + 3f64.ln());
            let merged = l.max(sink) + ((l - l.max(sink)).exp() + (sink - l.max(sink)).exp()).ln();
            assert!((lse1[r] as f64 - merged).abs() < 1e-5, "{isa} row {r}");
            let keep = (l - merged).exp();
            for c in 0..case.dv {
                let want = plain[r * case.dv + c] as f64 * keep;
                assert!(
                    (sunk[r * case.dv + c] as f64 - want).abs() < 1e-6,
                    "{isa} row {r} c{c}"
                );
            }
        }
    }
}

#[test]
fn key_lengths_are_a_prefix_mask() {
    let case = Case::new(8, (3, 2, 1, 80, 120, 16, 8));
    let lengths = [120u32, 37, 1];
    let mut mask = vec![0u8; case.b * case.nk];
    for (b, &len) in lengths.iter().enumerate() {
        mask[b * case.nk..b * case.nk + len as usize].fill(1);
    }
    // A mask and lengths together: a key must pass both.
    let mut sparse = mask.clone();
    for (j, m) in sparse.iter_mut().enumerate() {
        *m &= (j % 3 != 0) as u8;
    }
    let hybrid = Config::default().q_cluster_size(16).n_sinks(2).n_samples(3);
    for isa in supported_tiers() {
        for config in [Config::default().q_cluster_size(16), hybrid.clone()] {
            let plan = Plan::new(config.isa(isa), case.d).unwrap();
            for dense in [false, true] {
                let by_lengths = run::<f32, f32, f32, f32>(
                    &plan,
                    &case,
                    dense,
                    CallOptions::new().key_lengths(&lengths),
                );
                let by_mask = run::<f32, f32, f32, f32>(
                    &plan,
                    &case,
                    dense,
                    CallOptions::new().key_mask(&mask),
                );
                assert!(same_bits(&by_lengths, &by_mask), "{isa} dense={dense}");
                let both = run::<f32, f32, f32, f32>(
                    &plan,
                    &case,
                    dense,
                    CallOptions::new().key_lengths(&lengths).key_mask(&sparse),
                );
                let masked = run::<f32, f32, f32, f32>(
                    &plan,
                    &case,
                    dense,
                    CallOptions::new().key_mask(&sparse),
                );
                assert!(
                    same_bits(&both, &masked),
                    "{isa} dense={dense} mask and lengths"
                );
            }
        }
    }
}

/// An engine's worker pool: `workers` scoped threads take task indices from a shared counter.
struct Workers {
    workers: usize,
    calls: std::sync::atomic::AtomicUsize,
}

impl ParallelFor for Workers {
    fn workers(&self) -> usize {
        self.workers
    }
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        self.calls.fetch_add(1, Ordering::Relaxed);
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..self.workers.min(n) {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    task(i);
                });
            }
        });
    }
}

#[test]
fn an_engines_workers_give_the_bits_of_the_librarys_threads() {
    // Fewer tasks than workers (the clusters share the workers) and more.
    for (shape, workers) in [
        ((1, 1, 1, 700, 700, 16, 16), 3),
        ((2, 4, 2, 200, 200, 16, 8), 2),
    ] {
        let case = Case::new(21, shape);
        for config in [
            Config::default().q_cluster_size(32),
            Config::default()
                .q_cluster_size(32)
                .n_sinks(4)
                .window(16)
                .n_samples(4),
            Config::hybrid(20),
        ] {
            let serial = Plan::new(config.clone().num_threads(1), case.d).unwrap();
            let pooled = Plan::new(config.num_threads(3), case.d).unwrap();
            for dense in [false, true] {
                let want = run::<f32, f32, f32, f32>(&serial, &case, dense, CallOptions::new());
                let pool = run::<f32, f32, f32, f32>(&pooled, &case, dense, CallOptions::new());
                let engine = Workers {
                    workers,
                    calls: Default::default(),
                };
                let got = run::<f32, f32, f32, f32>(
                    &serial,
                    &case,
                    dense,
                    CallOptions::new().parallel_for(&engine),
                );
                assert!(
                    same_bits(&got, &want) && same_bits(&pool, &want),
                    "dense={dense} workers={workers}"
                );
                assert!(
                    engine.calls.load(std::sync::atomic::Ordering::Relaxed) > 0,
                    "the engine ran the tasks"
                );
            }
        }
    }
}

#[test]
fn bad_key_lengths_and_head_sinks_are_refused_and_write_nothing() {
    let case = Case::new(2, (2, 2, 1, 16, 16, 8, 8));
    let plan = Plan::new(Config::default(), case.d).unwrap();
    fn view(d: &[f32], b: usize, h: usize, n: usize, dim: usize) -> TensorView<'_> {
        TensorView::new(d, Shape::bhnd(b, h, n, dim)).unwrap()
    }
    let (q, k, v) = (
        view(&case.q, case.b, case.hq, case.nq, case.d),
        view(&case.k, case.b, case.hkv, case.nk, case.d),
        view(&case.v, case.b, case.hkv, case.nk, case.dv),
    );
    let mut out = vec![7.0f32; case.b * case.hq * case.nq * case.dv];
    let bad: [(CallOptions<'_>, &str); 5] = [
        (
            CallOptions::new().key_lengths(&[16, 17]),
            "key_lengths[1] = 17",
        ),
        (CallOptions::new().key_lengths(&[16]), "key_lengths length"),
        (
            CallOptions::new().head_sinks(&[0.0, f32::NAN]),
            "head_sinks[1]",
        ),
        (
            CallOptions::new().head_sinks(&[f32::INFINITY, 0.0]),
            "head_sinks[0]",
        ),
        (CallOptions::new().head_sinks(&[0.0]), "head_sinks length"),
    ];
    for (options, text) in bad {
        let mut o = TensorViewMut::bhnd(&mut out, case.b, case.hq, case.nq, case.dv).unwrap();
        let error = plan
            .attention_with(&q, &k, &v, &mut o, options)
            .unwrap_err();
        assert!(
            error.to_string().contains(text),
            "{error} should name {text}"
        );
        assert!(out.iter().all(|&x| x == 7.0));
    }
}
