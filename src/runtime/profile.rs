//! Optional per-stage timing for the end-to-end benchmark. Compiled in only with the
//! `profile` feature (without it a timer is an empty value), and then still off until
//! `internals::profile_stages` switches it on (one relaxed atomic load per stage). Times are
//! summed over threads, so shares are shares of CPU time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Pipeline stages that are timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Norms, hashes and the lift (design §1 steps 1–3).
    Projection = 0,
    /// Argsort of every round and side, cut points (step 4).
    Sort = 1,
    /// Gathering cluster rows into tiles.
    Gather = 2,
    /// Q·Kᵀ, softmax, P·V kernels (step 5).
    Kernels = 3,
    /// Normalisation, scatter to original order and the round combine (step 6).
    Combine = 4,
}

pub(crate) const STAGES: usize = 5;

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; STAGES] = [const { AtomicU64::new(0) }; STAGES];

/// A running timer for one stage; records on drop when profiling is on.
pub(crate) struct StageTimer {
    stage: Stage,
    start: Option<Instant>,
}

impl StageTimer {
    #[inline(always)]
    pub(crate) fn start(stage: Stage) -> StageTimer {
        let on = cfg!(feature = "profile") && ENABLED.load(Ordering::Relaxed);
        let start = on.then(Instant::now);
        StageTimer { stage, start }
    }
}

impl Drop for StageTimer {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(start) = self.start {
            let nanos = start.elapsed().as_nanos() as u64;
            NANOS[self.stage as usize].fetch_add(nanos, Ordering::Relaxed);
        }
    }
}

/// Runs `f` inside a timer for `stage`, on whichever thread runs `f`.
#[inline(always)]
pub(crate) fn timed<R>(stage: Stage, f: impl FnOnce() -> R) -> R {
    let _timer = StageTimer::start(stage);
    f()
}

/// Runs `job` with profiling on and returns the CPU seconds spent in each stage, in the order
/// of [`Stage`]. Not meant to run concurrently with other profiled jobs.
#[cfg(feature = "profile")]
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub(crate) fn profile(job: impl FnOnce()) -> [f64; STAGES] {
    for n in &NANOS {
        n.store(0, Ordering::Relaxed);
    }
    ENABLED.store(true, Ordering::SeqCst);
    job();
    ENABLED.store(false, Ordering::SeqCst);
    let mut out = [0.0; STAGES];
    for (o, n) in out.iter_mut().zip(&NANOS) {
        *o = n.load(Ordering::Relaxed) as f64 * 1e-9;
    }
    out
}
