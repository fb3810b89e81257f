//! Every kernel of every tier this CPU has, against the portable tier and against f64
//! (design §6), on awkward sizes, unaligned slices and strided rows.

mod common;
use common::Rng;
use smyrf::internals::{self as testing, supported_tiers};
use smyrf::{Config, Isa, Plan};

const DIMS: [usize; 16] = [
    1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 256,
];
const CLUSTERS: [usize; 10] = [1, 2, 5, 31, 32, 33, 64, 100, 128, 257];

fn round16(n: usize) -> usize {
    n.div_ceil(16) * 16
}

fn max_rel(a: &[f32], b: &[f32]) -> f64 {
    let diff = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max);
    let scale = b
        .iter()
        .map(|&y| (y as f64).abs())
        .fold(0.0, f64::max)
        .max(1e-30);
    diff / scale
}

/// A buffer of `len` values starting one float past an aligned boundary.
fn unaligned(rng: &mut Rng, len: usize) -> Vec<f32> {
    rng.vec(len + 1)
}

/// The tier tests run every tier the CPU has: a tier `SMYRF_REQUIRE` names must be one of
/// them, or those tests would pass without testing it.
#[test]
fn required_tiers_are_present() {
    for isa in [Isa::Avx2, Isa::Avx512, Isa::Neon] {
        if !isa.is_supported() {
            common::require::unavailable(isa.name(), "this CPU lacks the tier");
        }
    }
}

#[test]
fn the_forced_tier_is_the_one_running() {
    if let Ok(name) = std::env::var("SMYRF_ISA") {
        let isa = Isa::from_name(&name).expect("SMYRF_ISA names a tier");
        assert!(isa.is_supported(), "SMYRF_ISA={name} but the CPU lacks it");
        let plan = Plan::new(Config::default(), 16).unwrap();
        assert_eq!(plan.isa(), isa, "SMYRF_ISA={name} was not honoured");
    }
    // The best tier is found on the architectures we build for.
    let best = smyrf::detected_isa();
    assert!(best.is_supported());
    #[cfg(target_arch = "aarch64")]
    assert_eq!(best, Isa::Neon);
    #[cfg(target_arch = "x86_64")]
    assert!(best != Isa::Neon);
}

#[test]
fn qk_every_tier_matches_portable_and_f64() {
    let mut rng = Rng(11);
    for &d in &DIMS {
        for &m in &CLUSTERS {
            let n = if m > 100 { m / 2 + 1 } else { m };
            let ldk = round16(n);
            let q_buf = unaligned(&mut rng, m * d);
            let mut kt_buf = unaligned(&mut rng, d * ldk);
            let q = &q_buf[1..];
            for t in 0..d {
                kt_buf[1 + t * ldk + n..1 + (t + 1) * ldk].fill(0.0);
            }
            let kt = &kt_buf[1..];
            let scale = 0.37;
            let mut want = vec![0.0f32; m * ldk];
            for i in 0..m {
                for j in 0..ldk {
                    let dot: f64 = (0..d)
                        .map(|t| q[i * d + t] as f64 * kt[t * ldk + j] as f64)
                        .sum();
                    want[i * ldk + j] = (dot * scale as f64) as f32;
                }
            }
            for isa in supported_tiers() {
                let mut s = vec![f32::NAN; m * ldk + 1];
                testing::qk(isa, q, kt, m, d, ldk, scale, &mut s[1..]).unwrap();
                let err = max_rel(&s[1..], &want);
                assert!(err < 1e-5, "qk {isa} d={d} m={m}: {err:e}");
                assert!(s[0].is_nan(), "qk {isa} wrote before its output");
            }
        }
    }
}

