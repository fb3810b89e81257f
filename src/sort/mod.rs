//! Cluster assignment's sort (design §4): a stable ascending argsort of f32 hashes.
//!
//! Ordering of special values is fixed: −∞ < finite < +∞, −0.0 before +0.0, every NaN last
//! (stable among themselves, whatever its sign or payload). Equal keys keep their input order.
//!
//! # Method
//!
//! Each key is mapped by [`ordered_key`] to a u32 whose unsigned order is the order above.
//! One read of the keys maps them (vectorised, a block of 256 at a time) and counts every
//! digit of every key from the block while it is in L1: the histograms of all passes at
//! once. Then an LSD radix sort runs three passes over two low digits and a top digit,
//! skipping every pass whose digit is the same for all keys. Segments of 4096 to 2^18 keys
//! take digits of bits 0–8, 9–17 and 18–31 (512-bucket low passes, whose write streams stay
//! in L1); shorter and longer ones bits 0–9, 10–19 and 20–31. What each pass moves shrinks:
//!
//! 1. pass 0 reads the ordered keys (4 bytes, the index is the position) and writes
//!    `(key << 32) | index` pairs (8 bytes);
//! 2. pass 1 reads the pairs and writes narrow words, `top digit << s | index` (4 bytes,
//!    s = 18 or 20 index bits): the last pass needs nothing else. Segments longer than 2^20
//!    keys keep 8-byte pairs, in a second buffer;
//! 3. pass 2 reads the words and writes the bare index straight into the caller's
//!    permutation.
//!
//! The top histogram (16384 or 4096 counters) is scanned only between the least and the
//! greatest key's top digit (the map returns both), and the next sort clears only the
//! counters this one dirtied: hash keys span a few thousand top buckets, a few hundred of
//! them live.
//!
//! LSD passes are stable, so equal keys keep their index order. Inputs of at most
//! `SMALL_SORT_MAX` (384) keys sort packed pairs with `sort_unstable` instead: the pairs are
//! distinct, so the permutation is the same. Scratch: 12 bytes per key (20 past 2^20 keys)
//! plus 68 KiB of counters.
//!
//! # Why this method
//!
//! The digit layout, the narrow words, the short-input cut-off and the bounds-checked
//! scatter were each chosen by measurement; the alternatives tried are one line each in
//! `docs/perf-notes.md` (cluster assignment). The sort stores 9 times per key (3 counter
//! increments, then per pass an element and its bucket's offset), and a core commits about
//! one store per cycle to distinct lines: that store rate is the floor of the method.
//!
//! The sort stays full and stable although SMYRF only needs each key's cluster: the order
//! within a cluster is the order of the floating-point sums of the attention that follows,
//! and the output must not depend on how the sort breaks ties.
//!
//! Vectorised parts: the key map and the prefix sum (`avx512.rs`, `avx2.rs`). The histogram
//! increments and the scatter stay scalar in every tier: each is a load and a store on a
//! bucket that depends on the key, bound by those stores. The portable tier's plain code is
//! what the compiler vectorises for NEON.

use crate::isa::Isa;
use crate::runtime::arena::Arena;
use crate::runtime::buffer::Buf;
use crate::simd::Tier;

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

