//! Buffers a plan keeps for reuse: a task takes one (a fresh one when none is free) and gives
//! it back when it is done, so they are freed with the plan and never with a thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A set of reusable `T`s.
#[derive(Default)]
pub(crate) struct Pool<T> {
    free: Mutex<Vec<T>>,
    /// How many `T`s were ever made: the most that were in use at once.
    made: AtomicUsize,
}

impl<T: Default> Pool<T> {
    /// A free `T`, or a new one; back in the pool when the guard drops.
    pub(crate) fn take(&self) -> Pooled<'_, T> {
        let item = self.lock().pop().unwrap_or_else(|| {
            self.made.fetch_add(1, Ordering::Relaxed);
            T::default()
        });
        Pooled {
            pool: self,
            item: Some(item),
        }
    }

    /// The most `T`s that were in use at once so far.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn made(&self) -> usize {
        self.made.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        // A panic while the lock was held left the list whole: take it as it is.
        self.free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A `T` taken from a [`Pool`].
pub(crate) struct Pooled<'a, T: Default> {
    pool: &'a Pool<T>,
    item: Option<T>,
}

impl<T: Default> std::ops::Deref for Pooled<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.item.as_ref().expect("present until drop")
    }
}

impl<T: Default> std::ops::DerefMut for Pooled<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.item.as_mut().expect("present until drop")
    }
}

impl<T: Default> Drop for Pooled<'_, T> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.pool.lock().push(item);
        }
    }
}