#[test]
fn pv_and_softmax_every_tier_match_portable() {
    let mut rng = Rng(12);
    for &dv in &DIMS {
        for &n in &CLUSTERS {
            let m = 1 + (n * 7 + dv) % 13;
            let ldk = round16(n);
            let ldv = round16(dv);
            let mut s0 = rng.vec(m * ldk);
            for i in 0..m {
                s0[i * ldk + n..(i + 1) * ldk].fill(f32::NEG_INFINITY);
                for x in &mut s0[i * ldk..i * ldk + n] {
                    *x *= 20.0;
                }
            }
            let v_buf = unaligned(&mut rng, n * ldv);
            let v = &v_buf[1..];
            let acc0 = rng.vec(m * ldv);
            let max0: Vec<f32> = (0..m)
                .map(|i| if i % 2 == 0 { f32::NEG_INFINITY } else { 3.0 })
                .collect();
            let sum0: Vec<f32> = (0..m).map(|i| if i % 2 == 0 { 0.0 } else { 2.5 }).collect();
            let run = |isa: Isa| {
                let (mut s, mut mx, mut sm, mut corr) =
                    (s0.clone(), max0.clone(), sum0.clone(), vec![0.0; m]);
                testing::softmax(isa, &mut s, m, ldk, &mut mx, &mut sm, &mut corr).unwrap();
                let mut acc = acc0.clone();
                testing::pv(isa, &s, v, m, n, ldk, ldv, Some(&corr), &mut acc).unwrap();
                // A first key tile: no rescale, and the accumulators are not read.
                let mut fresh = vec![f32::NAN; m * ldv];
                testing::pv(isa, &s, v, m, n, ldk, ldv, None, &mut fresh).unwrap();
                (s, mx, sm, corr, acc, fresh)
            };
            let base = run(Isa::Portable);
            // The portable first-tile P·V against f64.
            let expected: Vec<f32> = (0..m * ldv)
                .map(|at| {
                    let (i, c) = (at / ldv, at % ldv);
                    (0..n)
                        .map(|j| base.0[i * ldk + j] as f64 * v[j * ldv + c] as f64)
                        .sum::<f64>() as f32
                })
                .collect();
            assert!(max_rel(&base.5, &expected) < 1e-5, "fresh pv dv={dv} n={n}");
            // The portable softmax against f64.
            for i in 0..m {
                let new_max = (0..n).map(|j| s0[i * ldk + j]).fold(max0[i], f32::max) as f64;
                let sum: f64 = (0..n)
                    .map(|j| (s0[i * ldk + j] as f64 - new_max).exp())
                    .sum::<f64>()
                    + sum0[i] as f64 * (max0[i] as f64 - new_max).exp();
                assert!(
                    ((base.2[i] as f64 - sum) / sum).abs() < 1e-5,
                    "softmax sum row {i}"
                );
                assert!(
                    base.0[i * ldk + n..(i + 1) * ldk].iter().all(|&p| p == 0.0),
                    "padding must be 0"
                );
            }
            for isa in supported_tiers() {
                let got = run(isa);
                assert!(max_rel(&got.0, &base.0) < 1e-5, "softmax P {isa} n={n}");
                assert_eq!(got.1, base.1, "row max {isa}");
                assert!(max_rel(&got.2, &base.2) < 1e-5, "row sum {isa}");
                assert!(max_rel(&got.3, &base.3) < 1e-5, "corr {isa}");
                assert!(
                    max_rel(&got.4, &base.4) < 1e-5,
                    "pv {isa} dv={dv} n={n}: {:e}",
                    max_rel(&got.4, &base.4)
                );
                assert!(
                    max_rel(&got.5, &base.5) < 1e-5,
                    "fresh pv {isa} dv={dv} n={n}"
                );
            }
        }
    }
}