/// The digit layout of segments of `MID_MIN` to `MID_MAX` keys: low digits of 9 bits (512
/// buckets, whose write streams stay in L1), a 14-bit top digit.
const MID_LOW_BITS: u32 = 9;
/// The digit layout of shorter and longer segments: low digits of 10 bits, a 12-bit top
/// digit, so that narrow words (20 index bits) last up to 2^20 keys.
const WIDE_LOW_BITS: u32 = 10;
/// Longest segment sorted with the mid layout: its narrow words hold 18 index bits.
const MID_MAX: usize = 1 << (2 * MID_LOW_BITS);
/// Shortest segment sorted with the mid layout: below it, the fixed cost of its larger top
/// histogram (the live range of 16384 counters, cleared and scanned per sort) outweighs the
/// cheaper low passes (1 Ki keys: 243 against 305 Melem/s with the wide layout).
const MID_MIN: usize = 4096;
/// Counters of the larger layout (the mid one): two low histograms and the top one, one
/// after the other.
const COUNTS_LEN: usize = {
    let mid = 2 * (1 << MID_LOW_BITS) + (1 << (32 - 2 * MID_LOW_BITS));
    let wide = 2 * (1 << WIDE_LOW_BITS) + (1 << (32 - 2 * WIDE_LOW_BITS));
    if mid > wide {
        mid
    } else {
        wide
    }
};
/// The scans work on whole groups of this many counters, so the live range of the top
/// histogram is widened to multiples of it.
const SCAN_GROUP: usize = 16;
/// Inputs up to this length are sorted by `sort_unstable` on packed `(key << 32) | index`
/// pairs, which measured faster than the radix passes there (their fixed cost is clearing
/// and summing the histograms).
const SMALL_SORT_MAX: usize = 384;
/// Keys mapped per block before their digits are counted, so the count reads an L1-resident
/// block.
const BLOCK: usize = 256;

/// A pass's digit: `(key >> shift) & mask`.
#[derive(Clone, Copy)]
struct Digit {
    shift: u32,
    mask: u32,
}

impl Digit {
    #[inline(always)]
    fn of(self, key: u32) -> usize {
        ((key >> self.shift) & self.mask) as usize
    }
}

/// Reusable buffers for [`argsort_into`] and [`argsort_many`]; grows on demand (to the longest
/// segment sorted) and is kept by the caller, so calls allocate nothing once it is large
/// enough.
#[derive(Default)]
pub struct SortScratch {
    /// The per-key buffers.
    buffers: KeyBuffers,
    /// The digit histograms (`COUNTS_LEN` counters). Every counter outside `counts[..dirty_low]`
    /// and `counts[dirty_top]` is zero between sorts, so a sort clears only those.
    counts: Buf<u32>,
    /// Counters from 0 up to here may be nonzero (the last sort's low histograms).
    dirty_low: usize,
    /// The last sort's live top-digit counters, which may be nonzero.
    dirty_top: std::ops::Range<usize>,
}

/// Bytes of [`SortScratch`] after sorting a segment of `n` keys: what `Plan::scratch_bytes`
/// accounts for the sort.
pub(crate) fn scratch_bytes(n: usize) -> usize {
    let narrow_max = 1usize << (2 * WIDE_LOW_BITS);
    let per_key = if n > narrow_max { 4 + 8 + 8 } else { 4 + 8 };
    n.saturating_mul(per_key).saturating_add(4 * COUNTS_LEN)
}

impl SortScratch {
    /// Scratch carved from a workspace for segments of up to `n` keys: the buffers
    /// `KeyBuffers::get` and `clear_counts` grow to at that length.
    pub(crate) fn carve(arena: &mut Arena<'_>, n: usize) -> SortScratch {
        let wide_narrow_max = 1usize << (2 * WIDE_LOW_BITS);
        SortScratch {
            buffers: KeyBuffers {
                keys: arena.buf(n),
                pairs: arena.buf(n),
                // Only the wide layout past its narrow words needs the second pair buffer;
                // the mid layout's segments always fit its narrow words.
                spare: arena.buf(if n > wide_narrow_max { n } else { 0 }),
            },
            // Short segments take the comparison sort, which counts nothing.
            counts: arena.buf(if n > SMALL_SORT_MAX { COUNTS_LEN } else { 0 }),
            dirty_low: 0,
            dirty_top: 0..0,
        }
    }
}

/// The scratch of one segment, split into its parts.
struct Buffers<'a> {
    keys: &'a mut [u32],
    pairs: &'a mut [u64],
    spare: &'a mut [u64],
}

