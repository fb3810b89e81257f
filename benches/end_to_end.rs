//! End-to-end benchmark: SMYRF against the library's own dense attention, 8 heads,
//! d = dv = 64, with time, useful GFLOP/s (design §7), the fraction of the all-core FMA peak
//! measured in the same run, the share of each pipeline stage, and the speed-up over dense.
//!
//! `cargo bench --bench end_to_end` (criterion on a few shapes, then the table), or
//! `cargo bench --bench end_to_end -- --summary` for the tables alone; `SMYRF_BENCH_N=4096,16384`
//! restricts the lengths of the main table. A second table times short sequences on one
//! thread and reports the crossover length from which SMYRF is faster than dense attention.
//!
//! A third table (`-- --types` for it alone; `SMYRF_BENCH_TYPES_N=16384,65536`, the default,
//! sets its lengths; 262144 puts f32 K and V, 1 GiB, beyond a 480 MiB last-level cache and
//! needs about 9 GiB of memory) times every element-type combination of the engine case
//! against the all-f32 call of the same run, with the projection's read bandwidth for
//! 16-bit rows. A fourth (`-- --causal` alone; `SMYRF_BENCH_CAUSAL_N`, default 4096,16384)
//! times causal self-attention: exact causal dense against non-causal dense, the causal
//! preset (design §8 blocks, `Config::causal(N/32)`) and causal
//! SMYRF against both.
//!
//! Tensors start on a 64-byte boundary, as inference engines allocate them (PyTorch's CPU
//! allocator, ggml, ONNX Runtime): a 256-byte row then spans four cache lines.
//! `SMYRF_BENCH_SKEW=16` starts them 16 bytes past one instead, as a plain `malloc` or `Vec`
//! may, so that every row spans five.

use criterion::{black_box, Criterion};
use half::{bf16, f16};
use smyrf::internals::{self as testing, profile_stages};
use smyrf::{detected_isa, CallOptions, Config, Element, KvIndex, Plan, TensorView, TensorViewMut};
use std::time::Instant;

const HEADS: usize = 8;
const D: usize = 64;
const CONFIGS: [(usize, usize); 4] = [(1, 128), (2, 64), (4, 32), (2, 128)];

