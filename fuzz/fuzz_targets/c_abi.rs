//! Every C ABI entry point driven by arbitrary configs, shapes, strides, element types,
//! masks, key lengths, head sinks, engine parallel-fors, struct sizes, pointers and data
//! (design §2). Each buffer is allocated with exactly the elements its declared shape
//! reaches, and each versioned struct with exactly the bytes its `struct_size` names, so
//! under AddressSanitizer (cargo-fuzz's default) any read or write outside them is reported;
//! sizes stay small so that a case runs in well under a millisecond.
//!
//! Checked on every case:
//! - no call returns `SMYRF_ERROR_PANIC` or a status outside the enum, and a failed call
//!   leaves a message and writes nothing (outputs keep their sentinel bits, the engine's
//!   parallel-for is never called);
//! - a call the harness built to be valid succeeds, and a call that succeeds was valid
//!   (known element types, aligned data, struct sizes of some version, consistent shapes,
//!   key lengths in 0..=Nk, head sinks finite or −∞, a worker for a parallel-for, disjoint
//!   output rows, no output sharing memory with anything);
//! - after success, elements of `out` between the view's rows are untouched, outputs are
//!   finite and within the range of the values when the inputs are finite, and a batch
//!   element without valid keys gets zeros and an lse of its head sink (plus ln R for R
//!   hash rounds; −∞ without one);
//! - a call with 16-bit tensors, an engine's parallel-for or another version's struct sizes
//!   gives the bits of the plain f32 call on the values converted beforehand (its output
//!   rounded to nearest even for a 16-bit `out`);
//! - a KV-cache index session (create, appends in and out of order, resets, lengths, decode
//!   calls, destroy) refuses exactly the invalid steps, leaves the index's lengths and the
//!   outputs untouched when it does, and decodes to finite outputs within the values' range.
#![no_main]

use half::{bf16, f16};
use libfuzzer_sys::fuzz_target;
use smyrf::internals::ffi::*;
use smyrf::Isa;
use smyrf_fuzz::{filler, Input};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ffi::{c_void, CStr};
use std::mem::{offset_of, size_of};
use std::ptr::{null, null_mut, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bits written into every f32 output buffer before a call, to see what the call wrote.
const SENTINEL: u32 = 0x7FC0_5EED; // a quiet NaN with a payload no computation produces

/// The same for 16-bit outputs: a NaN with a payload both as f16 and as bf16.
const SENTINEL16: u16 = 0x7FED;

/// Sizes that make any extent overflow `isize` (at least 2^61 elements): the library must
/// refuse them from the arithmetic alone, so no buffer is needed.
const HUGE: [usize; 3] = [1 << 61, 1 << 62, usize::MAX];

/// The largest `struct_size` the library accepts (see `read_versioned` in src/ffi): sizes up
/// to a little past it get real buffers of that many bytes.
const MAX_STRUCT_SIZE: usize = 4096;

/// The harness's own view of a tensor argument.
#[derive(Clone, Copy, Debug)]
struct Spec {
    batch: usize,
    heads: usize,
    seq_len: usize,
    dim: usize,
    batch_stride: usize,
    head_stride: usize,
    seq_stride: usize,
}

/// What the library must conclude about a view's extent.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Extent {
    /// A size is zero: refused.
    Zero,
    /// The element count or the last element overflows `isize` (as bytes): refused.
    Overflow,
    /// Valid: the buffer must hold exactly this many elements.
    Len(usize),
}

impl Spec {
    fn extent(&self) -> Extent {
        let sizes = [self.batch, self.heads, self.seq_len, self.dim];
        if sizes.contains(&0) {
            return Extent::Zero;
        }
        let limit = isize::MAX as usize / 4;
        let elements = sizes.iter().try_fold(1usize, |p, &s| p.checked_mul(s));
        let last = (|| {
            (self.batch - 1)
                .checked_mul(self.batch_stride)?
                .checked_add((self.heads - 1).checked_mul(self.head_stride)?)?
                .checked_add((self.seq_len - 1).checked_mul(self.seq_stride)?)?
                .checked_add(self.dim)
        })();
        match (elements, last) {
            (Some(e), Some(l)) if e <= limit && l <= limit => Extent::Len(l),
            _ => Extent::Overflow,
        }
    }

    fn offset(&self, b: usize, h: usize, i: usize) -> usize {
        b * self.batch_stride + h * self.head_stride + i * self.seq_stride
    }
}

/// A tensor's element type as the harness chose it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ty {
    F32,
    F16,
    Bf16,
    /// A `dtype` value that names no type: refused.
    Unknown(u32),
}

impl Ty {
    fn pick(input: &mut Input) -> Ty {
        if input.rare(8) {
            return Ty::Unknown(input.pick(&[3, 4, 255, 1 << 31, u32::MAX]));
        }
        match input.range(0, 7) {
            0..=3 => Ty::F32,
            4 | 5 => Ty::F16,
            _ => Ty::Bf16,
        }
    }

    fn code(self) -> u32 {
        match self {
            Ty::F32 => smyrf_dtype::SMYRF_DTYPE_F32 as u32,
            Ty::F16 => smyrf_dtype::SMYRF_DTYPE_F16 as u32,
            Ty::Bf16 => smyrf_dtype::SMYRF_DTYPE_BF16 as u32,
            Ty::Unknown(code) => code,
        }
    }
}

/// A tensor's buffer: f32, or the bits of f16/bf16 values (f32 storage for an unknown type,
/// which the library refuses before reading).
enum Buf {
    F32(Vec<f32>),
    Half(Vec<u16>),
}

impl Buf {
    /// Exactly `len` elements when the extent is valid, else none (the library must refuse
    /// the view before touching memory, so a dangling pointer is passed); one element more
    /// when the data is to be misaligned, so that the shifted view still lies inside.
    fn new(ty: Ty, extent: Extent, misaligned: bool) -> Buf {
        let len = match extent {
            Extent::Len(len) => len + misaligned as usize,
            _ => 0,
        };
        match ty {
            Ty::F16 | Ty::Bf16 => Buf::Half(vec![SENTINEL16; len]),
            _ => Buf::F32(vec![f32::from_bits(SENTINEL); len]),
        }
    }

    fn len(&self) -> usize {
        match self {
            Buf::F32(x) => x.len(),
            Buf::Half(x) => x.len(),
        }
    }

    /// The pointer to pass: the data, a dangling pointer for an empty buffer, or NULL; one
    /// byte (16-bit) or two bytes (f32) past the start when `misaligned`.
    fn ptr(&mut self, null_it: bool, misaligned: bool) -> *mut c_void {
        if null_it {
            return null_mut();
        }
        let (base, shift): (*mut u8, usize) = match self {
            Buf::F32(x) if x.is_empty() => (NonNull::<f32>::dangling().as_ptr().cast(), 2),
            Buf::F32(x) => (x.as_mut_ptr().cast(), 2),
            Buf::Half(x) if x.is_empty() => (NonNull::<u16>::dangling().as_ptr().cast(), 1),
            Buf::Half(x) => (x.as_mut_ptr().cast(), 1),
        };
        match misaligned && self.len() > 0 {
            // SAFETY: within the buffer, which holds one spare element.
            true => unsafe { base.add(shift) }.cast(),
            false => base.cast(),
        }
    }

    fn untouched(&self) -> bool {
        match self {
            Buf::F32(x) => x.iter().all(|v| v.to_bits() == SENTINEL),
            Buf::Half(x) => x.iter().all(|&v| v == SENTINEL16),
        }
    }

    /// The values as the kernels see them: f32, 16-bit values widened exactly.
    fn widened(&self, ty: Ty) -> Vec<f32> {
        match (self, ty) {
            (Buf::F32(x), _) => x.clone(),
            (Buf::Half(x), Ty::F16) => x.iter().map(|&b| f16::from_bits(b).to_f32()).collect(),
            (Buf::Half(x), _) => x.iter().map(|&b| bf16::from_bits(b).to_f32()).collect(),
        }
    }

    /// Element `i` widened (the sentinel reads as NaN).
    fn get(&self, ty: Ty, i: usize) -> f32 {
        match (self, ty) {
            (Buf::F32(x), _) => x[i],
            (Buf::Half(x), Ty::F16) => f16::from_bits(x[i]).to_f32(),
            (Buf::Half(x), _) => bf16::from_bits(x[i]).to_f32(),
        }
    }