impl SortScratch {
    /// Zeroes every counter a sort with `low_len` low counters may read before counting, and
    /// records the pessimistic dirty ranges (all the low counters and the whole top histogram
    /// at `top`) until the sort narrows them, so an interrupted sort leaves nothing stale.
    fn clear_counts(&mut self, low_len: usize, top: std::ops::Range<usize>) {
        if self.counts.len() < COUNTS_LEN {
            self.counts.resize(COUNTS_LEN, 0);
        }
        self.counts[..self.dirty_low.max(low_len)].fill(0);
        self.counts[self.dirty_top.clone()].fill(0);
        self.dirty_low = low_len;
        self.dirty_top = top;
    }
}

/// Writes into `perm` (same length as `keys`) the stable ascending permutation of `keys` in
/// the documented order: `keys[perm[0]] ≤ keys[perm[1]] ≤ …`.
///
/// # Panics
/// If the lengths differ, if `keys` has more than `u32::MAX` elements, or if `isa` is not
/// supported by the running CPU.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub fn argsort_into(isa: Isa, keys: &[f32], perm: &mut [u32], scratch: &mut SortScratch) {
    assert_eq!(keys.len(), perm.len(), "argsort_into: length mismatch");
    let tier = Tier::new(isa)
        .unwrap_or_else(|| panic!("argsort_into: {isa} is not supported by this CPU"));
    argsort_segment(kernels(tier), keys, perm, scratch);
}

/// Sorts several independent segments in one call, sharing `scratch`: `keys` is the
/// concatenation of segments of lengths `segment_lens`, and `perm` (same length as `keys`)
/// receives, segment by segment, each segment's stable ascending permutation in
/// segment-local indices.
///
/// The segments are sorted one after the other; each one's buffers (12 bytes per key) stay
/// in cache while it is sorted. Sorting all segments at once with the segment id in the high
/// key bits would need at least the passes of one sort of all the keys, which measured
/// slower than the segments one by one (BENCHMARKS.md, `argsort_many`).
///
/// # Panics
/// If the lengths differ, if the segment lengths do not add up to `keys.len()`, if a segment
/// has more than `u32::MAX` elements, or if `isa` is not supported by the running CPU.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
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
    let tier = Tier::new(isa)
        .unwrap_or_else(|| panic!("argsort_many: {isa} is not supported by this CPU"));
    sort_segments(kernels(tier), keys, segment_lens, perm, scratch);
}

/// [`argsort_many`] with a tier's kernels, lengths checked by the caller.
pub(crate) fn sort_segments(
    kern: &SortKernels,
    keys: &[f32],
    segment_lens: &[usize],
    perm: &mut [u32],
    scratch: &mut SortScratch,
) {
    let mut start = 0;
    for &len in segment_lens {
        let end = start + len;
        argsort_segment(kern, &keys[start..end], &mut perm[start..end], scratch);
        start = end;
    }
}

/// The stable ascending permutation of `keys` (u32 indices), in the documented order, sorted
/// with the best tier of the running CPU.
///
/// # Panics
/// If `keys` has more than `u32::MAX` elements.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub fn radix_argsort_f32(keys: &[f32]) -> Vec<u32> {
    let mut perm = vec![0u32; keys.len()];
    argsort_segment(
        kernels(Tier::detected()),
        keys,
        &mut perm,
        &mut SortScratch::default(),
    );
    perm
}

/// One segment.
fn argsort_segment(kern: &SortKernels, keys: &[f32], perm: &mut [u32], scratch: &mut SortScratch) {
    let n = keys.len();
    assert!(n <= u32::MAX as usize, "argsort: more than u32::MAX keys");
    if n <= SMALL_SORT_MAX {
        small_sort(kern, keys, perm, scratch);
    } else if (MID_MIN..=MID_MAX).contains(&n) {
        radix_sort::<{ MID_LOW_BITS }, { 1 << MID_LOW_BITS }, { 1 << (32 - 2 * MID_LOW_BITS) }>(
            kern, keys, perm, scratch,
        );
    } else {
        radix_sort::<{ WIDE_LOW_BITS }, { 1 << WIDE_LOW_BITS }, { 1 << (32 - 2 * WIDE_LOW_BITS) }>(
            kern, keys, perm, scratch,
        );
    }
}

