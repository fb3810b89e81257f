//! Scratch buffers: [`Buf`], the subset of `Vec` the pipeline's scratch uses, either growing
//! on the heap (kept by the plan across calls) or fixed over a caller's workspace for one
//! call (design §3, memory); and [`AlignedBuf`], 64-byte aligned f32 storage for kernel tiles.

use std::ptr::NonNull;

/// A buffer of `T`: heap-backed (grows on demand, like `Vec`) or fixed over memory carved from
/// a caller's workspace, where growing past the capacity is a bug in the workspace layout
/// and panics. Only the first `len` elements are ever read, and each was written first, so
/// the workspace memory may start uninitialised.
///
/// Both kinds are the same raw parts, so reads and in-capacity pushes take no branch on the
/// kind: the kernels' hot loops index these buffers.
pub(crate) struct Buf<T: Copy> {
    /// `cap` elements, the first `len` initialised: a `Vec`'s allocation this buffer owns
    /// (`heap`), or a workspace region exclusively this buffer's while the call borrows the
    /// workspace (see [`Buf::fixed`]).
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
    heap: bool,
}

// SAFETY: a buffer owns its region exclusively (a `Vec`'s allocation, or a region the arena
// hands out once), so it moves between threads like a `Vec`.
unsafe impl<T: Copy + Send> Send for Buf<T> {}
// SAFETY: shared access only reads the region, as for `Vec`.
unsafe impl<T: Copy + Sync> Sync for Buf<T> {}

impl<T: Copy> Default for Buf<T> {
    /// An empty heap buffer: allocates nothing until it grows.
    fn default() -> Self {
        Buf::from_vec(Vec::new())
    }
}

impl<T: Copy> Drop for Buf<T> {
    fn drop(&mut self) {
        if self.heap {
            // SAFETY: a heap buffer's parts are those of a `Vec` it owns; dropped once.
            drop(unsafe { Vec::from_raw_parts(self.ptr.as_ptr(), self.len, self.cap) });
        }
    }
}

impl<T: Copy> Buf<T> {
    fn from_vec(v: Vec<T>) -> Self {
        let mut v = std::mem::ManuallyDrop::new(v);
        Buf {
            ptr: NonNull::new(v.as_mut_ptr()).expect("a Vec's pointer is never null"),
            len: v.len(),
            cap: v.capacity(),
            heap: true,
        }
    }

    /// A fixed buffer of `cap` elements at `ptr`, empty.
    ///
    /// # Safety
    /// `ptr` must be aligned for `T` and valid for reads and writes of `cap` elements for as
    /// long as the buffer is used, and no other reference may use that memory meanwhile.
    pub(crate) unsafe fn fixed(ptr: NonNull<T>, cap: usize) -> Buf<T> {
        Buf {
            ptr,
            len: 0,
            cap,
            heap: false,
        }
    }

    /// Runs `f` on the heap buffer as a `Vec`, or checks a fixed one has room for `needed`
    /// and returns `None`.
    #[cold]
    #[inline(never)]
    fn grow<R>(&mut self, needed: usize, f: impl FnOnce(&mut Vec<T>) -> R) -> Option<R> {
        if !self.heap {
            check_room(needed, self.cap);
            return None;
        }
        // The buffer is left empty while the Vec holds the parts, so a panic inside `f`
        // (capacity overflow) cannot free the allocation twice.
        let parts = std::mem::replace(self, Buf::from_vec(Vec::new()));
        let parts = std::mem::ManuallyDrop::new(parts);
        // SAFETY: the parts of a heap buffer are a `Vec`'s, taken out of `self` above.
        let mut v = unsafe { Vec::from_raw_parts(parts.ptr.as_ptr(), parts.len, parts.cap) };
        let r = f(&mut v);
        *self = Buf::from_vec(v);
        Some(r)
    }

    /// Elements the buffer holds without growing.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Removes every element.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Grows or shrinks to `n` elements, new ones set to `value`.
    pub(crate) fn resize(&mut self, n: usize, value: T) {
        if n > self.cap {
            self.grow(n, |v| v.reserve_exact(n - v.len()));
        }
        for i in self.len..n {
            // Raw writes: the slots may be uninitialised.
            // SAFETY: `i < n ≤ cap`: a slot of the region.
            unsafe { self.ptr.as_ptr().add(i).write(value) };
        }
        self.len = n;
    }

    /// Grows to `n` elements: a heap buffer is replaced by exactly `n` copies of `value` (the
    /// old allocation freed first, no amortised doubling); a fixed one keeps its elements and
    /// sets the new ones to `value`.
    pub(crate) fn regrow_exact(&mut self, n: usize, value: T) {
        if self.heap {
            *self = Buf::from_vec(Vec::new());
            self.grow(n, |v| v.resize(n, value));
        } else {
            self.resize(n, value);
        }
    }

    /// Appends `value`.
    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        if self.len == self.cap {
            self.grow(self.len + 1, |v| v.reserve(1));
        }
        // SAFETY: `len < cap` (just made so): a slot of the region.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
    }

    /// Appends the elements of `values`.
    pub(crate) fn extend_from_slice(&mut self, values: &[T]) {
        let n = self.len + values.len();
        if n > self.cap {
            self.grow(n, |v| v.reserve(values.len()));
        }
        // SAFETY: the destination lies in the region (room made above) and is this buffer's
        // alone, so it cannot overlap `values`, a shared borrow.
        unsafe {
            std::ptr::copy_nonoverlapping(
                values.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                values.len(),
            )
        };
        self.len = n;
    }

    /// Makes room for `additional` more elements: reserved exactly on the heap, checked
    /// against the capacity of a fixed buffer.
    pub(crate) fn reserve_exact(&mut self, additional: usize) {
        let n = self.len + additional;
        if n > self.cap {
            self.grow(n, |v| v.reserve_exact(additional));
        }
    }
}

