//! Q·Kᵀ of bf16 queries and keys with AVX-512 BF16's `vdpbf16ps`: each instruction takes 16
//! key lanes × 2 coordinates, twice the multiply-adds of an f32 FMA per register, from
//! tiles of half the bytes. Products of two bf16 are exact in f32; the instruction adds each
//! lane's pair and its accumulator in its own order and flushes subnormals, so results are
//! within 1e-5 of the f64 value, not the bits of the widened f32 path
//! (`Config::bf16_exact` selects that path instead).
//!
//! Tile layout: Q is `m × dp` bf16 (dp = d rounded up to even, zero padded), row-major; Kᵀ
//! is `dp / 2` rows of `2·ldk` bf16, row p holding `(k_j[2p], k_j[2p + 1])` for every key j
//! in order, zero padded to `ldk` keys (a multiple of 16).

use crate::runtime::prefetch::LineQueue;
use crate::simd::Tier;
use std::sync::atomic::{AtomicBool, Ordering};

/// `s[i·ldk + j] = scale · Σ_t q[i·dp + t]·k_j[t]` for i < m, j < ldk, from the tiles above.
pub(crate) type QkBf16Fn = fn(
    q: &[u16],
    kt: &[u16],
    m: usize,
    dp: usize,
    ldk: usize,
    scale: f32,
    s: &mut [f32],
    queue: &mut LineQueue,
);

/// Set by [`force`]: the kernel wherever the CPU has it, paying or not.
static FORCED: AtomicBool = AtomicBool::new(false);

/// The bf16 dot-product kernel, on an AVX-512 tier whose CPU has AVX-512 BF16 and where it
/// pays: where `vdpbf16ps` issues at least at two thirds of the rate of an f32 FMA, so its
/// two products per lane beat the FMA's one. Some cores that have it issue it at a quarter
/// of the FMA rate (docs/perf-notes.md), where the widened f32 path is faster; the rates are
/// measured once per process ([`x86::pays`]).
pub(crate) fn kernel(tier: Tier) -> Option<QkBf16Fn> {
    #[cfg(target_arch = "x86_64")]
    if tier.isa() == crate::isa::Isa::Avx512
        && std::arch::is_x86_feature_detected!("avx512bf16")
        && (FORCED.load(Ordering::Relaxed) || x86::pays())
    {
        return Some(x86::qk_bf16_avx512_8x32);
    }
    let _ = tier;
    None
}

/// Plans made from now on use the kernel wherever the CPU has it, whether it pays or not (for
/// the tests of the kernel on every CPU that has it).
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub(crate) fn force() {
    FORCED.store(true, Ordering::Relaxed);
}

