//! Every C ABI entry point driven by arbitrary configs, shapes, strides, masks, pointers and
//! data (design §2). Each buffer is allocated with exactly the elements its declared shape
//! reaches, so under AddressSanitizer (cargo-fuzz's default) any read or write outside a
//! view is reported; sizes stay small so that a case runs in well under a millisecond.
//!
//! Checked on every case:
//! - no call returns `SMYRF_ERROR_PANIC` or a status outside the enum, and a failed call
//!   leaves a message and writes nothing (outputs keep their sentinel bits);
//! - a call the harness built to be valid succeeds, and a call that succeeds was valid
//!   (consistent shapes, disjoint output rows, no output sharing memory with anything);
//! - after success, elements of `out` between the view's rows are untouched, outputs are
//!   finite and within the range of the values when the inputs are finite, and a batch
//!   element without valid keys gets zeros and an lse of −∞.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smyrf::internals::ffi::*;
use smyrf::Isa;
use smyrf_fuzz::{filler, Input};
use std::ffi::CStr;
use std::ptr::{null, null_mut, NonNull};

/// Bits written into every output buffer before a call, to see what the call wrote.
const SENTINEL: u32 = 0x7FC0_5EED; // a quiet NaN with a payload no computation produces

/// Sizes that make any extent overflow `isize` (at least 2^61 elements): the library must
/// refuse them from the arithmetic alone, so no buffer is needed.
const HUGE: [usize; 3] = [1 << 61, 1 << 62, usize::MAX];

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
/// subnormal values when `hostile`. Returns whether any non-finite or huge value went in.
fn fill(input: &mut Input, buffer: &mut [f32], salt: u32, hostile: bool) -> bool {
    let mut special = false;
    for (i, x) in buffer.iter_mut().enumerate() {
        *x = if input.is_empty() {
            filler(i, salt)
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
                true => input.pick(&choices),
                false => input.raw_f32(),
            }
        } else {
            input.small_f32()
        };
    }
    special
}

/// A buffer for a view: exactly `len` elements when the extent is valid, else none (the
/// library must refuse the view before touching memory, so a dangling pointer is passed).
fn buffer_for(extent: Extent) -> Vec<f32> {
    match extent {
        Extent::Len(len) => vec![f32::from_bits(SENTINEL); len],
        _ => Vec::new(),
    }
}

/// The pointer to pass for a buffer: its data, a dangling pointer for an empty one, or NULL.
fn data_ptr(buffer: &mut [f32], null_it: bool) -> *mut f32 {
    if null_it {
        null_mut()
    } else if buffer.is_empty() {
        NonNull::dangling().as_ptr()
    } else {
        buffer.as_mut_ptr()
    }
}

fn tensor(spec: &Spec, data: *const f32) -> smyrf_tensor {
    smyrf_tensor {
        data,
        batch: spec.batch,
        heads: spec.heads,
        seq_len: spec.seq_len,
        dim: spec.dim,
        batch_stride: spec.batch_stride,
        head_stride: spec.head_stride,
        seq_stride: spec.seq_stride,
    }
}

