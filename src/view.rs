//! Tensor views (design §1): a buffer plus sizes and element strides for the batch, head and
//! sequence axes; the last axis is contiguous. `[B, H, N, D]` and `[B, N, H, D]` layouts are
//! both views of this kind, so no copy is ever needed.

use crate::error::{Error, Result};

/// Sizes and strides shared by the read-only and the writable view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Batch size B.
    pub batch: usize,
    /// Heads H.
    pub heads: usize,
    /// Sequence length N.
    pub seq_len: usize,
    /// Head dim (the contiguous last axis).
    pub dim: usize,
    /// Elements between batch elements.
    pub batch_stride: usize,
    /// Elements between heads.
    pub head_stride: usize,
    /// Elements between rows of one head.
    pub seq_stride: usize,
}

impl Shape {
    /// Row-major `[batch, heads, seq_len, dim]`.
    pub fn bhnd(batch: usize, heads: usize, seq_len: usize, dim: usize) -> Shape {
        Shape {
            batch,
            heads,
            seq_len,
            dim,
            batch_stride: heads.wrapping_mul(seq_len).wrapping_mul(dim),
            head_stride: seq_len.wrapping_mul(dim),
            seq_stride: dim,
        }
    }

    /// Row-major `[batch, seq_len, heads, dim]` (the layout of a fused QKV projection).
    pub fn bnhd(batch: usize, heads: usize, seq_len: usize, dim: usize) -> Shape {
        Shape {
            batch,
            heads,
            seq_len,
            dim,
            batch_stride: seq_len.wrapping_mul(heads).wrapping_mul(dim),
            head_stride: dim,
            seq_stride: heads.wrapping_mul(dim),
        }
    }

    /// One past the largest element index the view touches, checked for overflow and for
    /// zero sizes (design §2).
    pub fn required_len(&self, what: &'static str) -> Result<usize> {
        for (size, name) in [
            (self.batch, "batch"),
            (self.heads, "heads"),
            (self.seq_len, "seq_len"),
            (self.dim, "dim"),
        ] {
            if size == 0 {
                return Err(Error::ZeroSize {
                    what: zero_name(what, name),
                });
            }
        }
        let overflow = Error::SizeOverflow { what };
        let elements = self
            .batch
            .checked_mul(self.heads)
            .and_then(|x| x.checked_mul(self.seq_len))
            .and_then(|x| x.checked_mul(self.dim))
            .ok_or(overflow.clone())?;
        let last = (self.batch - 1)
            .checked_mul(self.batch_stride)
            .and_then(|x| x.checked_add((self.heads - 1).checked_mul(self.head_stride)?))
            .and_then(|x| x.checked_add((self.seq_len - 1).checked_mul(self.seq_stride)?))
            .and_then(|x| x.checked_add(self.dim))
            .ok_or(overflow.clone())?;
        if elements > isize::MAX as usize / 4 || last > isize::MAX as usize / 4 {
            return Err(overflow);
        }
        Ok(last)
    }

    /// Element offset of row (b, h, i).
    #[inline(always)]
    pub(crate) fn row_offset(&self, b: usize, h: usize, i: usize) -> usize {
        b * self.batch_stride + h * self.head_stride + i * self.seq_stride
    }

    /// True when no two rows share an element: sorted by stride, each axis steps past the
    /// whole extent of the axes inside it. Sufficient (not necessary), and what every dense
    /// layout satisfies.
    fn rows_are_disjoint(&self) -> bool {
        let mut axes = [
            (self.batch_stride, self.batch),
            (self.head_stride, self.heads),
            (self.seq_stride, self.seq_len),
        ];
        axes.sort_unstable();
        let mut extent = self.dim;
        for (stride, size) in axes {
            if size <= 1 {
                continue;
            }
            if stride < extent {
                return false;
            }
            extent += stride * (size - 1);
        }
        true
    }
}

fn zero_name(view: &'static str, axis: &'static str) -> &'static str {
    // Static strings keep `Error` cheap to build; the view names are a small fixed set.
    match (view, axis) {
        ("q", "batch") => "q.batch",
        ("q", "heads") => "q.heads",
        ("q", "seq_len") => "q.seq_len",
        ("q", "dim") => "q.dim",
        ("k", "batch") => "k.batch",
        ("k", "heads") => "k.heads",
        ("k", "seq_len") => "k.seq_len",
        ("k", "dim") => "k.dim",
        ("v", "batch") => "v.batch",
        ("v", "heads") => "v.heads",
        ("v", "seq_len") => "v.seq_len",
        ("v", "dim") => "v.dim",
        ("out", "batch") => "out.batch",
        ("out", "heads") => "out.heads",
        ("out", "seq_len") => "out.seq_len",
        ("out", "dim") => "out.dim",
        _ => axis,
    }
}

/// A read-only view of a `[batch, heads, seq_len, dim]` tensor inside a caller buffer.
#[derive(Clone, Copy, Debug)]
pub struct TensorView<'a> {
    data: &'a [f32],
    shape: Shape,
}

impl<'a> TensorView<'a> {
    /// Checks that every element the shape names lies inside `data`.
    pub fn new(data: &'a [f32], shape: Shape) -> Result<Self> {
        let needed = shape.required_len("view")?;
        if needed > data.len() {
            return Err(Error::OutOfBounds {
                what: "view",
                needed,
                len: data.len(),
            });
        }
        Ok(TensorView { data, shape })
    }

