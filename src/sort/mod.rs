//! Cluster assignment's sort (design §4): a stable ascending argsort of f32 hashes.
//!
//! Ordering of special values is fixed: −∞ < finite < +∞, −0.0 before +0.0, every NaN last
//! (stable among themselves, whatever its sign or payload). Equal keys keep their input order.
//!
//! # Method
//!
//! Each key is mapped by [`ordered_key`] to a u32 whose unsigned order is the order above, and
//! packed with its index as `(ordered_key << 32) | index` in a u64. One read of the keys packs
//! them and counts every digit of every key (the histograms of all passes at once, counted
//! from a packed block of 256 while it is in L1). Then an LSD radix sort scatters the pairs by
//! 11-bit digits (3 passes: bits 0–10, 11–21, 22–31) between two ping-pong buffers, skipping
//! every pass whose digit is the same for all keys. The last pass writes only the index,
//! straight into the caller's permutation. LSD passes are stable, so equal keys keep their
//! index order. Inputs of at most `SMALL_SORT_MAX` (384) keys sort the packed pairs with
//! `sort_unstable` instead: the pairs are distinct, so the permutation is the same.
//!
//! # Measurements behind the choices
//!
//! Intel Xeon (Sapphire Rapids), 2 vCPUs shared with other work, hash-like (Gaussian) keys.
//!
//! Digit width, with the same code for both widths and a scalar histogram (ns per key):
//!
//! | n     | 8-bit, 4 passes | 11-bit, 3 passes |
//! |-------|-----------------|------------------|
//! | 1 Ki  | 5.30            | 5.34             |
//! | 4 Ki  | 6.88            | 4.92             |
//! | 16 Ki | 5.94            | 5.24             |
//! | 64 Ki | 6.00            | 5.34             |
//! | 1 Mi  | 8.33            | 7.47             |
//!
//! An 8-bit pass keeps its 256 write streams in L1 (about 0.65–0.9 ns per key), an 11-bit
//! pass spills its 2048 streams to L2 (about 1.0–1.2 ns), but one pass and one histogram
//! increment fewer win from 4 Ki keys up, and they tie at 1 Ki. So 11 bits. (A 9/9/14-bit
//! split, keeping the low passes in L1 and relying on hashes having few distinct top bits,
//! measured 9–13% faster on Gaussian keys from 16 Ki to 1 Mi, but 19% slower on uniformly
//! random bit patterns at 16 Ki and 28% slower on Gaussian keys at 4 Ki, so it was not
//! taken.)
//!
//! The fixed cost of a radix sort here is clearing and scanning 3 × 2048 counters; the x86
//! tiers scan 16 or 8 counters per step (a third of the time at 1 Ki keys before). With that,
//! the radix sort overtakes `sort_unstable` on the packed pairs between 320 and 448 keys,
//! hence `SMALL_SORT_MAX`.
//!
//! The scatter writes stay bounds-checked: unchecked writes measured within noise at 16 Ki
//! keys and up (5–8% faster at 4 Ki), not worth an `unsafe` whose soundness would rest on
//! every tier's prefix sum being exact.
//!
//! Partial sort: SMYRF only needs each key's cluster. The least a radix partial sort could do
//! is the histogram and one MSD pass on the top digit: 2.1 ns per key at 16 Ki against 4.8 for
//! the full sort, measured together. But the order within a cluster is the order of the
//! floating-point sums of the attention that follows, and the output must stay bitwise the
//! same as with the full stable sort, so the sort stays full.
//!
//! Vectorised parts: the key map with the packing (`pack_block`) and the prefix sum
//! (`exclusive_prefix_sum`), in `avx512.rs` and `avx2.rs`: the AVX-512 tier sorts 6–11%
//! faster than the portable tier at 16 Ki keys and 18–37% at 1 Ki, the AVX2 tier 4–8% and
//! 3–22% (BENCHMARKS.md, "Radix argsort (issue 4)", across two runs). The histogram
//! increments and the scatter stay scalar in every tier: each is a load and a store on a
//! bucket that depends on the key, and the loops are bound by those stores, which vector
//! scatter instructions would still issue once per key (not tried). No NEON file: it could
//! not be measured on this machine, and the portable tier's plain code is what the compiler
//! vectorises for NEON.

