//! Cluster assignment's sort (design §4): a stable ascending argsort of f32 hashes.
//!
//! Ordering of special values is fixed: −∞ < finite < +∞, −0.0 before +0.0, every NaN last
//! (stable among themselves, whatever its sign or payload).

use crate::isa::Isa;

/// Maps an f32 to a u32 whose unsigned order is the documented f32 order: flip all bits of
/// negatives, the sign bit of the rest; every NaN maps to `u32::MAX` so NaNs sort last.
#[inline(always)]
pub fn ordered_key(x: f32) -> u32 {
    if x.is_nan() {
        return u32::MAX;
    }
    let bits = x.to_bits();
    let mask = ((bits as i32 >> 31) as u32) | 0x8000_0000;
    bits ^ mask
}

const MAX_RADIX: usize = 1 << 11;
const MAX_PASSES: usize = 4;

/// Reusable buffers for [`argsort_into`]; grows on demand and is kept by the caller.
#[derive(Default)]
pub struct SortScratch {
    ping: Vec<u64>,
    pong: Vec<u64>,
    counts: Vec<u32>,
}

impl SortScratch {
    fn reserve(&mut self, n: usize) {
        if self.ping.len() < n {
            self.ping.resize(n, 0);
            self.pong.resize(n, 0);
        }
        if self.counts.len() < MAX_PASSES * MAX_RADIX {
            self.counts.resize(MAX_PASSES * MAX_RADIX, 0);
        }
    }
}

#[inline(always)]
const fn passes(bits: u32) -> usize {
    32usize.div_ceil(bits as usize)
}

/// One read of the keys: packs `(ordered_key << 32) | index` into `packed` and counts every
/// digit of every key into `counts` (pass `p`'s counts at `counts[p]`).
#[inline(always)]
fn histogram_and_pack<const BITS: u32, const RADIX: usize>(
    keys: &[f32],
    packed: &mut [u64],
    counts: &mut [[u32; RADIX]],
) {
    let passes = passes(BITS);
    let mask = RADIX as u32 - 1;
    for (i, (&x, slot)) in keys.iter().zip(packed.iter_mut()).enumerate() {
        let k = ordered_key(x);
        *slot = ((k as u64) << 32) | i as u64;
        for (p, c) in counts.iter_mut().enumerate().take(passes) {
            c[((k >> (p as u32 * BITS)) & mask) as usize] += 1;
        }
    }
}

#[inline(always)]
fn histogram_only<const BITS: u32, const RADIX: usize>(keys: &[f32], counts: &mut [[u32; RADIX]]) {
    let passes = passes(BITS);
    let mask = RADIX as u32 - 1;
    for &x in keys {
        let k = ordered_key(x);
        for (p, c) in counts.iter_mut().enumerate().take(passes) {
            c[((k >> (p as u32 * BITS)) & mask) as usize] += 1;
        }
    }
}

#[inline(always)]
fn histogram_block_portable(keys: &[f32], counts: &mut [[u32; 2048]]) {
    let (c0, rest) = counts.split_at_mut(1);
    let (c1, c2) = rest.split_at_mut(1);
    let (c0, c1, c2) = (&mut c0[0], &mut c1[0], &mut c2[0]);
    const BLOCK: usize = 256;
    let mut digits = [[0u16; BLOCK]; 3];
    let (blocks, tail) = keys.as_chunks::<BLOCK>();
    for block in blocks {
        for j in 0..BLOCK {
            let x = block[j];
            let bits = x.to_bits();
            let k = bits ^ (((bits as i32 >> 31) as u32) | 0x8000_0000);
            let k = if x.is_nan() { u32::MAX } else { k };
            digits[0][j] = (k & 0x7ff) as u16;
            digits[1][j] = ((k >> 11) & 0x7ff) as u16;
            digits[2][j] = (k >> 22) as u16;
        }
        for j in 0..BLOCK {
            c0[(digits[0][j] & 0x7ff) as usize] += 1;
            c1[(digits[1][j] & 0x7ff) as usize] += 1;
            c2[(digits[2][j] & 0x7ff) as usize] += 1;
        }
    }
    for &x in tail {
        let k = ordered_key(x);
        c0[(k & 0x7ff) as usize] += 1;
        c1[((k >> 11) & 0x7ff) as usize] += 1;
        c2[(k >> 22) as usize] += 1;
    }
}

