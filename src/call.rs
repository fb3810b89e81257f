//! Checks shared by SMYRF and dense attention calls (design §2): every size and stride is
//! validated before anything is written, and the result is a summary the pipelines use.

use crate::error::{Error, Result};
use crate::view::{DType, Shape};
use std::mem::MaybeUninit;

/// The optional parts of an attention call: which keys take part (a byte mask, per-batch key
/// lengths, or both), a learned sink logit per query head, and an lse output. Built by
/// chaining: `CallOptions::new().key_mask(&mask).lse(&mut lse)`.
#[derive(Default)]
#[non_exhaustive]
pub struct CallOptions<'a> {
    /// `[B][Nk]` bytes, nonzero = the key takes part (design §1).
    pub key_mask: Option<&'a [u8]>,
    /// `[B]`: batch element b attends to its keys `0..key_lengths[b]` only, each at most Nk
    /// (the form engines keep, ONNX Runtime's `seqlens_k`); with a mask too, a key must pass
    /// both.
    pub key_lengths: Option<&'a [u32]>,
    /// `[Hq]`: head h's learned sink logit, which joins every query's softmax denominator
    /// and carries no value: `out_i = Σ_j e^(s_ij) v_j / (e^(sink_h) + Σ_j e^(s_ij))`. SMYRF
    /// merges it once, after the rounds, as a logit seen in every round (design §1), so one
    /// cluster stays exact. Finite or −∞ (no sink). Not the §8 sink keys.
    pub head_sinks: Option<&'a [f32]>,
    /// `[B][Hq][Nq]`: receives each query's log-sum-exp (−∞ for a batch element without
    /// valid keys, or its head sink).
    pub lse: Option<&'a mut [f32]>,
    /// Run the call's tasks on these workers instead of the plan's threads: then the call
    /// starts no thread. The results are the same bits either way.
    pub parallel_for: Option<&'a dyn ParallelFor>,
    /// The caller's memory for the call's scratch: with it the call allocates nothing on
    /// the caller's thread or an engine's workers, and keeps nothing (design §3, memory; on
    /// rayon's pool the scratch comes from here too, but rayon may allocate in its job
    /// queues). It must hold at least what `Plan::workspace_size` (or
    /// `Plan::dense_workspace_size`) gives for the call, at any alignment; its contents need
    /// not be initialised and are unspecified afterwards. Set it with
    /// [`CallOptions::workspace`].
    pub workspace: Option<&'a mut [MaybeUninit<u8>]>,
    /// Causal attention (design §1, causal): query i sits at position `offset + i`, key j at
    /// j, and a query sees only the keys at or before its position. Set it with
    /// [`CallOptions::causal`] or [`CallOptions::query_offset`].
    pub causal: bool,
    /// The position of query 0 in a causal call; `None` means `Nk − Nq` (bottom-right
    /// alignment: the last query sits at the last key, as in chunked prefill and decode).
    pub query_offset: Option<usize>,
}