/// A tensor buffer whose data starts `SMYRF_BENCH_SKEW` bytes (default 0) past a 64-byte
/// boundary, as an engine's aligned tensors do: where rows start decides how many cache
/// lines each gathered row costs.
struct Buffer<T = f32> {
    store: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy + Default> Buffer<T> {
    fn new(values: impl ExactSizeIterator<Item = T>) -> Buffer<T> {
        let skew: usize = std::env::var("SMYRF_BENCH_SKEW")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let size = std::mem::size_of::<T>();
        let len = values.len();
        let mut store = Vec::with_capacity(len + 128 / size);
        let to_boundary = (64 - store.as_ptr() as usize % 64) % 64;
        let start = (to_boundary + skew % 64) / size;
        store.resize(start, T::default());
        store.extend(values);
        Buffer { store, start, len }
    }
    fn get(&self) -> &[T] {
        &self.store[self.start..self.start + self.len]
    }
    fn get_mut(&mut self) -> &mut [T] {
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
    /// Causal SMYRF (`dense` false) or causal dense attention, self-attention.
    fn causal(&mut self, plan: &Plan, dense: bool) {
        let n = self.n;
        let q = TensorView::bhnd(self.q.get(), 1, HEADS, n, D).unwrap();
        let k = TensorView::bhnd(self.k.get(), 1, HEADS, n, D).unwrap();
        let v = TensorView::bhnd(self.v.get(), 1, HEADS, n, D).unwrap();
        let mut out = TensorViewMut::bhnd(self.out.get_mut(), 1, HEADS, n, D).unwrap();
        let options = CallOptions::new().causal();
        if dense {
            plan.dense_attention_with(&q, &k, &v, &mut out, options)
        } else {
            plan.attention_with(&q, &k, &v, &mut out, options)
        }
        .unwrap();
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
    let p = plan(2, 64, 0);
    group.bench_function("causal_smyrf_n4096_r2_c64", |b| {
        b.iter(|| inputs.causal(&p, false))
    });
    group.bench_function("causal_dense_n4096", |b| b.iter(|| inputs.causal(&p, true)));
    group.finish();
}

/// Causal self-attention: the library's exact causal dense attention against its non-causal
/// dense attention (the work it skips) and causal SMYRF against both, same run.
fn causal() {
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    println!(
        "\ncausal self-attention, 8 heads, d = dv = 64, tier {}",
        detected_isa()
    );
    println!("| N | threads | dense ms | causal dense ms | causal / dense | causal SMYRF R=2 c=64 ms | SMYRF ms | causal SMYRF speed-up over causal dense | causal preset K=N/32 ms | preset speed-up over causal dense |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let lengths: Vec<usize> = std::env::var("SMYRF_BENCH_CAUSAL_N")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![4096, 16384]);
    for n in lengths {
        let mut inputs = Inputs::new(n);
        for threads in 1..=cores {
            let p = plan(2, 64, threads);
            let runs = if n <= 4096 { 3 } else { 1 };
            // The plan's own threads for every call, so the four times share one executor.
            let dense = best_time(runs, || {
                let (q, k, v) = (
                    TensorView::bhnd(inputs.q.get(), 1, HEADS, n, D).unwrap(),
                    TensorView::bhnd(inputs.k.get(), 1, HEADS, n, D).unwrap(),
                    TensorView::bhnd(inputs.v.get(), 1, HEADS, n, D).unwrap(),
                );
                let mut out = TensorViewMut::bhnd(inputs.out.get_mut(), 1, HEADS, n, D).unwrap();
                p.dense_attention(&q, &k, &v, &mut out).unwrap();
            });
            let causal_dense = best_time(runs, || inputs.causal(&p, true));
            let causal_smyrf = best_time(5, || inputs.causal(&p, false));
            let smyrf = best_time(5, || inputs.smyrf(&p));
            let preset = Plan::new(Config::causal(n / 32).num_threads(threads), D).unwrap();
            let causal_preset = best_time(5, || inputs.causal(&preset, false));
            println!(
                "| {n} | {threads} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1}x | {:.2} | {:.1}x |",
                dense * 1e3,
                causal_dense * 1e3,
                causal_dense / dense,
                causal_smyrf * 1e3,
                smyrf * 1e3,
                causal_dense / causal_smyrf,
                causal_preset * 1e3,
                causal_dense / causal_preset
            );
        }
    }
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

/// One call with each tensor of its own element type: the 16-bit tensors are converted once,
/// before timing.
struct Typed<TQ, TK, TV, TO> {
    q: Buffer<TQ>,
    k: Buffer<TK>,
    v: Buffer<TV>,
    out: Buffer<TO>,
    n: usize,
}

trait FromF32: Element + Copy + Default {
    fn from(x: f32) -> Self;
}
impl FromF32 for f32 {
    fn from(x: f32) -> Self {
        x
    }
}
impl FromF32 for f16 {
    fn from(x: f32) -> Self {
        f16::from_f32(x)
    }
}
impl FromF32 for bf16 {
    fn from(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

impl<TQ: FromF32, TK: FromF32, TV: FromF32, TO: FromF32> Typed<TQ, TK, TV, TO> {
    fn new(inputs: &Inputs) -> Self {
        fn conv<T: FromF32>(b: &Buffer) -> Buffer<T> {
            Buffer::new(b.get().iter().map(|&x| T::from(x)))
        }
        Typed {
            q: conv(&inputs.q),
            k: conv(&inputs.k),
            v: conv(&inputs.v),
            out: conv(&inputs.out),
            n: inputs.n,
        }
    }
    fn run(&mut self, plan: &Plan, dense: bool) {
        let n = self.n;
        let q = TensorView::bhnd(self.q.get(), 1, HEADS, n, D).unwrap();
        let k = TensorView::bhnd(self.k.get(), 1, HEADS, n, D).unwrap();
        let v = TensorView::bhnd(self.v.get(), 1, HEADS, n, D).unwrap();
        let mut out = TensorViewMut::bhnd(self.out.get_mut(), 1, HEADS, n, D).unwrap();
        if dense {
            plan.dense_attention_with(&q, &k, &v, &mut out, CallOptions::new())
        } else {
            plan.attention(&q, &k, &v, &mut out)
        }
        .unwrap();
    }
    /// Bytes of the rows the projection reads: every query and every key once.
    fn projected_bytes(&self) -> f64 {
        let rows = (HEADS * self.n * D) as f64;
        rows * (std::mem::size_of::<TQ>() + std::mem::size_of::<TK>()) as f64
    }
}

/// One thread's copy bandwidth over a buffer far beyond the last-level cache, GB/s (read
/// plus write): the memory ceiling the projection's rows are measured against.
fn copy_bandwidth() -> f64 {
    let len = 64 << 20;
    let src = vec![1u8; len];
    let mut dst = vec![0u8; len];
    let t = best_time(3, || {
        dst.copy_from_slice(black_box(&src));
        black_box(&dst);
    });
    2.0 * len as f64 / t / 1e9
}

/// The last-level cache's size as the OS reports it (Linux), for judging whether K and V fit.
fn last_level_cache() -> String {
    (0..8)
        .rev()
        .find_map(|i| {
            std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size"))
                .ok()
        })
        .map_or_else(|| "unknown".into(), |s| s.trim().to_string())
}

/// Element types: 8 heads, d = dv = 64, R = 2, c = 64, 2 threads, every combination timed in
/// turn (best of several rounds, alternating, so drift hits all alike), each against the
/// all-f32 call of the same run; dense attention with f16 K/V against dense f32.
fn element_types() {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    let bandwidth = copy_bandwidth();
    println!(
        "
element types, 8 heads, d = dv = 64, R = 2, c = 64, {threads} threads, tier {}; one-thread copy bandwidth {bandwidth:.1} GB/s; last-level cache {}",
        detected_isa(),
        last_level_cache()
    );
    println!("| N | Q | K, V | out | Q·Kᵀ | ms | vs all-f32 | proj GB/s per thread | % of copy | proj | sort | gather | kernels | combine |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let lengths: Vec<usize> = std::env::var("SMYRF_BENCH_TYPES_N")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![16384, 65536]);
    let config = Config::default()
        .n_hashes(2)
        .q_cluster_size(64)
        .num_threads(threads);
    // The dot-product row runs the kernel even where plans would not take it; whether they
    // do is printed.
    println!(
        "vdpbf16ps pays on this CPU (plans take it by default): {:?}",
        smyrf::internals::bf16_dot::pays()
    );
    smyrf::internals::bf16_dot::force();
    let fast = Plan::new(config.clone(), D).unwrap();
    let exact = Plan::new(config.bf16_exact(true), D).unwrap();
    let rounds = if std::env::var_os("SMYRF_BENCH_QUICK").is_some() {
        1
    } else {
        3
    };
    for n in lengths {
        let inputs = Inputs::new(n);
        println!(
            "N = {n}: K and V hold {} MiB in f32",
            (2 * HEADS * n * D * 4) >> 20
        );
        let mut f32s = Typed::<f32, f32, f32, f32>::new(&inputs);
        let mut kv16 = Typed::<f32, f16, f16, f32>::new(&inputs);
        let mut all16 = Typed::<f16, f16, f16, f16>::new(&inputs);
        let mut kvbf = Typed::<f32, bf16, bf16, f32>::new(&inputs);
        let mut allbf = Typed::<bf16, bf16, bf16, bf16>::new(&inputs);
        let runs = if n >= 65536 { 1 } else { 3 };
        let mut best = [f64::INFINITY; 6];
        for _ in 0..rounds {
            let times = [
                best_time(runs, || f32s.run(&fast, false)),
                best_time(runs, || kv16.run(&fast, false)),
                best_time(runs, || all16.run(&fast, false)),
                best_time(runs, || kvbf.run(&fast, false)),
                best_time(runs, || allbf.run(&fast, false)),
                best_time(runs, || allbf.run(&exact, false)),
            ];
            for (b, t) in best.iter_mut().zip(times) {
                *b = b.min(t);
            }
        }
        // (Q, K and V, out, Q·Kᵀ, time, stage times, projected bytes)
        type Row<'a> = (&'a str, &'a str, &'a str, &'a str, f64, [f64; 5], f64);
        let rows: [Row<'_>; 6] = [
            (
                "f32",
                "f32",
                "f32",
                "f32",
                best[0],
                profile_stages(|| f32s.run(&fast, false)),
                f32s.projected_bytes(),
            ),
            (
                "f32",
                "f16",
                "f32",
                "f32",
                best[1],
                profile_stages(|| kv16.run(&fast, false)),
                kv16.projected_bytes(),
            ),
            (
                "f16",
                "f16",
                "f16",
                "f32",
                best[2],
                profile_stages(|| all16.run(&fast, false)),
                all16.projected_bytes(),
            ),
            (
                "f32",
                "bf16",
                "f32",
                "f32",
                best[3],
                profile_stages(|| kvbf.run(&fast, false)),
                kvbf.projected_bytes(),
            ),
            (
                "bf16",
                "bf16",
                "bf16",
                "vdpbf16ps",
                best[4],
                profile_stages(|| allbf.run(&fast, false)),
                allbf.projected_bytes(),
            ),
            (
                "bf16",
                "bf16",
                "bf16",
                "f32",
                best[5],
                profile_stages(|| allbf.run(&exact, false)),
                allbf.projected_bytes(),
            ),
        ];
        for (tq, tkv, to, dot, t, stages, bytes) in rows {
            let total: f64 = stages.iter().sum();
            let share = |i: usize| 100.0 * stages[i] / total;
            let proj = bytes / stages[0] / 1e9;
            println!(
                "| {n} | {tq} | {tkv} | {to} | {dot} | {:.2} | {:.2}x | {proj:.1} | {:.0}% | {:.0}% | {:.0}% | {:.0}% | {:.0}% | {:.0}% |",
                t * 1e3,
                best[0] / t,
                100.0 * proj / bandwidth,
                share(0), share(1), share(2), share(3), share(4)
            );
        }
        if n <= 16384 {
            let mut dense16 = Typed::<f32, f16, f16, f32>::new(&inputs);
            let (mut d32, mut d16) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..rounds {
                d32 = d32.min(best_time(1, || f32s.run(&fast, true)));
                d16 = d16.min(best_time(1, || dense16.run(&fast, true)));
            }
            println!(
                "| {n} | dense f32 | f32 | f32 | f32 | {:.1} | 1.00x | | | | | | | |",
                d32 * 1e3
            );
            println!(
                "| {n} | dense f32 | f16 | f32 | f32 | {:.1} | {:.2}x (vs dense f32) | | | | | | | |",
                d16 * 1e3,
                d32 / d16
            );
        }
    }
}

/// Streaming-read bandwidth in GB/s on `threads` threads: each sums its share of a 2 GiB
/// buffer, beyond the last-level cache.
fn read_bandwidth(threads: usize) -> f64 {
    let words = 512 << 20;
    let data: Vec<u32> = (0..words as u32).collect();
    let share = words / threads;
    let t = best_time(3, || {
        std::thread::scope(|scope| {
            for part in data.chunks(share) {
                scope.spawn(move || {
                    black_box(part.iter().fold(0u32, |acc, &x| acc.wrapping_add(x)));
                });
            }
        });
    });
    (words * 4) as f64 / t / 1e9
}

/// Decode, one new token over an f16 K/V cache: exact dense decode against the machine's
/// streaming-read bandwidth (same run), and the causal preset at K = N/64 through a KV-cache
/// index (built once, outside the timing) against it.
fn decode() {
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    let bandwidth: Vec<f64> = (1..=cores).map(read_bandwidth).collect();
    println!(
        "\ndecode, one query per head over an f16 K/V cache, tier {}; streaming read: {}",
        detected_isa(),
        bandwidth
            .iter()
            .enumerate()
            .map(|(t, b)| format!("{b:.1} GB/s on {} thread(s)", t + 1))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("| shape | context N | threads | exact decode ms | K/V read GB/s | of streaming read | index decode K=N/64 ms | speed-up | index bytes per key (of the f16 K/V cache) | with one hash round ms | speed-up |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let contexts: Vec<usize> = std::env::var("SMYRF_BENCH_DECODE_N")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![32768, 131072]);
    for (name, hq, hkv, d) in [
        ("SmolLM2-like 9/3, d=64", 9, 3, 64),
        ("Llama-8B-like 32/8, d=128", 32, 8, 128),
    ] {
        for &n in &contexts {
            let gen = |len: usize, seed: usize| -> Vec<f16> {
                (0..len)
                    .map(|i| {
                        f16::from_f32((((i * 2654435761 + seed) >> 7) % 2001) as f32 / 1000.0 - 1.0)
                    })
                    .collect()
            };
            let q: Vec<f32> = gen(hq * d, 1).iter().map(|x| x.to_f32()).collect();
            let (k, v) = (gen(hkv * n * d, 2), gen(hkv * n * d, 3));
            let mut out = vec![0.0f32; hq * d];
            let bytes = 2.0 * (hkv * n * d * 2) as f64;
            for threads in 1..=cores {
                let dense = Plan::new(Config::default().num_threads(threads), d).unwrap();
                let preset = Plan::new(Config::causal(n / 64).num_threads(threads), d).unwrap();
                // The preset plus one hash round of clusters of K/4 keys.
                let hashed = Plan::new(
                    Config::causal(n / 64)
                        .n_hashes(1)
                        .k_cluster_size(n / 256)
                        .num_threads(threads),
                    d,
                )
                .unwrap();
                let indexed = |plan: &Plan| {
                    let mut index = KvIndex::new(plan, 1, hkv, n).unwrap();
                    index
                        .append(&TensorView::bhnd(&k, 1, hkv, n, d).unwrap(), &[n as u32])
                        .unwrap();
                    index
                };
                let (index, hashed_index) = (indexed(&preset), indexed(&hashed));
                // The index decode takes under a millisecond: more runs find its best.
                let mut time = |plan: &Plan, index: &KvIndex, exact: bool| {
                    best_time(if exact { 5 } else { 50 }, || {
                        let qv = TensorView::bhnd(&q, 1, hq, 1, d).unwrap();
                        let kv = TensorView::bhnd(&k, 1, hkv, n, d).unwrap();
                        let vv = TensorView::bhnd(&v, 1, hkv, n, d).unwrap();
                        let mut ov = TensorViewMut::bhnd(&mut out, 1, hq, 1, d).unwrap();
                        if exact {
                            let options = CallOptions::new().causal();
                            plan.dense_attention_with(&qv, &kv, &vv, &mut ov, options)
                        } else {
                            plan.decode(index, &qv, &kv, &vv, &mut ov, CallOptions::new())
                        }
                        .unwrap();
                    })
                };
                let exact = time(&dense, &index, true);
                let approx = time(&preset, &index, false);
                let with_round = time(&hashed, &hashed_index, false);
                let rate = bytes / exact / 1e9;
                let per_key = index.memory_bytes() as f64 / (hkv * n) as f64;
                println!(
                    "| {name} | {n} | {threads} | {:.3} | {rate:.1} | {:.0} % | {:.3} | {:.1}x | {per_key:.1} (1/{:.0}) | {:.3} | {:.1}x |",
                    exact * 1e3,
                    100.0 * rate / bandwidth[threads - 1],
                    approx * 1e3,
                    exact / approx,
                    (4 * d) as f64 / per_key,
                    with_round * 1e3,
                    exact / with_round,
                );
            }
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--decode") {
        decode();
        return;
    }
    if std::env::args().any(|a| a == "--types") {
        element_types();
        return;
    }
    if std::env::args().any(|a| a == "--causal") {
        causal();
        return;
    }
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
    causal();
    decode();
    element_types();
}