#[target_feature(enable = "avx512f,avx512bw")]
fn histogram_only_avx512(keys: &[f32], counts: &mut [[u32; 2048]]) {
    use std::arch::x86_64::*;
    let (c0, rest) = counts.split_at_mut(1);
    let (c1, c2) = rest.split_at_mut(1);
    let (c0, c1, c2) = (&mut c0[0], &mut c1[0], &mut c2[0]);
    const BLOCK: usize = 256;
    let mut digits = [[0u16; BLOCK]; 3];
    let sign = _mm512_set1_epi32(i32::MIN);
    let maxv = _mm512_set1_epi32(-1);
    let m = _mm512_set1_epi32(0x7ff);
    let (blocks, tail) = keys.as_chunks::<BLOCK>();
    for block in blocks {
        let (chunks, _) = block.as_chunks::<16>();
        for (j, chunk) in chunks.iter().enumerate() {
            // SAFETY: lab
            let x = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
            let bits = _mm512_castps_si512(x);
            let neg = _mm512_srai_epi32::<31>(bits);
            let k = _mm512_xor_si512(bits, _mm512_or_si512(neg, sign));
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
            let k = _mm512_mask_mov_epi32(k, nan, maxv);
            let d0 = _mm512_cvtepi32_epi16(_mm512_and_si512(k, m));
            let d1 = _mm512_cvtepi32_epi16(_mm512_and_si512(_mm512_srli_epi32::<11>(k), m));
            let d2 = _mm512_cvtepi32_epi16(_mm512_srli_epi32::<22>(k));
            // SAFETY: lab
            unsafe {
                _mm256_storeu_si256(digits[0].as_mut_ptr().add(16 * j).cast(), d0);
                _mm256_storeu_si256(digits[1].as_mut_ptr().add(16 * j).cast(), d1);
                _mm256_storeu_si256(digits[2].as_mut_ptr().add(16 * j).cast(), d2);
            }
        }
        for j in 0..BLOCK {
            c0[(digits[0][j] & 0x7ff) as usize] += 1;
            c1[(digits[1][j] & 0x7ff) as usize] += 1;
            c2[(digits[2][j] & 0x7ff) as usize] += 1;
        }
    }
    for &x in tail {
        let k = ordered_key(x);
        c0[(k & 0x7ff) as usize] += 1;
        c1[((k >> 11) & 0x7ff) as usize] += 1;
        c2[(k >> 22) as usize] += 1;
    }
}

#[inline(always)]
fn scatter_first<const RADIX: usize>(
    keys: &[f32],
    dst: &mut [u64],
    offsets: &mut [u32; RADIX],
    shift: u32,
) {
    let mask = RADIX as u32 - 1;
    for (i, &x) in keys.iter().enumerate() {
        let k = ordered_key(x);
        let d = ((k >> shift) & mask) as usize;
        let o = offsets[d];
        // SAFETY: lab
        unsafe { *dst.get_unchecked_mut(o as usize) = ((k as u64) << 32) | i as u64 };
        offsets[d] = o + 1;
    }
}

#[inline(always)]
fn scatter<const RADIX: usize>(
    src: &[u64],
    dst: &mut [u64],
    offsets: &mut [u32; RADIX],
    shift: u32,
) {
    let mask = RADIX as u64 - 1;
    let pf = LAB_PF.load(std::sync::atomic::Ordering::Relaxed);
    if pf > 0 && src.len() > pf {
        let n = src.len();
        for i in 0..n - pf {
            let e = src[i];
            let ahead = src[i + pf];
            let da = ((ahead >> (32 + shift)) & mask) as usize;
            // SAFETY: lab
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    dst.as_ptr().add(offsets[da] as usize).cast(),
                )
            };
            let d = ((e >> (32 + shift)) & mask) as usize;
            let o = offsets[d];
            // SAFETY: lab
            unsafe { *dst.get_unchecked_mut(o as usize) = e };
            offsets[d] = o + 1;
        }
        for &e in &src[n - pf..] {
            let d = ((e >> (32 + shift)) & mask) as usize;
            let o = offsets[d];
            // SAFETY: lab
            unsafe { *dst.get_unchecked_mut(o as usize) = e };
            offsets[d] = o + 1;
        }
        return;
    }
    for &e in src {
        let d = ((e >> (32 + shift)) & mask) as usize;
        let o = offsets[d];
        // SAFETY: lab
        unsafe { *dst.get_unchecked_mut(o as usize) = e };
        offsets[d] = o + 1;
    }
}

