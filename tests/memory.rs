//! Memory bounds (docs/design.md §3): no allocation proportional to Nq·Nk; the scratch a
//! call allocates stays within `Plan::scratch_bytes`; on the caller's thread a repeated call
//! allocates nothing. A counting global allocator measures it. One test per binary, so no
//! other test allocates concurrently.

use smyrf::{Config, Plan, TensorView, TensorViewMut};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        CALLS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated on top of what was live before, and allocation calls, during `f`.
fn measure(f: impl FnOnce()) -> (usize, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let calls = CALLS.load(Ordering::SeqCst);
    f();
    (
        PEAK.load(Ordering::SeqCst) - base,
        CALLS.load(Ordering::SeqCst) - calls,
    )
}

#[test]
fn scratch_is_bounded_and_reused_at_n_16384() {
    let (b, h, n, d) = (1, 2, 16384, 64);
    let data: Vec<f32> = (0..b * h * n * d)
        .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
        .collect();
    let mut out = vec![0.0f32; b * h * n * d];
    let mut lse = vec![0.0f32; b * h * n];
    let mask: Vec<u8> = (0..n).map(|j| (j % 7 != 0) as u8).collect();
    let quadratic = n * n * 4;
    let view = TensorView::bhnd(&data, b, h, n, d).unwrap();
    for (rounds, cluster) in [(2, 128), (4, 32), (1, 2048)] {
        let plan = Plan::new(
            Config::default()
                .n_hashes(rounds)
                .q_cluster_size(cluster)
                .num_threads(1),
            d,
        )
        .unwrap();
        let bound = plan.scratch_bytes(n, n, d);
        let mut run = || {
            let mut o = TensorViewMut::bhnd(&mut out, b, h, n, d).unwrap();
            plan.attention_with(
                &view,
                &view,
                &view,
                &mut o,
                smyrf::CallOptions::new().key_mask(&mask).lse(&mut lse),
            )
            .unwrap();
        };
        let (first_peak, _) = measure(&mut run);
        assert!(
            first_peak <= bound,
            "R={rounds} c={cluster}: first call peak {first_peak} B > scratch_bytes {bound} B"
        );
        assert!(
            first_peak < quadratic / 50,
            "R={rounds} c={cluster}: {first_peak} B is not small against Nq·Nk"
        );
        let (second_peak, second_calls) = measure(&mut run);
        assert_eq!(
            second_calls, 0,
            "R={rounds} c={cluster}: the caller's-thread mode allocated on a repeated call"
        );
        assert_eq!(second_peak, 0);
    }
    // Dense attention: O(N) bookkeeping only, never an Nq × Nk buffer.
    let (dense_peak, _) = measure(|| {
        let mut o = TensorViewMut::bhnd(&mut out, b, h, n, d).unwrap();
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| {
                smyrf::Plan::new(smyrf::Config::default(), view.shape().dim)
                    .and_then(|plan| {
                        plan.dense_attention_with(
                            &view,
                            &view,
                            &view,
                            &mut o,
                            smyrf::CallOptions::new().key_mask(&mask),
                        )
                    })
                    .unwrap()
            });
    });
    assert!(
        dense_peak < quadratic / 50,
        "dense attention allocated {dense_peak} B"
    );
}