use crate::isa::Isa;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Maps an f32 to a u32 whose unsigned order is the documented f32 order: flip all bits of
/// negatives, the sign bit of the rest; every NaN maps to `u32::MAX` so NaNs sort last.
///
/// So −∞ maps to `0x007F_FFFF`, −0.0 to `0x7FFF_FFFF`, +0.0 to `0x8000_0000`, +∞ to
/// `0xFF80_0000`, every NaN to `0xFFFF_FFFF`; finite values in between, in order.
#[inline(always)]
pub fn ordered_key(x: f32) -> u32 {
    if x.is_nan() {
        return u32::MAX;
    }
    let bits = x.to_bits();
    let mask = ((bits as i32 >> 31) as u32) | 0x8000_0000;
    bits ^ mask
}

/// Bits per radix digit (see the module documentation for the measurement).
const RADIX_BITS: u32 = 11;
/// Buckets per pass.
const RADIX: usize = 1 << RADIX_BITS;
/// Passes needed to cover 32 key bits.
const PASSES: usize = 32usize.div_ceil(RADIX_BITS as usize);
/// Inputs up to this length are sorted by `sort_unstable` on the packed pairs, which measured
/// faster than the radix passes there (their fixed cost is clearing and summing 3 × 2048
/// counters).
const SMALL_SORT_MAX: usize = 384;
/// Keys packed per block before their digits are counted, so the count reads an L1-resident
/// block.
const BLOCK: usize = 256;

/// The digit histograms of all passes; after the prefix sum, the next write offsets.
type Counts = [[u32; RADIX]; PASSES];

/// Reusable buffers for [`argsort_into`] and [`argsort_many`]; grows on demand (to the longest
/// segment sorted) and is kept by the caller, so calls allocate nothing once it is large
/// enough.
#[derive(Default)]
pub struct SortScratch {
    /// Packed `(ordered_key << 32) | index` pairs; the ping buffer.
    packed: Vec<u64>,
    /// The pong buffer.
    spare: Vec<u64>,
    /// `PASSES` histograms (kept in a Vec so that `Default` and growth stay simple).
    counts: Vec<[u32; RADIX]>,
}

impl SortScratch {
    /// Buffers for a segment of `n` keys, growing them if needed.
    fn buffers(&mut self, n: usize) -> (&mut [u64], &mut [u64], &mut Counts) {
        if self.packed.len() < n {
            self.packed.resize(n, 0);
            self.spare.resize(n, 0);
        }
        if self.counts.len() < PASSES {
            self.counts.resize(PASSES, [0; RADIX]);
        }
        let counts: &mut Counts = (&mut self.counts[..PASSES])
            .try_into()
            .expect("SortScratch: PASSES histograms");
        (&mut self.packed[..n], &mut self.spare[..n], counts)
    }
}

/// Writes into `perm` (same length as `keys`) the stable ascending permutation of `keys` in
/// the documented order: `keys[perm[0]] ≤ keys[perm[1]] ≤ …`.
///
/// # Panics
/// If the lengths differ, if `keys` has more than `u32::MAX` elements, or if `isa` is not
/// supported by the running CPU.
pub fn argsort_into(isa: Isa, keys: &[f32], perm: &mut [u32], scratch: &mut SortScratch) {
    assert_eq!(keys.len(), perm.len(), "argsort_into: length mismatch");
    assert!(
        isa.is_supported(),
        "argsort_into: {isa} is not supported by this CPU"
    );
    argsort_segment(isa, keys, perm, scratch);
}

/// Sorts several independent segments in one call, sharing `scratch`: `keys` is the
/// concatenation of segments of lengths `segment_lens`, and `perm` (same length as `keys`)
/// receives, segment by segment, each segment's stable ascending permutation in
/// segment-local indices.
///
/// The segments are sorted one after the other; each one's packed pairs (16 bytes per key,
/// both buffers) stay in cache while it is sorted. Sorting all segments at once with the
/// segment id in the high key bits would need at least the passes of one sort of all the
/// keys, which measured slower than the segments one by one (BENCHMARKS.md, `argsort_many`).
///
/// # Panics
/// If the lengths differ, if the segment lengths do not add up to `keys.len()`, if a segment
/// has more than `u32::MAX` elements, or if `isa` is not supported by the running CPU.
pub fn argsort_many(
    isa: Isa,
    keys: &[f32],
    segment_lens: &[usize],
    perm: &mut [u32],
    scratch: &mut SortScratch,
) {
    assert_eq!(keys.len(), perm.len(), "argsort_many: length mismatch");
    let total = segment_lens
        .iter()
        .try_fold(0usize, |sum, &len| sum.checked_add(len));
    assert_eq!(
        total,
        Some(keys.len()),
        "argsort_many: segments do not cover keys"
    );
    assert!(
        isa.is_supported(),
        "argsort_many: {isa} is not supported by this CPU"
    );
    let mut start = 0;
    for &len in segment_lens {
        let end = start + len;
        argsort_segment(isa, &keys[start..end], &mut perm[start..end], scratch);
        start = end;
    }
}

