//! Tensor views (design §1): a buffer plus sizes and element strides for the batch, head and
//! sequence axes; the last axis is contiguous. `[B, H, N, D]` and `[B, N, H, D]` layouts are
//! both views of this kind, so no copy is ever needed. Elements are `f32`, `half::f16` or
//! `half::bf16` ([`Element`]); the kernels widen 16-bit rows to f32 as they load them.

use crate::error::{Error, Result};
use half::{bf16, f16};

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

/// The element type of a tensor: what [`Element`] types a view holds, and what the C ABI's
/// `dtype` field names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16 (`half::f16`).
    F16,
    /// bfloat16: the top half of a binary32 (`half::bf16`).
    Bf16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
        }
    }

    /// The lower-case name: `"f32"`, `"f16"` or `"bf16"`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// An element type of tensor views: `f32`, `half::f16` or `half::bf16`. Arithmetic is f32
/// whatever the element type; 16-bit outputs are rounded to nearest even. Sealed: the
/// kernels know exactly these three.
pub trait Element: sealed::Sealed + Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The type's tag.
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for f16 {
    const DTYPE: DType = DType::F16;
}
impl Element for bf16 {
    const DTYPE: DType = DType::Bf16;
}

/// The elements of a view with the type erased: what the pipeline carries, so that it is
/// compiled once, not once per combination of element types.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Data<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
    Bf16(&'a [u16]),
}

impl<'a> Data<'a> {
    pub(crate) fn of<T: Element>(data: &'a [T]) -> Data<'a> {
        let (ptr, len) = (data.as_ptr(), data.len());
        // SAFETY: `T::DTYPE` names `T` exactly (the trait is sealed): f32 is read as f32, and
        // `f16`/`bf16` are `repr(transparent)` over `u16`, so the same memory is a valid
        // `[u16]` of the same length and alignment, borrowed for the same lifetime.
        unsafe {
            match T::DTYPE {
                DType::F32 => Data::F32(std::slice::from_raw_parts(ptr.cast(), len)),
                DType::F16 => Data::F16(std::slice::from_raw_parts(ptr.cast(), len)),
                DType::Bf16 => Data::Bf16(std::slice::from_raw_parts(ptr.cast(), len)),
            }
        }
    }

    pub(crate) fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F16(_) => DType::F16,
            Data::Bf16(_) => DType::Bf16,
        }
    }

    /// Address of element `at`, for a prefetch: wrapping arithmetic, never read.
    #[inline(always)]
    pub(crate) fn address(&self, at: usize) -> *const u8 {
        match self {
            Data::F32(d) => d.as_ptr().wrapping_add(at).cast(),
            Data::F16(d) | Data::Bf16(d) => d.as_ptr().wrapping_add(at).cast(),
        }
    }
}

/// A read-only view of a `[batch, heads, seq_len, dim]` tensor inside a caller buffer.
#[derive(Debug)]
pub struct TensorView<'a, T: Element = f32> {
    data: &'a [T],
    shape: Shape,
}

impl<T: Element> Clone for TensorView<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: Element> Copy for TensorView<'_, T> {}

impl<'a, T: Element> TensorView<'a, T> {
    /// Checks that every element the shape names lies inside `data`.
    pub fn new(data: &'a [T], shape: Shape) -> Result<Self> {
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
        data: &'a [T],
        batch: usize,
        heads: usize,
        seq_len: usize,
        dim: usize,
    ) -> Result<Self> {
        Self::new(data, Shape::bhnd(batch, heads, seq_len, dim))
    }

    /// A contiguous `[batch, seq_len, heads, dim]` view.
    pub fn bnhd(
        data: &'a [T],
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
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// Row i of head h of batch element b.
    #[inline(always)]
    pub fn row(&self, b: usize, h: usize, i: usize) -> &'a [T] {
        let start = self.shape.row_offset(b, h, i);
        &self.data[start..start + self.shape.dim]
    }

