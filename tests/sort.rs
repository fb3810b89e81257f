//! The radix argsort (docs/design.md §4) against an independent oracle: `slice::sort_by` on
//! `(key, index)` pairs with `f32::total_cmp`, after every NaN is replaced by one positive
//! quiet NaN. `total_cmp` orders −∞ < finite < +∞ and −0.0 < +0.0, and the canonical NaN
//! sorts after +∞ and ties with the other NaNs, which the stable `sort_by` keeps in input
//! order: exactly the documented order. Every tier the CPU supports is tested.

mod common;
use common::Rng;
use smyrf::internals::sort::{
    argsort_into, argsort_many, ordered_key, radix_argsort_f32, SortScratch,
};
use smyrf::Isa;
use std::cmp::Ordering;

/// Special values: both infinities, both zeros, NaNs of both signs with several payloads
/// (quiet and signalling), subnormals, the extreme finite values.
fn specials() -> Vec<f32> {
    vec![
        f32::NEG_INFINITY,
        f32::INFINITY,
        -0.0,
        0.0,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7FC0_0001),
        f32::from_bits(0xFFC1_2345),
        f32::from_bits(0x7F80_0001), // signalling NaN
        f32::from_bits(0xFF80_0001),
        f32::from_bits(0x7FFF_FFFF),
        f32::from_bits(0xFFFF_FFFF),
        f32::from_bits(1), // smallest subnormal
        -f32::from_bits(1),
        f32::from_bits(0x007F_FFFF), // largest subnormal
        -f32::from_bits(0x007F_FFFF),
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::MAX,
        f32::MIN,
        1.0,
        -1.0,
    ]
}

#[derive(Clone, Copy, Debug)]
enum Dist {
    /// Sum of uniforms, roughly Gaussian: what ALSH hashes look like.
    Hashes,
    /// Uniformly random bit patterns: every exponent, NaNs, infinities, subnormals.
    RandomBits,
    /// Values from a set of 7, so long runs of equal keys (stability).
    FewDistinct,
    /// Ascending already.
    Sorted,
    /// Descending.
    Reversed,
    /// One value repeated: every pass is skipped.
    AllEqual,
    /// Mostly the special values, with some ordinary ones.
    Specials,
}

const DISTS: [Dist; 7] = [
    Dist::Hashes,
    Dist::RandomBits,
    Dist::FewDistinct,
    Dist::Sorted,
    Dist::Reversed,
    Dist::AllEqual,
    Dist::Specials,
];