/// The stable ascending permutation of `keys` (u32 indices), in the documented order, sorted
/// with the best tier of the running CPU.
///
/// # Panics
/// If `keys` has more than `u32::MAX` elements.
pub fn radix_argsort_f32(keys: &[f32]) -> Vec<u32> {
    let mut perm = vec![0u32; keys.len()];
    argsort_into(
        crate::isa::detected_isa(),
        keys,
        &mut perm,
        &mut SortScratch::default(),
    );
    perm
}

/// One segment; `isa` has been checked.
fn argsort_segment(isa: Isa, keys: &[f32], perm: &mut [u32], scratch: &mut SortScratch) {
    let n = keys.len();
    assert!(n <= u32::MAX as usize, "argsort: more than u32::MAX keys");
    if n <= SMALL_SORT_MAX {
        small_sort(isa, keys, perm, scratch);
        return;
    }
    let (packed, spare, counts) = scratch.buffers(n);
    for histogram in counts.iter_mut() {
        histogram.fill(0);
    }
    pack_and_count(isa, keys, packed, counts);

    // A pass where every key has the same digit leaves the order as it is: skip it. The
    // others get their histogram turned into starting offsets.
    let first_key = (packed[0] >> 32) as u32;
    let mut active = [0usize; PASSES];
    let mut n_active = 0;
    for (pass, histogram) in counts.iter_mut().enumerate() {
        let digit = ((first_key >> (pass as u32 * RADIX_BITS)) as usize) & (RADIX - 1);
        if histogram[digit] as usize != n {
            exclusive_prefix_sum(isa, histogram);
            active[n_active] = pass;
            n_active += 1;
        }
    }
    let Some((&last, middle)) = active[..n_active].split_last() else {
        // Every key equal: the identity is the stable order.
        for (i, slot) in perm.iter_mut().enumerate() {
            *slot = i as u32;
        }
        return;
    };
    let (mut src, mut dst) = (packed, spare);
    for &pass in middle {
        scatter_pairs(src, dst, &mut counts[pass], pass as u32 * RADIX_BITS);
        std::mem::swap(&mut src, &mut dst);
    }
    scatter_indices(src, perm, &mut counts[last], last as u32 * RADIX_BITS);
}

/// Packs `keys` into `packed` and counts their digits, one L1-sized block at a time.
fn pack_and_count(isa: Isa, keys: &[f32], packed: &mut [u64], counts: &mut Counts) {
    for (block, (keys, packed)) in keys.chunks(BLOCK).zip(packed.chunks_mut(BLOCK)).enumerate() {
        pack_block(isa, keys, (block * BLOCK) as u32, packed);
        count_block(packed, counts);
    }
}

/// `packed[j] = (ordered_key(keys[j]) << 32) | (first_index + j)`, with `isa`'s key map.
fn pack_block(isa: Isa, keys: &[f32], first_index: u32, packed: &mut [u64]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the public entry points asserted `isa.is_supported()`, i.e. AVX-512F.
        Isa::Avx512 => unsafe { avx512::pack_block(keys, first_index, packed) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the public entry points asserted `isa.is_supported()`, i.e. AVX2.
        Isa::Avx2 => unsafe { avx2::pack_block(keys, first_index, packed) },
        _ => pack_block_portable(keys, first_index, packed),
    }
}

/// The portable tier's key map: plain code, which the compiler vectorises for the baseline
/// target (SSE2 on x86-64, NEON on aarch64).
fn pack_block_portable(keys: &[f32], first_index: u32, packed: &mut [u64]) {
    for (j, (&x, slot)) in keys.iter().zip(packed.iter_mut()).enumerate() {
        *slot = pack(ordered_key(x), first_index + j as u32);
    }
}

/// One packed pair: the key in the high half, so that u64 order is key order then index
/// order.
#[inline(always)]
fn pack(key: u32, index: u32) -> u64 {
    ((key as u64) << 32) | index as u64
}

/// Adds every digit of every packed key of a block to the histograms. Shared by all tiers:
/// each increment is a scalar read-modify-write.
#[inline(always)]
fn count_block(packed: &[u64], counts: &mut Counts) {
    for &pair in packed {
        let key = (pair >> 32) as u32;
        for (pass, histogram) in counts.iter_mut().enumerate() {
            let digit = (key >> (pass as u32 * RADIX_BITS)) as usize & (RADIX - 1);
            histogram[digit] += 1;
        }
    }
}