/// The LSD radix sort of one segment with low digits of `LOW_BITS` bits (`LOW` buckets) and
/// a top digit of the remaining bits (`TOP` buckets).
fn radix_sort<const LOW_BITS: u32, const LOW: usize, const TOP: usize>(
    kern: &SortKernels,
    keys: &[f32],
    perm: &mut [u32],
    scratch: &mut SortScratch,
) {
    const { assert!(LOW == 1 << LOW_BITS && TOP == 1 << (32 - 2 * LOW_BITS)) };
    const { assert!(2 * LOW + TOP <= COUNTS_LEN && TOP.is_multiple_of(SCAN_GROUP)) };
    let top_shift = 2 * LOW_BITS;
    // Narrow words hold the top digit above `top_shift` index bits.
    let narrow_max = 1usize << top_shift;
    let n = keys.len();
    let spare_len = if n > narrow_max { n } else { 0 };
    scratch.clear_counts(2 * LOW, 2 * LOW..2 * LOW + TOP);
    let counts = &mut scratch.counts[..2 * LOW + TOP];
    let (low0, rest) = counts.split_at_mut(LOW);
    let (low1, top) = rest.split_at_mut(LOW);
    let low0: &mut [u32; LOW] = low0.try_into().expect("LOW counters");
    let low1: &mut [u32; LOW] = low1.try_into().expect("LOW counters");
    let top: &mut [u32; TOP] = top.try_into().expect("TOP counters");
    let Buffers {
        keys: ordered,
        pairs,
        spare,
    } = scratch.buffers.get(n, spare_len);
    let digits = [
        Digit {
            shift: 0,
            mask: LOW as u32 - 1,
        },
        Digit {
            shift: LOW_BITS,
            mask: LOW as u32 - 1,
        },
        Digit {
            shift: top_shift,
            mask: TOP as u32 - 1,
        },
    ];
    let (min_key, max_key) = map_and_count(kern, keys, ordered, low0, low1, top, digits);
    // Only the top digits between the least and the greatest key can be counted: scan those
    // (hash keys use a few hundred of the 16384 top buckets) and clear only them next time.
    let live_top = (digits[2].of(min_key) / SCAN_GROUP * SCAN_GROUP)
        ..(digits[2].of(max_key) + 1).next_multiple_of(SCAN_GROUP);
    scratch.dirty_top = 2 * LOW + live_top.start..2 * LOW + live_top.end;

    // A pass where every key has the same digit leaves the order as it is: skip it. The
    // others get their histogram turned into starting offsets.
    let first_key = ordered[0];
    let mut active = [false; 3];
    for (pass, histogram) in [&mut low0[..], &mut low1[..], &mut top[live_top.clone()]]
        .into_iter()
        .enumerate()
    {
        let first_digit = match pass {
            2 => digits[2].of(first_key) - live_top.start,
            _ => digits[pass].of(first_key),
        };
        if histogram[first_digit] as usize != n {
            (kern.prefix_sum)(histogram);
            active[pass] = true;
        }
    }
    let [d0, d1, d2] = digits;
    let index_of_key = |i: usize, _: u32| i as u32;
    let index_of_pair = |_: usize, pair: u64| pair as u32;
    let pair_of_key = |i: usize, key: u32| pack(key, i as u32);
    let key_of_pair = |pair: u64| (pair >> 32) as u32;
    let narrow_of_pair =
        |_: usize, pair: u64| ((key_of_pair(pair) >> top_shift) << top_shift) | pair as u32;
    let narrow_index = |_: usize, word: u32| word & (narrow_max as u32 - 1);
    let narrow_digit = |word: u32| (word >> top_shift) as usize;
    match active {
        [false, false, false] => {
            // Every key equal: the identity is the stable order.
            for (i, slot) in perm.iter_mut().enumerate() {
                *slot = i as u32;
            }
        }
        // One pass: straight from the keys to the permutation.
        [true, false, false] => scatter(ordered, perm, low0, |k| d0.of(k), index_of_key),
        [false, true, false] => scatter(ordered, perm, low1, |k| d1.of(k), index_of_key),
        [false, false, true] => scatter(ordered, perm, top, |k| d2.of(k), index_of_key),
        // Two passes: keys → pairs → permutation.
        [true, true, false] => {
            scatter(ordered, pairs, low0, |k| d0.of(k), pair_of_key);
            scatter(pairs, perm, low1, |p| d1.of(key_of_pair(p)), index_of_pair);
        }
        [true, false, true] => {
            scatter(ordered, pairs, low0, |k| d0.of(k), pair_of_key);
            scatter(pairs, perm, top, |p| d2.of(key_of_pair(p)), index_of_pair);
        }
        [false, true, true] => {
            scatter(ordered, pairs, low1, |k| d1.of(k), pair_of_key);
            scatter(pairs, perm, top, |p| d2.of(key_of_pair(p)), index_of_pair);
        }
        // Three passes: keys → pairs → narrow words (in the keys' buffer, free by then) →
        // permutation; pairs twice when the indices do not fit narrow words.
        [true, true, true] => {
            scatter(ordered, pairs, low0, |k| d0.of(k), pair_of_key);
            if n <= narrow_max {
                let words = ordered;
                scatter(
                    pairs,
                    words,
                    low1,
                    |p| d1.of(key_of_pair(p)),
                    narrow_of_pair,
                );
                scatter(words, perm, top, narrow_digit, narrow_index);
            } else {
                scatter(pairs, spare, low1, |p| d1.of(key_of_pair(p)), |_, p| p);
                scatter(spare, perm, top, |p| d2.of(key_of_pair(p)), index_of_pair);
            }
        }
    }
}

