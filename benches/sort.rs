//! Cluster assignment's sort (design §4): the radix argsort against the standard
//! library's stable (`sort_by`) and unstable (`sort_unstable_by`) sorts doing the same job,
//! from f32 keys to a u32 permutation, on hash-like keys (a sum of four uniforms, roughly
//! Gaussian, as ALSH hashes are). Rates are keys per second.
//!
//! Groups: `argsort` (the three sorts by size), `argsort_tiers` (the radix sort in every
//! supported tier: they differ only in the vectorised key map), `argsort_many` (the
//! pipeline's batched call against one sort of all keys, a lower bound for sorting every
//! segment at once with its id in the high key bits).
//!
//! Short run: `cargo bench --bench sort -- --warm-up-time 1 --measurement-time 2`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use smyrf::internals::sort::{argsort_into, argsort_many, SortScratch};
use smyrf::{detected_isa, Isa};
use std::hint::black_box;

/// Hash-like keys from splitmix64: a sum of four uniforms in [-4, 4).
fn hash_keys(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    let mut uniform = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * 4.0
    };
    (0..n)
        .map(|_| uniform() + uniform() + uniform() + uniform())
        .collect()
}

/// The standard library doing the radix sort's job: pair each key with its index, sort the
/// pairs (stably or not), read the indices out.
fn std_argsort(keys: &[f32], perm: &mut [u32], pairs: &mut Vec<(f32, u32)>, stable: bool) {
    pairs.clear();
    pairs.extend(keys.iter().enumerate().map(|(i, &x)| (x, i as u32)));
    if stable {
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    } else {
        pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    }
    for (slot, &(_, index)) in perm.iter_mut().zip(pairs.iter()) {
        *slot = index;
    }
}

fn argsort(c: &mut Criterion) {
    let mut group = c.benchmark_group("argsort");
    let isa = detected_isa();
    for &n in &[1usize << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 20] {
        let keys = hash_keys(n, n as u64);
        let mut perm = vec![0u32; n];
        let mut scratch = SortScratch::default();
        let mut pairs = Vec::with_capacity(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("radix", n), &keys, |b, keys| {
            b.iter(|| argsort_into(isa, black_box(keys), &mut perm, &mut scratch))
        });
        group.bench_with_input(BenchmarkId::new("sort_by", n), &keys, |b, keys| {
            b.iter(|| std_argsort(black_box(keys), &mut perm, &mut pairs, true))
        });
        group.bench_with_input(BenchmarkId::new("sort_unstable_by", n), &keys, |b, keys| {
            b.iter(|| std_argsort(black_box(keys), &mut perm, &mut pairs, false))
        });
    }
    group.finish();
}

fn argsort_tiers(c: &mut Criterion) {
    let mut group = c.benchmark_group("argsort_tiers");
    for &n in &[1usize << 10, 1 << 14] {
        let keys = hash_keys(n, 3);
        let mut perm = vec![0u32; n];
        let mut scratch = SortScratch::default();
        group.throughput(Throughput::Elements(n as u64));
        for isa in Isa::ALL.into_iter().filter(|isa| isa.is_supported()) {
            group.bench_with_input(BenchmarkId::new(isa.name(), n), &keys, |b, keys| {
                b.iter(|| argsort_into(isa, black_box(keys), &mut perm, &mut scratch))
            });
        }
    }
    group.finish();
}

fn argsort_many_batched(c: &mut Criterion) {
    let mut group = c.benchmark_group("argsort_many");
    let isa = detected_isa();
    let (segments, n) = (8, 1 << 14);
    let keys = hash_keys(segments * n, 5);
    let lens = vec![n; segments];
    let mut perm = vec![0u32; keys.len()];
    let mut scratch = SortScratch::default();
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function(BenchmarkId::new("8_segments", n), |b| {
        b.iter(|| argsort_many(isa, black_box(&keys), &lens, &mut perm, &mut scratch))
    });
    group.bench_function(BenchmarkId::new("one_sort_of_all", segments * n), |b| {
        b.iter(|| argsort_into(isa, black_box(&keys), &mut perm, &mut scratch))
    });
    group.finish();
}

criterion_group!(benches, argsort, argsort_tiers, argsort_many_batched);
criterion_main!(benches);
