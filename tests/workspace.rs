//! The caller's workspace (design §3, memory): with `CallOptions::workspace` of the size
//! `Plan::workspace_size` (or `Plan::dense_workspace_size`) gives, a call allocates nothing
//! on the caller's thread nor on an engine's workers, and computes the same bits as without
//! one; a workspace one byte short is refused with the size it needs and nothing is written;
//! any start address works.
//!
//! A counting global allocator counts the allocations of the threads a test marks (the
//! caller and its engine's workers) while it measures; the tests take turns, so no other
//! test's threads are marked meanwhile. Rayon's own pool is not covered: it may allocate in
//! its job queues.

mod common;

use common::types::Elem;
use common::{bits, Rng, SENTINEL};
use half::{bf16, f16};
use smyrf::{
    CallOptions, Config, Error, KvIndex, ParallelFor, Plan, Shape, SinkSelection, TensorView,
    TensorViewMut,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

// ---------------------------------------------------------------------------------------
// Counting allocations

struct Counting;

/// On while a test measures.
static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
/// The part of `ALLOCATIONS` made on engine workers.
static ON_WORKERS: AtomicUsize = AtomicUsize::new(0);

/// Whose allocations a thread's are.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    None,
    Caller,
    Worker,
}

thread_local! {
    /// Whether this thread's allocations are counted: the measuring caller and its
    /// engine's workers.
    static MARKED: Cell<Mark> = const { Cell::new(Mark::None) };
}

fn count_this_one() {
    if !COUNTING.load(Ordering::SeqCst) {
        return;
    }
    match MARKED.try_with(Cell::get).unwrap_or(Mark::None) {
        Mark::None => {}
        Mark::Caller => {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        Mark::Worker => {
            ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
            ON_WORKERS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

// SAFETY: forwards every request to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_this_one();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_this_one();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_this_one();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One test at a time: a test's engine threads stay marked while it runs.
fn take_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Allocations made by this thread and the marked engine workers while `f` runs.
fn allocations_during<R>(f: impl FnOnce() -> R) -> (usize, R) {
    MARKED.with(|m| m.set(Mark::Caller));
    ALLOCATIONS.store(0, Ordering::SeqCst);
    ON_WORKERS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let result = f();
    COUNTING.store(false, Ordering::SeqCst);
    MARKED.with(|m| m.set(Mark::None));
    (ALLOCATIONS.load(Ordering::SeqCst), result)
}

// ---------------------------------------------------------------------------------------
// Engines whose own `run` allocates nothing

/// Runs every task in order on the calling thread, while claiming `workers` (so a call with
/// fewer tasks spreads its clusters over it, as over real workers).
struct Serial {
    workers: usize,
}

impl ParallelFor for Serial {
    fn workers(&self) -> usize {
        self.workers
    }
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        (0..n).for_each(task);
    }
}

/// Worker threads started up front and woken for each `run`, which hands them the task
/// through a mutex and an atomic index and waits until every worker is done with it. A
/// task's panic is caught on the worker and raised again by `run`.
struct Persistent {
    shared: Arc<Shared>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

type Task = &'static (dyn Fn(usize) + Sync);

struct Shared {
    state: Mutex<Job>,
    wake: Condvar,
    done: Condvar,
    next: AtomicUsize,
    workers: usize,
}

#[derive(Default)]
struct Job {
    task: Option<Task>,
    n: usize,
    generation: u64,
    finished: usize,
    panicked: bool,
    quit: bool,
}

impl Persistent {
    fn new(workers: usize) -> Persistent {
        let shared = Arc::new(Shared {
            state: Mutex::new(Job::default()),
            wake: Condvar::new(),
            done: Condvar::new(),
            next: AtomicUsize::new(0),
            workers,
        });
        let threads = (0..workers)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || worker(&shared))
            })
            .collect();
        Persistent { shared, threads }
    }
}

fn worker(shared: &Shared) {
    MARKED.with(|m| m.set(Mark::Worker));
    let mut seen = 0;
    loop {
        let (task, n) = {
            let mut job = shared.state.lock().unwrap();
            while job.generation == seen && !job.quit {
                job = shared.wake.wait(job).unwrap();
            }
            if job.quit {
                return;
            }
            seen = job.generation;
            (job.task.expect("a task with each generation"), job.n)
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
            let i = shared.next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            task(i);
        }));
        let mut job = shared.state.lock().unwrap();
        job.panicked |= ran.is_err();
        job.finished += 1;
        if job.finished == shared.workers {
            shared.done.notify_all();
        }
    }
}

