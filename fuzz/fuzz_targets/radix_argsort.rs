//! `smyrf::sort` on arbitrary f32 bit patterns, checked against a stable comparison sort in
//! the documented order: −∞ < finite < +∞, −0.0 before +0.0, every NaN last, equal keys in
//! input order. Every tier the CPU supports runs, through `radix_argsort_f32`,
//! `argsort_into` and `argsort_many`.
//!
//! Input: byte 0 picks how often the key pattern is repeated (repeats make long runs of
//! equal keys, and lengths past the 384-key cut-over to the radix passes); the rest are the
//! keys, 4 bytes each.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smyrf::internals::sort::{argsort_into, argsort_many, radix_argsort_f32, SortScratch};
use smyrf::Isa;
use std::cmp::Ordering;

/// The documented order, written independently of the library's bit map.
fn documented_order(a: f32, b: f32) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => match a.partial_cmp(&b) {
            // Only ±0.0 compare equal with different bits: −0.0 comes first.
            Some(Ordering::Equal) => b.is_sign_negative().cmp(&a.is_sign_negative()),
            Some(order) => order,
            None => unreachable!("no NaN here"),
        },
    }
}

fn reference(keys: &[f32]) -> Vec<u32> {
    let mut perm: Vec<u32> = (0..keys.len() as u32).collect();
    // `sort_by` is stable: equal keys keep their input order.
    perm.sort_by(|&i, &j| documented_order(keys[i as usize], keys[j as usize]));
    perm
}

fn check(what: &str, keys: &[f32], got: &[u32], want: &[u32]) {
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: {} keys sorted wrongly, first difference at rank {first:?}",
            keys.len()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&repeat, bytes)) = data.split_first() else {
        return;
    };
    let pattern: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_bits(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    // Up to 1 + 15 repeats; capped so one case stays fast.
    let copies = 1 + (repeat as usize & 15);
    let keys: Vec<f32> = pattern
        .iter()
        .copied()
        .cycle()
        .take((pattern.len() * copies).min(1 << 14))
        .collect();
    let want = reference(&keys);

    check("radix_argsort_f32", &keys, &radix_argsort_f32(&keys), &want);

    let mut scratch = SortScratch::default();
    for isa in Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
        let mut perm = vec![u32::MAX; keys.len()];
        argsort_into(isa, &keys, &mut perm, &mut scratch);
        check(isa.name(), &keys, &perm, &want);

        // The same keys cut into segments (the pattern's length each), sorted in one call
        // with a scratch already used for the whole.
        if !pattern.is_empty() {
            let lens: Vec<usize> = keys.chunks(pattern.len()).map(<[f32]>::len).collect();
            let mut perm = vec![u32::MAX; keys.len()];
            argsort_many(isa, &keys, &lens, &mut perm, &mut scratch);
            let mut start = 0;
            for len in lens {
                let segment = &keys[start..start + len];
                check(
                    "argsort_many",
                    segment,
                    &perm[start..start + len],
                    &reference(segment),
                );
                start += len;
            }
        }
    }
});
