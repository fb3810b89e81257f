//! Kernel benchmarks: projection, cluster attention and exp for every tier this CPU
//! has, each reported as GFLOP/s and as a fraction of the tier's single-core fp32 FMA peak,
//! measured by a peak microbenchmark in the same run; and the f16/bf16 conversions, as GB/s
//! moved and as speed against a plain copy of their f32 side in the same run. Single thread.
//!
//! `cargo bench --bench kernels` (criterion timings, then the summary table on stdout).

use criterion::{black_box, criterion_group, Criterion, Throughput};
use smyrf::internals::{self as testing, supported_tiers};
use smyrf::Isa;
use std::time::Instant;

const Q_TILE: usize = 64;

/// Best-of timing of `f` in seconds (at least `min_time` of runs).
fn time_best(min_time: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed().as_secs_f64() < min_time {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn peak_gflops(isa: Isa) -> f64 {
    let iterations = 20_000_000;
    let mut best = f64::INFINITY;
    let mut flops = 0.0;
    for _ in 0..5 {
        let t = Instant::now();
        let (f, v) = testing::fma_peak(isa, iterations).unwrap();
        black_box(v);
        best = best.min(t.elapsed().as_secs_f64());
        flops = f;
    }
    flops / best / 1e9
}

struct Projection {
    data: Vec<f32>,
    a_t: Vec<f32>,
    norms: Vec<f32>,
    out: Vec<f32>,
    n: usize,
    d: usize,
    rounds: usize,
}

impl Projection {
    fn new(n: usize, d: usize, rounds: usize) -> Projection {
        let data: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
            .collect();
        let a_t: Vec<f32> = (0..rounds * (d + 2))
            .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.5)
            .collect();
        Projection {
            data,
            a_t,
            norms: vec![0.0; n],
            out: vec![0.0; rounds * n],
            n,
            d,
            rounds,
        }
    }
    /// Norms and hashes with the lift: 2·d flops per norm, 2·(d + 1) per hash.
    fn run(&mut self, isa: Isa) {
        testing::project(
            isa,
            &self.data,
            self.d,
            self.d,
            None,
            100.0,
            &self.a_t,
            self.d + 1,
            &mut self.norms,
            &mut self.out,
        )
        .unwrap();
    }
    fn flops(&self) -> f64 {
        (self.n * (2 * self.d + self.rounds * 2 * (self.d + 1))) as f64
    }
}

/// One gathered cluster of c queries and c keys, attended in query tiles as the pipeline does.
struct Cluster {
    q: Vec<f32>,
    kt: Vec<f32>,
    v: Vec<f32>,
    s: Vec<f32>,
    acc: Vec<f32>,
    stats: Vec<f32>,
    c: usize,
    d: usize,
    dv: usize,
}

impl Cluster {
    fn new(c: usize, d: usize, dv: usize) -> Cluster {
        let ldk = c.div_ceil(16) * 16;
        let gen = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| (((i + seed) * 7919) % 1009) as f32 / 1009.0 - 0.5)
                .collect()
        };
        Cluster {
            q: gen(c * d, 1),
            kt: gen(d * ldk, 2),
            v: gen(c * dv, 3),
            s: vec![0.0; Q_TILE * ldk],
            acc: vec![0.0; Q_TILE * dv],
            stats: vec![0.0; 3 * Q_TILE],
            c,
            d,
            dv,
        }
    }
    fn run(&mut self, isa: Isa) {
        let ldk = self.c.div_ceil(16) * 16;
        for q0 in (0..self.c).step_by(Q_TILE) {
            let m = Q_TILE.min(self.c - q0);
            let q = &self.q[q0 * self.d..(q0 + m) * self.d];
            testing::qk(isa, q, &self.kt, m, self.d, ldk, 0.125, &mut self.s).unwrap();
            let (mx, rest) = self.stats.split_at_mut(Q_TILE);
            let (sum, corr) = rest.split_at_mut(Q_TILE);
            mx.fill(f32::NEG_INFINITY);
            sum.fill(0.0);
            testing::softmax(isa, &mut self.s, m, ldk, mx, sum, corr).unwrap();
            testing::pv(
                isa,
                &self.s,
                &self.v,
                m,
                self.c,
                ldk,
                self.dv,
                None,
                &mut self.acc,
            )
            .unwrap();
        }
    }
    fn flops(&self) -> f64 {
        (2 * self.c * self.c * (self.d + self.dv)) as f64
    }
}

/// The four 16-bit conversions over one buffer of `n` values.
struct Conversion {
    halves: Vec<u16>,
    floats: Vec<f32>,
    copy: Vec<f32>,
}

/// The summary's sizes of the f32 side: well inside L2, most of a 2 MiB L2 with the 16-bit
/// side, and far past the caches.
const CONVERSION_BYTES: [usize; 3] = [64 << 10, 1 << 20, 16 << 20];