impl ParallelFor for Persistent {
    fn workers(&self) -> usize {
        self.shared.workers
    }
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        // SAFETY: only the lifetime is erased; every worker is done with the task before this
        // function returns (it waits for all of them to finish this generation), and the
        // slot is cleared before the borrow ends.
        let task: Task = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Task>(task) };
        let shared = &self.shared;
        let mut job = shared.state.lock().unwrap();
        shared.next.store(0, Ordering::Relaxed);
        job.task = Some(task);
        job.n = n;
        job.finished = 0;
        job.generation += 1;
        shared.wake.notify_all();
        while job.finished < shared.workers {
            job = shared.done.wait(job).unwrap();
        }
        job.task = None;
        if std::mem::take(&mut job.panicked) {
            drop(job);
            panic!("a task panicked on an engine worker");
        }
    }
}

impl Drop for Persistent {
    fn drop(&mut self) {
        self.shared.state.lock().unwrap().quit = true;
        self.shared.wake.notify_all();
        for thread in self.threads.drain(..) {
            thread.join().unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Calls

/// Sizes `(b, hq, hkv, nq, nk, d, dv)` and the data and options of one call.
struct Case {
    b: usize,
    hq: usize,
    hkv: usize,
    nq: usize,
    nk: usize,
    d: usize,
    dv: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// A mask with about one key in six off, key lengths (two thirds of the keys for the
    /// first batch element; none or one for the last when there are several), head sinks
    /// (the last is −∞, no sink).
    mask: Vec<u8>,
    lengths: Vec<u32>,
    sinks: Vec<f32>,
    /// A causal call at the default offset.
    causal: bool,
}

impl Case {
    fn new(
        seed: u64,
        (b, hq, hkv, nq, nk, d, dv): (usize, usize, usize, usize, usize, usize, usize),
    ) -> Case {
        let mut rng = Rng(seed);
        let mut gen = |len: usize| (0..len).map(|_| rng.symmetric(1.5)).collect::<Vec<f32>>();
        let (q, k, v) = (
            gen(b * hq * nq * d),
            gen(b * hkv * nk * d),
            gen(b * hkv * nk * dv),
        );
        let mask = (0..b * nk)
            .map(|j| u8::from(j % nk == 0 || (j * 7919) % 6 != 1))
            .collect();
        // With one valid key, one cluster holds every query: the largest tiles.
        let last = u32::from(!seed.is_multiple_of(2));
        let lengths = (0..b)
            .map(|i| match i {
                _ if b > 1 && i == b - 1 => last,
                0 => (nk * 2 / 3) as u32,
                _ => nk as u32,
            })
            .collect();
        let mut sinks: Vec<f32> = (0..hq).map(|h| 0.25 * h as f32 - 0.5).collect();
        sinks[hq - 1] = f32::NEG_INFINITY;
        Case {
            b,
            hq,
            hkv,
            nq,
            nk,
            d,
            dv,
            q,
            k,
            v,
            mask,
            lengths,
            sinks,
            causal: false,
        }
    }
}

/// SMYRF or dense attention.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Smyrf,
    Dense,
}

/// One call's typed buffers.
struct Typed<TQ, TK, TV> {
    q: Vec<TQ>,
    k: Vec<TK>,
    v: Vec<TV>,
}

fn typed<TQ: Elem, TK: Elem, TV: Elem>(case: &Case) -> Typed<TQ, TK, TV> {
    Typed {
        q: case.q.iter().map(|&x| TQ::from_f32(x)).collect(),
        k: case.k.iter().map(|&x| TK::from_f32(x)).collect(),
        v: case.v.iter().map(|&x| TV::from_f32(x)).collect(),
    }
}

/// The views of a case over `data`.
fn views<'a, TQ: Elem, TK: Elem, TV: Elem>(
    case: &Case,
    data: &'a Typed<TQ, TK, TV>,
) -> (TensorView<'a, TQ>, TensorView<'a, TK>, TensorView<'a, TV>) {
    let Case {
        b,
        hq,
        hkv,
        nq,
        nk,
        d,
        dv,
        ..
    } = *case;
    (
        TensorView::new(&data.q, Shape::bhnd(b, hq, nq, d)).unwrap(),
        TensorView::new(&data.k, Shape::bhnd(b, hkv, nk, d)).unwrap(),
        TensorView::new(&data.v, Shape::bhnd(b, hkv, nk, dv)).unwrap(),
    )
}

/// Every option of the case, on `engine` when given.
fn options<'a>(case: &'a Case, engine: Option<&'a dyn ParallelFor>) -> CallOptions<'a> {
    let options = CallOptions::new()
        .key_mask(&case.mask)
        .key_lengths(&case.lengths)
        .head_sinks(&case.sinks);
    let options = if case.causal {
        options.causal()
    } else {
        options
    };
    match engine {
        Some(engine) => options.parallel_for(engine),
        None => options,
    }
}

fn call<TQ: Elem, TK: Elem, TV: Elem, TO: Elem>(
    plan: &Plan,
    kind: Kind,
    (q, k, v): (
        &TensorView<'_, TQ>,
        &TensorView<'_, TK>,
        &TensorView<'_, TV>,
    ),
    out: &mut TensorViewMut<'_, TO>,
    options: CallOptions<'_>,
) -> smyrf::Result<()> {
    match kind {
        Kind::Smyrf => plan.attention_with(q, k, v, out, options),
        Kind::Dense => plan.dense_attention_with(q, k, v, out, options),
    }
}

fn workspace_size<TQ: Elem, TK: Elem, TV: Elem, TO: Elem>(
    plan: &Plan,
    kind: Kind,
    (q, k, v): (
        &TensorView<'_, TQ>,
        &TensorView<'_, TK>,
        &TensorView<'_, TV>,
    ),
    out: &TensorViewMut<'_, TO>,
    options: &CallOptions<'_>,
) -> usize {
    match kind {
        Kind::Smyrf => plan.workspace_size(q, k, v, out, options),
        Kind::Dense => plan.dense_workspace_size(q, k, v, out, options),
    }
    .unwrap()
}

/// Output bits and lse bits of one call.
type Results = (Vec<u32>, Vec<u32>);

/// The case's call without a workspace, and with one carved from `workspace[offset..]`
/// (`None`: exactly the size asked for, at offset 0); returns the allocations of the second
/// call, both results, and the workspace size.
fn both<TQ: Elem, TK: Elem, TV: Elem, TO: Elem>(
    plan: &Plan,
    kind: Kind,
    case: &Case,
    engine: Option<&dyn ParallelFor>,
    offset: usize,
) -> (usize, Results, Results, usize) {
    let data = typed::<TQ, TK, TV>(case);
    let (q, k, v) = views(case, &data);
    let out_len = case.b * case.hq * case.nq * case.dv;
    let lse_len = case.b * case.hq * case.nq;
    let out_shape = (case.b, case.hq, case.nq, case.dv);
    let run = |workspace: Option<&mut [u8]>| -> (usize, Results) {
        let mut out = vec![TO::from_f32(SENTINEL); out_len];
        let mut lse = vec![SENTINEL; lse_len];
        let (b, h, n, dv) = out_shape;
        let mut view = TensorViewMut::bhnd(&mut out, b, h, n, dv).unwrap();
        let mut options = options(case, engine).lse(&mut lse);
        let measure = workspace.is_some();
        if let Some(workspace) = workspace {
            options = options.workspace(workspace);
        }
        let (allocations, result) = match measure {
            true => allocations_during(|| call(plan, kind, (&q, &k, &v), &mut view, options)),
            false => (0, call(plan, kind, (&q, &k, &v), &mut view, options)),
        };
        result.unwrap();
        let out = out.into_iter().map(Elem::bits).collect();
        (allocations, (out, bits(&lse)))
    };
    let (_, without) = run(None);
    let needed = {
        let mut out = vec![TO::default(); out_len];
        let (b, h, n, dv) = out_shape;
        let view = TensorViewMut::bhnd(&mut out, b, h, n, dv).unwrap();
        workspace_size(plan, kind, (&q, &k, &v), &view, &options(case, engine))
    };
    let mut storage = vec![0x5Au8; offset + needed];
    let (allocations, with) = run(Some(&mut storage[offset..]));
    (allocations, without, with, needed)
}

/// The call of `case` on `plan` with element types (TQ, TK, TV, TO) allocates nothing with
/// a workspace and gives the bits of the call without one.
fn check<TQ: Elem, TK: Elem, TV: Elem, TO: Elem>(
    plan: &Plan,
    kind: Kind,
    case: &Case,
    engine: Option<&dyn ParallelFor>,
    label: &str,
) {
    let (allocations, without, with, needed) = both::<TQ, TK, TV, TO>(plan, kind, case, engine, 0);
    assert_eq!(allocations, 0, "{label}: {allocations} allocations");
    assert!(
        without == with,
        "{label}: the workspace changed the results"
    );
    assert!(needed > 0, "{label}");
}

/// Checks every executor and element-type mix of interest for one plan config and case.
fn check_all(config: &Config, kind: Kind, case: &Case, label: &str) {
    let plan = Plan::new(config.clone().num_threads(1), case.d).unwrap();
    let serial = Serial { workers: 4 };
    let persistent = Persistent::new(3);
    let engines: [(&str, Option<&dyn ParallelFor>); 3] = [
        ("caller's thread", None),
        ("serial engine", Some(&serial)),
        ("engine threads", Some(&persistent)),
    ];
    for (executor, engine) in engines {
        let label = format!("{label}, {kind:?}, {executor}");
        check::<f32, f32, f32, f32>(&plan, kind, case, engine, &format!("{label}, f32"));
        check::<f16, f16, f16, bf16>(&plan, kind, case, engine, &format!("{label}, f16→bf16"));
        check::<f32, bf16, f16, f16>(&plan, kind, case, engine, &format!("{label}, mixed"));
    }
}

/// Shapes `(b, hq, hkv, nq, nk, d, dv)`: one task (fewer than workers), several (GQA), more
/// keys than a comparison sort takes, and queries and keys of different lengths.
const SHAPES: [(usize, usize, usize, usize, usize, usize, usize); 4] = [
    (1, 1, 1, 64, 64, 16, 16),
    (2, 4, 2, 120, 120, 8, 12),
    (1, 2, 1, 520, 520, 12, 8),
    (2, 2, 1, 50, 150, 16, 20),
];

fn configs() -> Vec<(&'static str, Config)> {
    let plain = Config::default().q_cluster_size(16);
    vec![
        ("plain", plain.clone()),
        (
            "R = 3, ck = 24",
            plain.clone().n_hashes(3).k_cluster_size(24),
        ),
        (
            "sinks, window, samples",
            plain
                .clone()
                .n_sinks(3)
                .window(10)
                .n_samples(5)
                .sample_group(8),
        ),
        (
            "mean-query sinks, samples",
            plain
                .clone()
                .n_sinks(8)
                .sink_selection(SinkSelection::MeanQuery)
                .n_samples(4),
        ),
        ("hybrid preset", Config::hybrid(32)),
        // A sample group per query: as many round-0 calls as queries.
        (
            "samples, groups of one",
            plain.clone().n_samples(2).sample_group(1),
        ),
    ]
}

#[test]
fn the_counter_sees_a_call_s_allocations_on_the_caller_and_on_the_workers() {
    let _turn = take_turn();
    // A fresh plan without a workspace grows its scratch: on the caller's thread for the
    // (batch, head) task, on the engine's workers for the clusters of that one task.
    let case = Case::new(8, (1, 1, 1, 256, 256, 8, 8));
    let plan = Plan::new(Config::default().q_cluster_size(16).num_threads(1), 8).unwrap();
    let engine = Persistent::new(3);
    let data = typed::<f32, f32, f32>(&case);
    let (q, k, v) = views(&case, &data);
    let mut out = vec![0.0f32; case.nq * case.dv];
    let mut view = TensorViewMut::bhnd(&mut out, 1, 1, case.nq, case.dv).unwrap();
    let (allocations, result) = allocations_during(|| {
        plan.attention_with(&q, &k, &v, &mut view, options(&case, Some(&engine)))
    });
    result.unwrap();
    let on_workers = ON_WORKERS.load(Ordering::SeqCst);
    assert!(
        on_workers > 0,
        "{on_workers} of {allocations} on the workers"
    );
    assert!(
        allocations > on_workers,
        "{on_workers} of {allocations} on the workers"
    );
}

#[test]
fn smyrf_calls_with_a_workspace_allocate_nothing_and_keep_their_bits() {
    let _turn = take_turn();
    for (seed, shape) in SHAPES.into_iter().enumerate() {
        let case = Case::new(seed as u64, shape);
        for (name, config) in configs() {
            if config.window > 0 && case.nq != case.nk {
                continue; // refused: the window needs self-attention
            }
            check_all(&config, Kind::Smyrf, &case, &format!("{name} {shape:?}"));
        }
    }
}

#[test]
fn dense_calls_with_a_workspace_allocate_nothing_and_keep_their_bits() {
    let _turn = take_turn();
    for (seed, shape) in SHAPES.into_iter().enumerate() {
        let case = Case::new(seed as u64, shape);
        check_all(
            &Config::default(),
            Kind::Dense,
            &case,
            &format!("{shape:?}"),
        );
    }
    // More queries than one dense task takes.
    let case = Case::new(9, (1, 2, 2, 300, 90, 8, 8));
    check_all(&Config::default(), Kind::Dense, &case, "300 queries");
}

#[test]
fn causal_calls_with_a_workspace_allocate_nothing_and_keep_their_bits() {
    let _turn = take_turn();
    for (seed, shape) in SHAPES.into_iter().enumerate() {
        let case = Case {
            causal: true,
            ..Case::new(seed as u64, shape)
        };
        let plain = Config::default().q_cluster_size(16);
        check_all(&plain, Kind::Smyrf, &case, &format!("causal {shape:?}"));
        check_all(&plain, Kind::Dense, &case, &format!("causal {shape:?}"));
    }
}

#[test]
fn any_start_address_works() {
    let _turn = take_turn();
    let case = Case::new(3, (2, 2, 1, 96, 96, 8, 8));
    let config = Config::default().q_cluster_size(16).n_sinks(2).window(6);
    let plan = Plan::new(config.num_threads(1), case.d).unwrap();
    let engine = Persistent::new(2);
    for offset in 0..64 {
        for kind in [Kind::Smyrf, Kind::Dense] {
            for engine in [None, Some(&engine as &dyn ParallelFor)] {
                let (allocations, without, with, _) =
                    both::<f32, f16, f32, f32>(&plan, kind, &case, engine, offset);
                assert_eq!(allocations, 0, "offset {offset}, {kind:?}");
                assert!(without == with, "offset {offset}, {kind:?}");
            }
        }
    }
}

#[test]
fn a_workspace_one_byte_short_is_refused_and_nothing_is_written() {
    let _turn = take_turn();
    let case = Case::new(5, (2, 4, 2, 80, 80, 8, 8));
    let serial = Serial { workers: 3 };
    for kind in [Kind::Smyrf, Kind::Dense] {
        for threads in [1, 2] {
            let plan = Plan::new(Config::default().num_threads(threads), case.d).unwrap();
            for engine in [None, Some(&serial as &dyn ParallelFor)] {
                let data = typed::<f32, f32, f32>(&case);
                let (q, k, v) = views(&case, &data);
                let mut out = vec![SENTINEL; case.b * case.hq * case.nq * case.dv];
                let mut lse = vec![SENTINEL; case.b * case.hq * case.nq];
                let mut view =
                    TensorViewMut::bhnd(&mut out, case.b, case.hq, case.nq, case.dv).unwrap();
                let needed =
                    workspace_size(&plan, kind, (&q, &k, &v), &view, &options(&case, engine));
                let mut workspace = vec![0xA5u8; needed - 1];
                let options = options(&case, engine)
                    .lse(&mut lse)
                    .workspace(&mut workspace);
                let error = call(&plan, kind, (&q, &k, &v), &mut view, options).unwrap_err();
                assert_eq!(
                    error,
                    Error::WorkspaceTooSmall {
                        needed,
                        given: needed - 1
                    },
                    "{kind:?}, {threads} threads"
                );
                assert!(error.to_string().contains(&needed.to_string()));
                assert!(out.iter().chain(&lse).all(|&x| x == SENTINEL));
                assert!(workspace.iter().all(|&x| x == 0xA5));
            }
        }
    }
}

#[test]
fn the_size_follows_the_workers_and_the_element_types() {
    let _turn = take_turn();
    let case = Case::new(6, (2, 4, 4, 128, 128, 16, 16));
    let plan = Plan::new(Config::default().num_threads(1), case.d).unwrap();
    let size = |engine: Option<&dyn ParallelFor>, dtypes: bool, kind: Kind| {
        let mut out = vec![0.0f32; case.b * case.hq * case.nq * case.dv];
        let view = TensorViewMut::bhnd(&mut out, case.b, case.hq, case.nq, case.dv).unwrap();
        let options = options(&case, engine);
        match dtypes {
            false => {
                let data = typed::<f32, f32, f32>(&case);
                let (q, k, v) = views(&case, &data);
                workspace_size(&plan, kind, (&q, &k, &v), &view, &options)
            }
            true => {
                let data = typed::<f16, f16, f32>(&case);
                let (q, k, v) = views(&case, &data);
                workspace_size(&plan, kind, (&q, &k, &v), &view, &options)
            }
        }
    };
    for kind in [Kind::Smyrf, Kind::Dense] {
        let one = size(None, false, kind);
        let four = size(Some(&Serial { workers: 4 }), false, kind);
        // A task set per worker (8 tasks here), and a wider workspace for widened rows.
        assert!(four > 3 * one, "{kind:?}: {one} for 1 worker, {four} for 4");
        assert!(size(None, true, kind) > one, "{kind:?}");
        // Never more sets than can run at once (tasks, and for tiles Nq per task).
        assert_eq!(
            size(Some(&Serial { workers: 2000 }), false, kind),
            size(Some(&Serial { workers: 5000 }), false, kind),
            "{kind:?}"
        );
    }
    // The size query checks the call as the call does.
    let data = typed::<f32, f32, f32>(&case);
    let (q, k, v) = views(&case, &data);
    let mut out = vec![0.0f32; case.b * case.hq * case.nq * 8];
    let view = TensorViewMut::bhnd(&mut out, case.b, case.hq, case.nq, 8).unwrap();
    assert!(matches!(
        plan.workspace_size(&q, &k, &v, &view, &CallOptions::new()),
        Err(Error::ShapeMismatch { .. })
    ));
    let other = Plan::new(Config::default(), 8).unwrap();
    let mut out = vec![0.0f32; case.b * case.hq * case.nq * case.dv];
    let view = TensorViewMut::bhnd(&mut out, case.b, case.hq, case.nq, case.dv).unwrap();
    assert!(matches!(
        other.workspace_size(&q, &k, &v, &view, &CallOptions::new()),
        Err(Error::HeadDimMismatch { .. })
    ));
}

#[test]
fn a_plan_s_own_threads_and_concurrent_callers_work_from_workspaces() {
    let _turn = take_turn();
    let case = Case::new(7, (2, 2, 2, 200, 200, 8, 8));
    // The plan's own pool (allocation-free only on the caller's thread is not claimed
    // there: rayon's queues allocate), with fewer tasks than threads and more.
    for threads in [3, 8] {
        let plan = Plan::new(Config::default().q_cluster_size(16).num_threads(threads), 8).unwrap();
        for kind in [Kind::Smyrf, Kind::Dense] {
            let (_, without, with, _) = both::<f32, f32, f32, f32>(&plan, kind, &case, None, 0);
            assert!(without == with, "{threads} threads, {kind:?}");
        }
    }
    // Threads sharing one plan, each with its own workspace (their counts overlap: only the
    // results are compared here).
    let plan = Plan::new(Config::default().q_cluster_size(16).num_threads(1), 8).unwrap();
    let (_, reference, _, _) = both::<f32, f32, f32, f32>(&plan, Kind::Smyrf, &case, None, 0);
    std::thread::scope(|scope| {
        for offset in [0, 3, 17, 40] {
            let (plan, case, reference) = (&plan, &case, &reference);
            scope.spawn(move || {
                for _ in 0..3 {
                    let (_, _, with, _) =
                        both::<f32, f32, f32, f32>(plan, Kind::Smyrf, case, None, offset);
                    assert!(with == *reference);
                }
            });
        }
    });
}

#[test]
fn decode_calls_with_a_workspace_allocate_nothing_and_keep_their_bits() {
    let _turn = take_turn();
    let (hq, hkv, n, d) = (4, 2, 700, 16);
    let mut rng = Rng(41);
    let k: Vec<f16> = (0..hkv * n * d)
        .map(|_| f16::from_f32(rng.symmetric(1.0)))
        .collect();
    let v: Vec<f16> = (0..hkv * n * d)
        .map(|_| f16::from_f32(rng.symmetric(1.0)))
        .collect();
    let q: Vec<f32> = (0..hq * d).map(|_| rng.symmetric(1.0)).collect();
    let kv = TensorView::bhnd(&k, 1, hkv, n, d).unwrap();
    let vv = TensorView::bhnd(&v, 1, hkv, n, d).unwrap();
    let qv = TensorView::bhnd(&q, 1, hq, 1, d).unwrap();
    let configs = [
        Config::causal(64),
        Config::causal(64)
            .n_samples(6)
            .n_hashes(2)
            .k_cluster_size(12),
        // Split-KV scoring: 4 tasks on 3 workers.
        Config::causal(64).block_size(2),
    ];
    for (c, config) in configs.into_iter().enumerate() {
        let plan = Plan::new(config, d).unwrap();
        let mut index = KvIndex::new(&plan, 1, hkv, n).unwrap();
        index.append(&kv, &[650]).unwrap();
        for engine in [
            &Serial { workers: 3 } as &dyn ParallelFor,
            &Persistent::new(3) as &dyn ParallelFor,
        ] {
            let mut want = vec![0.0f32; hq * d];
            let mut got = vec![SENTINEL; hq * d];
            plan.decode(
                &index,
                &qv,
                &kv,
                &vv,
                &mut TensorViewMut::bhnd(&mut want, 1, hq, 1, d).unwrap(),
                CallOptions::new().parallel_for(engine),
            )
            .unwrap();
            let bytes = plan
                .decode_workspace_size(
                    &index,
                    &qv,
                    &kv,
                    &vv,
                    &TensorViewMut::bhnd(&mut got, 1, hq, 1, d).unwrap(),
                    &CallOptions::new().parallel_for(engine),
                )
                .unwrap();
            let mut workspace = vec![0u8; bytes];
            let mut view = TensorViewMut::bhnd(&mut got, 1, hq, 1, d).unwrap();
            let (allocations, result) = allocations_during(|| {
                plan.decode(
                    &index,
                    &qv,
                    &kv,
                    &vv,
                    &mut view,
                    CallOptions::new()
                        .parallel_for(engine)
                        .workspace(&mut workspace),
                )
            });
            result.unwrap();
            assert_eq!(allocations, 0, "config {c}: allocations");
            assert_eq!(bits(&got), bits(&want), "config {c}");
        }
    }
}

/// An engine that starts its tasks in waves of `workers`, one thread each, released
/// together by a barrier: every task of a wave holds its task set at the same time, as the
/// most crowded schedule the `workers` contract allows.
struct Lockstep {
    workers: usize,
}

impl ParallelFor for Lockstep {
    fn workers(&self) -> usize {
        self.workers
    }
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync)) {
        for wave in (0..n).step_by(self.workers) {
            let end = (wave + self.workers).min(n);
            let barrier = std::sync::Barrier::new(end - wave);
            std::thread::scope(|scope| {
                for i in wave..end {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        task(i);
                    });
                }
            });
        }
    }
}