fn make_keys(dist: Dist, n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed ^ (n as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let specials = specials();
    let mut keys: Vec<f32> = match dist {
        Dist::Hashes => (0..n)
            .map(|_| (0..4).map(|_| rng.symmetric(4.0)).sum())
            .collect(),
        Dist::RandomBits => (0..n).map(|_| f32::from_bits(rng.next_u32())).collect(),
        Dist::FewDistinct => {
            let values = [-2.5f32, -0.0, 0.0, 1.0, 3.25, f32::NAN, -f32::NAN];
            (0..n)
                .map(|_| values[rng.below_by_multiply(values.len())])
                .collect()
        }
        Dist::Sorted | Dist::Reversed => (0..n).map(|_| rng.symmetric(100.0)).collect(),
        Dist::AllEqual => vec![-1.75; n],
        Dist::Specials => (0..n)
            .map(|_| {
                if rng.below_by_multiply(4) == 0 {
                    rng.symmetric(10.0)
                } else {
                    specials[rng.below_by_multiply(specials.len())]
                }
            })
            .collect(),
    };
    match dist {
        Dist::Sorted => keys.sort_by(f32::total_cmp),
        Dist::Reversed => keys.sort_by(|a, b| b.total_cmp(a)),
        _ => {}
    }
    keys
}

/// The documented order, through an independent route: `total_cmp` with every NaN first
/// made the one positive quiet NaN.
fn oracle_cmp(a: f32, b: f32) -> Ordering {
    let canonical = |x: f32| if x.is_nan() { f32::NAN } else { x };
    canonical(a).total_cmp(&canonical(b))
}

/// The oracle's permutation: a stable comparison sort of `(key, index)` pairs.
fn oracle_perm(keys: &[f32]) -> Vec<u32> {
    let mut pairs: Vec<(f32, u32)> = keys
        .iter()
        .enumerate()
        .map(|(i, &x)| (x, i as u32))
        .collect();
    pairs.sort_by(|a, b| oracle_cmp(a.0, b.0));
    pairs.into_iter().map(|(_, index)| index).collect()
}

fn supported_isas() -> Vec<Isa> {
    let isas: Vec<Isa> = Isa::ALL
        .into_iter()
        .filter(|isa| isa.is_supported())
        .collect();
    assert!(isas.contains(&Isa::Portable));
    isas
}

/// Checks one input through every entry point and tier against `expected`.
fn check_all_entry_points(keys: &[f32], expected: &[u32], what: &str) {
    assert_eq!(
        radix_argsort_f32(keys),
        expected,
        "radix_argsort_f32: {what}"
    );
    let mut scratch = SortScratch::default();
    for isa in supported_isas() {
        let mut perm = vec![u32::MAX; keys.len()];
        argsort_into(isa, keys, &mut perm, &mut scratch);
        assert!(perm == expected, "argsort_into {isa}: {what}");
        // Again with the scratch already grown (and dirty): the same permutation.
        perm.fill(u32::MAX);
        argsort_into(isa, keys, &mut perm, &mut scratch);
        assert!(perm == expected, "argsort_into {isa}, second call: {what}");
        perm.fill(u32::MAX);
        argsort_many(isa, keys, &[keys.len()], &mut perm, &mut scratch);
        assert!(perm == expected, "argsort_many {isa}, one segment: {what}");
    }
}

fn check_lengths(lengths: &[usize], dists: &[Dist]) {
    for &n in lengths {
        for &dist in dists {
            let keys = make_keys(dist, n, 1);
            let expected = oracle_perm(&keys);
            check_all_entry_points(&keys, &expected, &format!("{dist:?}, n = {n}"));
        }
    }
}

#[test]
fn ordered_key_follows_documented_order() {
    let ascending = [
        f32::NEG_INFINITY,
        f32::MIN,
        -1.0,
        -f32::MIN_POSITIVE,
        -f32::from_bits(0x007F_FFFF),
        -f32::from_bits(1),
        -0.0,
        0.0,
        f32::from_bits(1),
        f32::from_bits(0x007F_FFFF),
        f32::MIN_POSITIVE,
        1.0,
        f32::MAX,
        f32::INFINITY,
    ];
    for pair in ascending.windows(2) {
        assert!(
            ordered_key(pair[0]) < ordered_key(pair[1]),
            "{:?} !< {:?}",
            pair[0],
            pair[1]
        );
    }
    for nan in specials().into_iter().filter(|x| x.is_nan()) {
        assert_eq!(ordered_key(nan), u32::MAX, "{:#x}", nan.to_bits());
    }
    assert!(ordered_key(f32::INFINITY) < u32::MAX);
    assert_eq!(ordered_key(-0.0), 0x7FFF_FFFF);
    assert_eq!(ordered_key(0.0), 0x8000_0000);
}

#[test]
fn ordered_key_is_monotone_on_random_pairs() {
    let mut rng = Rng(99);
    for _ in 0..100_000 {
        let a = f32::from_bits(rng.next_u32());
        let b = f32::from_bits(rng.next_u32());
        assert_eq!(
            ordered_key(a).cmp(&ordered_key(b)),
            oracle_cmp(a, b),
            "{a:?} vs {b:?}"
        );
    }
}

#[test]
fn tiny_lengths() {
    check_lengths(&[0, 1, 2, 3, 7, 16, 17, 31, 64, 100], &DISTS);
}

#[test]
fn lengths_around_the_small_sort_threshold() {
    check_lengths(&[255, 256, 257, 258, 300, 511, 512, 513], &DISTS);
}

#[test]
fn lengths_around_block_and_vector_widths() {
    // Tails of the 8- and 16-wide key maps and of the 256-key count blocks.
    check_lengths(
        &[1000, 1023, 1024, 1025, 4095, 4096, 4097],
        &[Dist::Hashes, Dist::Specials],
    );
}

#[test]
fn lengths_around_64k() {
    check_lengths(&[65535, 65536, 65537], &DISTS);
}

#[test]
fn one_million_keys() {
    check_lengths(
        &[1_000_000],
        &[Dist::Hashes, Dist::RandomBits, Dist::FewDistinct],
    );
}

#[test]
fn special_values_in_detail() {
    // −∞ first, −0.0 before +0.0, +∞ before every NaN, NaNs in input order whatever their
    // sign or payload.
    let keys = [
        f32::NAN,
        1.0,
        -f32::NAN,
        0.0,
        f32::INFINITY,
        -0.0,
        f32::from_bits(0x7F80_0001),
        f32::NEG_INFINITY,
        -0.0,
        0.0,
        f32::from_bits(1),
        -f32::from_bits(1),
    ];
    let expected: Vec<u32> = vec![7, 11, 5, 8, 3, 9, 10, 1, 4, 0, 2, 6];
    assert_eq!(oracle_perm(&keys), expected);
    check_all_entry_points(&keys, &expected, "special values");
    // The same values past the small-sort threshold, repeated: the radix path.
    let long: Vec<f32> = keys.iter().copied().cycle().take(12 * 100).collect();
    check_all_entry_points(&long, &oracle_perm(&long), "special values, repeated");
}

/// The f32 whose ordered key is `key` (the inverse of the documented key map, for keys that
/// are not NaN).
fn from_ordered_key(key: u32) -> f32 {
    let bits = if key & 0x8000_0000 != 0 {
        key ^ 0x8000_0000
    } else {
        !key
    };
    f32::from_bits(bits)
}

#[test]
fn passes_are_skipped_when_digits_agree() {
    // The sort's digits (src/sort/mod.rs) are key bits 0–8, 9–17 and 18–31 from 4096 to 2^18
    // keys, bits 0–9, 10–19 and 20–31 otherwise; a pass whose digit is the same for every key is
    // skipped, so each of the 8 subsets of varying digits takes its own path, in both layouts.
    let mut rng = Rng(5);
    for n in [3000usize, 5000, 40_000, 300_000] {
        let low_bits = if (4096..=1 << 18).contains(&n) { 9 } else { 10 };
        let digits = [
            (0u32, low_bits),
            (low_bits, low_bits),
            (2 * low_bits, 32 - 2 * low_bits),
        ];
        for subset in 0..8u32 {
            let base = 0x9234_5678u32; // a positive finite value's key
            let keys: Vec<f32> = (0..n)
                .map(|_| {
                    let mut key = base;
                    for (d, &(shift, bits)) in digits.iter().enumerate() {
                        if subset >> d & 1 == 1 {
                            let mask = ((1u64 << bits) - 1) as u32;
                            // The top digit stays among the keys 0x2000_0000..0xC000_0000:
                            // finite values of both signs (no NaN keys).
                            let value = if d == 2 {
                                let (lo, hi) = (0x2000_0000u32 >> shift, 0xC000_0000u32 >> shift);
                                lo + rng.below_by_multiply((hi - lo) as usize) as u32
                            } else {
                                rng.next_u32() & mask
                            };
                            key = (key & !(mask << shift)) | (value << shift);
                        }
                    }
                    from_ordered_key(key)
                })
                .collect();
            assert!(keys.iter().all(|x| !x.is_nan()));
            check_all_entry_points(
                &keys,
                &oracle_perm(&keys),
                &format!("varying digits {subset:03b}, n = {n}"),
            );
        }
    }
}

#[test]
fn lengths_around_the_layout_switch() {
    // From 4096 to 2^18 keys the sort takes 9-bit low digits; otherwise 10-bit ones.
    check_lengths(
        &[4095, 4096, 1 << 18, (1 << 18) + 1],
        &[Dist::Hashes, Dist::RandomBits],
    );
}

#[test]
fn scratch_is_reused_across_layouts_and_key_ranges() {
    // The sort clears only the counters its previous call dirtied (the low histograms and the
    // top digits between that call's least and greatest key): alternate layouts, narrow and
    // wide key ranges through one scratch, every tier.
    let segments = [
        (Dist::RandomBits, 5000usize),
        (Dist::Hashes, 300_000),
        (Dist::AllEqual, 2000),
        (Dist::Hashes, 5000),
        (Dist::RandomBits, 270_000),
        (Dist::Specials, 1000),
        (Dist::Hashes, 3000),
        (Dist::FewDistinct, 300_000),
        (Dist::Hashes, 20_000),
    ];
    for isa in supported_isas() {
        let mut scratch = SortScratch::default();
        for (s, &(dist, n)) in segments.iter().enumerate() {
            let mut keys = make_keys(dist, n, s as u64);
            if s == 3 {
                // Tiny hashes: a different, narrow range of top digits.
                keys.iter_mut().for_each(|x| *x *= 1e-3);
            }
            let mut perm = vec![u32::MAX; n];
            argsort_into(isa, &keys, &mut perm, &mut scratch);
            assert!(
                perm == oracle_perm(&keys),
                "{isa}, segment {s} ({dist:?}, n = {n})"
            );
        }
    }
}

#[test]
fn lengths_around_the_narrow_word_limit() {
    // Up to 2^20 keys the last pass reads 32-bit words (top digit and index); past that,
    // 64-bit pairs.
    check_lengths(&[1 << 20, (1 << 20) + 1], &[Dist::Hashes, Dist::RandomBits]);
}

#[test]
fn argsort_many_sorts_each_segment_locally() {
    let lengths = [0usize, 5, 0, 300, 1, 70_000, 0, 256, 257, 2, 4097, 0];
    let mut rng = Rng(11);
    let mut keys = Vec::new();
    let mut expected = Vec::new();
    for (s, &len) in lengths.iter().enumerate() {
        let dist = DISTS[(s + rng.below_by_multiply(DISTS.len())) % DISTS.len()];
        let segment = make_keys(dist, len, s as u64);
        expected.extend(oracle_perm(&segment));
        keys.extend(segment);
    }
    for isa in supported_isas() {
        let mut scratch = SortScratch::default();
        let mut perm = vec![u32::MAX; keys.len()];
        argsort_many(isa, &keys, &lengths, &mut perm, &mut scratch);
        assert!(perm == expected, "argsort_many {isa}");
        // Segment by segment with argsort_into: the same.
        let mut single = vec![u32::MAX; keys.len()];
        let mut start = 0;
        for &len in &lengths {
            let range = start..start + len;
            argsort_into(isa, &keys[range.clone()], &mut single[range], &mut scratch);
            start += len;
        }
        assert!(single == expected, "argsort_into per segment {isa}");
    }
}

#[test]
fn argsort_many_like_the_pipeline() {
    // R rounds of queries, then R rounds of keys, as the plan calls it.
    let (rounds, nq, nk) = (4, 3000, 5000);
    let lengths: Vec<usize> = [nq; 4].into_iter().chain([nk; 4]).collect();
    assert_eq!(lengths.len(), 2 * rounds);
    let keys = make_keys(Dist::Hashes, rounds * (nq + nk), 3);
    let mut expected = Vec::new();
    let mut start = 0;
    for &len in &lengths {
        expected.extend(oracle_perm(&keys[start..start + len]));
        start += len;
    }
    let mut scratch = SortScratch::default();
    for isa in supported_isas() {
        let mut perm = vec![0; keys.len()];
        argsort_many(isa, &keys, &lengths, &mut perm, &mut scratch);
        assert!(perm == expected, "{isa}");
    }
}

#[test]
fn argsort_many_with_no_segments() {
    let mut scratch = SortScratch::default();
    argsort_many(Isa::Portable, &[], &[], &mut [], &mut scratch);
    argsort_many(Isa::Portable, &[], &[0, 0], &mut [], &mut scratch);
}

#[test]
fn every_tier_gives_identical_permutations() {
    for &dist in &DISTS {
        let keys = make_keys(dist, 20_000, 8);
        let reference = radix_argsort_f32(&keys);
        for isa in supported_isas() {
            let mut perm = vec![0; keys.len()];
            argsort_into(isa, &keys, &mut perm, &mut SortScratch::default());
            assert!(perm == reference, "{isa} differs on {dist:?}");
        }
    }
}

#[test]
fn scratch_is_reused_across_sizes() {
    let mut scratch = SortScratch::default();
    for (round, &n) in [10_000usize, 3, 300, 70_000, 0, 257, 10_000]
        .iter()
        .enumerate()
    {
        let keys = make_keys(Dist::Hashes, n, round as u64);
        let mut perm = vec![0; n];
        argsort_into(smyrf::detected_isa(), &keys, &mut perm, &mut scratch);
        assert_eq!(perm, oracle_perm(&keys), "n = {n}");
    }
}

#[test]
fn scratch_is_send_and_default() {
    fn assert_send<T: Send + Default>() {}
    assert_send::<SortScratch>();
}

#[test]
#[should_panic(expected = "length mismatch")]
fn argsort_into_rejects_length_mismatch() {
    argsort_into(
        Isa::Portable,
        &[1.0, 2.0],
        &mut [0],
        &mut SortScratch::default(),
    );
}

#[test]
#[should_panic(expected = "segments do not cover keys")]
fn argsort_many_rejects_short_segments() {
    argsort_many(
        Isa::Portable,
        &[1.0, 2.0, 3.0],
        &[1, 1],
        &mut [0; 3],
        &mut SortScratch::default(),
    );
}

#[test]
#[should_panic(expected = "segments do not cover keys")]
fn argsort_many_rejects_long_segments() {
    argsort_many(
        Isa::Portable,
        &[1.0],
        &[1, usize::MAX],
        &mut [0],
        &mut SortScratch::default(),
    );
}

#[test]
fn unsupported_tier_is_refused() {
    for isa in Isa::ALL.into_iter().filter(|isa| !isa.is_supported()) {
        let result = std::panic::catch_unwind(|| {
            argsort_into(isa, &[1.0], &mut [0], &mut SortScratch::default());
        });
        assert!(result.is_err(), "{isa} accepted");
    }
}