#[test]
fn round_merge_every_tier_matches_portable_and_f64() {
    let mut rng = Rng(21);
    // (running max, running sum, round max, round sum): ordinary, far apart both ways,
    // nothing merged yet, a round without keys, neither side, NaN.
    let cases = [
        (0.3f32, 2.5f32, -1.2f32, 7.0f32),
        (-40.0, 3.0, 2.0, 1.5),
        (15.0, 1.0, -60.0, 4.0),
        (f32::NEG_INFINITY, 0.0, 1.5, 3.0),
        (0.7, 2.0, f32::NEG_INFINITY, 0.0),
        (f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0),
        (f32::NAN, 1.0, 0.0, 1.0),
    ];
    for &dv in &DIMS {
        let row0_buf = unaligned(&mut rng, dv);
        let acc_buf = unaligned(&mut rng, dv);
        let (row0, acc) = (&row0_buf[1..], &acc_buf[1..]);
        for &(max0, sum0, max, sum) in &cases {
            let run = |isa: Isa| {
                let (mut row, mut run_max, mut run_sum) = (row0.to_vec(), max0, sum0);
                testing::merge(isa, &mut row, &mut run_max, &mut run_sum, acc, max, sum).unwrap();
                (row, run_max, run_sum)
            };
            let (base_row, base_max, base_sum) = run(Isa::Portable);
            // The portable merge against f64: row·S·e^M and acc·e^m, over S·e^M + s·e^m.
            let top = max0.max(max) as f64;
            if max0.is_nan() || max.is_nan() {
                // A NaN max (NaN in the inputs) makes the row NaN, as it would any other
                // output it reaches.
                assert!(base_row.iter().all(|x| x.is_nan()) && base_sum.is_nan());
            } else if top.is_finite() {
                let e_old = sum0 as f64 * (max0 as f64 - top).exp();
                let e_new = (max as f64 - top).exp();
                let total = e_old + sum as f64 * e_new;
                let expected: Vec<f32> = row0
                    .iter()
                    .zip(acc)
                    .map(|(&x, &y)| ((x as f64 * e_old + y as f64 * e_new) / total) as f32)
                    .collect();
                assert!(
                    max_rel(&base_row, &expected) < 1e-6,
                    "dv={dv} ({max0}, {sum0}, {max}, {sum})"
                );
                assert_eq!(base_max as f64, top);
                assert!((base_sum as f64 - total).abs() <= 1e-6 * total);
            } else {
                // No finite max on either side: nothing changes.
                assert_eq!(base_row, row0, "dv={dv} ({max0}, {sum0}, {max}, {sum})");
                assert_eq!((base_max.to_bits(), base_sum), (max0.to_bits(), sum0));
            }
            for isa in supported_tiers() {
                let (row, run_max, run_sum) = run(isa);
                // Two products and a sum per element in every tier: the same bits.
                let same = |a: f32, b: f32| a.to_bits() == b.to_bits();
                assert!(
                    row.iter().zip(&base_row).all(|(&a, &b)| same(a, b)),
                    "{isa} dv={dv} ({max0}, {sum0}, {max}, {sum})"
                );
                assert!(same(run_max, base_max) && (same(run_sum, base_sum) || run_sum.is_nan()));
            }
        }
    }
}

#[test]
fn scaled_store_every_tier_is_exact_at_every_alignment() {
    let mut rng = Rng(22);
    for &dv in &DIMS {
        let o_buf = unaligned(&mut rng, dv);
        let o = &o_buf[1..];
        let expected: Vec<f32> = o.iter().map(|&y| y * 0.37).collect();
        // Room for a row at every offset from a 64-byte line (streamed when on the line).
        let mut store = vec![f32::NAN; dv + 32];
        let line = (64 - store.as_ptr().addr() % 64) % 64 / 4;
        for isa in supported_tiers() {
            for offset in [line, line + 1, line + 4, line + 8] {
                for stream in [false, true] {
                    store.fill(f32::NAN);
                    let row = &mut store[offset..offset + dv];
                    testing::scale_store(isa, row, o, 0.37, stream).unwrap();
                    let same = row
                        .iter()
                        .zip(&expected)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{isa} dv={dv} offset {offset} stream {stream}");
                    assert!(store[..offset]
                        .iter()
                        .chain(&store[offset + dv..])
                        .all(|x| x.is_nan()));
                }
            }
        }
    }
}

