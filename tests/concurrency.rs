//! Concurrency (design §3: a plan is Send + Sync and callable concurrently; results do not
//! depend on the thread count, bitwise). Eight threads share plans with `num_threads` 0
//! (rayon's global pool), 1 (the caller's thread) and 3 (a pool of the plan's own), calling
//! them thousands of times with different shapes, layouts, masks and lse outputs; other
//! threads create, use and destroy plans all the while, through the Rust API and the C ABI,
//! and make failing calls whose thread-local error messages must stay their own. Every
//! result must equal, bit for bit, the one computed before on a single thread. Under Miri
//! the same tests run with three threads, short sequences and a handful of calls.

mod common;
use common::ffi::last_error;
use common::{bits, Rng, Tensor};
use smyrf::internals::ffi::*;
use smyrf::{Config, Plan, Shape, TensorViewMut};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads calling at once (fewer under Miri, which runs them one step at a time).
const THREADS: usize = if cfg!(miri) { 3 } else { 8 };
/// Calls per thread in the shared-plan test (Miri runs a token amount: it is ~10⁵× slower).
const CALLS_PER_THREAD: usize = if cfg!(miri) { 2 } else { 2000 };
/// Create–call–destroy rounds per thread.
const LIFECYCLES_PER_THREAD: usize = if cfg!(miri) { 1 } else { 150 };
/// Head dim of every case (a plan serves one head dim).
const D: usize = 8;

/// One attention call's inputs.
struct Case {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    /// Output layout: true for [B, N, H, D].
    out_bnhd: bool,
    mask: Option<Vec<u8>>,
    with_lse: bool,
}

/// One call's results: out in its own layout, and lse when asked for.
#[derive(PartialEq)]
struct Results {
    out: Vec<u32>,
    lse: Option<Vec<u32>>,
}

/// Varied small cases: 1–2 batch elements, grouped-query heads, sequence lengths from 1
/// to 70 (past one 64-query tile), value dims 1 to 17, both layouts on every tensor, masks
/// with arbitrary nonzero bytes and batch elements without valid keys.
fn cases(count: usize, seed: u64) -> Vec<Case> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|c| {
            let b = 1 + rng.below(2);
            let hkv = 1 + rng.below(2);
            let hq = hkv * (1 + rng.below(2));
            // Miri interprets every operation: short sequences there.
            let longest = if cfg!(miri) { 2 } else { 5 };
            let nq = [1, 5, 17, 40, 70][rng.below(longest)];
            let nk = [1, 9, 33, 64, 70][rng.below(longest)];
            let dv = [1, 3, 8, 17][rng.below(4)];
            let mut layout = || rng.below(2) == 1;
            let (lq, lk, lv, lo) = (layout(), layout(), layout(), layout());
            let mask = match c % 4 {
                0 => None,
                1 => Some((0..b * nk).map(|_| (rng.next_u64() % 3) as u8).collect()),
                2 => Some((0..b * nk).map(|j| (j >= nk) as u8 * 200).collect()),
                _ => Some((0..b * nk).map(|j| (j % 2) as u8).collect()),
            };
            Case {
                q: Tensor::random(&mut rng, b, hq, nq, D, lq),
                k: Tensor::random(&mut rng, b, hkv, nk, D, lk),
                v: Tensor::random(&mut rng, b, hkv, nk, dv, lv),
                out_bnhd: lo,
                mask,
                with_lse: c % 3 != 0,
            }
        })
        .collect()
}

impl Case {
    fn out_len(&self) -> usize {
        self.q.b * self.q.h * self.q.n * self.v.d
    }

    fn out_shape(&self) -> Shape {
        let (b, h, n, dv) = (self.q.b, self.q.h, self.q.n, self.v.d);
        match self.out_bnhd {
            true => Shape::bnhd(b, h, n, dv),
            false => Shape::bhnd(b, h, n, dv),
        }
    }