/// Replaces each count by the sum of the counts before it, with `isa`'s scan.
fn exclusive_prefix_sum(isa: Isa, histogram: &mut [u32; RADIX]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the public entry points asserted `isa.is_supported()`, i.e. AVX-512F.
        Isa::Avx512 => unsafe { avx512::exclusive_prefix_sum(histogram) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the public entry points asserted `isa.is_supported()`, i.e. AVX2.
        Isa::Avx2 => unsafe { avx2::exclusive_prefix_sum(histogram) },
        _ => exclusive_prefix_sum_portable(histogram),
    }
}

/// The portable scan: a running sum, one scalar store per count.
fn exclusive_prefix_sum_portable(histogram: &mut [u32; RADIX]) {
    let mut sum = 0u32;
    for slot in histogram.iter_mut() {
        let count = *slot;
        *slot = sum;
        sum += count;
    }
}

/// One LSD pass: moves every pair of `src` to `dst[offsets[digit]]`, in `src` order.
///
/// `offsets` must be the exclusive prefix sum of the histogram of this digit over exactly the
/// pairs of `src` (as `pack_and_count` counted them), so every write lands in bounds.
#[inline(always)]
fn scatter_pairs(src: &[u64], dst: &mut [u64], offsets: &mut [u32; RADIX], shift: u32) {
    debug_assert_eq!(src.len(), dst.len());
    for &pair in src {
        let digit = ((pair >> (32 + shift)) as usize) & (RADIX - 1);
        let offset = offsets[digit];
        dst[offset as usize] = pair;
        offsets[digit] = offset + 1;
    }
}

/// The last LSD pass: like [`scatter_pairs`], but writes only the index (the low half).
#[inline(always)]
fn scatter_indices(src: &[u64], perm: &mut [u32], offsets: &mut [u32; RADIX], shift: u32) {
    debug_assert_eq!(src.len(), perm.len());
    for &pair in src {
        let digit = ((pair >> (32 + shift)) as usize) & (RADIX - 1);
        let offset = offsets[digit];
        perm[offset as usize] = pair as u32;
        offsets[digit] = offset + 1;
    }
}

/// Short inputs: sort the packed pairs. They are all distinct (the index breaks ties), so an
/// unstable sort gives exactly the stable order.
fn small_sort(isa: Isa, keys: &[f32], perm: &mut [u32], scratch: &mut SortScratch) {
    let (packed, _, _) = scratch.buffers(keys.len());
    pack_block(isa, keys, 0, packed);
    packed.sort_unstable();
    for (slot, &pair) in perm.iter_mut().zip(packed.iter()) {
        *slot = pair as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supported_tiers() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.is_supported())
    }

    /// Bit patterns covering both signs, zeros, infinities, NaNs and subnormals.
    fn mixed_keys(n: usize) -> Vec<f32> {
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        (0..n)
            .map(|i| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                match i % 5 {
                    0 => f32::from_bits((state >> 32) as u32),
                    1 => [f32::NAN, -0.0, 0.0, f32::INFINITY, f32::NEG_INFINITY][i / 5 % 5],
                    _ => (state >> 40) as f32 / 1e6 - 8.0,
                }
            })
            .collect()
    }

    #[test]
    fn every_tier_packs_like_the_portable_code() {
        // Every length up to a few vectors, so every tail length of 8 and 16 lanes.
        for n in 0..=70 {
            let keys = mixed_keys(n);
            let mut expected = vec![0u64; n];
            pack_block_portable(&keys, 1000, &mut expected);
            for (j, (&x, &pair)) in keys.iter().zip(&expected).enumerate() {
                assert_eq!(pair, ((ordered_key(x) as u64) << 32) | (1000 + j) as u64);
            }
            for isa in supported_tiers() {
                let mut packed = vec![u64::MAX; n];
                pack_block(isa, &keys, 1000, &mut packed);
                assert_eq!(packed, expected, "{isa}, n = {n}");
            }
        }
    }

    #[test]
    fn every_tier_scans_like_the_portable_code() {
        let mut state = 7u64;
        let mut histogram = [0u32; RADIX];
        for slot in histogram.iter_mut() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            // Mostly empty buckets, as in real histograms, and some large counts.
            *slot = match state >> 61 {
                0..=4 => 0,
                5 | 6 => (state >> 50) as u32 & 0xFF,
                _ => (state >> 40) as u32 & 0xF_FFFF,
            };
        }
        let mut expected = histogram;
        exclusive_prefix_sum_portable(&mut expected);
        assert_eq!(expected[0], 0);
        for isa in supported_tiers() {
            let mut scanned = histogram;
            exclusive_prefix_sum(isa, &mut scanned);
            assert!(scanned == expected, "{isa}");
        }
    }
}