#[test]
fn projection_every_tier_matches_portable_with_strides_and_indices() {
    let mut rng = Rng(13);
    for &d in &DIMS {
        for rounds in [1, 3, 4, 8] {
            let n = 37;
            let stride = d + 5;
            let data_buf = unaligned(&mut rng, n * stride);
            let data = &data_buf[1..];
            let idx: Vec<u32> = (0..n as u32).rev().step_by(2).collect();
            let a_t = rng.vec(rounds * (d + 2));
            for use_idx in [false, true] {
                let count = if use_idx { idx.len() } else { n };
                let idx_opt = use_idx.then_some(&idx[..]);
                let m = 40.0;
                let run = |isa: Isa, lift: usize| {
                    let mut norms = vec![0.0; count];
                    let mut hashes = vec![0.0; rounds * count];
                    testing::project(
                        isa,
                        data,
                        stride,
                        d,
                        idx_opt,
                        m,
                        &a_t,
                        lift,
                        &mut norms,
                        &mut hashes,
                    )
                    .unwrap();
                    (norms, hashes)
                };
                let (base_norms, base) = run(Isa::Portable, d + 1);
                // The portable tier against f64.
                for (i, &norm) in base_norms.iter().enumerate() {
                    let row = if use_idx { idx[i] as usize } else { i };
                    let x = &data[row * stride..row * stride + d];
                    let want: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
                    assert!((norm as f64 - want).abs() <= 1e-5 * want.max(1.0));
                    for r in 0..rounds {
                        let a = &a_t[r * (d + 2)..(r + 1) * (d + 2)];
                        let h: f64 = x
                            .iter()
                            .zip(a)
                            .map(|(&v, &w)| v as f64 * w as f64)
                            .sum::<f64>()
                            + a[d + 1] as f64 * (m as f64 - norm as f64).max(0.0).sqrt();
                        assert!(
                            (base[r * count + i] as f64 - h).abs() <= 1e-5 * h.abs().max(1.0),
                            "hash vs f64"
                        );
                    }
                }
                for isa in supported_tiers() {
                    for lift in [d, d + 1] {
                        let (norms, hashes) = run(isa, lift);
                        let (want_norms, want) = run(Isa::Portable, lift);
                        assert!(max_rel(&norms, &want_norms) < 1e-5, "norms {isa} d={d}");
                        assert!(
                            max_rel(&hashes, &want) < 1e-5,
                            "project {isa} d={d} R={rounds}"
                        );
                    }
                }
                assert!(base.iter().all(|h| h.is_finite()));
            }
        }
    }
}