/// The per-key buffers of [`SortScratch`], apart from its counters so both can be borrowed
/// at once.
#[derive(Default)]
struct KeyBuffers {
    /// Ordered keys; later the narrow words of the last pass.
    keys: Buf<u32>,
    /// Packed `(ordered_key << 32) | index` pairs.
    pairs: Buf<u64>,
    /// The second pair buffer, used only when a segment is too long for narrow words.
    spare: Buf<u64>,
}

impl KeyBuffers {
    /// The buffers of a segment of `n` keys, growing them if needed; `spare` gets
    /// `spare_len` elements (0 unless the segment is too long for narrow words).
    fn get(&mut self, n: usize, spare_len: usize) -> Buffers<'_> {
        if self.keys.len() < n {
            self.keys.resize(n, 0);
            self.pairs.resize(n, 0);
        }
        if self.spare.len() < spare_len {
            self.spare.resize(spare_len, 0);
        }
        Buffers {
            keys: &mut self.keys[..n],
            pairs: &mut self.pairs[..n],
            spare: &mut self.spare[..spare_len],
        }
    }
}

/// Maps `keys` to ordered keys and counts their digits, one L1-sized block at a time.
/// Returns the least and the greatest ordered key.
fn map_and_count<const LOW: usize, const TOP: usize>(
    kern: &SortKernels,
    keys: &[f32],
    ordered: &mut [u32],
    low0: &mut [u32; LOW],
    low1: &mut [u32; LOW],
    top: &mut [u32; TOP],
    digits: [Digit; 3],
) -> (u32, u32) {
    let (mut min_key, mut max_key) = (u32::MAX, 0);
    for (keys, ordered) in keys.chunks(BLOCK).zip(ordered.chunks_mut(BLOCK)) {
        let (block_min, block_max) = (kern.map_block)(keys, ordered);
        min_key = min_key.min(block_min);
        max_key = max_key.max(block_max);
        for &key in ordered.iter() {
            low0[digits[0].of(key) & (LOW - 1)] += 1;
            low1[digits[1].of(key) & (LOW - 1)] += 1;
            top[digits[2].of(key) & (TOP - 1)] += 1;
        }
    }
    (min_key, max_key)
}

