//! Demo: SMYRF against exact dense attention on built-in synthetic data.
//!
//! `cargo run --release` runs it with defaults; `--help` lists the flags.

use smyrf::{Config, Plan, TensorView, TensorViewMut};
use std::time::Instant;

struct Args {
    seq_len: usize,
    heads: usize,
    head_dim: usize,
    hashes: usize,
    cluster_size: usize,
    batch: usize,
    threads: usize,
}

const USAGE: &str = "usage: smyrf-demo [--seq-len N] [--heads H] [--head-dim D] [--hashes R] \
[--cluster-size C] [--batch B] [--threads T]
defaults: --seq-len 4096 --heads 8 --head-dim 64 --hashes 2 --cluster-size 64 --batch 1 --threads 0 (all cores)";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seq_len: 4096,
        heads: 8,
        head_dim: 64,
        hashes: 2,
        cluster_size: 64,
        batch: 1,
        threads: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let value: usize = value
            .parse()
            .map_err(|_| format!("{flag}: '{value}' is not a number"))?;
        match flag.as_str() {
            "--seq-len" => args.seq_len = value,
            "--heads" => args.heads = value,
            "--head-dim" => args.head_dim = value,
            "--hashes" => args.hashes = value,
            "--cluster-size" => args.cluster_size = value,
            "--batch" => args.batch = value,
            "--threads" => args.threads = value,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// Deterministic generator (SplitMix64) so the demo needs no data files.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Queries and keys drawn around shared topic centres, as in real attention where a query
/// attends mostly to keys of its own topic and values carry the topic, then scaled to one norm per side (as after a
/// layer norm), so the XBOX+ lift adds the same term to every hash of a side.
fn synthetic(args: &Args) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (b, h, n, d) = (args.batch, args.heads, args.seq_len, args.head_dim);
    let mut rng = SplitMix(42);
    let topics = (n / 256).clamp(4, 64);
    let value_centres: Vec<f32> = (0..topics * d).map(|_| rng.next()).collect();
    let mut v = Vec::with_capacity(b * h * n * d);
    let centres: Vec<f32> = (0..topics * d).map(|_| rng.next() * 2.0).collect();
    let mut q = Vec::with_capacity(b * h * n * d);
    let mut k = Vec::with_capacity(b * h * n * d);
    for _ in 0..b * h {
        for i in 0..n {
            let topic = (i * 7 + (i / 3)) % topics;
            let centre = &centres[topic * d..(topic + 1) * d];
            push_normalised(&mut q, centre.iter().map(|&c| c + 0.3 * rng.next()), 12.0);
            push_normalised(&mut k, centre.iter().map(|&c| c + 0.3 * rng.next()), 12.0);
            let value_centre = &value_centres[topic * d..(topic + 1) * d];
            v.extend(value_centre.iter().map(|&c| c + 0.2 * rng.next()));
        }
    }
    (q, k, v)
}

fn push_normalised(dst: &mut Vec<f32>, row: impl Iterator<Item = f32>, norm: f32) {
    let start = dst.len();
    dst.extend(row);
    let row = &mut dst[start..];
    let scale = norm / row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    row.iter_mut().for_each(|x| *x *= scale);
}

