//! End-to-end benchmark: SMYRF against the library's own dense attention, 8 heads,
//! d = dv = 64, with time, useful GFLOP/s (design §7), the fraction of the all-core FMA peak
//! measured in the same run, the share of each pipeline stage, and the speed-up over dense.
//!
//! `cargo bench --bench end_to_end` (criterion on a few shapes, then the table), or
//! `cargo bench --bench end_to_end -- --summary` for the tables alone; `SMYRF_BENCH_N=4096,16384`
//! restricts the lengths of the main table. A second table times short sequences on one
//! thread and reports the crossover length from which SMYRF is faster than dense attention.
//!
//! Tensors start on a 64-byte boundary, as inference engines allocate them (PyTorch's CPU
//! allocator, ggml, ONNX Runtime): a 256-byte row then spans four cache lines.
//! `SMYRF_BENCH_SKEW=16` starts them 16 bytes past one instead, as a plain `malloc` or `Vec`
//! may, so that every row spans five.

use criterion::{black_box, Criterion};
use smyrf::internals::{self as testing, profile_stages};
use smyrf::{detected_isa, Config, Plan, TensorView, TensorViewMut};
use std::time::Instant;

const HEADS: usize = 8;
const D: usize = 64;
const CONFIGS: [(usize, usize); 4] = [(1, 128), (2, 64), (4, 32), (2, 128)];

/// A tensor buffer whose data starts `skew` bytes past a 64-byte boundary.
struct Buffer {
    store: Vec<f32>,
    start: usize,
    len: usize,
}

impl Buffer {
    fn new(values: impl ExactSizeIterator<Item = f32>) -> Buffer {
        let skew: usize = std::env::var("SMYRF_BENCH_SKEW")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let len = values.len();
        let mut store = Vec::with_capacity(len + 32);
        let to_boundary = (64 - store.as_ptr() as usize % 64) % 64;
        let start = (to_boundary + skew % 64) / 4;
        store.resize(start, 0.0);
        store.extend(values);
        Buffer { store, start, len }
    }
    fn get(&self) -> &[f32] {
        &self.store[self.start..self.start + self.len]
    }
    fn get_mut(&mut self) -> &mut [f32] {
        &mut self.store[self.start..self.start + self.len]
    }
}

struct Inputs {
    q: Buffer,
    k: Buffer,
    v: Buffer,
    out: Buffer,
    n: usize,
}

impl Inputs {
    fn new(n: usize) -> Inputs {
        let len = HEADS * n * D;
        let gen = |seed: usize| {
            Buffer::new(
                (0..len)
                    .map(move |i| (((i * 2654435761 + seed) >> 7) % 2001) as f32 / 1000.0 - 1.0),
            )
        };
        Inputs {
            q: gen(1),
            k: gen(2),
            v: gen(3),
            out: Buffer::new(std::iter::repeat_n(0.0, len)),
            n,
        }
    }
    fn smyrf(&mut self, plan: &Plan) {
        let n = self.n;
        let q = TensorView::bhnd(self.q.get(), 1, HEADS, n, D).unwrap();
        let k = TensorView::bhnd(self.k.get(), 1, HEADS, n, D).unwrap();
        let v = TensorView::bhnd(self.v.get(), 1, HEADS, n, D).unwrap();
        let mut out = TensorViewMut::bhnd(self.out.get_mut(), 1, HEADS, n, D).unwrap();
        plan.attention(&q, &k, &v, &mut out).unwrap();
    }
    fn dense(&mut self) {
        let n = self.n;
        let q = TensorView::bhnd(self.q.get(), 1, HEADS, n, D).unwrap();
        let k = TensorView::bhnd(self.k.get(), 1, HEADS, n, D).unwrap();
        let v = TensorView::bhnd(self.v.get(), 1, HEADS, n, D).unwrap();
        let mut out = TensorViewMut::bhnd(self.out.get_mut(), 1, HEADS, n, D).unwrap();
        smyrf::Plan::new(smyrf::Config::default(), q.shape().dim)
            .and_then(|plan| {
                plan.dense_attention_with(&q, &k, &v, &mut out, smyrf::CallOptions::new())
            })
            .unwrap();
    }
}

fn plan(rounds: usize, cluster: usize, threads: usize) -> Plan {
    Plan::new(
        Config::default()
            .n_hashes(rounds)
            .q_cluster_size(cluster)
            .num_threads(threads),
        D,
    )
    .unwrap()
}

fn best_time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// FMA peak of `threads` cores running the tier's peak loop at once, GFLOP/s: the sum of the
/// rates each thread measures over its own loop (so a thread that starts late does not count
/// as slow), best of 7 runs (a 2-vCPU guest loses a run now and then to the hypervisor).
fn all_core_peak(threads: usize) -> f64 {
    let isa = detected_isa();
    let iterations = 20_000_000;
    (0..7)
        .map(|_| {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(move || {
                            let t = Instant::now();
                            let (flops, v) = testing::fma_peak(isa, iterations).unwrap();
                            black_box(v);
                            flops / t.elapsed().as_secs_f64() / 1e9
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum::<f64>()
            })
        })
        .fold(0.0, f64::max)
}

