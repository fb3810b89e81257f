//! The AVX-512 (16 lanes) tier of the sort (design §4): the key map and the exclusive prefix
//! sum of a histogram. The histogram
//! increments and the scatter passes are shared scalar code in `mod.rs`.
//!
//! Their rate against the portable tier is in BENCHMARKS.md (radix argsort, tiers).

use super::ordered_key;
use std::arch::x86_64::*;

/// `ordered[j] = ordered_key(keys[j])`, 16 keys per step; returns the least and the greatest
/// ordered key (`(u32::MAX, 0)` for an empty block).
#[target_feature(enable = "avx512f")]
fn map_block(keys: &[f32], ordered: &mut [u32]) -> (u32, u32) {
    assert_eq!(keys.len(), ordered.len(), "map_block: length mismatch");
    let sign_bit = _mm512_set1_epi32(i32::MIN);
    let all_ones = _mm512_set1_epi32(-1);
    let mut min_keys = all_ones;
    let mut max_keys = _mm512_setzero_si512();
    let (key_chunks, key_tail) = keys.as_chunks::<16>();
    let (out_chunks, out_tail) = ordered.as_chunks_mut::<16>();
    for (chunk, out) in key_chunks.iter().zip(out_chunks.iter_mut()) {
        // SAFETY: `chunk` is 16 readable f32; unaligned loads are allowed.
        let x = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
        // ordered_key: flip all bits of negatives, the sign bit of the rest; NaN → u32::MAX.
        let bits = _mm512_castps_si512(x);
        let flip = _mm512_or_si512(_mm512_srai_epi32::<31>(bits), sign_bit);
        let key = _mm512_xor_si512(bits, flip);
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        let key = _mm512_mask_mov_epi32(key, nan, all_ones);
        min_keys = _mm512_min_epu32(min_keys, key);
        max_keys = _mm512_max_epu32(max_keys, key);
        // SAFETY: `out` is 16 writable u32; unaligned stores are allowed.
        unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), key) };
    }
    let (mut min_key, mut max_key) = (
        _mm512_reduce_min_epu32(min_keys),
        _mm512_reduce_max_epu32(max_keys),
    );
    for (&x, slot) in key_tail.iter().zip(out_tail.iter_mut()) {
        let key = ordered_key(x);
        *slot = key;
        min_key = min_key.min(key);
        max_key = max_key.max(key);
    }
    (min_key, max_key)
}

/// [`super::exclusive_prefix_sum_portable`] 16 counts per step: a log-step scan inside the
/// vector (lanes shifted by 1, 2, 4, 8), plus the running total carried in a broadcast; a
/// group of 16 empty buckets is skipped (it stays zero and adds nothing to the total).
#[target_feature(enable = "avx512f")]
fn exclusive_prefix_sum(histogram: &mut [u32]) {
    let (chunks, tail) = histogram.as_chunks_mut::<16>();
    assert!(
        tail.is_empty(),
        "exclusive_prefix_sum: length not a multiple of 16"
    );
    let zero = _mm512_setzero_si512();
    let last_lane = _mm512_set1_epi32(15);
    let mut carry = zero;
    for chunk in chunks {
        // SAFETY: `chunk` is 16 readable u32; unaligned loads are allowed.
        let counts = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) };
        let non_empty = _mm512_test_epi32_mask(counts, counts);
        if non_empty == 0 {
            continue;
        }
        // `_mm512_alignr_epi32::<16 - s>(x, zero)` is `x` moved up by `s` lanes, zeros below.
        let mut scan = _mm512_add_epi32(counts, _mm512_alignr_epi32::<15>(counts, zero));
        scan = _mm512_add_epi32(scan, _mm512_alignr_epi32::<14>(scan, zero));
        scan = _mm512_add_epi32(scan, _mm512_alignr_epi32::<12>(scan, zero));
        scan = _mm512_add_epi32(scan, _mm512_alignr_epi32::<8>(scan, zero));
        let inclusive = _mm512_add_epi32(scan, carry);
        // Empty buckets keep their zero.
        let offsets = _mm512_maskz_sub_epi32(non_empty, inclusive, counts);
        // SAFETY: `chunk` is 16 writable u32; unaligned stores are allowed.
        unsafe { _mm512_storeu_si512(chunk.as_mut_ptr().cast(), offsets) };
        carry = _mm512_permutexvar_epi32(last_lane, inclusive);
    }
}

/// The table entry of [`map_block`].
pub(super) fn map_block_entry(keys: &[f32], ordered: &mut [u32]) -> (u32, u32) {
    // SAFETY: reachable only through `super::kernels`, which takes a `Tier`: the CPU has
    // AVX-512F.
    unsafe { map_block(keys, ordered) }
}

/// The table entry of [`exclusive_prefix_sum`].
pub(super) fn exclusive_prefix_sum_entry(histogram: &mut [u32]) {
    // SAFETY: as for `map_block_entry`.
    unsafe { exclusive_prefix_sum(histogram) }
}