/// Row counts around the row blocks (4, 8 and 16 rows), long rows that take several tile
/// segments, and the gathered path with repeated and shuffled indices: every tier against an
/// f64 dot product, norms and hashes.
#[test]
fn projection_row_blocks_segments_and_gathered_rows() {
    let mut rng = Rng(29);
    for &d in &[1, 5, 16, 17, 64, 129, 300, 520] {
        for &n in &[1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 40] {
            for rounds in [1, 5] {
                let stride = d + 3;
                let rows_total = n + 7;
                let data_buf = unaligned(&mut rng, rows_total * stride);
                let data = &data_buf[1..];
                let a_t = rng.vec(rounds * (d + 2));
                // Shuffled, with repeats, reaching the last row.
                let idx: Vec<u32> = (0..n)
                    .map(|i| {
                        if i == 0 {
                            (rows_total - 1) as u32
                        } else {
                            rng.below(rows_total) as u32
                        }
                    })
                    .collect();
                for use_idx in [false, true] {
                    let idx_opt = use_idx.then_some(&idx[..]);
                    let row = |i: usize| {
                        let r = if use_idx { idx[i] as usize } else { i };
                        &data[r * stride..r * stride + d]
                    };
                    // m = 0: every lift term is 0, so the outputs are the raw dot products.
                    for isa in supported_tiers() {
                        let mut norms = vec![f32::NAN; n];
                        let mut hashes = vec![f32::NAN; rounds * n];
                        testing::project(
                            isa,
                            data,
                            stride,
                            d,
                            idx_opt,
                            0.0,
                            &a_t,
                            d + 1,
                            &mut norms,
                            &mut hashes,
                        )
                        .unwrap();
                        for i in 0..n {
                            let x = row(i);
                            let want: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
                            assert!(
                                (norms[i] as f64 - want).abs() <= 1e-5 * want.max(1.0),
                                "norm {isa} d={d} n={n} i={i} idx={use_idx}"
                            );
                            for r in 0..rounds {
                                let a = &a_t[r * (d + 2)..r * (d + 2) + d];
                                let want: f64 =
                                    x.iter().zip(a).map(|(&v, &w)| v as f64 * w as f64).sum();
                                let scale: f64 = x
                                    .iter()
                                    .zip(a)
                                    .map(|(&v, &w)| (v as f64 * w as f64).abs())
                                    .sum();
                                assert!(
                                    (hashes[r * n + i] as f64 - want).abs()
                                        <= 1e-5 * scale.max(1.0),
                                    "hash {isa} d={d} n={n} R={rounds} i={i} idx={use_idx}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

fn ulp_distance(a: f32, b: f32) -> u64 {
    let key = |x: f32| {
        let bits = x.to_bits() as i64;
        if bits < 0 {
            i64::MIN - bits
        } else {
            bits
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

#[test]
fn exp_within_documented_bound_every_tier() {
    // Dense sweep of [−104, 0] plus the edges.
    let count = 1 << 20;
    let mut xs: Vec<f32> = (0..=count)
        .map(|i| -104.0 * i as f32 / count as f32)
        .collect();
    xs.extend([
        0.0,
        -0.0,
        f32::NEG_INFINITY,
        -103.9,
        -103.3,
        -87.3,
        -87.4,
        -1e-30,
        -f32::MIN_POSITIVE,
        -200.0,
        f32::MIN,
    ]);
    for isa in supported_tiers() {
        let mut ys = xs.clone();
        // Odd lengths exercise the scalar tail.
        let (head, tail) = ys.split_at_mut(xs.len() - 3);
        testing::exp_in_place(isa, head).unwrap();
        testing::exp_in_place(isa, tail).unwrap();
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = (x as f64).exp();
            if want < f32::MIN_POSITIVE as f64 {
                // Subnormal range: within one subnormal step, and exactly 0 below 2^-150.
                assert!(
                    (y as f64 - want).abs() <= 1.5 * 2f64.powi(-149),
                    "{isa} exp({x}) = {y}, want {want}"
                );
                if want < 2f64.powi(-150) * 0.99 {
                    assert_eq!(y, 0.0, "{isa} exp({x}) must underflow to 0");
                }
            } else {
                let ulps = ulp_distance(y, want as f32);
                assert!(ulps <= 4, "{isa} exp({x}) = {y}, want {want}: {ulps} ulp");
            }
        }
        let mut special = [
            f32::NAN,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            -1.0,
            -2.0,
            -3.0,
            -4.0,
        ];
        testing::exp_in_place(isa, &mut special).unwrap();
        assert!(special[0].is_nan(), "{isa}: NaN must stay NaN");
        // NaN and −∞ in every lane position of the vector paths, not only the scalar tail.
        for at in 0..32 {
            let mut lanes = vec![-1.5f32; 32];
            lanes[at] = f32::NAN;
            lanes[(at + 7) % 32] = f32::NEG_INFINITY;
            testing::exp_in_place(isa, &mut lanes).unwrap();
            assert!(lanes[at].is_nan(), "{isa}: NaN at lane {at} must stay NaN");
            assert_eq!(
                lanes[(at + 7) % 32],
                0.0,
                "{isa}: exp(-inf) at lane {}",
                (at + 7) % 32
            );
        }
        assert_eq!(special[1], 0.0, "{isa}: exp(-inf) = 0");
        assert_eq!(special[2], 1.0);
        assert_eq!(special[3], 1.0);
    }
}

#[test]
fn tiers_are_refused_when_missing() {
    for isa in Isa::ALL {
        let mut v = [0.0f32; 4];
        assert_eq!(
            testing::exp_in_place(isa, &mut v).is_ok(),
            isa.is_supported()
        );
    }
}