    fn is_sentinel(&self, i: usize) -> bool {
        match self {
            Buf::F32(x) => x[i].to_bits() == SENTINEL,
            Buf::Half(x) => x[i] == SENTINEL16,
        }
    }

    /// Element `i` is the f32 result `want` stored as `ty`: the same bits for f32, rounded to
    /// nearest even for 16-bit types; any NaN matches any NaN.
    fn holds(&self, ty: Ty, i: usize, want: f32) -> bool {
        let (got, stored) = match (self, ty) {
            (Buf::F32(x), _) => (x[i].to_bits(), want.to_bits()),
            (Buf::Half(x), Ty::F16) => (x[i] as u32, f16::from_f32(want).to_bits() as u32),
            (Buf::Half(x), _) => (x[i] as u32, bf16::from_f32(want).to_bits() as u32),
        };
        got == stored || (self.get(ty, i).is_nan() && want_is_nan(ty, want))
    }
}

fn want_is_nan(ty: Ty, want: f32) -> bool {
    match ty {
        Ty::F16 => f16::from_f32(want).is_nan(),
        Ty::Bf16 => bf16::from_f32(want).is_nan(),
        _ => want.is_nan(),
    }
}

/// A caller's versioned struct (its first field is its `struct_size`) in a zeroed
/// allocation of exactly the bytes that size names (at least the size field itself; the
/// struct's own bytes past a smaller size are left out), with one nonzero byte past the
/// struct when `dirty` names it, and 4 bytes off the 8-byte alignment when `misaligned`.
/// Sizes far past any the library reads get just the struct: it must refuse them from the
/// value alone.
struct Placed {
    base: *mut u8,
    layout: Layout,
    at: usize,
}

impl Placed {
    fn new<T: Copy>(value: T, size: usize, dirty: Option<usize>, misaligned: bool) -> Placed {
        let full = size_of::<T>();
        let bytes = match size <= MAX_STRUCT_SIZE + 64 {
            true => size.max(size_of::<usize>()),
            false => full,
        };
        let at = if misaligned { 4 } else { 0 };
        let layout = Layout::from_size_align(bytes + at, 8).unwrap();
        // SAFETY: a nonzero size.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null(), "out of memory");
        // SAFETY: `min(bytes, full)` bytes of `value` into the allocation, which holds them.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&value as *const T).cast::<u8>(),
                base.add(at),
                bytes.min(full),
            );
            base.add(at).cast::<usize>().write_unaligned(size);
            if let Some(byte) = dirty.filter(|&b| b < bytes) {
                *base.add(at + byte) = 1;
            }
        }
        Placed { base, layout, at }
    }

    fn ptr<T>(&self) -> *const T {
        // SAFETY: within the allocation.
        unsafe { self.base.add(self.at) }.cast()
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.base, self.layout) };
    }
}

/// The `struct_size` of a caller's struct of `full` bytes (minimum `min`) and whether the
/// library must take it: mostly `full`; now and then 0, one word, below the minimum, any
/// small size (inside a field, say), a field end of an older version, a larger (newer)
/// struct with zero bytes past this layout or with a nonzero one (an option the library
/// cannot honour), a size past the library's limit, or one no buffer could have. Returns
/// (size, the byte to set, accepted).
fn struct_size(
    input: &mut Input,
    full: usize,
    min: usize,
    ends: &[usize],
) -> (usize, Option<usize>, bool) {
    if !input.rare(16) {
        return (full, None, true);
    }
    let size = match input.range(0, 10) {
        0 => 0,
        1 => size_of::<usize>(),
        2 => min - 1,
        3 => input.range(0, full + 16),
        4..=6 if !ends.is_empty() => input.pick(ends),
        4..=7 => full + input.range(1, 64),
        8 => MAX_STRUCT_SIZE + input.range(0, 16),
        _ => input.pick(&[1 << 40, usize::MAX]),
    };
    let dirty = (size > full && input.flag()).then(|| full + input.range(0, 255) % (size - full));
    let accepted = size >= min
        && size <= MAX_STRUCT_SIZE
        && (size >= full || ends.contains(&size))
        && dirty.is_none();
    (size, dirty, accepted)
}

/// Where each field of a struct ends: the sizes an older caller's struct can have.
macro_rules! field_ends {
    ($t:ty: $($field:ident: $ft:ty),+) => {
        [$(offset_of!($t, $field) + size_of::<$ft>()),+]
    };
}

fn seq_len(input: &mut Input) -> usize {
    match input.rare(24) {
        false => input.range(1, 20),
        // Across the 64-query and 256-key tile edges now and then.
        true => input.pick(&[63, 64, 65, 255, 256, 257]),
    }
}

/// A size, now and then replaced by a wrong, zero or huge one. `clean` turns false then.
fn perturb(input: &mut Input, size: usize, clean: &mut bool) -> usize {
    if !input.rare(10) {
        return size;
    }
    *clean = false;
    match input.range(0, 4) {
        0 => 0,
        1 => size.saturating_add(1),
        2 => size.saturating_sub(1),
        3 => input.range(1, 5),
        _ => input.pick(&HUGE),
    }
}

/// Sizes and strides of one tensor argument. `clean` turns false when the spec is not a
/// valid placement for an output (strides chosen freely may make rows overlap, which is
/// fine for inputs and refused for outputs).
fn spec(input: &mut Input, sizes: [usize; 4], clean: &mut bool, output: bool) -> Spec {
    let [batch, heads, seq_len, dim] = sizes.map(|s| perturb(input, s, clean));
    let (h, n, d) = (heads, seq_len, dim);
    let (batch_stride, head_stride, seq_stride) = match input.range(0, 5) {
        // [B, H, N, D] and [B, N, H, D], contiguous (wrapping: the sizes may be huge).
        0 | 1 => (h.wrapping_mul(n).wrapping_mul(d), n.wrapping_mul(d), d),
        2 => (n.wrapping_mul(h).wrapping_mul(d), d, h.wrapping_mul(d)),
        // Padded rows, heads and batches.
        3 => {
            let seq = d.wrapping_add(input.range(0, 5));
            let head = n.wrapping_mul(seq).wrapping_add(input.range(0, 5));
            (
                h.wrapping_mul(head).wrapping_add(input.range(0, 5)),
                head,
                seq,
            )
        }
        // Any small strides: rows may overlap or broadcast (stride 0).
        4 => {
            if output {
                *clean = false;
            }
            (input.range(0, 80), input.range(0, 80), input.range(0, 40))
        }
        // One stride so large that the extent overflows (when its axis has 2+ entries).
        _ => {
            *clean = false;
            let huge = input.pick(&HUGE);
            match input.range(0, 2) {
                0 => (huge, n.wrapping_mul(d), d),
                1 => (h.wrapping_mul(n).wrapping_mul(d), huge, d),
                _ => (h.wrapping_mul(n).wrapping_mul(d), n.wrapping_mul(d), huge),
            }
        }
    };
    Spec {
        batch,
        heads,
        seq_len,
        dim,
        batch_stride,
        head_stride,
        seq_stride,
    }
}

/// Values for an input buffer: small finite values, with a sprinkling of NaN, ±∞, huge and
/// subnormal values (any bit pattern) when `hostile`. Returns whether any non-finite or
/// huge value went in.
fn fill(input: &mut Input, buffer: &mut Buf, ty: Ty, salt: u32, hostile: bool) -> bool {
    let mut special = false;
    let mut value = |input: &mut Input, i: usize| -> Result<f32, u32> {
        if input.is_empty() {
            Ok(filler(i, salt))
        } else if hostile && input.rare(12) {
            special = true;
            let choices = [
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                1e30,
                -1e30,
                1e-40,
            ];
            match input.flag() {
                true => Ok(input.pick(&choices)),
                false => Err(input.u32()),
            }
        } else {
            Ok(input.small_f32())
        }
    };
    match buffer {
        Buf::F32(x) => {
            for (i, slot) in x.iter_mut().enumerate() {
                *slot = value(input, i).unwrap_or_else(f32::from_bits);
            }
        }
        Buf::Half(x) => {
            for (i, slot) in x.iter_mut().enumerate() {
                // Small values are exact in both 16-bit types; raw patterns are any bits.
                *slot = match (value(input, i), ty) {
                    (Ok(v), Ty::F16) => f16::from_f32(v).to_bits(),
                    (Ok(v), _) => bf16::from_f32(v).to_bits(),
                    (Err(bits), _) => bits as u16,
                };
            }
        }
    }
    special
}