    /// The view with its element type erased.
    pub(crate) fn erase(&self) -> AnyView<'a> {
        AnyView {
            data: Data::of(self.data),
            shape: self.shape,
        }
    }
}

/// A view of any element type: the pipeline's input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AnyView<'a> {
    pub(crate) data: Data<'a>,
    pub(crate) shape: Shape,
}

impl<'a> AnyView<'a> {
    /// Rows of head h of batch element b.
    pub(crate) fn head_rows(&self, b: usize, h: usize) -> Rows<'a> {
        Rows {
            data: self.data,
            base: self.shape.row_offset(b, h, 0),
            stride: self.shape.seq_stride,
            dim: self.shape.dim,
        }
    }
}

/// A writable view; its rows must not overlap.
#[derive(Debug)]
pub struct TensorViewMut<'a, T: Element = f32> {
    data: &'a mut [T],
    shape: Shape,
}

impl<'a, T: Element> TensorViewMut<'a, T> {
    /// Checks bounds and that no two rows overlap.
    pub fn new(data: &'a mut [T], shape: Shape) -> Result<Self> {
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
        data: &'a mut [T],
        batch: usize,
        heads: usize,
        seq_len: usize,
        dim: usize,
    ) -> Result<Self> {
        Self::new(data, Shape::bhnd(batch, heads, seq_len, dim))
    }

    /// A contiguous `[batch, seq_len, heads, dim]` view.
    pub fn bnhd(
        data: &'a mut [T],
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
    pub fn as_view(&self) -> TensorView<'_, T> {
        TensorView {
            data: self.data,
            shape: self.shape,
        }
    }

    /// Row i of head h of batch element b, writable.
    pub fn row_mut(&mut self, b: usize, h: usize, i: usize) -> &mut [T] {
        let start = self.shape.row_offset(b, h, i);
        &mut self.data[start..start + self.shape.dim]
    }

    /// Shared handle for writing disjoint rows from several threads, element type erased.
    pub(crate) fn rows_writer(&mut self) -> OutRows<'_> {
        let (ptr, shape) = (self.data.as_mut_ptr(), self.shape);
        // `f16`/`bf16` are `repr(transparent)` over `u16` (see `Data::of`).
        match T::DTYPE {
            DType::F32 => OutRows::F32(RowWriter::new(ptr.cast(), shape)),
            DType::F16 => OutRows::F16(RowWriter::new(ptr.cast(), shape)),
            DType::Bf16 => OutRows::Bf16(RowWriter::new(ptr.cast(), shape)),
        }
    }
}

