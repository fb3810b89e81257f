//! Output quality of plain SMYRF and of the design §8 hybrid blocks on real attention inputs
//! (all-MiniLM-L6-v2, `shared/data/minilm-dev/`, see its README), at key budgets
//! K = N/8, N/4, N/2 per query.
//!
//! ```sh
//! cargo run --release --example quality                 # data at ../shared/data/minilm-dev/
//! cargo run --release --example quality -- DIR          # or SMYRF_DEV_DATA=DIR
//! cargo run --release --example quality -- DIR --sweep  # also the per-layer tuning grid (K = N/4)
//! ```
//!
//! Error: ‖out − dense‖ / ‖dense‖ per (sequence, layer) over all 12 heads, against the stored
//! float32 dense outputs, averaged over the 6 (sequence, layer) pairs. Mass: the mean over
//! queries of exp(L − L_dense), where L is the log-sum-exp the call returns and L_dense the
//! exact one: the share of the softmax normaliser the blocks account for (with samples an
//! unbiased estimate of 1; with R > 1 a key counts once per round holding it). Time: the
//! fastest of several runs of the 6 calls on one thread.

use smyrf::DEFAULT_SAMPLE_GROUP;
use smyrf::{Config, Plan, SinkSelection, TensorView, TensorViewMut};
use std::path::{Path, PathBuf};
use std::time::Instant;

const SEQUENCES: usize = 2;
const LAYERS: usize = 3;
const HEADS: usize = 12;
const DIM: usize = 32;
const REPEATS: usize = 7;