    /// A contiguous `[batch, heads, seq_len, dim]` view.
    pub fn bhnd(
        data: &'a [f32],
        batch: usize,
        heads: usize,
        seq_len: usize,
        dim: usize,
    ) -> Result<Self> {
        Self::new(data, Shape::bhnd(batch, heads, seq_len, dim))
    }

    /// A contiguous `[batch, seq_len, heads, dim]` view.
    pub fn bnhd(
        data: &'a [f32],
        batch: usize,
        heads: usize,
        seq_len: usize,
        dim: usize,
    ) -> Result<Self> {
        Self::new(data, Shape::bnhd(batch, heads, seq_len, dim))
    }

    /// The view's sizes and strides.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The whole buffer the view reads.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Row i of head h of batch element b.
    #[inline(always)]
    pub fn row(&self, b: usize, h: usize, i: usize) -> &'a [f32] {
        let start = self.shape.row_offset(b, h, i);
        &self.data[start..start + self.shape.dim]
    }
}

/// A writable view; its rows must not overlap.
#[derive(Debug)]
pub struct TensorViewMut<'a> {
    data: &'a mut [f32],
    shape: Shape,
}

impl<'a> TensorViewMut<'a> {
    /// Checks bounds and that no two rows overlap.
    pub fn new(data: &'a mut [f32], shape: Shape) -> Result<Self> {
        let needed = shape.required_len("out")?;
        if needed > data.len() {
            return Err(Error::OutOfBounds {
                what: "out",
                needed,
                len: data.len(),
            });
        }
        if !shape.rows_are_disjoint() {
            return Err(Error::OverlappingOutput);
        }
        Ok(TensorViewMut { data, shape })
    }

    /// A contiguous `[batch, heads, seq_len, dim]` view.
    pub fn bhnd(
        data: &'a mut [f32],
        batch: usize,
        heads: usize,
        seq_len: usize,
        dim: usize,
    ) -> Result<Self> {
        Self::new(data, Shape::bhnd(batch, heads, seq_len, dim))
    }

    /// A contiguous `[batch, seq_len, heads, dim]` view.
    pub fn bnhd(
        data: &'a mut [f32],
        batch: usize,
        heads: usize,
        seq_len: usize,
        dim: usize,
    ) -> Result<Self> {
        Self::new(data, Shape::bnhd(batch, heads, seq_len, dim))
    }

    /// The view's sizes and strides.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// A read-only view of the same elements.
    pub fn as_view(&self) -> TensorView<'_> {
        TensorView {
            data: self.data,
            shape: self.shape,
        }
    }

    /// Row i of head h of batch element b, writable.
    pub fn row_mut(&mut self, b: usize, h: usize, i: usize) -> &mut [f32] {
        let start = self.shape.row_offset(b, h, i);
        &mut self.data[start..start + self.shape.dim]
    }

    /// Shared handle for writing disjoint rows from several threads.
    pub(crate) fn rows_writer(&mut self) -> RowWriter<'_> {
        RowWriter {
            ptr: self.data.as_mut_ptr(),
            shape: self.shape,
            _borrow: std::marker::PhantomData,
        }
    }
}

/// Writes rows of an output view from several threads at once. Built from a validated,
/// non-overlapping view that stays mutably borrowed for the writer's lifetime.
pub(crate) struct RowWriter<'a> {
    ptr: *mut f32,
    shape: Shape,
    _borrow: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: the writer only hands out rows through `row`, whose contract requires that no two
// threads touch the same row at once; rows are disjoint (checked when the view was built).
unsafe impl Send for RowWriter<'_> {}
// SAFETY: as above.
unsafe impl Sync for RowWriter<'_> {}

impl RowWriter<'_> {
    /// Where row (b, h, i) starts, for a prefetch: formed with wrapping arithmetic, never
    /// read, no reference made.
    #[inline(always)]
    pub(crate) fn row_start(&self, b: usize, h: usize, i: usize) -> *const f32 {
        self.ptr
            .wrapping_add(self.shape.row_offset(b, h, i))
            .cast_const()
    }

    /// Row (b, h, i) as a mutable slice.
    ///
    /// # Safety
    /// (b, h, i) must be within the view's sizes, and no other live reference to the same
    /// row may exist while the returned slice is used.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn row(&self, b: usize, h: usize, i: usize) -> &mut [f32] {
        debug_assert!(b < self.shape.batch && h < self.shape.heads && i < self.shape.seq_len);
        let start = self.shape.row_offset(b, h, i);
        // SAFETY: the view was checked to hold every in-range row inside its buffer, rows are
        // disjoint, and the caller guarantees exclusive access to this row.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), self.shape.dim) }
    }
}

/// Rows of one (batch, head) of a tensor view: row i starts at `base + i·stride`.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) base: usize,
    pub(crate) stride: usize,
    pub(crate) dim: usize,
}

impl<'a> Rows<'a> {
    #[inline(always)]
    pub(crate) fn row(&self, i: usize) -> &'a [f32] {
        let start = self.base + i * self.stride;
        &self.data[start..start + self.dim]
    }

    /// Where row i starts, for a prefetch: formed with wrapping arithmetic, never read.
    #[inline(always)]
    pub(crate) fn row_start(&self, i: usize) -> *const f32 {
        self.data
            .as_ptr()
            .wrapping_add(self.base.wrapping_add(i.wrapping_mul(self.stride)))
    }
}

/// Rows of head h of batch element b.
pub(crate) fn head_rows<'a>(view: &TensorView<'a>, b: usize, h: usize) -> Rows<'a> {
    let shape = view.shape();
    Rows {
        data: view.data(),
        base: shape.row_offset(b, h, 0),
        stride: shape.seq_stride,
        dim: shape.dim,
    }
}