fn relative_error(approx: &[f32], exact: &[f32]) -> f64 {
    let num: f64 = approx
        .iter()
        .zip(exact)
        .map(|(&a, &e)| (a as f64 - e as f64).powi(2))
        .sum();
    let den: f64 = exact.iter().map(|&e| (e as f64).powi(2)).sum();
    (num / den).sqrt()
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}");
            }
            eprintln!("{USAGE}");
            std::process::exit(if message.is_empty() { 0 } else { 2 });
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), smyrf::Error> {
    let (b, h, n, d) = (args.batch, args.heads, args.seq_len, args.head_dim);
    let (q, k, v) = synthetic(args);
    let config = Config::default()
        .n_hashes(args.hashes)
        .q_cluster_size(args.cluster_size)
        .num_threads(args.threads);
    let plan = Plan::new(config, d)?;
    let qv = TensorView::bhnd(&q, b, h, n, d)?;
    let kv = TensorView::bhnd(&k, b, h, n, d)?;
    let vv = TensorView::bhnd(&v, b, h, n, d)?;
    let mut smyrf_out = vec![0.0f32; b * h * n * d];
    let mut dense_out = vec![0.0f32; b * h * n * d];

    println!(
        "built-in synthetic data: queries and keys drawn around shared topic centres, so they \
         cluster by construction (SMYRF's best case; real attention is harder, see below)"
    );
    println!(
        "smyrf demo: batch {b}, heads {h}, seq_len {n}, head_dim {d}, hashes {}, cluster size {}, tier {}, threads {}",
        args.hashes,
        args.cluster_size,
        plan.isa(),
        if args.threads == 0 { rayon_threads() } else { args.threads }
    );
    let smyrf_time = best_of(3, || {
        let mut out = TensorViewMut::bhnd(&mut smyrf_out, b, h, n, d)?;
        plan.attention(&qv, &kv, &vv, &mut out)
    })?;
    // Dense attention runs with the same tier and threads as SMYRF.
    let dense = Plan::new(Config::default().num_threads(args.threads), d)?;
    let dense_time = best_of(if n > 16384 { 1 } else { 3 }, || {
        let mut out = TensorViewMut::bhnd(&mut dense_out, b, h, n, d)?;
        dense.dense_attention(&qv, &kv, &vv, &mut out)
    })?;
    let rounds = args.hashes as f64;
    let clusters = n.div_ceil(args.cluster_size).max(1) as f64;
    let smyrf_flops =
        (b * h) as f64 * 2.0 * rounds * n as f64 * (n as f64 / clusters) * (2 * d) as f64;
    let dense_flops = (b * h) as f64 * 2.0 * (n as f64).powi(2) * (2 * d) as f64;
    println!(
        "SMYRF : {:9.3} ms  ({:.1} useful GFLOP/s)",
        smyrf_time * 1e3,
        smyrf_flops / smyrf_time / 1e9
    );
    println!(
        "dense : {:9.3} ms  ({:.1} GFLOP/s)",
        dense_time * 1e3,
        dense_flops / dense_time / 1e9
    );
    println!("speed-up over dense: {:.2}x", dense_time / smyrf_time);
    println!(
        "relative error vs dense (||smyrf - dense|| / ||dense||): {:.4}",
        relative_error(&smyrf_out, &dense_out)
    );
    if dense_time < smyrf_time {
        println!(
            "note: seq_len {n} is below the crossover for this shape: dense attention is faster here \
             (SMYRF reads R·c keys per query against dense's N: measured crossover on a 2-core \
             AVX-512 machine 192 to 320 tokens depending on R and c; see BENCHMARKS.md)"
        );
    }
    real_data(args)
}

/// The same comparison on real attention inputs (MiniLM, `../shared/data/minilm-dev/` or
/// `SMYRF_DEV_DATA`), when they are there: plain SMYRF with the demo's settings, and the §8
/// hybrid preset at a budget of N/4 keys per query.
fn real_data(args: &Args) -> Result<(), smyrf::Error> {
    let dir = std::env::var_os("SMYRF_DEV_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/minilm-dev")
        });
    let read = |name: &str| -> Option<Vec<f32>> {
        let bytes = std::fs::read(dir.join(name)).ok()?;
        let values = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        Some(values.collect())
    };
    // [sequence, layer, head, token, dim] = [2, 3, 12, 256, 32]: 6 batch elements of 12 heads.
    let (b, h, n, d) = (6, 12, 256, 32);
    let (Some(q), Some(k), Some(v), Some(exact)) = (
        read("q_256.f32"),
        read("k_256.f32"),
        read("v_256.f32"),
        read("out_256.f32"),
    ) else {
        println!(
            "real data: none at {} (set SMYRF_DEV_DATA); no real-data figure",
            dir.display()
        );
        return Ok(());
    };
    if [&q, &k, &v, &exact]
        .iter()
        .any(|x| x.len() != b * h * n * d)
    {
        println!(
            "real data: unexpected file sizes in {}; skipped",
            dir.display()
        );
        return Ok(());
    }
    let (qv, kv, vv) = (
        TensorView::bhnd(&q, b, h, n, d)?,
        TensorView::bhnd(&k, b, h, n, d)?,
        TensorView::bhnd(&v, b, h, n, d)?,
    );
    let mut out = vec![0.0f32; b * h * n * d];
    let plain = Config::default()
        .n_hashes(args.hashes)
        .q_cluster_size(args.cluster_size)
        .num_threads(args.threads);
    for (label, config) in [
        (
            format!(
                "plain SMYRF, R = {}, c = {}",
                args.hashes, args.cluster_size
            ),
            plain,
        ),
        (
            "hybrid preset, K = N/4".to_string(),
            Config::hybrid(n / 4).num_threads(args.threads),
        ),
    ] {
        let plan = Plan::new(config, d)?;
        plan.attention(
            &qv,
            &kv,
            &vv,
            &mut TensorViewMut::bhnd(&mut out, b, h, n, d)?,
        )?;
        println!(
            "real MiniLM attention inputs (N = {n}, 72 heads), {label}: relative error vs dense {:.4} \
             (per-layer error; quality on a model is judged on its own output)",
            relative_error(&out, &exact)
        );
    }
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn best_of(
    runs: usize,
    mut f: impl FnMut() -> Result<(), smyrf::Error>,
) -> Result<f64, smyrf::Error> {
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}
