//! Software prefetch of scattered rows (a no-op off x86-64), and the queue of lines that the
//! attention kernels prefetch while they compute.
//!
//! A row of `dim` f32 rarely starts on a cache line: an f32 buffer from `malloc` or a `Vec`
//! is 16-byte aligned, so a 256-byte row (d = 64) spans five lines, not four. Every line of
//! the row is prefetched; leaving out the last one costs a demand miss per gathered row.

use super::arena::Arena;
use super::buffer::Buf;

/// `_MM_HINT_T0`: into every cache level.
pub(crate) const HINT_L1: i32 = 3;
/// `_MM_HINT_T1`: into L2 and beyond.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const HINT_L2: i32 = 2;

#[cfg(target_arch = "x86_64")]
const _: () =
    assert!(HINT_L1 == std::arch::x86_64::_MM_HINT_T0 && HINT_L2 == std::arch::x86_64::_MM_HINT_T1);

/// Most lines queued at once: a cluster of 256 queries and 256 keys with rows of 64 f32 (5
/// lines each, unaligned). Further lines of larger clusters are left to the gathers: by then
/// the L2 (2 MiB here) holds a good share of what the queue already fetched.
const QUEUE_LINES: usize = 5 * 4 * 256;

/// Most lines prefetched for one row: every line of a row of up to 128 f32 (512 bytes) at any
/// alignment. Longer rows get their first lines only, as a hint.
const MAX_LINES: usize = 9;