    /// SMYRF through `plan`, or dense attention without one.
    fn run(&self, plan: Option<&Plan>) -> Results {
        let mut out = vec![f32::NAN; self.out_len()];
        let mut lse = vec![f32::NAN; self.q.b * self.q.h * self.q.n];
        let mut view = TensorViewMut::new(&mut out, self.out_shape()).unwrap();
        let lse_arg = self.with_lse.then_some(&mut lse[..]);
        let (q, k, v) = (self.q.view(), self.k.view(), self.v.view());
        match plan {
            Some(plan) => plan.attention_with(&q, &k, &v, &mut view, {
                let mut options = smyrf::CallOptions::new();
                options.key_mask = self.mask.as_deref();
                options.lse = lse_arg;
                options
            }),
            None => smyrf::Plan::new(smyrf::Config::default(), q.shape().dim).and_then(|plan| {
                plan.dense_attention_with(&q, &k, &v, &mut view, {
                    let mut options = smyrf::CallOptions::new();
                    options.key_mask = self.mask.as_deref();
                    options.lse = lse_arg;
                    options
                })
            }),
        }
        .unwrap();
        Results {
            out: bits(&out),
            lse: self.with_lse.then(|| bits(&lse)),
        }
    }

    /// SMYRF through the C ABI.
    fn run_c(&self, plan: *const smyrf_plan) -> Results {
        let tensor = |t: &Tensor| {
            let s = t.view().shape();
            smyrf_tensor {
                struct_size: std::mem::size_of::<smyrf_tensor>(),
                data: t.data.as_ptr().cast(),
                dtype: 0,
                batch: s.batch,
                heads: s.heads,
                seq_len: s.seq_len,
                dim: s.dim,
                batch_stride: s.batch_stride,
                head_stride: s.head_stride,
                seq_stride: s.seq_stride,
            }
        };
        let mut out = vec![f32::NAN; self.out_len()];
        let mut lse = vec![f32::NAN; self.q.b * self.q.h * self.q.n];
        let s = self.out_shape();
        let out_view = smyrf_tensor_mut {
            struct_size: std::mem::size_of::<smyrf_tensor_mut>(),
            data: out.as_mut_ptr().cast(),
            dtype: 0,
            batch: s.batch,
            heads: s.heads,
            seq_len: s.seq_len,
            dim: s.dim,
            batch_stride: s.batch_stride,
            head_stride: s.head_stride,
            seq_stride: s.seq_stride,
        };
        let mask = self.mask.as_ref().map_or(std::ptr::null(), |m| m.as_ptr());
        let lse_ptr = match self.with_lse {
            true => lse.as_mut_ptr(),
            false => std::ptr::null_mut(),
        };
        let (q, k, v) = (tensor(&self.q), tensor(&self.k), tensor(&self.v));
        let mut args = smyrf_call_args_default();
        args.key_mask = mask;
        args.lse_out = lse_ptr;
        // SAFETY: every pointer covers exactly the extent its shape names.
        let status = unsafe { smyrf_attention(plan, &q, &k, &v, &out_view, &args) };
        assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
        Results {
            out: bits(&out),
            lse: self.with_lse.then(|| bits(&lse)),
        }
    }
}

fn config(num_threads: usize) -> Config {
    Config::default()
        .n_hashes(2)
        .q_cluster_size(8)
        .seed(42)
        .num_threads(num_threads)
}

/// The reference results of every case, computed one call at a time on this thread.
fn references(cases: &[Case]) -> (Vec<Results>, Vec<Results>) {
    let serial = Plan::new(config(1), D).unwrap();
    let smyrf = cases.iter().map(|c| c.run(Some(&serial))).collect();
    let dense = cases.iter().map(|c| c.run(None)).collect();
    (smyrf, dense)
}