#[inline(always)]
fn scatter_last<const RADIX: usize>(
    src: &[u64],
    perm: &mut [u32],
    offsets: &mut [u32; RADIX],
    shift: u32,
) {
    let mask = RADIX as u64 - 1;
    for &e in src {
        let d = ((e >> (32 + shift)) & mask) as usize;
        let o = offsets[d];
        // SAFETY: lab
        unsafe { *perm.get_unchecked_mut(o as usize) = e as u32 };
        offsets[d] = o + 1;
    }
}

#[inline(always)]
fn sort_segment_fused<const BITS: u32, const RADIX: usize>(
    keys: &[f32],
    perm: &mut [u32],
    scratch: &mut SortScratch,
) {
    let n = keys.len();
    let passes = passes(BITS);
    scratch.reserve(n);
    let (counts, _) = scratch.counts.as_chunks_mut::<RADIX>();
    let counts = &mut counts[..passes];
    for c in counts.iter_mut() {
        c.fill(0);
    }
    let ping = &mut scratch.ping[..n];
    let pong = &mut scratch.pong[..n];
    if BITS == 11 && LAB_HIST.load(std::sync::atomic::Ordering::Relaxed) == 2 {
        histogram_block_portable(keys, unsafe { std::mem::transmute::<&mut [[u32; RADIX]], &mut [[u32; 2048]]>(counts) });
    } else if BITS == 11 && LAB_HIST.load(std::sync::atomic::Ordering::Relaxed) == 1 {
        // SAFETY: lab
        unsafe {
            histogram_only_avx512(
                keys,
                std::mem::transmute::<&mut [[u32; RADIX]], &mut [[u32; 2048]]>(counts),
            )
        };
    } else {
        histogram_only::<BITS, RADIX>(keys, counts);
    }
    let stop = LAB_STOP.load(std::sync::atomic::Ordering::Relaxed);
    if stop == 1 {
        return;
    }
    for c in counts.iter_mut() {
        let mut sum = 0u32;
        for slot in c.iter_mut() {
            let count = *slot;
            *slot = sum;
            sum += count;
        }
    }
    scatter_first::<RADIX>(keys, ping, &mut counts[0], 0);
    if stop == 2 {
        return;
    }
    scatter::<RADIX>(ping, pong, &mut counts[1], BITS);
    if stop == 3 {
        return;
    }
    scatter_last::<RADIX>(pong, perm, &mut counts[2], 2 * BITS);
}