/// Panics when a fixed buffer of `cap` elements would need `needed`: the workspace layout
/// sized it wrong, a bug (the C boundary reports it as `SMYRF_ERROR_PANIC`).
#[inline(always)]
fn check_room(needed: usize, cap: usize) {
    if needed > cap {
        overflow(needed, cap);
    }
}

#[cold]
#[inline(never)]
fn overflow(needed: usize, cap: usize) -> ! {
    panic!("workspace buffer of {cap} elements asked to hold {needed}: workspace layout bug")
}

impl<T: Copy> Extend<T> for Buf<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        // Room for the known length once, as `Vec`'s extend reserves for sized iterators.
        self.reserve_exact(iter.size_hint().0);
        for value in iter {
            self.push(value);
        }
    }
}

impl<T: Copy> std::ops::Deref for Buf<T> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: the first `len` elements of the region are initialised.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> std::ops::DerefMut for Buf<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<'a, T: Copy> IntoIterator for &'a Buf<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// One cache line of f32: the unit of [`AlignedBuf`].
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub(crate) struct Line([f32; 16]);

/// f32 values per [`Line`].
pub(crate) const LINE_FLOATS: usize = 16;

/// 64-byte aligned storage of f32 values (one cache line, one AVX-512 register).
#[derive(Default)]
pub(crate) struct AlignedBuf {
    lines: Buf<Line>,
}

impl AlignedBuf {
    /// Over `lines`, which must be a fixed buffer (or empty).
    pub(crate) fn over(lines: Buf<Line>) -> AlignedBuf {
        AlignedBuf { lines }
    }

    /// The first `len` values; contents are whatever the last user left, unless the buffer
    /// has to grow. On the heap it is then replaced by a zero-filled one of exactly the new
    /// size (the old one freed first, and no amortised doubling), so the scratch a call
    /// allocates is exactly what its largest tiles need (`Plan::scratch_bytes` bounds it); a
    /// fixed buffer zero-fills the lines it newly covers.
    pub(crate) fn get(&mut self, len: usize) -> &mut [f32] {
        let lines = len.div_ceil(LINE_FLOATS);
        if self.lines.len() < lines {
            self.lines.regrow_exact(lines, Line::default());
        }
        // SAFETY: `Line` is `repr(C)` over `[f32; 16]` with no padding (64 bytes), so the
        // buffer's first `lines.len()` lines are `16 * lines.len()` initialised, aligned f32
        // values; `len` is at most that, and the slice borrows `self` mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<f32>(), len) }
    }
}

/// Rounds `n` up to a multiple of `to`.
#[inline(always)]
pub(crate) fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::MaybeUninit;

    fn fixed<T: Copy>(region: &mut [MaybeUninit<T>]) -> Buf<T> {
        let ptr = NonNull::new(region.as_mut_ptr().cast::<T>()).unwrap();
        // SAFETY: the region is valid, aligned and borrowed for the buffer's use below.
        unsafe { Buf::fixed(ptr, region.len()) }
    }

    #[test]
    fn a_fixed_buffer_behaves_like_a_vec_within_its_capacity() {
        let mut region = [MaybeUninit::<u32>::uninit(); 10];
        let mut buf = fixed(&mut region);
        let mut reference = Vec::new();
        for step in 0..3u32 {
            buf.clear();
            reference.clear();
            buf.extend(0..3 + step);
            reference.extend(0..3 + step);
            buf.push(7);
            reference.push(7);
            buf.extend_from_slice(&[1, 2]);
            reference.extend_from_slice(&[1, 2]);
            buf.resize(4, 9);
            reference.resize(4, 9);
            buf.resize(8, 5);
            reference.resize(8, 5);
            buf[0] = step;
            reference[0] = step;
            assert_eq!(&buf[..], &reference[..]);
        }
        assert_eq!(buf.capacity(), 10);
        buf.reserve_exact(2);
    }

    #[test]
    fn a_heap_buffer_behaves_like_a_vec_as_it_grows() {
        let mut buf = Buf::<u32>::default();
        let mut reference = Vec::new();
        for step in 0..40u32 {
            buf.push(step);
            reference.push(step);
            buf.extend_from_slice(&[step; 3]);
            reference.extend_from_slice(&[step; 3]);
            buf.extend(0..step % 5);
            reference.extend(0..step % 5);
            if step % 7 == 0 {
                buf.resize(step as usize, 9);
                reference.resize(step as usize, 9);
            }
            assert_eq!(&buf[..], &reference[..]);
            assert!(buf.capacity() >= buf.len());
        }
        buf.regrow_exact(500, 1);
        assert_eq!(buf.capacity(), 500);
        assert!(buf.iter().all(|&x| x == 1));
        buf.clear();
        assert!(buf.is_empty());
    }

    #[test]
    #[should_panic(expected = "workspace layout bug")]
    fn growing_a_fixed_buffer_past_its_capacity_panics() {
        let mut region = [MaybeUninit::<u32>::uninit(); 4];
        let mut buf = fixed(&mut region);
        buf.extend(0..5);
    }

    #[test]
    fn a_fixed_aligned_buffer_zero_fills_what_it_newly_covers() {
        let mut region = [MaybeUninit::<Line>::uninit(); 3];
        let mut tiles = AlignedBuf::over(fixed(&mut region));
        assert!(tiles.get(20).iter().all(|&x| x == 0.0));
        tiles.get(20)[19] = 4.0;
        assert_eq!(tiles.get(40)[19], 4.0);
        assert_eq!(tiles.get(48).as_ptr().addr() % 64, 0);
        assert!(tiles.get(48)[32..].iter().all(|&x| x == 0.0));
    }
}