impl std::fmt::Debug for CallOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOptions")
            .field("key_mask", &self.key_mask.map(<[u8]>::len))
            .field("key_lengths", &self.key_lengths)
            .field("head_sinks", &self.head_sinks)
            .field("lse", &self.lse.as_ref().map(|l| l.len()))
            .field("parallel_for", &self.parallel_for.map(|p| p.workers()))
            .field("workspace", &self.workspace.as_ref().map(|w| w.len()))
            .field("causal", &self.causal)
            .field("query_offset", &self.query_offset)
            .finish()
    }
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

    /// Attend to the first `lengths[b]` keys of batch element b only.
    #[must_use]
    pub fn key_lengths(mut self, lengths: &'a [u32]) -> Self {
        self.key_lengths = Some(lengths);
        self
    }

    /// A learned sink logit per query head (see [`CallOptions::head_sinks`]).
    #[must_use]
    pub fn head_sinks(mut self, sinks: &'a [f32]) -> Self {
        self.head_sinks = Some(sinks);
        self
    }

    /// Run on the caller's workers (see [`ParallelFor`]).
    #[must_use]
    pub fn parallel_for(mut self, engine: &'a dyn ParallelFor) -> Self {
        self.parallel_for = Some(engine);
        self
    }

    /// Also write each query's log-sum-exp.
    #[must_use]
    pub fn lse(mut self, lse: &'a mut [f32]) -> Self {
        self.lse = Some(lse);
        self
    }

    /// Causal attention with query 0 at position `Nk − Nq` (see [`CallOptions::causal`]).
    #[must_use]
    pub fn causal(mut self) -> Self {
        self.causal = true;
        self
    }

    /// Causal attention with query 0 at position `offset`.
    #[must_use]
    pub fn query_offset(mut self, offset: usize) -> Self {
        self.causal = true;
        self.query_offset = Some(offset);
        self
    }

    /// Carve the call's scratch from `workspace` instead of the plan's buffers: the call
    /// then allocates nothing. A workspace smaller than `Plan::workspace_size` says is
    /// refused with [`Error::WorkspaceTooSmall`] before anything is written.
    #[must_use]
    pub fn workspace(mut self, workspace: &'a mut [u8]) -> Self {
        let len = workspace.len();
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the library writes only
        // initialised bytes into a workspace (its scratch holds plain numbers, and the
        // structs whose padding is never written are zeroed before the call returns), so the
        // bytes stay valid `u8`s for the caller.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(workspace.as_mut_ptr().cast::<MaybeUninit<u8>>(), len)
        };
        self.workspace = Some(bytes);
        self
    }
}

/// An engine's parallel-for (the pthreadpool / ONNX Runtime `TrySimpleParallelFor` shape):
/// with it, a call starts no thread of its own and runs its tasks on the engine's workers.
pub trait ParallelFor: Sync {
    /// How many tasks may run at once (at least 1): the call splits its scratch that many
    /// ways.
    fn workers(&self) -> usize;
    /// Runs `task(i)` for every i in `0..n`, at most [`ParallelFor::workers`] at once, on
    /// any threads, and returns when all have finished. A task never calls `run` itself.
    fn run(&self, n: usize, task: &(dyn Fn(usize) + Sync));
}

/// What a workspace is laid out for: a call's validated sizes, the element types that need
/// widening or staging, and how many of its tasks may run at once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallSizes {
    pub(crate) shape: CallShape,
    /// Value dim dv.
    pub(crate) dv: usize,
    pub(crate) q: DType,
    pub(crate) k: DType,
    pub(crate) out: DType,
    pub(crate) workers: usize,
}

impl CallSizes {
    /// Checks q, k, v, out (`shapes`, of element types `types`) and the options as
    /// [`check_call`] does.
    pub(crate) fn check(
        shapes: [Shape; 4],
        types: [DType; 4],
        options: &CallOptions<'_>,
        workers: usize,
    ) -> Result<CallSizes> {
        let [q, k, v, out] = shapes;
        let shape = check_call(q, k, v, out, options)?;
        Ok(CallSizes {
            shape,
            dv: v.dim,
            q: types[0],
            k: types[1],
            out: types[3],
            workers: workers.max(1),
        })
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
    /// A causal call's position of query 0.
    pub(crate) causal: Option<usize>,
}

impl CallShape {
    /// Query heads that share one key/value head.
    pub(crate) fn group(&self) -> usize {
        self.q_heads / self.kv_heads
    }