/// Times in µs as table cells: `a | b | …`.
fn cells(times_us: &[f64]) -> String {
    times_us
        .iter()
        .map(|t| format!("{t:.0}"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Useful flops of SMYRF (design §7) for this shape: 2·R·Nq·(n'/C)·(d + dv) per head.
fn smyrf_flops(n: usize, rounds: usize, cluster: usize) -> f64 {
    let clusters = n.div_ceil(cluster).max(1) as f64;
    HEADS as f64 * 2.0 * rounds as f64 * n as f64 * (n as f64 / clusters) * (2 * D) as f64
}

fn dense_flops(n: usize) -> f64 {
    HEADS as f64 * 2.0 * (n as f64).powi(2) * (2 * D) as f64
}

fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn summary() {
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    println!(
        "\nend-to-end, 8 heads, d = dv = 64, tier {}",
        detected_isa()
    );
    let peaks: Vec<f64> = (1..=cores).map(all_core_peak).collect();
    for (t, p) in peaks.iter().enumerate() {
        println!("all-core FMA peak, {} thread(s): {p:.1} GFLOP/s", t + 1);
    }
    println!("| N | R | c | threads | SMYRF ms | useful GFLOP/s | % of peak | proj | sort | gather | kernels | combine | dense ms | speed-up |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // SMYRF_BENCH_N=16384 (comma-separated) restricts the lengths.
    let lengths: Vec<usize> = std::env::var("SMYRF_BENCH_N")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1024, 4096, 16384, 65536]);
    for n in lengths {
        let mut inputs = Inputs::new(n);
        for threads in 1..=cores {
            let dense_ms = if n <= 16384 {
                let runs = if n <= 4096 { 3 } else { 1 };
                Some(with_threads(threads, || best_time(runs, || inputs.dense())) * 1e3)
            } else {
                None
            };
            for (rounds, cluster) in CONFIGS {
                let p = plan(rounds, cluster, threads);
                let t = best_time(if n >= 65536 { 2 } else { 5 }, || inputs.smyrf(&p));
                let stages = profile_stages(|| inputs.smyrf(&p));
                let total: f64 = stages.iter().sum();
                let share = |i: usize| 100.0 * stages[i] / total;
                let g = smyrf_flops(n, rounds, cluster) / t / 1e9;
                let dense = dense_ms.map_or("-".to_string(), |ms| format!("{ms:.1}"));
                let speedup =
                    dense_ms.map_or("-".to_string(), |ms| format!("{:.1}x", ms / (t * 1e3)));
                println!(
                    "| {n} | {rounds} | {cluster} | {threads} | {:.2} | {g:.1} | {:.0}% | {:.0}% | {:.0}% | {:.0}% | {:.0}% | {:.0}% | {dense} | {speedup} |",
                    t * 1e3,
                    100.0 * g / peaks[threads - 1],
                    share(0), share(1), share(2), share(3), share(4)
                );
            }
            if let Some(ms) = dense_ms {
                let g = dense_flops(n) / (ms * 1e-3) / 1e9;
                println!(
                    "| {n} | dense | - | {threads} | {ms:.1} | {g:.1} | {:.0}% | | | | | | | |",
                    100.0 * g / peaks[threads - 1]
                );
            }
        }
    }
}

fn criterion_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("end_to_end");
    group.sample_size(10);
    let mut inputs = Inputs::new(4096);
    for (rounds, cluster) in CONFIGS {
        let p = plan(rounds, cluster, 0);
        group.bench_function(format!("smyrf_n4096_r{rounds}_c{cluster}"), |b| {
            b.iter(|| inputs.smyrf(&p))
        });
    }
    group.bench_function("dense_n4096", |b| b.iter(|| inputs.dense()));
    group.finish();
}

/// The crossover: for each config, SMYRF and dense times on short sequences, one thread, and
/// the shortest length from which SMYRF is faster.
fn crossover() {
    const LENGTHS: [usize; 8] = [64, 128, 192, 256, 320, 384, 512, 768];
    println!("\ncrossover, 8 heads, d = dv = 64, 1 thread (times in µs)");
    let header: Vec<String> = LENGTHS.iter().map(|n| format!("N={n}")).collect();
    println!("| R | c | {} | SMYRF faster from |", header.join(" | "));
    println!("|---|---|{}---|", "---|".repeat(LENGTHS.len()));
    let mut inputs: Vec<Inputs> = LENGTHS.iter().map(|&n| Inputs::new(n)).collect();
    let dense_us: Vec<f64> = inputs
        .iter_mut()
        .map(|x| with_threads(1, || best_time(20, || x.dense())) * 1e6)
        .collect();
    println!("| dense | - | {} | - |", cells(&dense_us));
    for (rounds, cluster) in CONFIGS {
        let p = plan(rounds, cluster, 1);
        let smyrf_us: Vec<f64> = inputs
            .iter_mut()
            .map(|x| best_time(20, || x.smyrf(&p)) * 1e6)
            .collect();
        // The shortest length from which SMYRF stays faster over the rest of the sweep.
        let from = (0..LENGTHS.len())
            .find(|&i| (i..LENGTHS.len()).all(|j| smyrf_us[j] < dense_us[j]))
            .map_or("-".to_string(), |i| format!("N = {}", LENGTHS[i]));
        println!("| {rounds} | {cluster} | {} | {from} |", cells(&smyrf_us));
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--summary") {
        let mut c = Criterion::default().configure_from_args();
        criterion_benches(&mut c);
        c.final_summary();
    }
    // Criterion's `--test` runs every benchmark once (CI does so under qemu on aarch64,
    // where timings mean nothing): the timing tables are left out.
    if std::env::args().any(|a| a == "--test") {
        println!("--test: every benchmark ran once; the timing tables are not measured");
        return;
    }
    summary();
    crossover();
}