/// One (sequence, layer) pair: `[head, token, dim]` tensors.
struct Pair {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dense: Vec<f32>,
    dense_lse: Vec<f32>,
    /// ‖library dense − stored dense‖ / ‖stored dense‖: a check of the data and the baseline.
    library_dense_error: f64,
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn load(dir: &Path, n: usize) -> Vec<Pair> {
    let [q, k, v, out] =
        ["q", "k", "v", "out"].map(|name| read_f32(&dir.join(format!("{name}_{n}.f32"))));
    let pair_len = HEADS * n * DIM;
    assert_eq!(
        q.len(),
        SEQUENCES * LAYERS * pair_len,
        "q_{n}.f32 has an unexpected size"
    );
    (0..SEQUENCES * LAYERS)
        .map(|p| {
            let part = |t: &[f32]| t[p * pair_len..(p + 1) * pair_len].to_vec();
            let (q, k, v) = (part(&q), part(&k), part(&v));
            let mut lse = vec![0.0f32; HEADS * n];
            let mut check = vec![0.0f32; pair_len];
            smyrf::Plan::new(smyrf::Config::default(), view(&q, n).shape().dim)
                .and_then(|plan| {
                    plan.dense_attention_with(
                        &view(&q, n),
                        &view(&k, n),
                        &view(&v, n),
                        &mut TensorViewMut::bhnd(&mut check, 1, HEADS, n, DIM).unwrap(),
                        smyrf::CallOptions::new().lse(&mut lse),
                    )
                })
                .unwrap();
            let dense = part(&out);
            Pair {
                q,
                k,
                v,
                library_dense_error: relative_error(&check, &dense),
                dense,
                dense_lse: lse,
            }
        })
        .collect()
}

/// ‖approx − reference‖ / ‖reference‖ over all elements.
fn relative_error(approx: &[f32], reference: &[f32]) -> f64 {
    let (diff, norm) = approx
        .iter()
        .zip(reference)
        .fold((0.0f64, 0.0f64), |(d, s), (&a, &r)| {
            let (a, r) = (a as f64, r as f64);
            (d + (a - r) * (a - r), s + r * r)
        });
    (diff / norm).sqrt()
}

struct Measured {
    error: f64,
    mass: f64,
    seconds: f64,
}

fn measure(config: &Config, pairs: &[Pair], n: usize) -> Measured {
    let config = (config.clone()).num_threads(1);
    let plan = Plan::new(config, DIM).expect("valid config");
    let mut out = vec![0.0f32; HEADS * n * DIM];
    let mut lse = vec![0.0f32; HEADS * n];
    let (mut error, mut mass) = (0.0, 0.0);
    let mut seconds = 0.0;
    for pair in pairs {
        let (q, k, v) = (view(&pair.q, n), view(&pair.k, n), view(&pair.v, n));
        let mut best = f64::INFINITY;
        for _ in 0..REPEATS {
            let mut out_view = TensorViewMut::bhnd(&mut out, 1, HEADS, n, DIM).unwrap();
            let start = Instant::now();
            plan.attention_with(
                &q,
                &k,
                &v,
                &mut out_view,
                smyrf::CallOptions::new().lse(&mut lse),
            )
            .unwrap();
            best = best.min(start.elapsed().as_secs_f64());
        }
        seconds += best;
        let (diff, norm) =
            out.iter()
                .zip(&pair.dense)
                .fold((0.0f64, 0.0f64), |(d, s), (&a, &r)| {
                    let (a, r) = (a as f64, r as f64);
                    (d + (a - r) * (a - r), s + r * r)
                });
        error += (diff / norm).sqrt();
        mass += lse
            .iter()
            .zip(&pair.dense_lse)
            .map(|(&l, &ld)| ((l - ld) as f64).exp())
            .sum::<f64>()
            / lse.len() as f64;
    }
    let count = pairs.len() as f64;
    Measured {
        error: error / count,
        mass: mass / count,
        seconds,
    }
}

/// Plain SMYRF with K keys per query: R = 2 rounds of clusters of K/2 (README's baseline).
fn plain(k: usize) -> Config {
    Config::default().n_hashes(2).q_cluster_size((k / 2).max(1))
}

/// The split that per-layer error ranks best: sinks K/8, window K/4, one round of clusters
/// of 5K/8. End to end it keeps less of the model's output than the preset (design §8).
fn per_layer_split(k: usize) -> Config {
    let n_sinks = k / 8;
    Config::default()
        .n_hashes(1)
        .q_cluster_size((5 * k / 8).max(1))
        .n_sinks(n_sinks)
        .sink_selection(if n_sinks >= 8 {
            SinkSelection::MeanQuery
        } else {
            SinkSelection::First
        })
        .window(k / 4)
}

fn describe(c: &Config) -> String {
    let mut s = format!("R={} c={}", c.n_hashes, c.q_cluster_size);
    if c.n_sinks > 0 {
        let how = match c.sink_selection {
            SinkSelection::First => "first",
            SinkSelection::MeanQuery => "meanq",
            _ => "other",
        };
        s += &format!(" sinks={}({how})", c.n_sinks);
    }
    if c.window > 0 {
        s += &format!(" win={}", c.window);
    }
    if c.n_selected > 0 {
        s += &format!(" sel={}", c.n_selected);
    }
    if c.n_samples > 0 {
        let group = if c.sample_group == 0 {
            DEFAULT_SAMPLE_GROUP
        } else {
            c.sample_group
        };
        s += &format!(" samp={}/g{group}", c.n_samples);
    }
    s
}

fn row(n: usize, k: usize, name: &str, c: &Config, pairs: &[Pair], base: Option<f64>) -> f64 {
    let m = measure(c, pairs, n);
    let ratio = base.map_or("".to_string(), |b| format!("{:.2}x", m.seconds / b));
    println!(
        "| {n} | {k} | {name} | {} | {:.3} | {:.3} | {:.2} | {ratio} |",
        describe(c),
        m.error,
        m.mass,
        m.seconds * 1e3,
    );
    m.seconds
}

/// Variants around the per-layer split, the grid that tuned it (`--sweep`): (sinks, window, rounds, cluster,
/// samples) in sixteenths of K.
fn sweep(k: usize) -> Vec<(String, Config)> {
    let mut out = Vec::new();
    let base = per_layer_split(k);
    let sixteenths = |x: usize| k * x / 16;
    for (sinks, window, rounds, cluster, samples) in [
        (2, 4, 1, 5, 5),
        (2, 4, 1, 3, 7),
        (2, 4, 1, 1, 9),
        (2, 4, 1, 8, 2),
        (2, 4, 1, 10, 0),
        (2, 4, 2, 5, 0),
        (2, 2, 1, 12, 0),
        (2, 6, 1, 8, 0),
        (2, 8, 1, 6, 0),
        (1, 4, 1, 11, 0),
        (3, 4, 1, 9, 0),
        (4, 4, 1, 8, 0),
        (0, 4, 1, 12, 0),
        (2, 0, 1, 14, 0),
    ] {
        let n_sinks = sixteenths(sinks);
        let c = (base.clone())
            .n_hashes(rounds)
            .n_sinks(n_sinks)
            .sink_selection(if n_sinks >= 8 {
                SinkSelection::MeanQuery
            } else {
                SinkSelection::First
            })
            .window(sixteenths(window))
            .q_cluster_size(sixteenths(cluster).max(1))
            .n_samples(sixteenths(samples));
        out.push((
            format!("s{sinks} w{window} r{rounds} c{cluster} x{samples}"),
            c,
        ));
    }
    for group in [16, 32, 128] {
        out.push((
            format!("s2 w4 r1 c5 x5, group {group}"),
            (base.clone())
                .q_cluster_size(sixteenths(5).max(1))
                .n_samples(sixteenths(5))
                .sample_group(group),
        ));
    }
    for selection in [SinkSelection::First, SinkSelection::MeanQuery] {
        out.push((
            format!("split, {selection:?}"),
            (base.clone()).sink_selection(selection),
        ));
    }
    out
}

fn view(t: &[f32], n: usize) -> TensorView<'_> {
    TensorView::bhnd(t, 1, HEADS, n, DIM).expect("dev data shape")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sweep_on = args.iter().any(|a| a == "--sweep");
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("SMYRF_DEV_DATA").map(PathBuf::from))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/minilm-dev"));
    if !dir.join("q_256.f32").is_file() {
        println!(
            "quality: no dev data at {} (expected q_256.f32 etc.; pass a directory or set \
             SMYRF_DEV_DATA); nothing to measure.",
            dir.display()
        );
        return;
    }
    println!("data: {}", dir.display());
    println!("| N | K | setting | config | error | mass | ms (6 calls, 1 thread) | time / plain |");
    println!("|---|---|---|---|---|---|---|---|");
    for n in [256, 512] {
        let pairs = load(&dir, n);
        let dense_error = pairs.iter().map(|p| p.library_dense_error).sum::<f64>() / 6.0;
        println!("| {n} | {n} | dense (library) | exact | {dense_error:.1e} | 1 | | |");
        for k in [n / 8, n / 4, n / 2] {
            let base = row(n, k, "plain SMYRF", &plain(k), &pairs, None);
            row(
                n,
                k,
                "hybrid preset",
                &Config::hybrid(k),
                &pairs,
                Some(base),
            );
            row(
                n,
                k,
                "sinks K/8, window K/4, clusters 5K/8",
                &per_layer_split(k),
                &pairs,
                Some(base),
            );
            if sweep_on && k == n / 4 {
                for (name, c) in sweep(k) {
                    row(n, k, &name, &c, &pairs, Some(base));
                }
            }
        }
    }
}