    /// The last key position query i of a causal call sees (`u32::MAX` past every key), or
    /// `None` for a call that is not causal.
    #[inline(always)]
    pub(crate) fn last_visible(&self, i: usize) -> Option<u32> {
        self.causal
            .map(|offset| offset.saturating_add(i).min(u32::MAX as usize) as u32)
    }
}

pub(crate) fn expect(what: &'static str, expected: usize, found: usize) -> Result<()> {
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

/// Checks that q, k, v, out and the options describe one consistent call.
pub(crate) fn check_call(
    qs: Shape,
    ks: Shape,
    vs: Shape,
    os: Shape,
    options: &CallOptions<'_>,
) -> Result<CallShape> {
    expect("k.batch (must equal q.batch)", qs.batch, ks.batch)?;
    expect("v.batch (must equal q.batch)", qs.batch, vs.batch)?;
    expect("out.batch (must equal q.batch)", qs.batch, os.batch)?;
    expect("k.dim (must equal q.dim)", qs.dim, ks.dim)?;
    expect("v.heads (must equal k.heads)", ks.heads, vs.heads)?;
    expect("v.seq_len (must equal k.seq_len)", ks.seq_len, vs.seq_len)?;
    if !qs.heads.is_multiple_of(ks.heads) {
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
    if let Some(mask) = options.key_mask {
        expect(
            "key_mask length (batch * k.seq_len)",
            qs.batch * ks.seq_len,
            mask.len(),
        )?;
    }
    if let Some(lengths) = options.key_lengths {
        expect("key_lengths length (batch)", qs.batch, lengths.len())?;
        if let Some((b, &len)) = lengths
            .iter()
            .enumerate()
            .find(|&(_, &len)| len as usize > ks.seq_len)
        {
            return Err(Error::KeyLength {
                batch: b,
                length: len as i64,
                nk: ks.seq_len,
            });
        }
    }
    if let Some(sinks) = options.head_sinks {
        expect("head_sinks length (q.heads)", qs.heads, sinks.len())?;
        if let Some((h, &sink)) = sinks
            .iter()
            .enumerate()
            .find(|&(_, &s)| s.is_nan() || s == f32::INFINITY)
        {
            return Err(Error::HeadSink {
                head: h,
                value: sink,
            });
        }
    }
    if let Some(lse) = options.lse.as_deref() {
        expect(
            "lse length (batch * q.heads * q.seq_len)",
            qs.batch * qs.heads * qs.seq_len,
            lse.len(),
        )?;
    }
    let causal =
        match (options.causal, options.query_offset) {
            (false, Some(_)) => {
                return Err(Error::OptionNeeds {
                    option: "query_offset",
                    needs: "causal",
                })
            }
            (false, None) => None,
            (true, Some(offset)) => Some(offset),
            (true, None) => Some(ks.seq_len.checked_sub(qs.seq_len).ok_or(
                Error::CausalOffset {
                    nq: qs.seq_len,
                    nk: ks.seq_len,
                },
            )?),
        };
    Ok(CallShape {
        batch: qs.batch,
        q_heads: qs.heads,
        kv_heads: ks.heads,
        nq: qs.seq_len,
        nk: ks.seq_len,
        d: qs.dim,
        causal,
    })
}

/// Which keys of batch element b take part: its mask row and its length, either optional.
#[derive(Clone, Copy, Default)]
pub(crate) struct KeyLimit<'a> {
    pub(crate) mask: Option<&'a [u8]>,
    pub(crate) length: Option<u32>,
}

impl<'a> KeyLimit<'a> {
    /// The limit of batch element b.
    pub(crate) fn of(
        b: usize,
        nk: usize,
        mask: Option<&'a [u8]>,
        lengths: Option<&[u32]>,
    ) -> KeyLimit<'a> {
        KeyLimit {
            mask: mask.map(|m| &m[b * nk..(b + 1) * nk]),
            length: lengths.map(|l| l[b]),
        }
    }
}

/// Appends the valid keys (those the limit lets through; all when there is none) of one
/// batch element to `out`.
pub(crate) fn extend_valid_keys(nk: usize, limit: KeyLimit<'_>, out: &mut impl Extend<u32>) {
    let end = limit.length.map_or(nk, |len| (len as usize).min(nk));
    match limit.mask {
        None => out.extend(0..end as u32),
        Some(mask) => out.extend(
            mask[..end]
                .iter()
                .enumerate()
                .filter(|&(_, &byte)| byte != 0)
                .map(|(j, _)| j as u32),
        ),
    }
}

/// The causal hook of an attention call whose rows are queries at positions
/// `offset + q_id`: every logit of a key past its query's position becomes −∞.
#[inline(always)]
pub(crate) fn mask_future(offset: usize, q_ids: &[u32], k_ids: &[u32], s: &mut [f32], ldk: usize) {
    for (row, &qi) in s.chunks_exact_mut(ldk).zip(q_ids) {
        let last = offset.saturating_add(qi as usize);
        for (x, &j) in row.iter_mut().zip(k_ids) {
            if j as usize > last {
                *x = f32::NEG_INFINITY;
            }
        }
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
