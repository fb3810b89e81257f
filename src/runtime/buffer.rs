//! Scratch buffers: [`Buf`], the subset of `Vec` the pipeline's scratch uses, either growing
//! on the heap (kept by the plan across calls) or fixed over a caller's workspace for one
//! call (design §3, memory); and [`AlignedBuf`], 64-byte aligned f32 storage for kernel tiles.

use std::ptr::NonNull;

/// A buffer of `T`: heap-backed (grows on demand, like `Vec`) or fixed over memory carved from
/// a caller's workspace, where growing past the capacity is a bug in the workspace layout
/// and panics. Only the first `len` elements are ever read, and each was written first, so
/// the workspace memory may start uninitialised.
pub(crate) struct Buf<T: Copy> {
    storage: Storage<T>,
}

enum Storage<T> {
    Heap(Vec<T>),
    /// `cap` elements at `ptr`, the first `len` initialised; exclusively this buffer's while
    /// the workspace it came from is borrowed by the call (see [`Buf::fixed`]).
    Fixed {
        ptr: NonNull<T>,
        len: usize,
        cap: usize,
    },
}

// SAFETY: a fixed buffer owns its region exclusively (the arena hands each region out once),
// so it moves between threads like the `Vec` of the heap case.
unsafe impl<T: Copy + Send> Send for Buf<T> {}
// SAFETY: shared access only reads the region, as for `Vec`.
unsafe impl<T: Copy + Sync> Sync for Buf<T> {}

impl<T: Copy> Default for Buf<T> {
    /// An empty heap buffer: allocates nothing until it grows.
    fn default() -> Self {
        Buf {
            storage: Storage::Heap(Vec::new()),
        }
    }
}

impl<T: Copy> Buf<T> {
    /// A fixed buffer of `cap` elements at `ptr`, empty.
    ///
    /// # Safety
    /// `ptr` must be aligned for `T` and valid for reads and writes of `cap` elements for as
    /// long as the buffer is used, and no other reference may use that memory meanwhile.
    pub(crate) unsafe fn fixed(ptr: NonNull<T>, cap: usize) -> Buf<T> {
        Buf {
            storage: Storage::Fixed { ptr, len: 0, cap },
        }
    }

    /// Elements the buffer holds without growing.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn capacity(&self) -> usize {
        match &self.storage {
            Storage::Heap(v) => v.capacity(),
            Storage::Fixed { cap, .. } => *cap,
        }
    }

    /// Removes every element.
    pub(crate) fn clear(&mut self) {
        match &mut self.storage {
            Storage::Heap(v) => v.clear(),
            Storage::Fixed { len, .. } => *len = 0,
        }
    }

    /// Grows or shrinks to `n` elements, new ones set to `value`.
    pub(crate) fn resize(&mut self, n: usize, value: T) {
        match &mut self.storage {
            Storage::Heap(v) => v.resize(n, value),
            Storage::Fixed { ptr, len, cap } => {
                if n > *len {
                    check_room(n, *cap);
                    for i in *len..n {
                        // Raw writes: the slots may be uninitialised.
                        // SAFETY: `i < n ≤ cap`: a slot of the region (`fixed`'s contract).
                        unsafe { ptr.as_ptr().add(i).write(value) };
                    }
                }
                *len = n;
            }
        }
    }

    /// Appends `value`.
    #[inline]
    pub(crate) fn push(&mut self, value: T) {
        match &mut self.storage {
            Storage::Heap(v) => v.push(value),
            Storage::Fixed { ptr, len, cap } => {
                check_room(*len + 1, *cap);
                // SAFETY: `len < cap`: a slot of the region.
                unsafe { ptr.as_ptr().add(*len).write(value) };
                *len += 1;
            }
        }
    }

    /// Appends the elements of `values`.
    pub(crate) fn extend_from_slice(&mut self, values: &[T]) {
        match &mut self.storage {
            Storage::Heap(v) => v.extend_from_slice(values),
            Storage::Fixed { ptr, len, cap } => {
                check_room(*len + values.len(), *cap);
                // SAFETY: the destination lies in the region (checked) and is this buffer's
                // alone, so it cannot overlap `values`, a shared borrow.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        values.as_ptr(),
                        ptr.as_ptr().add(*len),
                        values.len(),
                    )
                };
                *len += values.len();
            }
        }
    }

    /// Makes room for `additional` more elements: reserved exactly on the heap, checked
    /// against the capacity of a fixed buffer.
    pub(crate) fn reserve_exact(&mut self, additional: usize) {
        match &mut self.storage {
            Storage::Heap(v) => v.reserve_exact(additional),
            Storage::Fixed { len, cap, .. } => check_room(*len + additional, *cap),
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
        match &mut self.storage {
            // `Vec`'s own extend keeps its exact reservation for sized iterators.
            Storage::Heap(v) => v.extend(iter),
            Storage::Fixed { .. } => {
                for value in iter {
                    self.push(value);
                }
            }
        }
    }
}

impl<T: Copy> std::ops::Deref for Buf<T> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        match &self.storage {
            Storage::Heap(v) => v,
            // SAFETY: the first `len` elements of the region are initialised.
            Storage::Fixed { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts(ptr.as_ptr(), *len)
            },
        }
    }
}

impl<T: Copy> std::ops::DerefMut for Buf<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.storage {
            Storage::Heap(v) => v,
            // SAFETY: as in `deref`, borrowed mutably through `self`.
            Storage::Fixed { ptr, len, .. } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), *len)
            },
        }
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
            if let Storage::Heap(v) = &mut self.lines.storage {
                *v = Vec::new();
            }
            self.lines.resize(lines, Line::default());
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