/// The portable tier's key map: plain code, which the compiler vectorises for the baseline
/// target (SSE2 on x86-64, NEON on aarch64).
fn map_block_portable(keys: &[f32], ordered: &mut [u32]) -> (u32, u32) {
    let (mut min_key, mut max_key) = (u32::MAX, 0);
    for (&x, slot) in keys.iter().zip(ordered.iter_mut()) {
        let key = ordered_key(x);
        *slot = key;
        min_key = min_key.min(key);
        max_key = max_key.max(key);
    }
    (min_key, max_key)
}

/// One packed pair: the key in the high half, so that u64 order is key order then index
/// order.
#[inline(always)]
fn pack(key: u32, index: u32) -> u64 {
    ((key as u64) << 32) | index as u64
}

/// One tier's sort kernels.
pub(crate) struct SortKernels {
    /// `ordered[j] = ordered_key(keys[j])`; returns the least and the greatest ordered key
    /// (`(u32::MAX, 0)` for an empty block).
    pub(crate) map_block: fn(keys: &[f32], ordered: &mut [u32]) -> (u32, u32),
    /// Replaces each nonzero count by the sum of the counts before it (its bucket's starting
    /// offset) and leaves zero counts zero. Empty buckets need no offset, and keeping them
    /// zero lets the vector tiers skip whole groups of empty buckets, which is most of a hash
    /// histogram's top digits.
    pub(crate) prefix_sum: fn(histogram: &mut [u32]),
}

const PORTABLE: SortKernels = SortKernels {
    map_block: map_block_portable,
    prefix_sum: exclusive_prefix_sum_portable,
};

#[cfg(target_arch = "x86_64")]
const AVX2: SortKernels = SortKernels {
    map_block: avx2::map_block_entry,
    prefix_sum: avx2::exclusive_prefix_sum_entry,
};

#[cfg(target_arch = "x86_64")]
const AVX512: SortKernels = SortKernels {
    map_block: avx512::map_block_entry,
    prefix_sum: avx512::exclusive_prefix_sum_entry,
};

/// The sort kernels of a tier (no NEON file: the portable code is what the compiler
/// vectorises for NEON).
pub(crate) fn kernels(tier: Tier) -> &'static SortKernels {
    match tier.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &AVX2,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &AVX512,
        _ => &PORTABLE,
    }
}

/// The portable scan: a running sum, one scalar store per count.
fn exclusive_prefix_sum_portable(histogram: &mut [u32]) {
    let mut sum = 0u32;
    for slot in histogram.iter_mut() {
        let count = *slot;
        *slot = if count == 0 { 0 } else { sum };
        sum += count;
    }
}

/// One LSD pass: moves `item(i, src[i])` to `dst[offsets[digit(src[i])]]`, in `src` order.
///
/// `offsets` must be the exclusive prefix sum of the histogram of `digit` over exactly the
/// elements of `src`, so every write lands in bounds (the writes stay bounds-checked all the
/// same: see the module documentation).
#[inline(always)]
fn scatter<S: Copy, D, const R: usize>(
    src: &[S],
    dst: &mut [D],
    offsets: &mut [u32; R],
    digit: impl Fn(S) -> usize,
    item: impl Fn(usize, S) -> D,
) {
    debug_assert_eq!(src.len(), dst.len());
    let (quads, tail) = src.as_chunks::<4>();
    for (j, quad) in quads.iter().enumerate() {
        for (k, &element) in quad.iter().enumerate() {
            // Digits are below R already; the mask lets the compiler see it.
            let bucket = digit(element) & (R - 1);
            let offset = offsets[bucket];
            dst[offset as usize] = item(4 * j + k, element);
            offsets[bucket] = offset + 1;
        }
    }
    let tail_start = src.len() - tail.len();
    for (k, &element) in tail.iter().enumerate() {
        let bucket = digit(element) & (R - 1);
        let offset = offsets[bucket];
        dst[offset as usize] = item(tail_start + k, element);
        offsets[bucket] = offset + 1;
    }
}

