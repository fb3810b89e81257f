//! The scratch items a call's tasks take, from one of two kinds of pool. A [`Pool`] is kept
//! by the plan: a task takes an item (a fresh one when none is free) and gives it back when
//! it is done, so items are freed with the plan and never with a thread. A [`FixedPool`] lives
//! in a caller's workspace for one call: one item per worker, carved up front, each claimed
//! by an atomic flag. [`PoolRef`] is either, for the loops that hand items to tasks.

use super::arena::Arena;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// `T`s carved from a call's workspace, as many as the call runs tasks at once; a task
/// claims a free one with an atomic flag and releases it when done. No lock, no allocation.
pub(crate) struct FixedPool<'a, T> {
    /// `len` initialised items in the workspace.
    items: NonNull<T>,
    /// One flag per item: set while a task holds it.
    claimed: &'a [AtomicBool],
    len: usize,
    _items: PhantomData<&'a mut [T]>,
}

// SAFETY: an item is reached only through a claim, which gives one thread at a time
// exclusive access to it, as a `Mutex<T>` would; so `T: Send` is enough.
unsafe impl<T: Send> Sync for FixedPool<'_, T> {}
// SAFETY: the pool owns its items (in the borrowed workspace); moving it moves them.
unsafe impl<T: Send> Send for FixedPool<'_, T> {}

impl<'a, T> FixedPool<'a, T> {
    /// `count` items, their structs and claim flags carved from `arena` ahead of what each
    /// `make` carves for its buffers. A measuring arena only counts them (and `make`'s
    /// buffers), and the pool it returns is empty.
    pub(crate) fn carve(
        arena: &mut Arena<'a>,
        count: usize,
        mut make: impl FnMut(&mut Arena<'a>) -> T,
    ) -> FixedPool<'a, T> {
        let items = arena.region::<T>(count);
        let flags = arena.region::<AtomicBool>(count);
        let (Some(items), Some(flags)) = (items, flags) else {
            for _ in 0..count {
                drop(make(arena));
            }
            return FixedPool {
                items: NonNull::dangling(),
                claimed: &[],
                len: 0,
                _items: PhantomData,
            };
        };
        for i in 0..count {
            // SAFETY: `count` flags fit the region, which is aligned and this pool's alone.
            unsafe { flags.add(i).write(AtomicBool::new(false)) };
        }
        // SAFETY: `count` initialised flags in the workspace, borrowed for 'a.
        let claimed = unsafe { std::slice::from_raw_parts(flags.as_ptr(), count) };
        let mut pool = FixedPool {
            items,
            claimed,
            len: 0,
            _items: PhantomData,
        };
        for i in 0..count {
            let item = make(arena);
            // SAFETY: slot i of the items' region, aligned and not yet written; `len` counts
            // the written ones, so a panic in `make` drops only those.
            unsafe { items.add(i).write(item) };
            pool.len = i + 1;
        }
        pool
    }

    /// A free item, exclusively the caller's until the guard drops.
    ///
    /// # Panics
    /// When every item is held: the call's loops never run more tasks at once than the pool
    /// has items, so this is a bug.
    pub(crate) fn claim(&self) -> Claimed<'_, T> {
        for (index, flag) in self.claimed.iter().enumerate() {
            // Acquire: what the item's last holder wrote is visible to the new one.
            if flag
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Claimed { pool: self, index };
            }
        }
        panic!(
            "workspace pool of {} items: more tasks at once than the call's workers",
            self.len
        )
    }
}

impl<T> Drop for FixedPool<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the first `len` items are initialised and no claim outlives the pool (a
        // claim borrows it). Then their bytes are zeroed: the padding of the structs was
        // never written, and a caller's byte workspace must hold initialised bytes again.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.items.as_ptr(),
                self.len,
            ));
            std::ptr::write_bytes(self.items.as_ptr(), 0, self.len);
        }
    }
}

/// An item claimed from a [`FixedPool`].
pub(crate) struct Claimed<'p, T> {
    pool: &'p FixedPool<'p, T>,
    index: usize,
}

impl<T> std::ops::Deref for Claimed<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: item `index` is initialised and, while its flag is held, this guard's alone.
        unsafe { &*self.pool.items.as_ptr().add(self.index) }
    }
}

impl<T> std::ops::DerefMut for Claimed<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, borrowed mutably through the guard.
        unsafe { &mut *self.pool.items.as_ptr().add(self.index) }
    }
}

impl<T> Drop for Claimed<'_, T> {
    fn drop(&mut self) {
        // Release: the next holder sees this one's writes.
        self.pool.claimed[self.index].store(false, Ordering::Release);
    }
}

/// Where a loop's tasks take their items: the plan's pool or the call's workspace.
pub(crate) enum PoolRef<'p, T> {
    Heap(&'p Pool<T>),
    Fixed(&'p FixedPool<'p, T>),
}

impl<T> Clone for PoolRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for PoolRef<'_, T> {}

impl<'p, T: Default> PoolRef<'p, T> {
    /// How many items may be held at once: a workspace pool's count, or no bound.
    pub(crate) fn room(self) -> usize {
        match self {
            PoolRef::Heap(_) => usize::MAX,
            PoolRef::Fixed(pool) => pool.len,
        }
    }

    /// An item for one task, given back when the guard drops.
    pub(crate) fn take(self) -> Taken<'p, T> {
        match self {
            PoolRef::Heap(pool) => Taken::Heap(pool.take()),
            PoolRef::Fixed(pool) => Taken::Fixed(pool.claim()),
        }
    }
}

/// An item taken through a [`PoolRef`].
pub(crate) enum Taken<'p, T: Default> {
    Heap(Pooled<'p, T>),
    Fixed(Claimed<'p, T>),
}

impl<T: Default> std::ops::Deref for Taken<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Taken::Heap(item) => item,
            Taken::Fixed(item) => item,
        }
    }
}

impl<T: Default> std::ops::DerefMut for Taken<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match self {
            Taken::Heap(item) => item,
            Taken::Fixed(item) => item,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::MaybeUninit;

    #[test]
    fn claims_hand_out_each_item_once_until_released() {
        let mut measure = Arena::measuring();
        let _ = FixedPool::carve(&mut measure, 3, |a| a.buf::<u32>(5));
        let mut storage = vec![MaybeUninit::<u8>::uninit(); measure.needed()];
        // SAFETY: the pool and its buffers are dropped at the end of this test, before
        // `storage`.
        let mut arena = unsafe { Arena::over(&mut storage) };
        let pool = FixedPool::carve(&mut arena, 3, |a| a.buf::<u32>(5));
        let (mut a, b, c) = (pool.claim(), pool.claim(), pool.claim());
        assert_eq!([a.index, b.index, c.index], [0, 1, 2]);
        a.extend(0..5);
        drop(a);
        let again = pool.claim();
        assert_eq!((again.index, &again[..]), (0, &[0, 1, 2, 3, 4][..]));
        assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.claim())).is_err());
    }
}
