//! Thread policy (config `num_threads`): the caller's thread, rayon's global pool, or a pool
//! owned by the plan. Work is split into independent tasks whose results do not depend on
//! which thread runs them, so outputs are bitwise identical for every thread count.

use crate::error::{Error, Result};
use crate::runtime::pool::Pool;
use rayon::prelude::*;

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

    /// Runs `job` with a flag telling it whether to split work across threads.
    pub(crate) fn run<R: Send>(&self, job: impl FnOnce(bool) -> R + Send) -> R {
        match self {
            Threads::Caller => job(false),
            Threads::Global => job(true),
            Threads::Pool(pool) => pool.install(|| job(true)),
        }
    }
}

/// Calls `task(i)` for every i in `0..count`, in parallel when `parallel` is set.
pub(crate) fn for_each_index(parallel: bool, count: usize, task: impl Fn(usize) + Sync + Send) {
    if parallel && count > 1 {
        (0..count).into_par_iter().for_each(task);
    } else {
        (0..count).for_each(task);
    }
}

/// Calls `task(item, i)` for every i in `0..count`, in parallel when `parallel` is set, with
/// an item taken from `pool` for each run of consecutive indices on one thread. A task must
/// not start parallel work itself: then no thread holds two items, and the pool never holds
/// more items than there are threads.
pub(crate) fn for_each_index_with<T: Default + Send>(
    parallel: bool,
    count: usize,
    pool: &Pool<T>,
    task: impl Fn(&mut T, usize) + Sync + Send,
) {
    if parallel && count > 1 {
        (0..count)
            .into_par_iter()
            .for_each_init(|| pool.take(), |item, i| task(item, i));
    } else if count > 0 {
        let mut item = pool.take();
        (0..count).for_each(|i| task(&mut item, i));
    }
}

/// Runs `a` and `b`, on two threads when `parallel` is set.
pub(crate) fn join_if(parallel: bool, a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    if parallel {
        rayon::join(a, b);
    } else {
        a();
        b();
    }
}