#[test]
fn every_loop_of_a_decode_finds_a_task_set_in_the_workspace() {
    // Dense: 3 key chunks of one key/value head, merged over its 8 query heads (more merges
    // than chunk tasks). Index: one query head whose candidate blocks are scored in 8
    // split-KV pieces (more pieces than heads).
    let (d, n) = (16, 2 * 4096 + 8);
    let mut rng = Rng(43);
    let mut gen = |len: usize| (0..len).map(|_| rng.symmetric(1.0)).collect::<Vec<f32>>();
    let (k, v, q) = (gen(n * d), gen(n * d), gen(8 * d));
    let kv = TensorView::bhnd(&k, 1, 1, n, d).unwrap();
    let vv = TensorView::bhnd(&v, 1, 1, n, d).unwrap();
    let engine = Lockstep { workers: 8 };
    for (label, heads, config) in [
        ("dense", 8, Config::causal(64)),
        ("index", 1, Config::causal(64).block_size(2)),
    ] {
        let qv = TensorView::bhnd(&q[..heads * d], 1, heads, 1, d).unwrap();
        let plan = Plan::new(config, d).unwrap();
        let mut index = KvIndex::new(&plan, 1, 1, n).unwrap();
        index.append(&kv, &[n as u32]).unwrap();
        let mut want = vec![0.0f32; heads * d];
        let mut got = vec![SENTINEL; heads * d];
        let options = || CallOptions::new().parallel_for(&engine);
        let bytes = if label == "dense" {
            let out = TensorViewMut::bhnd(&mut got, 1, heads, 1, d).unwrap();
            plan.dense_workspace_size(&qv, &kv, &vv, &out, &options())
        } else {
            let out = TensorViewMut::bhnd(&mut got, 1, heads, 1, d).unwrap();
            plan.decode_workspace_size(&index, &qv, &kv, &vv, &out, &options())
        }
        .unwrap();
        let mut workspace = vec![0u8; bytes];
        for (buf, options) in [
            (&mut want, options()),
            (&mut got, options().workspace(&mut workspace)),
        ] {
            let mut out = TensorViewMut::bhnd(buf, 1, heads, 1, d).unwrap();
            if label == "dense" {
                plan.dense_attention_with(&qv, &kv, &vv, &mut out, options)
            } else {
                plan.decode(&index, &qv, &kv, &vv, &mut out, options)
            }
            .unwrap();
        }
        assert_eq!(bits(&got), bits(&want), "{label}");
    }
}