/// Whether the kernel pays on this CPU (`None` where the CPU lacks it).
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub(crate) fn pays() -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16")
    {
        return Some(x86::pays());
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LineQueue;
    use std::arch::x86_64::*;

    /// Rows per register tile: 8 × 2 accumulators, 2 Kᵀ loads and a broadcast per step.
    const MR: usize = 8;

    /// Whether `vdpbf16ps` issues at two thirds of the f32 FMA rate or more: the best of five
    /// alternating timings of independent chains of each, measured once per process (about
    /// 0.1 ms). The two rates differ by 4× between the cores measured (docs/perf-notes.md), so
    /// timing noise does not move the answer. Call only where AVX-512F and AVX-512 BF16
    /// were detected.
    pub(super) fn pays() -> bool {
        static PAYS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *PAYS.get_or_init(|| {
            let time = |run: fn(usize) -> f32| {
                let start = std::time::Instant::now();
                std::hint::black_box(run(std::hint::black_box(2048)));
                start.elapsed()
            };
            let (mut fma, mut dot) = (std::time::Duration::MAX, std::time::Duration::MAX);
            for _ in 0..5 {
                fma = fma.min(time(fma_chains));
                dot = dot.min(time(dot_chains));
            }
            dot.as_secs_f64() <= 1.5 * fma.as_secs_f64()
        })
    }

    /// `steps` rounds of 8 independent f32 FMAs.
    fn fma_chains(steps: usize) -> f32 {
        #[target_feature(enable = "avx512f")]
        fn run(steps: usize) -> f32 {
            let (a, b) = (_mm512_set1_ps(0.5), _mm512_set1_ps(0.25));
            let mut acc = [_mm512_setzero_ps(); 8];
            for _ in 0..steps {
                for x in &mut acc {
                    *x = _mm512_fmadd_ps(a, b, *x);
                }
            }
            acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
        }
        // SAFETY: called only where AVX-512F was detected (`pays`'s contract).
        unsafe { run(steps) }
    }

    /// `steps` rounds of 8 independent `vdpbf16ps`.
    fn dot_chains(steps: usize) -> f32 {
        #[target_feature(enable = "avx512f,avx512bf16")]
        fn run(steps: usize) -> f32 {
            // SAFETY: (transmute) `__m512bh` is 512 bits of bf16 pairs, any pattern valid.
            let a: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi32(0x3f00_3e80)) };
            let mut acc = [_mm512_setzero_ps(); 8];
            for _ in 0..steps {
                for x in &mut acc {
                    *x = _mm512_dpbf16_ps(*x, a, a);
                }
            }
            acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
        }
        // SAFETY: called only where AVX-512F and AVX-512 BF16 were detected.
        unsafe { run(steps) }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn qk_bf16_avx512_8x32(
        q: &[u16],
        kt: &[u16],
        m: usize,
        dp: usize,
        ldk: usize,
        scale: f32,
        s: &mut [f32],
        queue: &mut LineQueue,
    ) {
        assert!(
            dp.is_multiple_of(2)
                && ldk.is_multiple_of(16)
                && q.len() >= m * dp
                && kt.len() >= dp / 2 * 2 * ldk
                && s.len() >= m * ldk,
            "qk_bf16 extents"
        );
        // The kernel issues none of the queued lines; the P·V kernel that follows does.
        let _ = queue;
        // SAFETY: extents asserted above; reachable only through `super::kernel`, which
        // hands it out for a CPU with AVX-512F and AVX-512 BF16.
        unsafe { qk_impl(q.as_ptr(), kt.as_ptr(), m, dp, ldk, scale, s.as_mut_ptr()) }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn qk_impl(
        q: *const u16,
        kt: *const u16,
        m: usize,
        dp: usize,
        ldk: usize,
        scale: f32,
        s: *mut f32,
    ) {
        // SAFETY: (every tile) rows i..i+R ≤ m and key columns j..j+16W ≤ ldk by the loop
        // bounds; the caller checked the tiles' extents.
        unsafe {
            let mut j = 0;
            while j + 32 <= ldk {
                rows::<2>(q, kt, m, dp, ldk, scale, s, j);
                j += 32;
            }
            if j < ldk {
                rows::<1>(q, kt, m, dp, ldk, scale, s, j);
            }
        }
    }

    /// Every row of the key columns j..j+16W: MR-row tiles, then 4-, 2- and 1-row ones.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows<const W: usize>(
        q: *const u16,
        kt: *const u16,
        m: usize,
        dp: usize,
        ldk: usize,
        scale: f32,
        s: *mut f32,
        j: usize,
    ) {
        let mut i = 0;
        // SAFETY: the caller's extents, rows bounded by the loops.
        unsafe {
            while i + MR <= m {
                tile::<MR, W>(q, kt, i, dp, ldk, scale, s, j);
                i += MR;
            }
            if i + 4 <= m {
                tile::<4, W>(q, kt, i, dp, ldk, scale, s, j);
                i += 4;
            }
            if i + 2 <= m {
                tile::<2, W>(q, kt, i, dp, ldk, scale, s, j);
                i += 2;
            }
            if i < m {
                tile::<1, W>(q, kt, i, dp, ldk, scale, s, j);
            }
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const W: usize>(
        q: *const u16,
        kt: *const u16,
        i0: usize,
        dp: usize,
        ldk: usize,
        scale: f32,
        s: *mut f32,
        j0: usize,
    ) {
        // SAFETY: rows i0..i0+R of Q hold dp values; Kᵀ rows p < dp/2 hold 2·ldk values, of
        // which columns 2·j0 .. 2·(j0 + 16W) are read; S rows hold ldk values.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); W]; R];
            for p in 0..dp / 2 {
                let row = kt.add(p * 2 * ldk + 2 * j0);
                let b: [__m512bh; W] = std::array::from_fn(|w| {
                    std::mem::transmute(_mm512_loadu_si512(row.add(32 * w).cast()))
                });
                for (r, lane) in acc.iter_mut().enumerate() {
                    // One (q[2p], q[2p + 1]) pair in every 32-bit lane.
                    let pair = q.add((i0 + r) * dp + 2 * p).cast::<i32>().read_unaligned();
                    let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                    for (x, &bw) in lane.iter_mut().zip(&b) {
                        *x = _mm512_dpbf16_ps(*x, a, bw);
                    }
                }
            }
            let scale = _mm512_set1_ps(scale);
            for (r, lane) in acc.iter().enumerate() {
                for (w, &x) in lane.iter().enumerate() {
                    _mm512_storeu_ps(s.add((i0 + r) * ldk + j0 + 16 * w), _mm512_mul_ps(x, scale));
                }
            }
        }
    }
}