impl Conversion {
    /// Buffers of `n` values: finite f16/bf16 patterns of both signs and floats in range.
    fn new(n: usize) -> Conversion {
        Conversion {
            halves: (0..n)
                .map(|i| ((i * 7919) % 0x7c00) as u16 | ((i as u16 & 1) << 15))
                .collect(),
            floats: (0..n)
                .map(|i| ((i * 7919) % 100_003) as f32 - 50_000.0)
                .collect(),
            copy: vec![0.0; n],
        }
    }
    const NAMES: [&str; 4] = ["widen f16", "widen bf16", "narrow f16", "narrow bf16"];
    /// Runs conversion `which` (an index into `NAMES`).
    fn run(&mut self, isa: Isa, which: usize) {
        use testing::convert as cv;
        match which {
            0 => cv::widen_f16(isa, &self.halves, &mut self.floats),
            1 => cv::widen_bf16(isa, &self.halves, &mut self.floats),
            2 => cv::narrow_f16(isa, &self.floats, &mut self.halves),
            _ => cv::narrow_bf16(isa, &self.floats, &mut self.halves),
        }
        .unwrap();
        black_box((&self.halves, &self.floats));
    }
    /// The baseline: a plain copy of the f32 side.
    fn copy(&mut self) {
        self.copy.copy_from_slice(black_box(&self.floats));
        black_box(&self.copy);
    }
    /// Bytes read and written by one conversion.
    fn bytes(&self) -> f64 {
        (self.halves.len() * 6) as f64
    }
}

fn criterion_benches(c: &mut Criterion) {
    for isa in supported_tiers() {
        let mut group = c.benchmark_group(format!("projection/{isa}"));
        for rounds in [1, 4, 8] {
            let mut p = Projection::new(16384, 64, rounds);
            group.throughput(Throughput::Elements(p.flops() as u64));
            group.bench_function(format!("n16384_d64_r{rounds}"), |b| b.iter(|| p.run(isa)));
        }
        group.finish();
        let mut group = c.benchmark_group(format!("cluster_attention/{isa}"));
        for size in [32, 64, 128, 256] {
            let mut cl = Cluster::new(size, 64, 64);
            group.throughput(Throughput::Elements(cl.flops() as u64));
            group.bench_function(format!("c{size}_d64_dv64"), |b| b.iter(|| cl.run(isa)));
        }
        group.finish();
        let mut group = c.benchmark_group(format!("exp/{isa}"));
        let mut values: Vec<f32> = (0..65536).map(|i| -(i as f32) / 1000.0).collect();
        group.throughput(Throughput::Elements(values.len() as u64));
        group.bench_function("n65536", |b| {
            b.iter(|| testing::exp_in_place(isa, black_box(&mut values)).unwrap())
        });
        group.finish();
        let mut group = c.benchmark_group(format!("convert/{isa}"));
        let mut conv = Conversion::new(1 << 18);
        group.throughput(Throughput::Bytes(conv.bytes() as u64));
        for (which, name) in Conversion::NAMES.iter().enumerate() {
            let id = format!("{}_n262144", name.replace(' ', "_"));
            group.bench_function(id, |b| b.iter(|| conv.run(isa, which)));
        }
        group.finish();
    }
}

/// The table of GFLOP/s and fraction of peak, printed after the criterion runs.
fn summary() {
    println!(
        "\nsingle-thread kernel summary ({} )",
        std::env::consts::ARCH
    );
    println!("| tier | peak GFLOP/s | kernel | shape | GFLOP/s | % of peak |");
    println!("|---|---|---|---|---|---|");
    for isa in supported_tiers() {
        let peak = peak_gflops(isa);
        for rounds in [1, 4, 8] {
            let mut p = Projection::new(16384, 64, rounds);
            let t = time_best(0.3, || p.run(isa));
            let g = p.flops() / t / 1e9;
            println!(
                "| {isa} | {peak:.1} | projection | N=16384 d=64 R={rounds} | {g:.1} | {:.0}% |",
                100.0 * g / peak
            );
        }
        for size in [32, 64, 128, 256] {
            let mut cl = Cluster::new(size, 64, 64);
            let t = time_best(0.3, || cl.run(isa));
            let g = cl.flops() / t / 1e9;
            println!(
                "| {isa} | {peak:.1} | cluster attention | c={size} d=dv=64 | {g:.1} | {:.0}% |",
                100.0 * g / peak
            );
        }
        let mut values: Vec<f32> = (0..65536).map(|i| -(i as f32) / 1000.0).collect();
        let t = time_best(0.3, || testing::exp_in_place(isa, &mut values).unwrap());
        println!(
            "| {isa} | {peak:.1} | exp | 65536 values | {:.2} Gexp/s | - |",
            values.len() as f64 / t / 1e9
        );
    }
}

/// The conversions' table: GB/s moved (2 + 4 bytes a value) and the speed against a plain
/// copy of the f32 side (8 bytes a value moved), measured in the same run.
fn conversion_summary() {
    println!(
        "\nsingle-thread conversion summary ({})",
        std::env::consts::ARCH
    );
    println!("| tier | conversion | f32 side | GB/s | speed / f32 copy |");
    println!("|---|---|---|---|---|");
    for bytes in CONVERSION_BYTES {
        let mut conv = Conversion::new(bytes / 4);
        let copy = time_best(0.3, || conv.copy());
        for isa in supported_tiers() {
            for (which, name) in Conversion::NAMES.iter().enumerate() {
                let t = time_best(0.3, || conv.run(isa, which));
                println!(
                    "| {isa} | {name} | {} KiB | {:.1} | {:.2} |",
                    bytes >> 10,
                    conv.bytes() / t / 1e9,
                    copy / t
                );
            }
        }
    }
}

criterion_group!(benches, criterion_benches);

fn main() {
    let summary_only = std::env::args().any(|a| a == "--summary");
    if !summary_only {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    // Criterion's `--test` runs every benchmark once (CI does so under qemu on aarch64,
    // where timings mean nothing): the timing table is left out.
    if std::env::args().any(|a| a == "--test") {
        println!("--test: every benchmark ran once; the timing table is not measured");
        return;
    }
    summary();
    conversion_summary();
}