#[test]
fn shared_plans_from_eight_threads_match_the_serial_results_bitwise() {
    let cases = cases(if cfg!(miri) { 3 } else { 24 }, 1);
    let (smyrf_ref, dense_ref) = references(&cases);
    // The same configuration with each thread policy: results must not depend on it.
    let plans: Vec<Plan> = [0, 1, 3]
        .into_iter()
        .map(|t| Plan::new(config(t), D).unwrap())
        .collect();
    let calls = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (cases, plans, calls) = (&cases, &plans, &calls);
            let (smyrf_ref, dense_ref) = (&smyrf_ref, &dense_ref);
            scope.spawn(move || {
                for i in 0..CALLS_PER_THREAD {
                    // Each thread walks the cases in its own order and rotates the plans.
                    let c = (t * 7 + i * (2 * t + 1)) % cases.len();
                    let plan = &plans[(t + i) % plans.len()];
                    let got = match i % 5 {
                        4 => (cases[c].run(None) == dense_ref[c], "dense"),
                        _ => (cases[c].run(Some(plan)) == smyrf_ref[c], "smyrf"),
                    };
                    assert!(got.0, "thread {t} call {i}: {} case {c} differs", got.1);
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(calls.into_inner(), THREADS * CALLS_PER_THREAD);
}

#[test]
fn plans_created_used_and_destroyed_concurrently() {
    let cases = cases(if cfg!(miri) { 2 } else { 12 }, 2);
    let (smyrf_ref, _) = references(&cases);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (cases, smyrf_ref) = (&cases, &smyrf_ref);
            scope.spawn(move || {
                for i in 0..LIFECYCLES_PER_THREAD {
                    let c = (t + 3 * i) % cases.len();
                    let num_threads = [0, 1, 2][(t + i) % 3];
                    if (t + i) % 2 == 0 {
                        let plan = Plan::new(config(num_threads), D).unwrap();
                        assert!(cases[c].run(Some(&plan)) == smyrf_ref[c], "thread {t}");
                        drop(plan);
                    } else {
                        let mut c_config = smyrf_config_default();
                        c_config.n_hashes = 2;
                        c_config.q_cluster_size = 8;
                        c_config.seed = 42;
                        c_config.num_threads = num_threads as u32;
                        let mut plan = std::ptr::null_mut();
                        // SAFETY: valid config and out pointer.
                        let status = unsafe { smyrf_plan_create(&c_config, D, &mut plan) };
                        assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
                        assert!(cases[c].run_c(plan) == smyrf_ref[c], "thread {t} (C ABI)");
                        // SAFETY: a live plan no other thread uses, destroyed once.
                        unsafe { smyrf_plan_destroy(plan) };
                    }
                }
            });
        }
    });
}

#[test]
fn error_messages_stay_with_their_thread() {
    // Each thread makes its own kind of bad call between good ones; the message it reads
    // back must describe its own failure, never another thread's, and a good call clears it.
    let cases = cases(1, 3);
    let plan = Plan::new(config(1), D).unwrap();
    let want = cases[0].run(Some(&plan));
    let rounds = if cfg!(miri) { 1 } else { 200 };
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (cases, want) = (&cases, &want);
            scope.spawn(move || {
                let mut c_config = smyrf_config_default();
                c_config.q_cluster_size = 8;
                c_config.seed = 42;
                c_config.n_hashes = 2;
                c_config.num_threads = 1;
                let mut good = std::ptr::null_mut();
                // SAFETY: valid config and out pointer.
                let status = unsafe { smyrf_plan_create(&c_config, D, &mut good) };
                assert_eq!(status, smyrf_status::SMYRF_OK);
                for _ in 0..rounds {
                    // A bad head dim, different for every thread, is named in the message.
                    let mut bad = std::ptr::null_mut();
                    let head_dim = (1 << 16) + 1 + t;
                    // SAFETY: as above.
                    let status = unsafe { smyrf_plan_create(&c_config, head_dim, &mut bad) };
                    assert_eq!(status, smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT);
                    assert!(bad.is_null());
                    let message = last_error();
                    assert!(message.contains("head_dim"), "thread {t}: {message}");
                    // The scratch query names the zero length this thread passed.
                    let which = t % 3;
                    let mut lengths = [1usize; 3];
                    lengths[which] = 0;
                    let mut bytes = 0;
                    // SAFETY: a live plan and a writable usize.
                    let status = unsafe {
                        smyrf_plan_scratch_bytes(
                            good, lengths[0], lengths[1], lengths[2], &mut bytes,
                        )
                    };
                    assert_eq!(status, smyrf_status::SMYRF_ERROR_INVALID_ARGUMENT);
                    let name = ["q_seq_len", "k_seq_len", "v_dim"][which];
                    let message = last_error();
                    assert!(message.contains(name), "thread {t}: {message}");
                    assert!(cases[0].run_c(good) == *want);
                    assert_eq!(
                        last_error(),
                        "",
                        "thread {t}: a good call clears the message"
                    );
                }
                // SAFETY: destroyed once, by its only user.
                unsafe { smyrf_plan_destroy(good) };
            });
        }
    });
}
