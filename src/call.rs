//! Checks shared by SMYRF and dense attention calls (design §2): every size and stride is
//! validated before anything is written, and the result is a summary the pipelines use.

use crate::error::{Error, Result};
use crate::view::{Shape, TensorView, TensorViewMut};

/// The optional parts of an attention call: a key mask and an lse output. Built by chaining:
/// `CallOptions::new().key_mask(&mask).lse(&mut lse)`.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct CallOptions<'a> {
    /// `[B][Nk]` bytes, nonzero = the key takes part (design §1).
    pub key_mask: Option<&'a [u8]>,
    /// `[B][Hq][Nq]`: receives each query's log-sum-exp (−∞ for a batch element without
    /// valid keys).
    pub lse: Option<&'a mut [f32]>,
}

impl<'a> CallOptions<'a> {
    /// No mask, no lse output.
    pub fn new() -> Self {
        CallOptions::default()
    }

    /// Attend only to the keys whose mask byte is nonzero.
    #[must_use]
    pub fn key_mask(mut self, mask: &'a [u8]) -> Self {
        self.key_mask = Some(mask);
        self
    }

    /// Also write each query's log-sum-exp.
    #[must_use]
    pub fn lse(mut self, lse: &'a mut [f32]) -> Self {
        self.lse = Some(lse);
        self
    }
}

/// The validated sizes of one attention call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallShape {
    pub(crate) batch: usize,
    pub(crate) q_heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) nq: usize,
    pub(crate) nk: usize,
    pub(crate) d: usize,
}

impl CallShape {
    /// Query heads that share one key/value head.
    pub(crate) fn group(&self) -> usize {
        self.q_heads / self.kv_heads
    }
}

fn expect(what: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what,
            expected,
            found,
        })
    }
}

/// Checks that q, k, v, out, the mask and the lse buffer describe one consistent call.
pub(crate) fn check_call(
    q: &TensorView<'_>,
    k: &TensorView<'_>,
    v: &TensorView<'_>,
    key_mask: Option<&[u8]>,
    out: &TensorViewMut<'_>,
    lse: Option<&[f32]>,
) -> Result<CallShape> {
    let (qs, ks, vs, os): (Shape, Shape, Shape, Shape) =
        (q.shape(), k.shape(), v.shape(), out.shape());
    expect("k.batch (must equal q.batch)", qs.batch, ks.batch)?;
    expect("v.batch (must equal q.batch)", qs.batch, vs.batch)?;
    expect("out.batch (must equal q.batch)", qs.batch, os.batch)?;
    expect("k.dim (must equal q.dim)", qs.dim, ks.dim)?;
    expect("v.heads (must equal k.heads)", ks.heads, vs.heads)?;
    expect("v.seq_len (must equal k.seq_len)", ks.seq_len, vs.seq_len)?;
    if qs.heads % ks.heads != 0 {
        return Err(Error::HeadsNotDivisible {
            q_heads: qs.heads,
            kv_heads: ks.heads,
        });
    }
    expect("out.heads (must equal q.heads)", qs.heads, os.heads)?;
    expect("out.seq_len (must equal q.seq_len)", qs.seq_len, os.seq_len)?;
    expect("out.dim (must equal v.dim)", vs.dim, os.dim)?;
    if qs.seq_len > u32::MAX as usize || ks.seq_len > u32::MAX as usize {
        return Err(Error::SizeOverflow {
            what: "seq_len (at most 2^32 - 1)",
        });
    }
    if let Some(mask) = key_mask {
        expect(
            "key_mask length (batch * k.seq_len)",
            qs.batch * ks.seq_len,
            mask.len(),
        )?;
    }
    if let Some(lse) = lse {
        expect(
            "lse length (batch * q.heads * q.seq_len)",
            qs.batch * qs.heads * qs.seq_len,
            lse.len(),
        )?;
    }
    Ok(CallShape {
        batch: qs.batch,
        q_heads: qs.heads,
        kv_heads: ks.heads,
        nq: qs.seq_len,
        nk: ks.seq_len,
        d: qs.dim,
    })
}

/// Indices of the valid keys of every batch element (nonzero mask byte; all when no mask).
pub(crate) fn valid_keys(shape: &CallShape, key_mask: Option<&[u8]>) -> Vec<Vec<u32>> {
    let nk = shape.nk;
    (0..shape.batch)
        .map(|b| {
            let mut valid = Vec::new();
            valid_keys_into(nk, key_mask.map(|m| &m[b * nk..(b + 1) * nk]), &mut valid);
            valid
        })
        .collect()
}

/// The valid keys (nonzero mask byte; all when no mask) of one batch element, into `out`.
pub(crate) fn valid_keys_into(nk: usize, mask_row: Option<&[u8]>, out: &mut Vec<u32>) {
    out.clear();
    match mask_row {
        None => out.extend(0..nk as u32),
        Some(mask) => out.extend(
            mask.iter()
                .enumerate()
                .filter(|&(_, &byte)| byte != 0)
                .map(|(j, _)| j as u32),
        ),
    }
}

/// A slice several threads write at disjoint indices.
pub(crate) struct SharedSlice<'a> {
    ptr: *mut f32,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: access goes through `get`, whose contract forbids two threads using one index.
unsafe impl Send for SharedSlice<'_> {}
// SAFETY: as above.
unsafe impl Sync for SharedSlice<'_> {}

impl<'a> SharedSlice<'a> {
    pub(crate) fn new(slice: &'a mut [f32]) -> Self {
        SharedSlice {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: std::marker::PhantomData,
        }
    }

    /// Writes `value` at `index`.
    ///
    /// # Safety
    /// No other thread may access `index` at the same time.
    pub(crate) unsafe fn set(&self, index: usize, value: f32) {
        // SAFETY: forwarded contract.
        let slot = unsafe { self.range(index, 1) };
        slot[0] = value;
    }

    /// The elements `start..start + len`.
    ///
    /// # Safety
    /// No other live reference may cover any of these elements.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn range(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(
            start <= self.len && len <= self.len - start,
            "SharedSlice range out of bounds"
        );
        // SAFETY: in bounds (asserted); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}
