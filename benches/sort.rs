use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use smyrf::sort::{lab_sort, SortScratch};
use std::hint::black_box;

fn gaussian_keys(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| {
            let u1 = ((next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * 8.0) as f32
        })
        .collect()
}

fn lab(c: &mut Criterion) {
    let mut g = c.benchmark_group("lab");
    for &n in &[64usize, 128, 256, 1024, 4096, 16384, 65536, 1 << 20] {
        let keys = gaussian_keys(n, 7);
        let mut perm = vec![0u32; n];
        let mut scratch = SortScratch::default();
        g.throughput(Throughput::Elements(n as u64));
        let variants: &[u32] = if n <= 1024 { &[0, 8, 11] } else { &[8, 11] };
        for &bits in variants {
            g.bench_with_input(BenchmarkId::new(format!("bits{bits}"), n), &n, |b, _| {
                b.iter(|| lab_sort(bits, black_box(&keys), &mut perm, &mut scratch))
            });
        }
    }
}

criterion_group!(benches, lab);
criterion_main!(benches);
