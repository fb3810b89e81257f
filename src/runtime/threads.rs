//! Thread policy (config `num_threads`): the caller's thread, rayon's global pool, or a pool
//! owned by the plan; or, per call, the caller's own workers through a [`ParallelFor`]. Work
//! is split into independent tasks whose results do not depend on which thread runs them, so
//! outputs are bitwise identical for every thread count.

pub(crate) use crate::call::ParallelFor;
use crate::error::{Error, Result};
use crate::runtime::pool::PoolRef;
use rayon::prelude::*;
use std::sync::Mutex;

/// How one loop of a call runs its iterations.
#[derive(Clone, Copy)]
pub(crate) enum Par<'a> {
    /// On the calling thread.
    Serial,
    /// On the current rayon pool.
    Rayon,
    /// On the caller's workers.
    Engine(&'a dyn ParallelFor),
}

impl Par<'_> {
    /// How many of a loop's tasks may run at once: the items a workspace pool needs.
    pub(crate) fn workers(self) -> usize {
        match self {
            Par::Serial => 1,
            Par::Rayon => rayon::current_num_threads(),
            Par::Engine(engine) => engine.workers().max(1),
        }
    }
}

/// Where a plan runs its work.
pub(crate) enum Threads {
    /// Everything on the calling thread (`num_threads = 1`).
    Caller,
    /// Rayon's global pool (`num_threads = 0`).
    Global,
    /// A pool owned by the plan (`num_threads = n > 1`).
    Pool(rayon::ThreadPool),
}

impl Threads {
    pub(crate) fn new(num_threads: usize) -> Result<Threads> {
        match num_threads {
            0 => Ok(Threads::Global),
            1 => Ok(Threads::Caller),
            n => rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("smyrf-{i}"))
                .build()
                .map(Threads::Pool)
                .map_err(|_| Error::OutOfMemory {
                    what: "thread pool",
                }),
        }
    }

    /// How many threads the work is spread over.
    pub(crate) fn count(&self) -> usize {
        match self {
            Threads::Caller => 1,
            Threads::Global => rayon::current_num_threads(),
            Threads::Pool(pool) => pool.current_num_threads(),
        }
    }

    /// Runs `job` with how it may split its work across threads.
    pub(crate) fn run<R: Send>(&self, job: impl FnOnce(Par<'_>) -> R + Send) -> R {
        match self {
            Threads::Caller => job(Par::Serial),
            Threads::Global => job(Par::Rayon),
            Threads::Pool(pool) => pool.install(|| job(Par::Rayon)),
        }
    }
}

/// Calls `task(i)` for every i in `0..count`, spread as `par` says.
pub(crate) fn for_each_index(par: Par<'_>, count: usize, task: impl Fn(usize) + Sync + Send) {
    match par {
        Par::Rayon if count > 1 => (0..count).into_par_iter().for_each(task),
        Par::Engine(engine) if count > 1 => engine.run(count, &task),
        _ => (0..count).for_each(task),
    }
}

/// Calls `task(item, i)` for every i in `0..count`, spread as `par` says, with an item taken
/// from `pool` for each run of consecutive indices on one thread (each index, on an
/// engine's workers). A task must not start parallel work itself: then no thread holds two
/// items, and no more items are in use at once than there are threads (a workspace pool
/// holds exactly that many).
pub(crate) fn for_each_index_with<T: Default + Send>(
    par: Par<'_>,
    count: usize,
    pool: PoolRef<'_, T>,
    task: impl Fn(&mut T, usize) + Sync + Send,
) {
    // Checked up front: a pool short of the loop's workers is a layout bug, which a claim
    // would otherwise meet only on a crowded schedule.
    assert!(
        pool.room() >= count.min(par.workers()),
        "workspace pool of {} items for a loop of {count} tasks on {} workers",
        pool.room(),
        par.workers()
    );
    match par {
        Par::Rayon if count > 1 => (0..count)
            .into_par_iter()
            .for_each_init(|| pool.take(), |item, i| task(item, i)),
        Par::Engine(engine) if count > 1 => engine.run(count, &|i| task(&mut pool.take(), i)),
        _ if count > 0 => {
            let mut item = pool.take();
            (0..count).for_each(|i| task(&mut item, i));
        }
        _ => {}
    }
}

/// Runs `a` and `b`, on two threads when `par` allows.
pub(crate) fn join_if(par: Par<'_>, a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    match par {
        Par::Serial => {
            a();
            b();
        }
        Par::Rayon => {
            rayon::join(a, b);
        }
        Par::Engine(engine) => {
            // Each runs once, on whichever worker takes its index.
            let (a, b) = (Mutex::new(Some(a)), Mutex::new(Some(b)));
            engine.run(2, &|i| {
                if i == 0 {
                    if let Some(a) = a.lock().ok().and_then(|mut a| a.take()) {
                        a();
                    }
                } else if let Some(b) = b.lock().ok().and_then(|mut b| b.take()) {
                    b();
                }
            });
        }
    }
}
