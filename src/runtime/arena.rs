//! A caller's workspace carved into aligned, typed regions for one call (design §3, memory).
//! The same code sizes the workspace: an arena that only measures runs the very layout a call
//! carves, so the size a caller is told and the regions the call uses cannot drift apart.

use super::buffer::{AlignedBuf, Buf, Line, LINE_FLOATS};
use std::marker::PhantomData;
use std::mem::{align_of, size_of, MaybeUninit};
use std::ptr::NonNull;

/// Largest alignment of a region (a cache line): the workspace is carved from its first byte
/// aligned to this, so each region's padding does not depend on where the workspace starts.
pub(crate) const MAX_ALIGN: usize = 64;

/// Regions carved one after the other from a workspace, or, when measuring, only counted.
pub(crate) struct Arena<'a> {
    /// The workspace's first 64-byte aligned byte; `None` when measuring.
    base: Option<NonNull<u8>>,
    /// Bytes usable from `base`.
    limit: usize,
    /// Bytes carved from `base`, padding included (saturating when measuring).
    used: usize,
    _workspace: PhantomData<&'a mut [MaybeUninit<u8>]>,
}

impl Arena<'static> {
    /// An arena that carves nothing and counts what a layout needs: its buffers are empty
    /// heap buffers, and [`Arena::needed`] is the workspace size.
    pub(crate) fn measuring() -> Arena<'static> {
        Arena {
            base: None,
            limit: usize::MAX,
            used: 0,
            _workspace: PhantomData,
        }
    }
}

impl<'a> Arena<'a> {
    /// Carves `workspace` (any alignment; it may be uninitialised: every region is written
    /// before it is read).
    ///
    /// # Safety
    /// The buffers carved from this arena point into `workspace` without borrowing it: all
    /// of them must be dropped before the borrow `'a` ends. (They go into the items of a
    /// `FixedPool<'a, _>`, which the call drops before it returns.)
    pub(crate) unsafe fn over(workspace: &'a mut [MaybeUninit<u8>]) -> Arena<'a> {
        let start = workspace.as_mut_ptr().cast::<u8>();
        let skip = start.align_offset(MAX_ALIGN).min(workspace.len());
        Arena {
            // Within the slice (or one past it): never null.
            base: NonNull::new(start.wrapping_add(skip)),
            limit: workspace.len() - skip,
            used: 0,
            _workspace: PhantomData,
        }
    }

    /// The bytes a workspace needs to hold everything carved so far whatever its start
    /// address: the regions with their padding, plus up to 63 bytes to reach an aligned
    /// start. Saturates at `usize::MAX`.
    pub(crate) fn needed(&self) -> usize {
        self.used.saturating_add(MAX_ALIGN - 1)
    }

    /// The start of a region of `n` values of `T`, aligned for `T`; `None` when measuring.
    /// The region is this call's alone and uninitialised.
    ///
    /// # Panics
    /// When the workspace is too small: callers check its size against a measured layout
    /// first, so this is a bug.
    pub(crate) fn region<T>(&mut self, n: usize) -> Option<NonNull<T>> {
        const { assert!(align_of::<T>() <= MAX_ALIGN) };
        let start = self.used.checked_next_multiple_of(align_of::<T>());
        let end = start.and_then(|s| s.checked_add(n.checked_mul(size_of::<T>())?));
        let Some(base) = self.base else {
            self.used = end.unwrap_or(usize::MAX);
            return None;
        };
        let (start, end) = match (start, end) {
            (Some(start), Some(end)) if end <= self.limit => (start, end),
            _ => panic!("workspace carved past its size: workspace layout bug"),
        };
        self.used = end;
        // SAFETY: `start ≤ end ≤ limit` bytes from `base`: inside the workspace. The offset
        // is a multiple of T's alignment, which divides 64, the alignment of `base`.
        Some(unsafe { base.add(start) }.cast())
    }

    /// A fixed buffer of `n` values of `T` (an empty heap one when measuring).
    pub(crate) fn buf<T: Copy>(&mut self, n: usize) -> Buf<T> {
        match self.region::<T>(n) {
            // SAFETY: the region is aligned, holds `n` values, is carved once (no other user)
            // and stays valid while the buffer is used (`over`'s contract).
            Some(ptr) => unsafe { Buf::fixed(ptr, n) },
            None => Buf::default(),
        }
    }

    /// A fixed 64-byte aligned buffer of at least `floats` f32 values.
    pub(crate) fn aligned(&mut self, floats: usize) -> AlignedBuf {
        AlignedBuf::over(self.buf::<Line>(floats.div_ceil(LINE_FLOATS)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Carves a small layout and returns the offsets of its regions from the aligned base.
    fn layout(arena: &mut Arena<'_>) -> [Option<usize>; 3] {
        let a = arena.region::<u8>(3).map(|p| p.as_ptr().addr());
        let b = arena.region::<u64>(2).map(|p| p.as_ptr().addr());
        let c = arena.region::<Line>(1).map(|p| p.as_ptr().addr());
        let base = a.unwrap_or(0);
        [a, b, c].map(|x| x.map(|x| x - base))
    }

    #[test]
    fn any_start_address_fits_the_measured_size() {
        let mut measure = Arena::measuring();
        assert_eq!(layout(&mut measure), [None; 3]);
        // 3 bytes, padding to 8, two u64, padding to 64, one line: 128 bytes from an aligned
        // start, plus 63 to reach one.
        assert_eq!(measure.needed(), 128 + 63);
        let mut storage = vec![MaybeUninit::<u8>::uninit(); 512];
        for offset in 0..64 {
            let workspace = &mut storage[offset..offset + measure.needed()];
            // SAFETY: nothing carved outlives this iteration.
            let mut arena = unsafe { Arena::over(workspace) };
            assert_eq!(layout(&mut arena), [Some(0), Some(8), Some(64)]);
        }
    }

    #[test]
    #[should_panic(expected = "workspace layout bug")]
    fn carving_past_the_end_panics() {
        let mut storage = [MaybeUninit::<u8>::uninit(); 64];
        // SAFETY: nothing carved is used.
        let mut arena = unsafe { Arena::over(&mut storage) };
        let _ = arena.region::<u32>(17);
    }

    #[test]
    fn measuring_saturates() {
        let mut arena = Arena::measuring();
        let _ = arena.region::<u64>(usize::MAX / 4);
        let _ = arena.region::<u8>(1);
        assert_eq!(arena.needed(), usize::MAX);
    }
}