fn tensor_mut(spec: &Spec, data: *mut f32) -> smyrf_tensor_mut {
    smyrf_tensor_mut {
        data,
        batch: spec.batch,
        heads: spec.heads,
        seq_len: spec.seq_len,
        dim: spec.dim,
        batch_stride: spec.batch_stride,
        head_stride: spec.head_stride,
        seq_stride: spec.seq_stride,
    }
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

/// One plan: created one of several ways, checked, returned (or NULL when refused).
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
    /// Keys its design §8 blocks may add per query (sinks, window, samples), for the work
    /// estimate.
    extra_keys: usize,
}

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
    }
    valid &= config.sink_selection <= 1;
    // Keep allocations bounded: a large head dim only with few rounds.
    if head_dim > 64 && config.n_hashes > 4 {
        config.n_hashes = 4;
    }
    let neon = config.isa == smyrf_isa::SMYRF_ISA_NEON as u32;
    valid &= config.n_hashes >= 1 && config.n_hashes <= 1024 && config.q_cluster_size >= 1;
    valid &= config.scale == 0.0 || (config.scale.is_finite() && config.scale > 0.0);
    valid &= config.num_threads <= 1024 && config.isa <= 3 && !neon;
    valid &= match config.isa {
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
    let config_ptr: *const smyrf_config = if null_config { null() } else { &config };
    let out_ptr: *mut *mut smyrf_plan = if null_out { null_mut() } else { &mut plan };
    let expected_len = (head_dim.saturating_add(2)).saturating_mul(config.n_hashes as usize);
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
        // SAFETY: every pointer is NULL or valid for what it names (`len` floats).
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
        };
    }
    assert!(
        valid,
        "an invalid plan was accepted: {config:?}, head_dim {head_dim}"
    );
    assert!(!plan.is_null() && plan != sentinel_plan);
    // SAFETY: a live plan.
    let isa = unsafe { CStr::from_ptr(smyrf_isa_name(plan)) };
    assert!(!isa.is_empty());

    // The matrix reads back exactly (when supplied), and only with the right length.
    let len = match input.range(0, 3) {
        0 => expected_len + 1,
        1 => expected_len - 1,
        _ => expected_len,
    };
    let mut read_back = vec![f32::from_bits(SENTINEL); len];
    let null_read = input.rare(8);
    let ptr = data_ptr(&mut read_back, null_read);
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
    let scale = match config.scale {
        0.0 => 1.0 / (head_dim as f32).sqrt(),
        scale => scale,
    };
    PlanInfo {
        plan,
        scale,
        window: config.window,
        rounds: config.n_hashes,
        extra_keys: [config.n_sinks, config.window, config.n_samples]
            .into_iter()
            .fold(0usize, |sum, x| sum.saturating_add(x as usize)),
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
    let mut valid = clean && out_clean;
    valid &= plan.is_none_or(|p| !p.plan.is_null() && d == head_dim);
    valid &= plan.is_none_or(|p| p.window == 0 || nq == nk);

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
    let hostile = input.rare(48);
    let mut q = buffer_for(extents[0]);
    let mut k = buffer_for(extents[1]);
    let mut v = buffer_for(extents[2]);
    let mut out = buffer_for(extents[3]);
    let mut special = fill(input, &mut q, 1, hostile);
    special |= fill(input, &mut k, 2, hostile);
    special |= fill(input, &mut v, 3, hostile);

    // Mask `[batch][k seq_len]` and lse `[batch][q heads][q seq_len]`, sized from the views
    // they belong to (both products are small when those views are valid).
    let mask_len = match extents[1] {
        Extent::Len(_) => qs.batch.min(ks.batch) * ks.seq_len,
        _ => 0,
    };
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
    let lse_len = match extents[0] {
        Extent::Len(_) => qs.batch * qs.heads * qs.seq_len,
        _ => 0,
    };
    let mut lse: Option<Vec<f32>> = input
        .flag()
        .then(|| vec![f32::from_bits(SENTINEL); lse_len]);

    let alias = match input.rare(16) {
        false => Alias::None,
        true => input.pick(&[Alias::OutInQ, Alias::LseInK, Alias::LseInOut]),
    };
    let nulls = input.rare(8).then(|| input.range(0, 6));
    valid &= nulls.is_none();

    let q_ptr = data_ptr(&mut q, nulls == Some(0));
    let k_ptr = data_ptr(&mut k, nulls == Some(1));
    let v_ptr = data_ptr(&mut v, nulls == Some(2));
    let mut out_ptr = data_ptr(&mut out, nulls == Some(3));
    let mask_ptr = mask.as_ref().map_or(null(), |m| m.as_ptr());
    let mut lse_ptr = lse.as_mut().map_or(null_mut(), |l| data_ptr(l, false));
    // An output placed inside another buffer (when it fits there), which must be refused.
    let out_len = match extents[3] {
        Extent::Len(len) => len,
        _ => usize::MAX,
    };
    let lse_len = lse.as_ref().map_or(usize::MAX, Vec::len);
    let aliased = match alias {
        Alias::OutInQ if out_len <= q.len() => {
            out_ptr = q.as_mut_ptr();
            true
        }
        Alias::LseInK if lse_len <= k.len() => {
            lse_ptr = k.as_mut_ptr();
            true
        }
        Alias::LseInOut if lse_len <= out.len() => {
            lse_ptr = out.as_mut_ptr();
            true
        }
        _ => false,
    };
    valid &= !aliased;
    let q_before = q.clone();
    let k_before = k.clone();

    let (tq, tk, tv) = (tensor(&qs, q_ptr), tensor(&ks, k_ptr), tensor(&vs, v_ptr));
    let mut to = tensor_mut(&os, out_ptr);
    let struct_null = nulls.filter(|&n| n >= 4);
    let (tq_ptr, to_ptr): (*const smyrf_tensor, *mut smyrf_tensor_mut) = match struct_null {
        Some(4) => (null(), &mut to),
        Some(_) => (&tq, null_mut()),
        None => (&tq, &mut to),
    };
    let mut logit_scale = plan.map_or(0.0, |p| p.scale);
    let (function, status) = match plan {
        Some(PlanInfo { plan, .. }) => {
            // SAFETY: every pointer is NULL, dangling for a view the library must refuse
            // from its sizes, or valid for exactly the extent its shape declares.
            let status =
                unsafe { smyrf_attention(plan, tq_ptr, &tk, &tv, mask_ptr, to_ptr, lse_ptr) };
            ("smyrf_attention", status)
        }
        None => {
            let scale = match input.range(0, 4) {
                0 | 1 => 0.0,
                2 => 0.5,
                3 => input.pick(&[-1.0, f32::NAN, f32::INFINITY, -0.0]),
                _ => input.raw_f32(),
            };
            valid &= scale == 0.0 || (scale.is_finite() && scale > 0.0);
            valid &= std::env::var_os("SMYRF_ISA").is_none();
            logit_scale = match scale {
                0.0 => 1.0 / (d as f32).sqrt(),
                scale => scale,
            };
            // SAFETY: as above.
            let status = unsafe {
                smyrf_dense_attention(tq_ptr, &tk, &tv, mask_ptr, scale, to_ptr, lse_ptr)
            };
            ("smyrf_dense_attention", status)
        }
    };
    check_status(function, status);
    // Inputs are never written, whatever happened.
    if !aliased {
        assert!(same_bits(&q, &q_before), "{function} wrote into q");
        assert!(same_bits(&k, &k_before), "{function} wrote into k");
    }
    if status != smyrf_status::SMYRF_OK {
        assert!(
            !valid,
            "{function}: a valid call was refused: {}",
            last_error()
        );
        assert!(same_bits(&q, &q_before) && same_bits(&k, &k_before));
        assert!(untouched(&out), "{function} failed but wrote out");
        assert!(
            lse.as_deref().is_none_or(untouched),
            "{function} failed but wrote lse"
        );
        return;
    }

    // Success: the call must have been a valid one.
    assert!(
        !aliased,
        "{function} accepted an output sharing memory with another buffer"
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
    assert!(plan.is_none_or(|p| p.window == 0 || qs.seq_len == ks.seq_len));
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
    for (x, &inside) in out.iter().zip(&covered) {
        assert!(
            inside || x.to_bits() == SENTINEL,
            "{function} wrote between rows"
        );
    }
    // Inputs in [-4, 4] give |logits| ≤ 16·d·scale: finite unless the scale is huge.
    special |= !(16.0 * qs.dim as f32 * logit_scale.abs()).is_finite();
    let mask_of = |bi: usize, j: usize| mask.as_ref().is_none_or(|m| m[bi * nk + j] != 0);
    // The contract's accuracy over many rounds (docs/design.md §1 step 6): each round's
    // merge rounds a few times, so outputs may leave the values' range by
    // (1e-5 + 4·R·2^-24)·max|v| (measured: 1.5e-5 at R = 1024, against 2.5e-4 allowed).
    let rounds = plan.map_or(1, |p| p.rounds.max(1)) as f32;
    let range_slack = 1e-5 + 4.0 * rounds * f32::EPSILON / 2.0;
    for bi in 0..os.batch {
        let keys: Vec<usize> = (0..nk).filter(|&j| mask_of(bi, j)).collect();
        for h in 0..os.heads {
            let hk = h / (qs.heads / ks.heads);
            let v_max = keys
                .iter()
                .flat_map(|&j| {
                    let at = vs.offset(bi, hk, j);
                    v[at..at + dv].iter().copied()
                })
                .fold(0.0f32, |m, x| m.max(x.abs()));
            for i in 0..nq {
                let at = os.offset(bi, h, i);
                let row = &out[at..at + dv];
                let lse_value = lse.as_ref().map(|l| l[(bi * qs.heads + h) * nq + i]);
                if keys.is_empty() {
                    assert!(
                        row.iter().all(|&x| x == 0.0),
                        "{function}: empty batch not zeros"
                    );
                    assert!(lse_value.is_none_or(|l| l == f32::NEG_INFINITY));
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
    // SAFETY: a plan from `make_plan` (or NULL), destroyed once.
    unsafe { smyrf_plan_destroy(plan.plan.cast_mut()) };
});