/// Hints the CPU to fetch every cache line holding the `bytes` bytes from `start` (at most
/// `MAX_LINES` lines) with locality hint `HINT` ([`HINT_L1`] or [`HINT_L2`]).
///
/// Never dereferences `start`: addresses are only formed with wrapping arithmetic, and a
/// prefetch never faults, so any pointer is allowed.
#[inline(always)]
pub(crate) fn prefetch_span<const HINT: i32>(start: *const u8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let first = start.cast::<i8>();
        let skew = first.addr() % 64;
        let line_start = first.wrapping_sub(skew);
        for line in 0..lines_spanned(skew, bytes) {
            // SAFETY: `_mm_prefetch` is SSE (baseline on x86-64), never faults and changes
            // nothing visible, whatever the address.
            unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(line_start.wrapping_add(line * 64)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, bytes);
}

/// Hints the CPU to fetch the cache line at address `addr` into L2.
#[inline(always)]
fn prefetch_line_l2(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` is SSE (baseline on x86-64), never faults and changes nothing
    // visible, whatever the address; the pointer carries no provenance and is never read.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<HINT_L2>(std::ptr::without_provenance(addr))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Cache lines to fetch into L2 in the background: the pipeline queues the next cluster's
/// rows (every line of each, see [`prefetch_span`]) and the register tiles of the current
/// cluster's kernels issue one prefetch every [`LineQueue::interval`] steps of their inner
/// loop, so the fetches overlap the arithmetic instead of stalling in a burst.
///
/// A burst of prefetches (the whole next cluster before each cluster) stalls once the core's
/// dozen or so outstanding-miss slots are taken, and nothing else runs meanwhile; spread
/// through the kernels, each prefetch finds a free slot while the FMAs run. Dense attention
/// queues nothing and runs the kernels' plain variant.
///
/// The interval follows the cluster's arithmetic per queued line: about two kernel steps
/// per line at c = 128 (d = dv = 64, AVX-512) take one line every 4 steps, one step per line
/// (c = 64) every 2, fewer (c = 32) every step; what the kernels leave is issued after the
/// cluster. The intervals were chosen by measurement (docs/perf-notes.md).
///
/// The queue is part of the tile scratch a plan owns (one per concurrently running cluster)
/// and is handed to the kernels as an argument.
#[derive(Default)]
pub(crate) struct LineQueue {
    /// Line addresses (numbers, never dereferenced).
    lines: Buf<usize>,
    /// The next line to prefetch.
    next: usize,
    /// Kernel steps per issued line, less one (a power of two less one, used as a mask).
    mask: usize,
}

impl LineQueue {
    /// A queue carved from a workspace: room for `QUEUE_LINES` where the kernels prefetch
    /// (x86-64) and `used` says the call refills the queue, none otherwise.
    pub(crate) fn carve(arena: &mut Arena<'_>, used: bool) -> LineQueue {
        let lines = if used && cfg!(target_arch = "x86_64") {
            QUEUE_LINES
        } else {
            0
        };
        LineQueue {
            lines: arena.buf(lines),
            next: 0,
            mask: 0,
        }
    }

    /// Replaces the queue by the lines `fill` pushes with [`LineQueue::push_span`] (up to
    /// `QUEUE_LINES`; room for them is reserved once, so refills never allocate); off
    /// x86-64, where nothing is prefetched, leaves it empty. `kernel_steps` is about how many
    /// register-tile steps the kernels will run while the queue drains: it sets the issue
    /// interval.
    pub(crate) fn refill(&mut self, kernel_steps: usize, fill: impl FnOnce(&mut LineQueue)) {
        self.lines.clear();
        self.next = 0;
        if cfg!(target_arch = "x86_64") {
            self.lines.reserve_exact(QUEUE_LINES);
            fill(self);
        }
        self.mask = issue_interval(kernel_steps, self.lines.len()) - 1;
    }

    /// Kernel steps between two issued lines (a power of two).
    #[cfg(test)]
    fn interval(&self) -> usize {
        self.mask + 1
    }

    /// True at the steps `t` of a register tile's loop that issue a line.
    #[inline(always)]
    pub(crate) fn issues_at(&self, t: usize) -> bool {
        t & self.mask == 0
    }

    /// Queues every line holding the `bytes` bytes from `start` (up to `MAX_LINES`), while
    /// the queue has room.
    pub(crate) fn push_span(&mut self, start: *const u8, bytes: usize) {
        let first = start.addr();
        let line_start = first - first % 64;
        for line in 0..lines_spanned(first % 64, bytes) {
            if self.lines.len() == QUEUE_LINES {
                return;
            }
            self.lines.push(line_start.wrapping_add(line * 64));
        }
    }

    /// True while lines remain to be prefetched.
    #[inline(always)]
    pub(crate) fn is_pending(&self) -> bool {
        self.next < self.lines.len()
    }

    /// Prefetches the next queued line, if any.
    #[inline(always)]
    pub(crate) fn issue_next(&mut self) {
        if let Some(&addr) = self.lines.get(self.next) {
            self.next += 1;
            prefetch_line_l2(addr);
        }
    }

    /// Prefetches every line still queued (what the kernels did not get to).
    pub(crate) fn drain(&mut self) {
        while self.is_pending() {
            self.issue_next();
        }
    }
}

/// The issue interval for `lines` queued lines over `kernel_steps` steps: the largest power of
/// two up to twice the steps per line, from 1 to 8 (see [`LineQueue`]).
fn issue_interval(kernel_steps: usize, lines: usize) -> usize {
    let twice_ratio = (2 * kernel_steps) / lines.max(1);
    match twice_ratio {
        0..=1 => 1,
        2..=3 => 2,
        4..=7 => 4,
        _ => 8,
    }
}

/// Bytes of one thread's queue.
pub(crate) const QUEUE_BYTES: usize = QUEUE_LINES * std::mem::size_of::<usize>();

/// Lines to prefetch for `bytes` bytes starting `skew` bytes into a cache line.
#[inline(always)]
fn lines_spanned(skew: usize, bytes: usize) -> usize {
    if bytes == 0 {
        return 0;
    }
    ((skew + bytes - 1) / 64 + 1).min(MAX_LINES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_the_row_is_counted() {
        // A 256-byte row: four lines when aligned, five from any other f32 offset.
        assert_eq!(lines_spanned(0, 256), 4);
        for skew in (4..64).step_by(4) {
            assert_eq!(lines_spanned(skew, 256), 5, "skew {skew}");
        }
        // Short rows inside one line or across two; nothing for an empty row.
        assert_eq!(lines_spanned(0, 64), 1);
        assert_eq!(lines_spanned(60, 4), 1);
        assert_eq!(lines_spanned(60, 8), 2);
        assert_eq!(lines_spanned(12, 0), 0);
        // Against a line-by-line count, up to the cap.
        for skew in (0..64).step_by(4) {
            for len in 1..200 {
                let last_byte = skew + 4 * len - 1;
                let exact = last_byte / 64 + 1;
                assert_eq!(lines_spanned(skew, 4 * len), exact.min(MAX_LINES));
            }
        }
    }

    #[test]
    fn the_queue_holds_every_line_of_each_row_up_to_its_capacity() {
        let data = vec![0.0f32; 64 * 2000 + 16];
        let row = |i: usize| data[4 + 64 * i..].as_ptr().cast::<u8>(); // 16 bytes into a line: 5 lines
        let mut queue = LineQueue::default();
        queue.refill(60, |queue| {
            for i in 0..3 {
                queue.push_span(row(i), 256);
            }
        });
        if cfg!(target_arch = "x86_64") {
            assert_eq!(queue.lines.len(), 15);
            // Consecutive lines of each row, from the line holding its first value.
            let first = row(0).addr() / 64 * 64;
            assert_eq!(queue.lines[..5], [0, 64, 128, 192, 256].map(|o| first + o));
            assert!(queue.is_pending());
            // 60 steps for 15 lines: one line every 8 steps at most, here every 8.
            assert_eq!(queue.interval(), 8);
        } else {
            assert!(queue.lines.is_empty());
        }
        queue.drain();
        assert!(!queue.is_pending());

        // Capped: more rows than fit leave the queue exactly full, with no reallocation.
        queue.refill(0, |queue| {
            let capacity = queue.lines.capacity();
            for i in 0..2000 {
                queue.push_span(row(i), 256);
            }
            assert_eq!(queue.lines.capacity(), capacity);
        });
        if cfg!(target_arch = "x86_64") {
            assert_eq!(queue.lines.len(), QUEUE_LINES);
        }
    }

    #[test]
    fn the_interval_follows_the_steps_per_line() {
        // Two steps per line (c = 128) → 4, one (c = 64) → 2, half (c = 32) → 1, capped at 8.
        assert_eq!(issue_interval(5461, 2560), 4);
        assert_eq!(issue_interval(1365, 1280), 2);
        assert_eq!(issue_interval(341, 640), 1);
        assert_eq!(issue_interval(1 << 20, 100), 8);
        assert_eq!(issue_interval(100, 0), 8);
        assert_eq!(issue_interval(0, 100), 1);
    }

    #[test]
    fn any_pointer_is_accepted() {
        // A prefetch never faults: unaligned, long, null and dangling rows all run.
        let data = [1.0f32; 300];
        for offset in 0..16 {
            prefetch_span::<HINT_L1>(data[offset..].as_ptr().cast(), 256);
            prefetch_span::<HINT_L2>(data[offset..].as_ptr().cast(), 4 * (300 - offset));
        }
        prefetch_span::<HINT_L2>(std::ptr::null(), 256);
        prefetch_span::<HINT_L2>(std::ptr::dangling(), 256);
        assert_eq!(data.iter().sum::<f32>(), 300.0);
    }
}
