//! The AVX-512 (16 lanes) tier of the sort (design §4): the key map with its packing into
//! `(ordered_key << 32) | index` pairs, and the exclusive prefix sum of a histogram. The
//! histogram increments and the scatter passes are shared scalar code in `mod.rs`.
//!
//! Measured gains over the portable tier are in BENCHMARKS.md ("Radix argsort (issue 4)",
//! `argsort_tiers`).

use super::{ordered_key, pack, RADIX};
use std::arch::x86_64::*;

/// `packed[j] = (ordered_key(keys[j]) << 32) | (first_index + j)`, 16 keys per step.
#[target_feature(enable = "avx512f")]
pub(super) fn pack_block(keys: &[f32], first_index: u32, packed: &mut [u64]) {
    assert_eq!(keys.len(), packed.len(), "pack_block: length mismatch");
    let sign_bit = _mm512_set1_epi32(i32::MIN);
    let all_ones = _mm512_set1_epi32(-1);
    let step = _mm512_set1_epi64(16);
    let mut index_lo = _mm512_add_epi64(
        _mm512_set1_epi64(first_index as i64),
        _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7),
    );
    let mut index_hi = _mm512_add_epi64(index_lo, _mm512_set1_epi64(8));
    let (key_chunks, key_tail) = keys.as_chunks::<16>();
    let (pair_chunks, pair_tail) = packed.as_chunks_mut::<16>();
    for (chunk, pairs) in key_chunks.iter().zip(pair_chunks.iter_mut()) {
        // SAFETY: `chunk` is 16 readable f32; unaligned loads are allowed.
        let x = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
        // ordered_key: flip all bits of negatives, the sign bit of the rest; NaN → u32::MAX.
        let bits = _mm512_castps_si512(x);
        let flip = _mm512_or_si512(_mm512_srai_epi32::<31>(bits), sign_bit);
        let key = _mm512_xor_si512(bits, flip);
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        let key = _mm512_mask_mov_epi32(key, nan, all_ones);
        let key_lo = _mm512_cvtepu32_epi64(_mm512_castsi512_si256(key));
        let key_hi = _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64::<1>(key));
        let pair_lo = _mm512_or_si512(_mm512_slli_epi64::<32>(key_lo), index_lo);
        let pair_hi = _mm512_or_si512(_mm512_slli_epi64::<32>(key_hi), index_hi);
        // SAFETY: `pairs` is 16 writable u64; unaligned stores are allowed.
        unsafe {
            _mm512_storeu_si512(pairs.as_mut_ptr().cast(), pair_lo);
            _mm512_storeu_si512(pairs.as_mut_ptr().add(8).cast(), pair_hi);
        }
        index_lo = _mm512_add_epi64(index_lo, step);
        index_hi = _mm512_add_epi64(index_hi, step);
    }
    let tail_first = first_index + (key_chunks.len() * 16) as u32;
    for (j, (&x, slot)) in key_tail.iter().zip(pair_tail.iter_mut()).enumerate() {
        *slot = pack(ordered_key(x), tail_first + j as u32);
    }
}

/// [`super::exclusive_prefix_sum_portable`] 16 counts per step: a log-step scan inside the
/// vector (lanes shifted by 1, 2, 4, 8), plus the running total carried in a broadcast.
#[target_feature(enable = "avx512f")]
pub(super) fn exclusive_prefix_sum(histogram: &mut [u32; RADIX]) {
    let zero = _mm512_setzero_si512();
    let last_lane = _mm512_set1_epi32(15);
    let mut carry = zero;
    for chunk in histogram.as_chunks_mut::<16>().0 {
        // SAFETY: `chunk` is 16 readable u32; unaligned loads are allowed.
        let counts = unsafe { _mm512_loadu_si512(chunk.as_ptr().cast()) };
        // `_mm512_alignr_epi32::<16 - s>(x, zero)` is `x` moved up by `s` lanes, zeros below.
        let mut scan = _mm512_add_epi32(counts, _mm512_alignr_epi32::<15>(counts, zero));
        scan = _mm512_add_epi32(scan, _mm512_alignr_epi32::<14>(scan, zero));
        scan = _mm512_add_epi32(scan, _mm512_alignr_epi32::<12>(scan, zero));
        scan = _mm512_add_epi32(scan, _mm512_alignr_epi32::<8>(scan, zero));
        let inclusive = _mm512_add_epi32(scan, carry);
        // SAFETY: `chunk` is 16 writable u32; unaligned stores are allowed.
        unsafe {
            _mm512_storeu_si512(
                chunk.as_mut_ptr().cast(),
                _mm512_sub_epi32(inclusive, counts),
            )
        };
        carry = _mm512_permutexvar_epi32(last_lane, inclusive);
    }
}
