//! SMYRF with one cluster (`q_cluster_size ≥ Nq`) against the library's dense attention on
//! arbitrary small shapes (design §1: one cluster is exact dense attention for any R):
//! batch, grouped-query heads, both memory layouts, masks (a batch element without valid
//! keys included), every supported tier, 1 to 3 hash rounds, sequences across the 64-query
//! and 256-key tile edges, and now and then the design §8 sinks, window and samples around
//! one round. Outputs must agree to a tolerance; the log-sum-exp to the same tolerance after
//! the ln R that merging R equal rounds adds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smyrf::{Config, Isa, Plan, Shape, SinkSelection, TensorView, TensorViewMut};
use smyrf_fuzz::{filler, Input};

/// A contiguous tensor in one of the two layouts.
fn shape(bnhd: bool, b: usize, h: usize, n: usize, d: usize) -> Shape {
    if bnhd {
        Shape::bnhd(b, h, n, d)
    } else {
        Shape::bhnd(b, h, n, d)
    }
}

fn fill(input: &mut Input, len: usize, salt: u32) -> Vec<f32> {
    (0..len)
        .map(|i| match input.is_empty() {
            false => input.small_f32(),
            true => filler(i, salt),
        })
        .collect()
}

fn seq_len(input: &mut Input, long: usize) -> usize {
    match input.rare(32) {
        false => input.range(1, 24),
        true => long + input.range(0, 12) - 6,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let b = input.range(1, 2);
    let hkv = input.range(1, 2);
    let hq = hkv * input.range(1, 3);
    // Design §8 blocks (sinks, a window, samples) now and then. With one cluster and one
    // round every valid key still lands in exactly one block, so the result is still dense
    // attention (samples find no key outside the cluster). A window needs Nq = Nk.
    let hybrid = input.rare(96);
    let (n_sinks, window, n_samples) = match hybrid {
        true => (input.range(0, 5), input.range(0, 9), input.range(0, 3)),
        false => (0, 0, 0),
    };
    let sink_selection = input.pick(&[SinkSelection::First, SinkSelection::MeanQuery]);
    let nq = seq_len(&mut input, 64);
    let nk = match window {
        0 => seq_len(&mut input, 256),
        _ => nq,
    };
    let d = input.range(1, 20);
    let dv = input.range(1, 20);
    let n_hashes = match hybrid {
        true => 1,
        false => input.range(1, 3),
    };
    let tiers: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.is_supported()).collect();
    let isa = input.pick(&tiers);
    let scale = input.pick(&[None, Some(0.0), Some(0.25), Some(1.0), Some(8.0)]);
    let k_cluster_size = input.pick(&[None, Some(nk), Some(nk + 7)]);
    // Arguments drawn in the fields' order, as the input's bytes were laid out.
    let mut config = Config::default()
        .n_hashes(n_hashes)
        .q_cluster_size(nq + input.range(0, 3));
    config.k_cluster_size = k_cluster_size;
    config.scale = scale;
    let config = config
        .seed(input.u64())
        .num_threads(input.pick(&[0, 1, 2]))
        .isa(isa)
        .n_sinks(n_sinks)
        .sink_selection(sink_selection)
        .window(window)
        .n_samples(n_samples)
        .sample_group(input.range(0, 4));
    let layouts = [input.flag(), input.flag(), input.flag(), input.flag()];
    let mask: Option<Vec<u8>> = match input.range(0, 3) {
        0 => None,
        1 => Some((0..b * nk).map(|_| input.byte() & 1).collect()),
        2 => Some((0..b * nk).map(|_| input.byte()).collect()),
        // The last batch element without a valid key.
        _ => Some((0..b * nk).map(|j| (j < (b - 1) * nk) as u8).collect()),
    };
    let (qs, ks) = (
        shape(layouts[0], b, hq, nq, d),
        shape(layouts[1], b, hkv, nk, d),
    );
    let (vs, os) = (
        shape(layouts[2], b, hkv, nk, dv),
        shape(layouts[3], b, hq, nq, dv),
    );
    let q = fill(&mut input, b * hq * nq * d, 1);
    let k = fill(&mut input, b * hkv * nk * d, 2);
    let v = fill(&mut input, b * hkv * nk * dv, 3);

    let plan = Plan::new(config.clone(), d).expect("a valid config");
    let views = (
        TensorView::new(&q, qs).unwrap(),
        TensorView::new(&k, ks).unwrap(),
        TensorView::new(&v, vs).unwrap(),
    );
    let lse_len = b * hq * nq;
    let (mut out, mut lse) = (vec![f32::NAN; b * hq * nq * dv], vec![f32::NAN; lse_len]);
    let (mut dense, mut dense_lse) = (out.clone(), lse.clone());
    plan.attention_with(
        &views.0,
        &views.1,
        &views.2,
        &mut TensorViewMut::new(&mut out, os).unwrap(),
        {
            let mut options = smyrf::CallOptions::new();
            options.key_mask = mask.as_deref();
            options.lse = Some(&mut lse);
            options
        },
    )
    .expect("a valid call");
    smyrf::Plan::new(
        {
            let mut dense_config = smyrf::Config::default();
            dense_config.scale = config.scale;
            dense_config
        },
        views.0.shape().dim,
    )
    .and_then(|plan| {
        plan.dense_attention_with(
            &views.0,
            &views.1,
            &views.2,
            &mut TensorViewMut::new(&mut dense, os).unwrap(),
            {
                let mut options = smyrf::CallOptions::new();
                options.key_mask = mask.as_deref();
                options.lse = Some(&mut dense_lse);
                options
            },
        )
    })
    .expect("a valid call");

    // Outputs are convex combinations of value rows: compare relative to the largest.
    let v_max = v.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    for (i, (&got, &want)) in out.iter().zip(&dense).enumerate() {
        assert!(
            (got - want).abs() <= 1e-4 * v_max,
            "out[{i}]: SMYRF {got} vs dense {want} ({config:?}, {isa})"
        );
    }
    let ln_rounds = (n_hashes as f32).ln();
    for (i, (&got, &want)) in lse.iter().zip(&dense_lse).enumerate() {
        if want == f32::NEG_INFINITY {
            assert_eq!(got, want, "lse[{i}] of a batch element without valid keys");
            continue;
        }
        let expected = want + ln_rounds;
        assert!(
            (got - expected).abs() <= 1e-4 * expected.abs().max(1.0),
            "lse[{i}]: SMYRF {got} vs dense {want} + ln {n_hashes} ({config:?}, {isa})"
        );
    }
});
