//! The AVX2 (8 lanes) tier of the sort (design §4): the key map and the exclusive prefix sum
//! of a histogram. The histogram
//! increments and the scatter passes are shared scalar code in `mod.rs`.
//!
//! Their rate against the portable tier is in BENCHMARKS.md (radix argsort, tiers).

use super::ordered_key;
use std::arch::x86_64::*;

/// `ordered[j] = ordered_key(keys[j])`, 8 keys per step; returns the least and the greatest
/// ordered key (`(u32::MAX, 0)` for an empty block).
#[target_feature(enable = "avx2")]
fn map_block(keys: &[f32], ordered: &mut [u32]) -> (u32, u32) {
    assert_eq!(keys.len(), ordered.len(), "map_block: length mismatch");
    let sign_bit = _mm256_set1_epi32(i32::MIN);
    let mut min_keys = _mm256_set1_epi32(-1);
    let mut max_keys = _mm256_setzero_si256();
    let (key_chunks, key_tail) = keys.as_chunks::<8>();
    let (out_chunks, out_tail) = ordered.as_chunks_mut::<8>();
    for (chunk, out) in key_chunks.iter().zip(out_chunks.iter_mut()) {
        // SAFETY: `chunk` is 8 readable f32; unaligned loads are allowed.
        let x = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
        // ordered_key: flip all bits of negatives, the sign bit of the rest; NaN → u32::MAX
        // (all ones, so OR-ing the NaN lane mask in does it).
        let bits = _mm256_castps_si256(x);
        let flip = _mm256_or_si256(_mm256_srai_epi32::<31>(bits), sign_bit);
        let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
        let key = _mm256_or_si256(_mm256_xor_si256(bits, flip), nan);
        min_keys = _mm256_min_epu32(min_keys, key);
        max_keys = _mm256_max_epu32(max_keys, key);
        // SAFETY: `out` is 8 writable u32; unaligned stores are allowed.
        unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), key) };
    }
    let (mut lanes_min, mut lanes_max) = ([0u32; 8], [0u32; 8]);
    // SAFETY: each array is 8 writable u32; unaligned stores are allowed.
    unsafe {
        _mm256_storeu_si256(lanes_min.as_mut_ptr().cast(), min_keys);
        _mm256_storeu_si256(lanes_max.as_mut_ptr().cast(), max_keys);
    }
    let mut min_key = lanes_min.into_iter().fold(u32::MAX, u32::min);
    let mut max_key = lanes_max.into_iter().fold(0, u32::max);
    for (&x, slot) in key_tail.iter().zip(out_tail.iter_mut()) {
        let key = ordered_key(x);
        *slot = key;
        min_key = min_key.min(key);
        max_key = max_key.max(key);
    }
    (min_key, max_key)
}

/// [`super::exclusive_prefix_sum_portable`] 8 counts per step: a log-step scan inside each
/// 128-bit half, the low half's total added to the high half, and the running total carried
/// in a broadcast; a group of 8 empty buckets is skipped (it stays zero and adds nothing).
#[target_feature(enable = "avx2")]
fn exclusive_prefix_sum(histogram: &mut [u32]) {
    let (chunks, tail) = histogram.as_chunks_mut::<8>();
    assert!(
        tail.is_empty(),
        "exclusive_prefix_sum: length not a multiple of 8"
    );
    let lane_3 = _mm256_set1_epi32(3);
    let lane_7 = _mm256_set1_epi32(7);
    let mut carry = _mm256_setzero_si256();
    for chunk in chunks {
        // SAFETY: `chunk` is 8 readable u32; unaligned loads are allowed.
        let counts = unsafe { _mm256_loadu_si256(chunk.as_ptr().cast()) };
        if _mm256_testz_si256(counts, counts) != 0 {
            continue;
        }
        let empty = _mm256_cmpeq_epi32(counts, _mm256_setzero_si256());
        // Byte shifts move lanes up within each 128-bit half.
        let mut scan = _mm256_add_epi32(counts, _mm256_slli_si256::<4>(counts));
        scan = _mm256_add_epi32(scan, _mm256_slli_si256::<8>(scan));
        let low_total = _mm256_permutevar8x32_epi32(scan, lane_3);
        scan = _mm256_add_epi32(
            scan,
            _mm256_blend_epi32::<0b1111_0000>(_mm256_setzero_si256(), low_total),
        );
        let inclusive = _mm256_add_epi32(scan, carry);
        // SAFETY: `chunk` is 8 writable u32; unaligned stores are allowed.
        unsafe {
            _mm256_storeu_si256(
                chunk.as_mut_ptr().cast(),
                // Empty buckets keep their zero.
                _mm256_andnot_si256(empty, _mm256_sub_epi32(inclusive, counts)),
            )
        };
        carry = _mm256_permutevar8x32_epi32(inclusive, lane_7);
    }
}

/// The table entry of [`map_block`].
pub(super) fn map_block_entry(keys: &[f32], ordered: &mut [u32]) -> (u32, u32) {
    // SAFETY: reachable only through `super::kernels`, which takes a `Tier`: the CPU has
    // AVX2.
    unsafe { map_block(keys, ordered) }
}

/// The table entry of [`exclusive_prefix_sum`].
pub(super) fn exclusive_prefix_sum_entry(histogram: &mut [u32]) {
    // SAFETY: as for `map_block_entry`.
    unsafe { exclusive_prefix_sum(histogram) }
}