/// Short inputs: sort the packed pairs. They are all distinct (the index breaks ties), so an
/// unstable sort gives exactly the stable order.
fn small_sort(kern: &SortKernels, keys: &[f32], perm: &mut [u32], scratch: &mut SortScratch) {
    let Buffers {
        keys: ordered,
        pairs,
        ..
    } = scratch.buffers.get(keys.len(), 0);
    (kern.map_block)(keys, ordered);
    for (i, (&key, pair)) in ordered.iter().zip(pairs.iter_mut()).enumerate() {
        *pair = pack(key, i as u32);
    }
    pairs.sort_unstable();
    for (slot, &pair) in perm.iter_mut().zip(pairs.iter()) {
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
    fn every_tier_maps_like_the_portable_code() {
        // Every length up to a few vectors, so every tail length of 8 and 16 lanes.
        for n in 0..=70 {
            let keys = mixed_keys(n);
            let mut expected = vec![0u32; n];
            let range = map_block_portable(&keys, &mut expected);
            for (&x, &key) in keys.iter().zip(&expected) {
                assert_eq!(key, ordered_key(x));
            }
            let least = expected.iter().copied().min().unwrap_or(u32::MAX);
            let greatest = expected.iter().copied().max().unwrap_or(0);
            assert_eq!(range, (least, greatest), "n = {n}");
            for isa in supported_tiers() {
                let mut mapped = vec![u32::MAX - 1; n];
                let tier_range = (kernels(Tier::new(isa).unwrap()).map_block)(&keys, &mut mapped);
                assert_eq!(mapped, expected, "{isa}, n = {n}");
                assert_eq!(tier_range, range, "{isa}, n = {n}");
            }
        }
    }

    #[test]
    fn every_tier_scans_like_the_portable_code() {
        let mut state = 7u64;
        let mut histogram = [0u32; 1 << 14];
        for (i, slot) in histogram.iter_mut().enumerate() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            // Mostly empty buckets, as in real histograms, whole groups of 16 empty buckets
            // (every third group), and some large counts.
            *slot = match state >> 61 {
                _ if (i / 16) % 3 == 1 => 0,
                0..=4 => 0,
                5 | 6 => (state >> 50) as u32 & 0xFF,
                _ => (state >> 40) as u32 & 0xF_FFFF,
            };
        }
        let mut expected = histogram;
        exclusive_prefix_sum_portable(&mut expected);
        assert_eq!(expected[0], 0);
        // Against plain running sums: offsets for non-empty buckets, zero for empty ones.
        let mut sum = 0;
        for (&count, &offset) in histogram.iter().zip(&expected) {
            assert_eq!(offset, if count == 0 { 0 } else { sum });
            sum += count;
        }
        for isa in supported_tiers() {
            // Every histogram length of both layouts, and a live range of the top one.
            for len in [1 << 9, 1 << 10, 1 << 12, 1 << 14, SCAN_GROUP] {
                let mut scanned = histogram;
                (kernels(Tier::new(isa).unwrap()).prefix_sum)(&mut scanned[..len]);
                let mut expected = histogram;
                exclusive_prefix_sum_portable(&mut expected[..len]);
                assert!(scanned == expected, "{isa}, {len} counters");
            }
        }
    }
}