/// A tensor descriptor through the C initialiser (which sets `struct_size`), then the
/// spec's strides.
fn tensor(spec: &Spec, data: *const c_void, ty: Ty) -> smyrf_tensor {
    let mut t = smyrf_tensor_bhnd(
        data,
        ty.code(),
        spec.batch,
        spec.heads,
        spec.seq_len,
        spec.dim,
    );
    t.batch_stride = spec.batch_stride;
    t.head_stride = spec.head_stride;
    t.seq_stride = spec.seq_stride;
    t
}

fn tensor_mut(spec: &Spec, data: *mut c_void, ty: Ty) -> smyrf_tensor_mut {
    let mut t = smyrf_tensor_mut_bhnd(
        data,
        ty.code(),
        spec.batch,
        spec.heads,
        spec.seq_len,
        spec.dim,
    );
    t.batch_stride = spec.batch_stride;
    t.head_stride = spec.head_stride;
    t.seq_stride = spec.seq_stride;
    t
}

fn last_error() -> String {
    // SAFETY: the library returns a NUL-terminated string valid until the next call on this
    // thread; it is copied at once.
    unsafe { CStr::from_ptr(smyrf_last_error_message()) }
        .to_string_lossy()
        .into_owned()
}

/// The checks every status-returning call gets.
fn check_status(function: &str, status: smyrf_status) {
    let code = status as u32;
    assert!(code <= 4, "{function}: status {code}: {}", last_error());
    let message = last_error();
    match status {
        smyrf_status::SMYRF_OK => assert!(message.is_empty(), "{function}: OK with {message}"),
        _ => assert!(
            message.starts_with(function),
            "{function}: status {code} with message {message:?}"
        ),
    }
}

fn untouched(buffer: &[f32]) -> bool {
    buffer.iter().all(|x| x.to_bits() == SENTINEL)
}

/// An engine's parallel-for: runs the tasks in an order of the harness's choosing, on the
/// calling thread or on two threads, and counts its calls.
struct Engine {
    /// 0: ascending; 1: descending; 2: evens then odds; 3: on two threads.
    order: u8,
    calls: AtomicUsize,
}

unsafe extern "C" fn run_engine(
    engine: *mut c_void,
    n: usize,
    task: smyrf_task_fn,
    context: *mut c_void,
) {
    // SAFETY: the context the harness passed, alive for the call. (A struct size that ends
    // before `parallel_context` leaves it NULL, but also `parallel_workers` at 0, and such a
    // call is refused before any task runs.)
    let engine = unsafe { engine.cast::<Engine>().as_ref() }.expect("a NULL engine context");
    engine.calls.fetch_add(1, Ordering::Relaxed);
    let task = task.expect("the library passes a task");
    // SAFETY: (every call below) the library's task and context, each index once.
    let run = |i: usize| unsafe { task(context, i) };
    match engine.order {
        0 => (0..n).for_each(run),
        1 => (0..n).rev().for_each(run),
        2 => (0..n).step_by(2).chain((1..n).step_by(2)).for_each(run),
        _ => {
            // The tasks of one call may run on any threads (the contract).
            let context = context as usize;
            std::thread::scope(|scope| {
                for start in 0..2 {
                    scope.spawn(move || {
                        for i in (start..n).step_by(2) {
                            // SAFETY: as above.
                            unsafe { task(context as *mut c_void, i) };
                        }
                    });
                }
            });
        }
    }
}

/// Which memory an output shares with something else, if any (refused by the library).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Alias {
    None,
    /// `out` placed inside the q buffer.
    OutInQ,
    /// `lse_out` placed inside the k buffer.
    LseInK,
    /// `lse_out` placed inside the out buffer.
    LseInOut,
}

/// What a call needs to know of its plan.
#[derive(Clone, Copy)]
struct PlanInfo {
    plan: *const smyrf_plan,
    /// The logit scale it applies.
    scale: f32,
    /// Its design §8 window (a call with Nq ≠ Nk is then refused).
    window: u32,
    /// Its hash rounds: calls stay tiny when there are many (each round is a full pass).
    rounds: u32,
    /// Keys its design §8 blocks may add per query (sinks, window, selected keys, samples),
    /// for the work estimate.
    extra_keys: usize,
    /// Whether it has selected keys or mean-query sinks (a causal call is then refused).
    no_causal: bool,
    /// Whether it has key blocks or no hash rounds (a call that is not causal is then
    /// refused).
    needs_causal: bool,
}