/// The output of a call, element type erased.
pub(crate) enum OutRows<'a> {
    F32(RowWriter<'a, f32>),
    F16(RowWriter<'a, u16>),
    Bf16(RowWriter<'a, u16>),
}

impl OutRows<'_> {
    pub(crate) fn dtype(&self) -> DType {
        match self {
            OutRows::F32(_) => DType::F32,
            OutRows::F16(_) => DType::F16,
            OutRows::Bf16(_) => DType::Bf16,
        }
    }
}

/// Writes rows of an output view from several threads at once. Built from a validated,
/// non-overlapping view (or a private staging buffer) that stays mutably borrowed for the
/// writer's lifetime.
pub(crate) struct RowWriter<'a, T = f32> {
    ptr: *mut T,
    shape: Shape,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the writer only hands out rows through `row`, whose contract requires that no two
// threads touch the same row at once; rows are disjoint (checked when the view was built).
unsafe impl<T: Send> Send for RowWriter<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for RowWriter<'_, T> {}

impl<'a, T> RowWriter<'a, T> {
    /// `ptr` must come from a `&'a mut [T]` that holds every row of `shape`, rows disjoint.
    fn new(ptr: *mut T, shape: Shape) -> Self {
        RowWriter {
            ptr,
            shape,
            _borrow: std::marker::PhantomData,
        }
    }

    /// Rows `0..rows` of `dim` values in `buf`, answering to any (b, h): the f32 staging rows
    /// of one (batch, head) whose output is 16-bit.
    pub(crate) fn staging(buf: &'a mut [T], rows: usize, dim: usize) -> Self {
        assert!(buf.len() >= rows * dim, "staging rows");
        RowWriter::new(
            buf.as_mut_ptr(),
            Shape {
                batch: usize::MAX,
                heads: usize::MAX,
                seq_len: rows,
                dim,
                batch_stride: 0,
                head_stride: 0,
                seq_stride: dim,
            },
        )
    }

    /// Where row (b, h, i) starts, for a prefetch: formed with wrapping arithmetic, never
    /// read, no reference made.
    #[inline(always)]
    pub(crate) fn row_start(&self, b: usize, h: usize, i: usize) -> *const T {
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
    pub(crate) unsafe fn row(&self, b: usize, h: usize, i: usize) -> &mut [T] {
        debug_assert!(b < self.shape.batch && h < self.shape.heads && i < self.shape.seq_len);
        let start = self.shape.row_offset(b, h, i);
        // SAFETY: the view was checked to hold every in-range row inside its buffer (a
        // staging writer: its buffer holds `rows` rows and every (b, h) maps onto them),
        // rows are disjoint, and the caller guarantees exclusive access to this row.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), self.shape.dim) }
    }
}

/// One row of a row set, element type erased.
#[derive(Clone, Copy)]
pub(crate) enum RowRef<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
    Bf16(&'a [u16]),
}

/// Rows of one (batch, head) of a tensor view: row i starts at `base + i·stride`.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub(crate) data: Data<'a>,
    pub(crate) base: usize,
    pub(crate) stride: usize,
    pub(crate) dim: usize,
}

impl<'a> Rows<'a> {
    /// Rows over f32 values.
    pub(crate) fn f32(data: &'a [f32], base: usize, stride: usize, dim: usize) -> Rows<'a> {
        Rows {
            data: Data::F32(data),
            base,
            stride,
            dim,
        }
    }

    /// Row i.
    #[inline(always)]
    pub(crate) fn row(&self, i: usize) -> RowRef<'a> {
        let start = self.base + i * self.stride;
        let end = start + self.dim;
        match self.data {
            Data::F32(d) => RowRef::F32(&d[start..end]),
            Data::F16(d) => RowRef::F16(&d[start..end]),
            Data::Bf16(d) => RowRef::Bf16(&d[start..end]),
        }
    }

    /// Rows `i..i + count` as one run of values, when rows follow each other in memory.
    #[inline(always)]
    pub(crate) fn run(&self, i: usize, count: usize) -> Option<RowRef<'a>> {
        if self.stride != self.dim || count == 0 {
            return None;
        }
        let start = self.base + i * self.stride;
        let end = start + count * self.dim;
        Some(match self.data {
            Data::F32(d) => RowRef::F32(&d[start..end]),
            Data::F16(d) => RowRef::F16(&d[start..end]),
            Data::Bf16(d) => RowRef::Bf16(&d[start..end]),
        })
    }

    /// Row i as f32 values, when the rows are f32.
    #[inline(always)]
    pub(crate) fn row_f32(&self, i: usize) -> Option<&'a [f32]> {
        match self.row(i) {
            RowRef::F32(r) => Some(r),
            _ => None,
        }
    }

    /// Where row i starts, for a prefetch: formed with wrapping arithmetic, never read.
    #[inline(always)]
    pub(crate) fn row_start(&self, i: usize) -> *const u8 {
        self.data
            .address(self.base.wrapping_add(i.wrapping_mul(self.stride)))
    }

    /// Bytes of one row.
    #[inline(always)]
    pub(crate) fn row_bytes(&self) -> usize {
        self.dim * self.data.dtype().size()
    }
}