#[inline(always)]
fn sort_segment<const BITS: u32, const RADIX: usize>(
    keys: &[f32],
    perm: &mut [u32],
    scratch: &mut SortScratch,
) {
    let n = keys.len();
    let passes = passes(BITS);
    scratch.reserve(n);
    let (counts, _) = scratch.counts.as_chunks_mut::<RADIX>();
    let counts = &mut counts[..passes];
    for c in counts.iter_mut() {
        c.fill(0);
    }
    let ping = &mut scratch.ping[..n];
    let pong = &mut scratch.pong[..n];
    histogram_and_pack::<BITS, RADIX>(keys, ping, counts);
    let stop = LAB_STOP.load(std::sync::atomic::Ordering::Relaxed);
    if stop == 1 {
        return;
    }

    // Passes where every key has the same digit leave the order unchanged: skip them.
    let first = (ping[0] >> 32) as u32;
    let mut active = [0usize; MAX_PASSES];
    let mut n_active = 0;
    for (p, c) in counts.iter_mut().enumerate() {
        let d = ((first >> (p as u32 * BITS)) as usize) & (RADIX - 1);
        if c[d] as usize != n {
            active[n_active] = p;
            n_active += 1;
            let mut sum = 0u32;
            for slot in c.iter_mut() {
                let count = *slot;
                *slot = sum;
                sum += count;
            }
        }
    }
    if n_active == 0 {
        for (i, slot) in perm.iter_mut().enumerate() {
            *slot = i as u32;
        }
        return;
    }
    let (mut src, mut dst) = (ping, pong);
    for &p in &active[..n_active - 1] {
        scatter::<RADIX>(src, dst, &mut counts[p], p as u32 * BITS);
        std::mem::swap(&mut src, &mut dst);
        if stop == 2 + p {
            return;
        }
    }
    let p = active[n_active - 1];
    scatter_last::<RADIX>(src, perm, &mut counts[p], p as u32 * BITS);
}

fn small_sort(keys: &[f32], perm: &mut [u32], scratch: &mut SortScratch) {
    let n = keys.len();
    scratch.reserve(n);
    let packed = &mut scratch.ping[..n];
    for (i, (&x, slot)) in keys.iter().zip(packed.iter_mut()).enumerate() {
        *slot = ((ordered_key(x) as u64) << 32) | i as u64;
    }
    packed.sort_unstable();
    for (slot, &e) in perm.iter_mut().zip(packed.iter()) {
        *slot = e as u32;
    }
}

#[doc(hidden)]
pub static LAB_HIST: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
#[doc(hidden)]
pub static LAB_PF: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
#[doc(hidden)]
pub static LAB_STOP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
#[doc(hidden)]
pub fn lab_sort(bits: u32, keys: &[f32], perm: &mut [u32], scratch: &mut SortScratch) {
    match bits {
        0 => small_sort(keys, perm, scratch),
        8 => sort_segment::<8, 256>(keys, perm, scratch),
        12 => sort_segment_fused::<11, 2048>(keys, perm, scratch),
        11 => sort_segment::<11, 2048>(keys, perm, scratch),
        _ => unreachable!(),
    }
}

/// Writes into `perm` (same length as `keys`) the stable ascending permutation of `keys`.
pub fn argsort_into(_isa: Isa, keys: &[f32], perm: &mut [u32], scratch: &mut SortScratch) {
    assert_eq!(keys.len(), perm.len(), "argsort_into: length mismatch");
    if keys.len() < 64 {
        small_sort(keys, perm, scratch);
    } else {
        sort_segment::<11, 2048>(keys, perm, scratch);
    }
}

/// Sorts several independent segments in one call, sharing `scratch`: `keys` is the
/// concatenation of segments of lengths `segment_lens`, and `perm` (same length as `keys`)
/// receives, segment by segment, each segment's stable ascending permutation in
/// segment-local indices.
pub fn argsort_many(
    isa: Isa,
    keys: &[f32],
    segment_lens: &[usize],
    perm: &mut [u32],
    scratch: &mut SortScratch,
) {
    assert_eq!(keys.len(), perm.len(), "argsort_many: length mismatch");
    let mut start = 0;
    for &len in segment_lens {
        let end = start + len;
        argsort_into(isa, &keys[start..end], &mut perm[start..end], scratch);
        start = end;
    }
    assert_eq!(
        start,
        keys.len(),
        "argsort_many: segments do not cover keys"
    );
}

/// The stable ascending permutation of `keys` (u32 indices), in the documented order.
///
/// # Panics
/// If `keys` has more than `u32::MAX` elements.
pub fn radix_argsort_f32(keys: &[f32]) -> Vec<u32> {
    assert!(
        keys.len() <= u32::MAX as usize,
        "radix_argsort_f32: too many keys"
    );
    let mut perm = vec![0u32; keys.len()];
    argsort_into(
        crate::isa::detected_isa(),
        keys,
        &mut perm,
        &mut SortScratch::default(),
    );
    perm
}