/// One plan: created one of several ways, checked, returned (or NULL when refused).
fn make_plan(input: &mut Input, head_dim: usize) -> PlanInfo {
    let mut config = smyrf_config_default();
    let mut valid = true;
    config.n_hashes = match input.rare(16) {
        false => input.range(1, 3) as u32,
        true => input.pick(&[0, 1024, 1025, u32::MAX]),
    };
    config.q_cluster_size = match input.rare(16) {
        false => input.range(1, 40) as u32,
        true => input.pick(&[0, u32::MAX]),
    };
    config.k_cluster_size = match input.range(0, 3) {
        0 => 0,
        1 => input.range(1, 40) as u32,
        2 => input.range(1, 5) as u32,
        _ => u32::MAX,
    };
    config.scale = match input.range(0, 7) {
        0..=2 => 0.0,
        3 => 0.25,
        4 => 2.0,
        5 => input.pick(&[-1.0, f32::NAN, f32::INFINITY, -0.0, f32::MIN_POSITIVE]),
        _ => input.raw_f32(),
    };
    config.seed = match input.rare(16) {
        false => input.byte() as u64,
        true => input.u64(),
    };
    config.num_threads = input.pick(&[0, 0, 1, 1, 2, 3, 1025, u32::MAX]);
    config.isa = match input.rare(16) {
        false => input.range(0, 3) as u32,
        true => input.pick(&[4, 5, u32::MAX]),
    };
    // The exact bf16 path now and then, and a value that is neither 0 nor 1.
    if input.rare(8) {
        config.bf16_exact = input.pick(&[1, 1, 2]);
    }
    // Design §8 blocks, now and then: sinks, a window, residual samples.
    if input.rare(64) {
        config.n_sinks = input.pick(&[0, 1, 2, 5, 40, u32::MAX]);
        config.sink_selection = match input.rare(16) {
            false => input.range(0, 1) as u32,
            true => input.pick(&[2, u32::MAX]),
        };
        config.window = input.pick(&[0, 0, 1, 2, 5, 16, u32::MAX]);
        config.n_samples = input.pick(&[0, 0, 1, 3, 8, 300]);
        config.sample_group = input.pick(&[0, 1, 3, 64, u32::MAX]);
        config.n_selected = input.pick(&[0, 0, 1, 4, 300]);
        config.select_dims = input.pick(&[0, 1, 3, 100]);
        config.n_blocks = input.pick(&[0, 0, 1, 3, 300]);
        config.block_size = input.pick(&[0, 1, 5, 16, u32::MAX]);
        config.block_tile = input.pick(&[0, 1, 3, 16, u32::MAX]);
    }
    // The reserved field, rarely set: refused.
    if input.rare(64) {
        config.reserved = input.pick(&[1, u32::MAX]);
    }
    // Keep allocations bounded: a large head dim only with few rounds.
    if head_dim > 64 && config.n_hashes > 4 {
        config.n_hashes = 4;
    }
    // The caller's struct size: an older one leaves the fields past it at their defaults.
    // The released layouts: the first (through `isa`), 0.2.0's (through `bf16_exact`),
    // 0.2.1's (through `select_dims`) and this one.
    let ends = field_ends!(smyrf_config: isa: u32, bf16_exact: u32, select_dims: u32);
    let (size, dirty, size_ok) = struct_size(
        input,
        size_of::<smyrf_config>(),
        SMYRF_CONFIG_MIN_SIZE,
        &ends,
    );
    let misaligned = input.rare(4);
    valid &= size_ok && !misaligned;
    // Fields past an older caller's size are not read: the defaults stand in for them.
    let mut effective = config;
    let defaults = smyrf_config_default();
    if size < size_of::<smyrf_config>() {
        effective = smyrf_config {
            n_blocks: defaults.n_blocks,
            block_size: defaults.block_size,
            block_tile: defaults.block_tile,
            reserved: defaults.reserved,
            ..config
        };
    }
    if size < ends[2] {
        effective = smyrf_config {
            n_selected: defaults.n_selected,
            select_dims: defaults.select_dims,
            ..effective
        };
    }
    if size < ends[1] {
        effective = smyrf_config {
            n_sinks: defaults.n_sinks,
            sink_selection: defaults.sink_selection,
            window: defaults.window,
            n_samples: defaults.n_samples,
            sample_group: defaults.sample_group,
            bf16_exact: defaults.bf16_exact,
            ..effective
        };
    }
    let placed = Placed::new(config, size, dirty, misaligned);

    let c = &effective;
    let neon = c.isa == smyrf_isa::SMYRF_ISA_NEON as u32;
    valid &= c.sink_selection <= 1 && c.bf16_exact <= 1 && c.reserved == 0;
    let has_blocks =
        c.n_sinks > 0 || c.window > 0 || c.n_selected > 0 || c.n_samples > 0 || c.n_blocks > 0;
    valid &= (c.n_hashes >= 1 || has_blocks) && c.n_hashes <= 1024 && c.q_cluster_size >= 1;
    valid &= c.scale == 0.0 || (c.scale.is_finite() && c.scale > 0.0);
    valid &= c.num_threads <= 1024 && c.isa <= 3 && !neon;
    valid &= match c.isa {
        0 => std::env::var_os("SMYRF_ISA").is_none(),
        1 => true,
        2 => Isa::Avx2.is_supported(),
        _ => Isa::Avx512.is_supported(),
    };
    valid &= (1..=1 << 16).contains(&head_dim);

    let sentinel_plan = NonNull::<smyrf_plan>::dangling().as_ptr();
    let mut plan = sentinel_plan;
    let null_config = input.rare(4);
    let null_out = input.rare(4);
    let config_ptr: *const smyrf_config = if null_config { null() } else { placed.ptr() };
    let out_ptr: *mut *mut smyrf_plan = if null_out { null_mut() } else { &mut plan };
    let expected_len = (head_dim.saturating_add(2)).saturating_mul(c.n_hashes as usize);
    let mut supplied = None;
    let status = if input.flag() && expected_len <= 1 << 20 {
        let len = match input.range(0, 5) {
            0 => expected_len.saturating_sub(1),
            1 => expected_len + 1,
            _ => expected_len,
        };
        let projections: Vec<f32> = (0..len).map(|i| filler(i, 9) * 3.0).collect();
        let null_projections = input.rare(4);
        valid &= len == expected_len && !null_projections;
        let ptr = if null_projections {
            null()
        } else {
            projections.as_ptr()
        };
        // SAFETY: every pointer is NULL or valid for what it names (`len` floats, a config
        // of the bytes its size names).
        let status =
            unsafe { smyrf_plan_create_with_projections(config_ptr, head_dim, ptr, len, out_ptr) };
        check_status("smyrf_plan_create_with_projections", status);
        supplied = Some(projections);
        status
    } else {
        // SAFETY: config and out pointer are NULL or valid.
        let status = unsafe { smyrf_plan_create(config_ptr, head_dim, out_ptr) };
        check_status("smyrf_plan_create", status);
        status
    };
    valid &= !null_config && !null_out;
    if status != smyrf_status::SMYRF_OK {
        assert!(!valid, "a valid plan was refused: {}", last_error());
        assert_eq!(plan, sentinel_plan, "a refused plan was stored");
        return PlanInfo {
            plan: null(),
            scale: 0.0,
            window: 0,
            rounds: 0,
            extra_keys: 0,
            no_causal: false,
            needs_causal: false,
        };
    }
    assert!(
        valid,
        "an invalid plan was accepted: {config:?} (struct_size {size}, misaligned \
         {misaligned}), head_dim {head_dim}"
    );
    assert!(!plan.is_null() && plan != sentinel_plan);
    // SAFETY: a live plan.
    let isa = unsafe { CStr::from_ptr(smyrf_isa_name(plan)) };
    assert!(!isa.is_empty());

    // The matrix reads back exactly (when supplied), and only with the right length.
    let len = match input.range(0, 3) {
        0 => expected_len + 1,
        // A plan without rounds has an empty matrix: nothing is one too few.
        1 => expected_len.checked_sub(1).unwrap_or(2),
        _ => expected_len,
    };
    let mut read_back = vec![f32::from_bits(SENTINEL); len];
    let null_read = input.rare(8);
    let ptr = match (null_read, read_back.is_empty()) {
        (true, _) => null_mut(),
        (false, true) => NonNull::dangling().as_ptr(),
        (false, false) => read_back.as_mut_ptr(),
    };
    // SAFETY: a live plan; `ptr` is NULL or valid for `len` floats.
    let status = unsafe { smyrf_plan_projections(plan, ptr, len) };
    check_status("smyrf_plan_projections", status);
    if len == expected_len && !null_read {
        assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
        if let Some(supplied) = supplied {
            let same = supplied.iter().zip(&read_back);
            assert!(same.clone().all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    } else {
        assert_ne!(status, smyrf_status::SMYRF_OK);
        assert!(untouched(&read_back));
    }

    // The scratch estimate never panics, whatever the lengths.
    let lengths = [
        0,
        1,
        17,
        300,
        1 << 20,
        u32::MAX as usize,
        1 << 32,
        usize::MAX,
    ];
    let (nq, nk, dv) = (
        input.pick(&lengths),
        input.pick(&lengths),
        input.pick(&lengths),
    );
    let mut bytes = usize::MAX;
    // SAFETY: a live plan and a writable usize.
    let status = unsafe { smyrf_plan_scratch_bytes(plan, nq, nk, dv, &mut bytes) };
    check_status("smyrf_plan_scratch_bytes", status);
    let in_range = |x: usize| x >= 1 && x <= u32::MAX as usize;
    if in_range(nq) && in_range(nk) && in_range(dv) {
        assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
    } else {
        assert_ne!(status, smyrf_status::SMYRF_OK);
        assert_eq!(bytes, usize::MAX);
    }
    let scale = match c.scale {
        0.0 => 1.0 / (head_dim as f32).sqrt(),
        scale => scale,
    };
    PlanInfo {
        plan,
        scale,
        window: c.window,
        rounds: c.n_hashes,
        extra_keys: [
            c.n_sinks,
            c.window,
            c.n_selected,
            c.n_samples,
            c.n_blocks.saturating_mul(match c.block_size {
                0 => 16,
                p => p,
            }),
            c.block_tile,
        ]
        .into_iter()
        .fold(0usize, |sum, x| sum.saturating_add(x as usize)),
        no_causal: c.n_selected > 0 || (c.n_sinks > 1 && c.sink_selection == 1),
        needs_causal: c.n_blocks > 0 || c.n_hashes == 0,
    }
}

/// A 4-byte-element option buffer (key lengths, head sinks, lse) as a pointer: NULL when
/// absent, two bytes off its alignment when `misaligned` (the buffer holds a spare element).
fn option_ptr<T>(buffer: &mut Option<Vec<T>>, misaligned: bool) -> *mut T {
    match buffer {
        None => null_mut(),
        Some(b) if b.is_empty() => NonNull::dangling().as_ptr(),
        // SAFETY: within the buffer, which holds one spare element when misaligned.
        Some(b) if misaligned => unsafe { b.as_mut_ptr().cast::<u8>().add(2) }.cast(),
        Some(b) => b.as_mut_ptr(),
    }
}

/// One attention call: SMYRF through `plan` (whose pointer may be NULL), or dense when
/// `plan` is `None`.
fn attention_call(input: &mut Input, plan: Option<PlanInfo>, head_dim: usize) {
    // The consistent sizes of the call, before any perturbation.
    let hkv = input.range(1, 3);
    let (b, hq) = (input.range(1, 3), hkv * input.range(1, 2));
    let many_rounds = plan.is_some_and(|p| p.rounds > 8);
    let seq_len = |input: &mut Input| match many_rounds {
        true => input.range(1, 4),
        false => seq_len(input),
    };
    let nq = seq_len(input);
    // Self-attention lengths (Nq = Nk) most of the time when the plan has a window.
    let nk = match plan.is_some_and(|p| p.window > 0) && !input.rare(32) {
        true => nq,
        false => seq_len(input),
    };
    let d = match (input.rare(32), plan) {
        (false, Some(_)) => head_dim,
        _ => input.range(1, 9),
    };
    let dv = input.range(1, 9);
    let mut clean = true;
    let mut out_clean = true;
    let qs = spec(input, [b, hq, nq, d], &mut clean, false);
    let ks = spec(input, [b, hkv, nk, d], &mut clean, false);
    let vs = spec(input, [b, hkv, nk, dv], &mut clean, false);
    let os = spec(input, [b, hq, nq, dv], &mut out_clean, true);
    let tys = [
        Ty::pick(input),
        Ty::pick(input),
        Ty::pick(input),
        Ty::pick(input),
    ];
    let mut valid = clean && out_clean;
    // Reasons the call must be refused whatever else it holds (`valid` also turns false for
    // sizes and strides that may or may not be consistent).
    let mut refuse: Vec<&str> = Vec::new();
    let mut deny = |valid: &mut bool, bad: bool, why: &'static str| {
        if bad {
            *valid = false;
            refuse.push(why);
        }
    };
    deny(
        &mut valid,
        tys.iter().any(|t| matches!(t, Ty::Unknown(_))),
        "unknown dtype",
    );
    valid &= plan.is_none_or(|p| !p.plan.is_null() && d == head_dim);

    let extents = [qs.extent(), ks.extent(), vs.extent(), os.extent()];
    // Keep every case small (a few milliseconds under AddressSanitizer): buffers (sizes and
    // strides above stay far below this), and the arithmetic of a call that would run (rows
    // may overlap, so large head dims fit in small buffers): per head, projections
    // R·(Nq + Nk)·d, dense attention Nq·Nk·(d + dv), and the §8 blocks' keys per query.
    let rounds = plan.map_or(1, |p| p.rounds.max(1) as usize);
    let extra_keys = plan.map_or(0, |p| p.extra_keys.min(ks.seq_len.saturating_mul(3)));
    let per_head = rounds
        .saturating_add(qs.seq_len)
        .saturating_mul(qs.seq_len.saturating_add(ks.seq_len))
        .saturating_add(qs.seq_len.saturating_mul(extra_keys).saturating_mul(4));
    let work = [qs.batch, qs.heads, qs.dim.max(os.dim), per_head]
        .into_iter()
        .fold(1usize, usize::saturating_mul);
    let too_large = extents
        .iter()
        .any(|e| matches!(e, Extent::Len(len) if *len > 1 << 20));
    if too_large || (extents.iter().all(|e| matches!(e, Extent::Len(_))) && work > 1 << 22) {
        return;
    }
    // Now and then one buffer's data (a tensor's or an option's) off its alignment.
    let misaligned = input.rare(8).then(|| input.range(0, 6));
    let hostile = input.rare(48);
    let mut q = Buf::new(tys[0], extents[0], misaligned == Some(0));
    let mut k = Buf::new(tys[1], extents[1], misaligned == Some(1));
    let mut v = Buf::new(tys[2], extents[2], misaligned == Some(2));
    let mut out = Buf::new(tys[3], extents[3], misaligned == Some(3));
    let mut special = fill(input, &mut q, tys[0], 1, hostile);
    special |= fill(input, &mut k, tys[1], 2, hostile);
    special |= fill(input, &mut v, tys[2], 3, hostile);

    // Mask `[batch][k seq_len]`, key lengths `[batch]`, head sinks `[q heads]` and lse
    // `[batch][q heads][q seq_len]`, sized from the views they belong to (the library reads
    // no more than both readings of "batch" promise; the products are small when those
    // views are valid).
    let (q_ok, k_ok) = (
        matches!(extents[0], Extent::Len(_)),
        matches!(extents[1], Extent::Len(_)),
    );
    let batch = qs.batch.min(ks.batch);
    let mask_len = if k_ok && q_ok { batch * ks.seq_len } else { 0 };
    let mask: Option<Vec<u8>> = match input.range(0, 4) {
        0 | 1 => None,
        2 => Some((0..mask_len).map(|_| input.byte() & 1).collect()),
        3 => Some((0..mask_len).map(|_| input.byte()).collect()),
        // Every key of the last batch element masked.
        _ => Some(
            (0..mask_len)
                .map(|j| (j + ks.seq_len < mask_len) as u8)
                .collect(),
        ),
    };
    let spare = |which| (misaligned == Some(which)) as usize;
    let mut key_lengths: Option<Vec<i32>> = input.rare(64).then(|| {
        let len = if k_ok && q_ok { batch } else { 0 };
        (0..len + spare(4))
            .map(|_| match input.rare(16) {
                false => input.range(0, ks.seq_len.min(255)) as i32,
                true => input.pick(&[-1, i32::MIN, ks.seq_len as i32 + 1, i32::MAX, 0]),
            })
            .collect()
    });
    if let Some(lengths) = &key_lengths {
        let nk = ks.seq_len as i64;
        let bad = lengths.iter().any(|&l| l < 0 || l as i64 > nk);
        // A misaligned buffer is read at an offset (and refused as misaligned), so its values
        // only count when it is aligned.
        deny(&mut valid, bad && misaligned != Some(4), "key length");
    }
    let mut head_sinks: Option<Vec<f32>> = input.rare(64).then(|| {
        let len = if q_ok { qs.heads } else { 0 };
        (0..len + spare(5))
            .map(|_| match input.rare(16) {
                false => input.pick(&[0.0, 1.5, -3.0, 8.0, f32::NEG_INFINITY]),
                true => input.pick(&[f32::NAN, f32::INFINITY, -f32::NAN, 1e30, f32::MAX]),
            })
            .collect()
    });
    if let Some(sinks) = &head_sinks {
        let bad = sinks
            .iter()
            .any(|&s| !s.is_finite() && s != f32::NEG_INFINITY);
        deny(&mut valid, bad && misaligned != Some(5), "head sink");
    }
    let lse_len = if q_ok {
        qs.batch * qs.heads * qs.seq_len
    } else {
        0
    };
    let mut lse: Option<Vec<f32>> = input
        .flag()
        .then(|| vec![f32::from_bits(SENTINEL); lse_len + spare(6)]);

    let misaligned_exists = match misaligned {
        Some(4) => key_lengths.is_some(),
        Some(5) => head_sinks.is_some(),
        Some(6) => lse.is_some(),
        other => other.is_some(),
    };
    deny(&mut valid, misaligned_exists, "misaligned data");

    let alias = match input.rare(16) {
        false => Alias::None,
        true => input.pick(&[Alias::OutInQ, Alias::LseInK, Alias::LseInOut]),
    };
    let nulls = input.rare(8).then(|| input.range(0, 6));
    deny(&mut valid, nulls.is_some(), "NULL pointer");

    let q_ptr = q.ptr(nulls == Some(0), misaligned == Some(0));
    let k_ptr = k.ptr(nulls == Some(1), misaligned == Some(1));
    let v_ptr = v.ptr(nulls == Some(2), misaligned == Some(2));
    let mut out_ptr = out.ptr(nulls == Some(3), misaligned == Some(3));
    let mask_ptr = mask.as_ref().map_or(null(), |m| m.as_ptr());
    let lengths_ptr = option_ptr(&mut key_lengths, misaligned == Some(4));
    let sinks_ptr = option_ptr(&mut head_sinks, misaligned == Some(5));
    let mut lse_ptr = option_ptr(&mut lse, misaligned == Some(6));
    // An output placed inside another buffer (when it fits there, in bytes), which must be
    // refused.
    let bytes = |buf: &Buf| match buf {
        Buf::F32(x) => x.len() * 4,
        Buf::Half(x) => x.len() * 2,
    };
    let out_bytes = match (extents[3], &out) {
        (Extent::Len(len), Buf::Half(_)) => len * 2,
        (Extent::Len(len), _) => len * 4,
        _ => usize::MAX,
    };
    let lse_bytes = lse.as_ref().map_or(usize::MAX, |l| l.len() * 4);
    let aligned_for_lse = |buf: &mut Buf| {
        let p = buf.ptr(false, false);
        (p as usize).is_multiple_of(4).then_some(p)
    };
    let aliased = match alias {
        Alias::OutInQ if out_bytes <= bytes(&q) && misaligned.is_none() => {
            // The element types may differ; an out the q buffer does not align for is
            // refused for that instead.
            out_ptr = q.ptr(false, false);
            true
        }
        Alias::LseInK if lse_bytes <= bytes(&k) => match aligned_for_lse(&mut k) {
            Some(p) => {
                lse_ptr = p.cast();
                true
            }
            None => false,
        },
        Alias::LseInOut if lse_bytes <= bytes(&out) => match aligned_for_lse(&mut out) {
            Some(p) => {
                lse_ptr = p.cast();
                true
            }
            None => false,
        },
        _ => false,
    };
    valid &= !aliased;
    let q_before = q.widened(tys[0]);
    let k_before = k.widened(tys[1]);

    // The call options: through the initialiser, with an engine's parallel-for now and then
    // (a NULL one with workers set is fine; a set one needs a worker), in a struct of a size
    // of the harness's choosing; an older size leaves the fields past it unread.
    let engine = Engine {
        order: input.range(0, 3) as u8,
        calls: AtomicUsize::new(0),
    };
    let mut args = smyrf_call_args_default();
    args.key_mask = mask_ptr;
    args.key_lengths = lengths_ptr.cast_const();
    args.head_sinks = sinks_ptr.cast_const();
    args.lse_out = lse_ptr;
    let use_engine = input.rare(64);
    if use_engine {
        args.parallel_for = Some(run_engine);
        args.parallel_context = (&engine as *const Engine).cast_mut().cast();
    }
    if use_engine || input.rare(16) {
        args.parallel_workers = input.pick(&[1, 1, 2, 3, 64, u32::MAX, 0]);
    }
    // Causal now and then: bottom-right, at an offset, or values the library must refuse.
    let use_causal = input.rare(4);
    if use_causal {
        args.causal = input.pick(&[1, 1, 2, 2, 0, 3, u32::MAX]);
        args.query_offset = match args.causal {
            2 => input.pick(&[0, 1, 3, 40, u64::MAX]),
            _ => input.pick(&[0, 0, 0, 5]),
        };
    }
    // The released layouts: the first (through `lse_out`), 0.2.0's (through
    // `workspace_size`) and this one.
    let ends = field_ends!(smyrf_call_args: lse_out: *mut f32, workspace_size: usize);
    let (args_size, args_dirty, args_ok) = struct_size(
        input,
        size_of::<smyrf_call_args>(),
        SMYRF_CALL_ARGS_MIN_SIZE,
        &ends,
    );
    let args_misaligned = input.rare(8);
    let no_options = mask.is_none()
        && key_lengths.is_none()
        && head_sinks.is_none()
        && lse.is_none()
        && !use_engine
        && !use_causal;
    let null_args = no_options && input.flag();
    deny(&mut valid, !null_args && !args_ok, "args struct_size");
    deny(&mut valid, !null_args && args_misaligned, "args misaligned");
    let reads = |end: usize| null_args || args_size >= end;
    let engine_read =
        use_engine && reads(offset_of!(smyrf_call_args, parallel_for) + size_of::<usize>());
    let workers_read = if reads(offset_of!(smyrf_call_args, parallel_workers) + 4) {
        args.parallel_workers
    } else {
        0
    };
    deny(
        &mut valid,
        engine_read && workers_read == 0,
        "parallel_for without workers",
    );
    // The causal fields as the library reads them; the query offset, or None when not
    // causal.
    let (causal, query_offset) =
        if reads(offset_of!(smyrf_call_args, query_offset) + size_of::<u64>()) {
            (args.causal, args.query_offset)
        } else {
            (0, 0)
        };
    deny(&mut valid, causal > 2, "causal value");
    deny(
        &mut valid,
        causal != 2 && query_offset != 0,
        "query_offset without SMYRF_CAUSAL_AT_OFFSET",
    );
    deny(
        &mut valid,
        causal == 1 && qs.seq_len > ks.seq_len,
        "causal with Nq > Nk",
    );
    deny(
        &mut valid,
        causal != 0 && plan.is_some_and(|p| p.no_causal),
        "causal with selected keys or mean-query sinks",
    );
    deny(
        &mut valid,
        causal == 0 && plan.is_some_and(|p| p.needs_causal),
        "key blocks without causal",
    );
    deny(
        &mut valid,
        causal == 0 && plan.is_some_and(|p| p.window > 0) && qs.seq_len != ks.seq_len,
        "window with Nq != Nk",
    );
    let causal_offset = match causal {
        1 => Some(ks.seq_len.wrapping_sub(qs.seq_len)),
        2 => Some(usize::try_from(query_offset).unwrap_or(usize::MAX)),
        _ => None,
    };
    let placed_args = Placed::new(args, args_size, args_dirty, args_misaligned);
    let args_ptr: *const smyrf_call_args = if null_args { null() } else { placed_args.ptr() };

    // Tensor descriptors, each in a struct of a size of the harness's choosing.
    let tensor_size = |input: &mut Input| {
        struct_size(input, size_of::<smyrf_tensor>(), SMYRF_TENSOR_MIN_SIZE, &[])
    };
    let mut placed = Vec::new();
    for (i, (s, ptr)) in [(&qs, q_ptr), (&ks, k_ptr), (&vs, v_ptr)]
        .into_iter()
        .enumerate()
    {
        let (size, dirty, ok) = tensor_size(input);
        let misplaced = input.rare(2);
        deny(&mut valid, !ok, "tensor struct_size");
        deny(&mut valid, misplaced, "tensor misaligned");
        placed.push(Placed::new(tensor(s, ptr, tys[i]), size, dirty, misplaced));
    }
    let (out_size, out_dirty, out_ok) = tensor_size(input);
    let out_misplaced = input.rare(2);
    deny(&mut valid, !out_ok, "out struct_size");
    deny(&mut valid, out_misplaced, "out misaligned");
    placed.push(Placed::new(
        tensor_mut(&os, out_ptr, tys[3]),
        out_size,
        out_dirty,
        out_misplaced,
    ));
    let struct_null = nulls.filter(|&n| n >= 4);
    let tq_ptr: *const smyrf_tensor = match struct_null {
        Some(4) => null(),
        _ => placed[0].ptr(),
    };
    let to_ptr: *const smyrf_tensor_mut = match struct_null {
        Some(n) if n >= 5 => null(),
        _ => placed[3].ptr(),
    };
    let (tk_ptr, tv_ptr) = (placed[1].ptr(), placed[2].ptr());

    let mut logit_scale = plan.map_or(0.0, |p| p.scale);
    let mut dense_scale = 0.0;
    let (function, status) = match plan {
        Some(PlanInfo { plan, .. }) => {
            // SAFETY: every pointer is NULL, dangling for a view the library must refuse
            // from its sizes, or valid for exactly the extent its shape (or struct size)
            // declares.
            let status = unsafe { smyrf_attention(plan, tq_ptr, tk_ptr, tv_ptr, to_ptr, args_ptr) };
            ("smyrf_attention", status)
        }
        None => {
            dense_scale = match input.range(0, 4) {
                0 | 1 => 0.0,
                2 => 0.5,
                3 => input.pick(&[-1.0, f32::NAN, f32::INFINITY, -0.0]),
                _ => input.raw_f32(),
            };
            let scale_ok = dense_scale == 0.0 || (dense_scale.is_finite() && dense_scale > 0.0);
            deny(&mut valid, !scale_ok, "dense scale");
            valid &= std::env::var_os("SMYRF_ISA").is_none();
            logit_scale = match dense_scale {
                0.0 => 1.0 / (d as f32).sqrt(),
                scale => scale,
            };
            // SAFETY: as above.
            let status = unsafe {
                smyrf_dense_attention(tq_ptr, tk_ptr, tv_ptr, dense_scale, to_ptr, args_ptr)
            };
            ("smyrf_dense_attention", status)
        }
    };
    check_status(function, status);
    // Inputs are never written, whatever happened.
    if !aliased {
        assert!(
            same_bits(&q.widened(tys[0]), &q_before),
            "{function} wrote into q"
        );
        assert!(
            same_bits(&k.widened(tys[1]), &k_before),
            "{function} wrote into k"
        );
    }
    if status != smyrf_status::SMYRF_OK {
        assert!(
            !valid,
            "{function}: a valid call was refused: {}",
            last_error()
        );
        assert!(out.untouched(), "{function} failed but wrote out");
        assert!(
            lse.as_deref().is_none_or(untouched),
            "{function} failed but wrote lse"
        );
        assert_eq!(
            engine.calls.load(Ordering::Relaxed),
            0,
            "{function} failed but ran the engine"
        );
        return;
    }

    // Success: the call must have been a valid one.
    assert!(
        !aliased,
        "{function} accepted an output sharing memory with another buffer"
    );
    assert!(
        refuse.is_empty(),
        "{function} accepted a call it must refuse ({refuse:?}; types {tys:?}, misaligned \
         {misaligned:?}, args size {args_size}, lengths {key_lengths:?}, sinks {head_sinks:?})"
    );
    assert!(
        qs.batch == ks.batch && ks.batch == vs.batch && vs.batch == os.batch,
        "{function} accepted mismatched batches"
    );
    assert!(
        qs.dim == ks.dim && vs.dim == os.dim,
        "{function}: mismatched dims"
    );
    assert!(
        plan.is_none() || qs.dim == head_dim,
        "{function}: wrong head dim"
    );
    assert!(plan.is_none_or(|p| p.window == 0 || qs.seq_len == ks.seq_len || causal != 0));
    assert!(ks.heads == vs.heads && qs.heads == os.heads && qs.heads.is_multiple_of(ks.heads));
    assert!(ks.seq_len == vs.seq_len && qs.seq_len == os.seq_len);
    let mut covered = vec![false; out.len()];
    let (nq, nk, dv) = (qs.seq_len, ks.seq_len, os.dim);
    for bi in 0..os.batch {
        for h in 0..os.heads {
            for i in 0..nq {
                let at = os.offset(bi, h, i);
                for slot in &mut covered[at..at + dv] {
                    assert!(!*slot, "{function} accepted overlapping output rows");
                    *slot = true;
                }
            }
        }
    }
    for (i, &inside) in covered.iter().enumerate() {
        assert!(
            inside || out.is_sentinel(i),
            "{function} wrote between rows"
        );
    }

    // The f32 path on the values as the kernels saw them: the same bits (its output rounded
    // for a 16-bit out); a call that already is that path is its own reference.
    let plain = tys.iter().all(|&t| t == Ty::F32) && !engine_read;
    let (out32, lse32) = if plain {
        (out.widened(tys[3]), lse.clone())
    } else {
        let (q32, k32, v32) = (q.widened(tys[0]), k.widened(tys[1]), v.widened(tys[2]));
        let mut out32 = vec![f32::from_bits(SENTINEL); out.len()];
        let mut lse32 = lse
            .as_ref()
            .map(|l| vec![f32::from_bits(SENTINEL); l.len()]);
        let mut plain_args = smyrf_call_args_default();
        plain_args.key_mask = mask_ptr;
        plain_args.key_lengths = lengths_ptr.cast_const();
        plain_args.head_sinks = sinks_ptr.cast_const();
        plain_args.lse_out = lse32.as_mut().map_or(null_mut(), |l| l.as_mut_ptr());
        plain_args.causal = causal;
        plain_args.query_offset = query_offset;
        let ty = Ty::F32;
        let (tq, tk, tv) = (
            tensor(&qs, q32.as_ptr().cast(), ty),
            tensor(&ks, k32.as_ptr().cast(), ty),
            tensor(&vs, v32.as_ptr().cast(), ty),
        );
        let to = tensor_mut(&os, out32.as_mut_ptr().cast(), ty);
        // SAFETY: the same shapes over f32 copies of the same extents; the options' inputs
        // are the call's own, and its outputs fresh buffers.
        let status = unsafe {
            match plan {
                Some(p) => smyrf_attention(p.plan, &tq, &tk, &tv, &to, &plain_args),
                None => smyrf_dense_attention(&tq, &tk, &tv, dense_scale, &to, &plain_args),
            }
        };
        assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
        // bf16 queries and keys take AVX-512 BF16's dot-product kernel where the CPU has
        // it, whose sums are not the f32 path's bits: checked to a tolerance instead.
        let dot = tys[0] == Ty::Bf16 && tys[1] == Ty::Bf16;
        let v_scale = v32.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        for (i, &inside) in covered.iter().enumerate() {
            if dot && inside {
                let (got, want) = (out.get(tys[3], i), out32[i]);
                let ulp = match tys[3] {
                    Ty::F16 => 1.0 / 1024.0,
                    Ty::Bf16 => 1.0 / 128.0,
                    _ => 0.0,
                };
                assert!(
                    special
                        || (got - want).abs() <= 1e-3 * v_scale + ulp * want.abs()
                        || (got.is_nan() && want.is_nan()),
                    "{function} (bf16 dot product) differs from the f32 path at {i}: {got} vs \
                     {want}"
                );
                continue;
            }
            assert!(
                !inside || out.holds(tys[3], i, out32[i]),
                "{function} (types {tys:?}, engine {engine_read}) differs from the f32 path at \
                 {i}: {} vs {}",
                out.get(tys[3], i),
                out32[i]
            );
        }
        if let (Some(got), Some(want)) = (&lse, &lse32) {
            let close = |a: f32, b: f32| {
                a.to_bits() == b.to_bits()
                    || a.is_nan() && b.is_nan()
                    || dot && (special || (a - b).abs() <= 1e-3 * (1.0 + b.abs()))
            };
            assert!(
                got.iter().zip(want).all(|(&a, &b)| close(a, b)),
                "{function}: lse differs from the f32 path"
            );
        }
        (out32, lse32)
    };

    // Inputs in [-4, 4] give |logits| ≤ 16·d·scale: finite unless the scale is huge.
    special |= !(16.0 * qs.dim as f32 * logit_scale.abs()).is_finite();
    let v32 = v.widened(tys[2]);
    let key_valid = |bi: usize, j: usize| {
        mask.as_ref().is_none_or(|m| m[bi * nk + j] != 0)
            && key_lengths.as_ref().is_none_or(|l| (j as i32) < l[bi])
    };
    // The contract's accuracy over many rounds (docs/design.md §1 step 6): each round's
    // merge rounds a few times, so outputs may leave the values' range by
    // (1e-5 + 4·R·2^-24)·max|v| (measured: 1.5e-5 at R = 1024, against 2.5e-4 allowed).
    let rounds = plan.map_or(1, |p| p.rounds.max(1)) as f32;
    let range_slack = 1e-5 + 4.0 * rounds * f32::EPSILON / 2.0;
    for bi in 0..os.batch {
        let keys: Vec<usize> = (0..nk).filter(|&j| key_valid(bi, j)).collect();
        for h in 0..os.heads {
            let hk = h / (qs.heads / ks.heads);
            let v_max = keys
                .iter()
                .flat_map(|&j| {
                    let at = vs.offset(bi, hk, j);
                    v32[at..at + dv].iter().copied()
                })
                .fold(0.0f32, |m, x| m.max(x.abs()));
            let sink = head_sinks.as_ref().map_or(f32::NEG_INFINITY, |s| s[h]);
            // SMYRF merges a head sink as a logit seen in every round (design §1).
            let alone = match function {
                "smyrf_attention" => sink + rounds.ln(),
                _ => sink,
            };
            for i in 0..nq {
                let at = os.offset(bi, h, i);
                let row = &out32[at..at + dv];
                let lse_value = lse32.as_ref().map(|l| l[(bi * qs.heads + h) * nq + i]);
                // A causal query sees the valid keys at or before its position.
                let sees_none = match causal_offset {
                    None => keys.is_empty(),
                    Some(offset) => keys.first().is_none_or(|&j| j > offset.saturating_add(i)),
                };
                if sees_none {
                    assert!(
                        row.iter().all(|&x| x == 0.0),
                        "{function}: empty batch not zeros"
                    );
                    assert!(
                        lse_value.is_none_or(|l| l.to_bits() == alone.to_bits()),
                        "{function}: lse {lse_value:?} of an empty batch, sink {sink}"
                    );
                } else if !special {
                    for &x in row {
                        assert!(
                            x.is_finite() && x.abs() <= v_max * (1.0 + range_slack) + 1e-6,
                            "{function}: output {x} outside the values' range {v_max} \
                             ({rounds} rounds)"
                        );
                    }
                    assert!(
                        lse_value.is_none_or(f32::is_finite),
                        "{function}: lse {lse_value:?}"
                    );
                }
            }
        }
    }
}

/// The lengths an index reports (and checks that the call succeeds).
fn index_lengths(index: *const smyrf_kv_index, batch: usize) -> Vec<u32> {
    let mut lengths = vec![u32::MAX; batch];
    let mut bytes = 0usize;
    // SAFETY: a live index; `lengths` holds `batch` values; `bytes` is writable.
    let status = unsafe { smyrf_kv_index_lengths(index, lengths.as_mut_ptr(), batch, &mut bytes) };
    check_status("smyrf_kv_index_lengths", status);
    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
    assert!(bytes > 0);
    lengths
}

/// One KV-cache index of `plan` through a few appends, resets and decode calls over f32
/// caches of exactly the elements their shapes name.
fn index_session(input: &mut Input, plan: PlanInfo, head_dim: usize) {
    if plan.rounds > 8 {
        return;
    }
    // Huge sizes overflow the index's extent, so they are refused before any allocation.
    let batch = match input.rare(16) {
        false => input.range(1, 3),
        true => input.pick(&[0, HUGE[0], HUGE[2]]),
    };
    let kv_heads = match input.rare(16) {
        false => input.range(1, 3),
        true => input.pick(&[0, HUGE[1], HUGE[2]]),
    };
    let capacity = match input.rare(16) {
        false => input.range(1, 48),
        true => input.pick(&[0, 1 << 32, usize::MAX]),
    };
    let dangling = NonNull::<smyrf_kv_index>::dangling().as_ptr();
    let mut index = dangling;
    // SAFETY: a plan from `make_plan` (or NULL) and a writable pointer.
    let status = unsafe { smyrf_kv_index_create(plan.plan, batch, kv_heads, capacity, &mut index) };
    check_status("smyrf_kv_index_create", status);
    let valid = !plan.plan.is_null()
        && (1..=3).contains(&batch)
        && (1..=3).contains(&kv_heads)
        && (1..=u32::MAX as usize).contains(&capacity);
    if !valid {
        assert_ne!(status, smyrf_status::SMYRF_OK);
        assert_eq!(index, dangling, "create wrote its output on error");
        return;
    }
    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
    let group = input.range(1, 3);
    let (d, dv) = (head_dim, input.range(1, 9));
    // The caches hold a few keys past the capacity, so appends past it reach real memory.
    let nk = capacity + input.range(0, 3);
    let salt = input.u32();
    let k: Vec<f32> = (0..batch * kv_heads * nk * d)
        .map(|i| filler(i, salt))
        .collect();
    let v: Vec<f32> = (0..batch * kv_heads * nk * dv)
        .map(|i| filler(i, salt ^ 1))
        .collect();
    let (v_lo, v_hi) = v
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let k_view = smyrf_tensor_bhnd(
        k.as_ptr().cast(),
        smyrf_dtype::SMYRF_DTYPE_F32 as u32,
        batch,
        kv_heads,
        nk,
        d,
    );
    let v_view = smyrf_tensor_bhnd(
        v.as_ptr().cast(),
        smyrf_dtype::SMYRF_DTYPE_F32 as u32,
        batch,
        kv_heads,
        nk,
        dv,
    );
    for _ in 0..input.range(1, 6) {
        let before = index_lengths(index, batch);
        match input.range(0, 5) {
            0..=2 => {
                let lengths: Vec<u32> = before
                    .iter()
                    .map(|&old| match input.range(0, 7) {
                        0 => old.saturating_sub(1),
                        1 => input.range(0, nk + 2) as u32,
                        _ => (old as usize + input.range(0, capacity)) as u32,
                    })
                    .collect();
                let n = match input.rare(16) {
                    false => batch,
                    true => batch + 1,
                };
                let padded: Vec<u32> = lengths.iter().copied().chain([0]).collect();
                // SAFETY: a live index, a cache view over `k`, `n` ≤ batch + 1 readable values.
                let status = unsafe { smyrf_kv_index_append(index, &k_view, padded.as_ptr(), n) };
                check_status("smyrf_kv_index_append", status);
                let valid = n == batch
                    && lengths.iter().zip(&before).all(|(&new, &old)| {
                        new >= old && new as usize <= capacity && new as usize <= nk
                    });
                let after = index_lengths(index, batch);
                if valid {
                    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
                    assert_eq!(after, lengths);
                } else {
                    assert_ne!(status, smyrf_status::SMYRF_OK);
                    assert_eq!(after, before, "append changed the index on error");
                }
            }
            3 => {
                let b = input.range(0, batch);
                // SAFETY: a live index.
                let status = unsafe { smyrf_kv_index_reset(index, b) };
                check_status("smyrf_kv_index_reset", status);
                let after = index_lengths(index, batch);
                if b < batch {
                    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
                    assert_eq!(after[b], 0);
                } else {
                    assert_ne!(status, smyrf_status::SMYRF_OK);
                    assert_eq!(after, before);
                }
            }
            _ => {
                let nq = input.range(1, 3);
                let hq = kv_heads * group;
                let q: Vec<f32> = (0..batch * hq * nq * d)
                    .map(|i| filler(i, salt ^ 2))
                    .collect();
                let mut out = vec![f32::from_bits(SENTINEL); batch * hq * nq * dv];
                let mut lse = vec![f32::from_bits(SENTINEL); batch * hq * nq];
                let q_view = smyrf_tensor_bhnd(
                    q.as_ptr().cast(),
                    smyrf_dtype::SMYRF_DTYPE_F32 as u32,
                    batch,
                    hq,
                    nq,
                    d,
                );
                let out_view = smyrf_tensor_mut_bhnd(
                    out.as_mut_ptr().cast(),
                    smyrf_dtype::SMYRF_DTYPE_F32 as u32,
                    batch,
                    hq,
                    nq,
                    dv,
                );
                let mut args = smyrf_call_args_default();
                args.lse_out = lse.as_mut_ptr();
                // A workspace of the size the library asks for, or one byte short.
                let mut workspace = Vec::new();
                let mut short_workspace = false;
                if input.flag() && !plan.plan.is_null() {
                    let mut bytes = 0usize;
                    // SAFETY: a live plan and index, views over live buffers, a writable size.
                    let status = unsafe {
                        smyrf_decode_workspace_size(
                            plan.plan,
                            index,
                            &q_view,
                            &k_view,
                            &v_view,
                            &out_view,
                            null(),
                            &mut bytes,
                        )
                    };
                    check_status("smyrf_decode_workspace_size", status);
                    if status == smyrf_status::SMYRF_OK {
                        short_workspace = bytes > 0 && input.rare(4);
                        workspace = vec![0u8; bytes - usize::from(short_workspace)];
                        args.workspace = workspace.as_mut_ptr().cast();
                        args.workspace_size = workspace.len();
                    } else {
                        assert!(plan.no_causal, "size refused: {}", last_error());
                    }
                }
                let causal_field = input.rare(8);
                if causal_field {
                    args.causal = 1;
                }
                // SAFETY: a live plan and index, views over buffers of exactly their shapes,
                // `lse` of B·Hq·Nq values.
                let status = unsafe {
                    smyrf_decode(
                        plan.plan, index, &q_view, &k_view, &v_view, &out_view, &args,
                    )
                };
                check_status("smyrf_decode", status);
                // The workspace lives until the call is done.
                drop(workspace);
                let valid = !plan.no_causal
                    && !causal_field
                    && !short_workspace
                    && before.iter().all(|&len| len as usize >= nq);
                if valid {
                    assert_eq!(status, smyrf_status::SMYRF_OK, "{}", last_error());
                    let slack = 1e-4 * (1.0 + v_lo.abs().max(v_hi.abs()));
                    assert!(
                        out.iter()
                            .all(|&x| x.is_finite() && x >= v_lo - slack && x <= v_hi + slack),
                        "decode output outside the values' range"
                    );
                    assert!(lse.iter().all(|x| x.is_finite()));
                } else {
                    assert_ne!(status, smyrf_status::SMYRF_OK);
                    assert!(untouched(&out) && untouched(&lse), "decode wrote on error");
                }
            }
        }
    }
    // SAFETY: the index created above, destroyed once.
    unsafe { smyrf_kv_index_destroy(index) };
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    // The small entry points, on arbitrary values.
    let code = match input.rare(64) {
        false => input.byte() as u32 % 8,
        true => input.u32(),
    };
    // SAFETY: static strings, never NULL.
    assert!(!unsafe { CStr::from_ptr(smyrf_status_message(code)) }.is_empty());
    // SAFETY: as above.
    assert!(!unsafe { CStr::from_ptr(smyrf_version()) }.is_empty());
    // SAFETY: NULL asks for the detected tier.
    assert!(!unsafe { CStr::from_ptr(smyrf_isa_name(null())) }.is_empty());

    let head_dim = match input.rare(16) {
        false => input.range(1, 9),
        true => input.pick(&[0, 1 << 16, (1 << 16) + 1, usize::MAX]),
    };
    let plan = make_plan(&mut input, head_dim);
    let calls = input.range(1, 3);
    for _ in 0..calls {
        match input.flag() {
            // A call on a refused plan is a call with a NULL plan.
            true => attention_call(&mut input, Some(plan), head_dim),
            false => attention_call(&mut input, None, head_dim),
        }
    }
    index_session(&mut input, plan, head_dim);
    // SAFETY: a plan from `make_plan` (or NULL), destroyed once.
    unsafe { smyrf_plan_destroy(plan.plan.cast_mut()) };
});
