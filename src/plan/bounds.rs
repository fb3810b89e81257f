//! Key-block bounds (design §8, causal form): each block's element-wise minimum and maximum
//! key, kept as bf16 rounded outward (the minimum down, the maximum up), so they stay bounds
//! at a quarter of an f32 pair's size; the prefill and the decode index hold the same bits.
//! A query scores a block by the upper bound of its logits there.

use crate::attention::AttentionKernels;

/// The bf16 bits of +∞, the minimum of a block without keys.
pub(crate) const BF16_INF: u16 = 0x7f80;
/// The bf16 bits of −∞, the maximum of a block without keys.
pub(crate) const BF16_NEG_INF: u16 = 0xff80;

/// The largest bf16 at or below `x` (NaN stays a NaN).
#[inline(always)]
pub(crate) fn bf16_down(x: f32) -> u16 {
    let bits = x.to_bits();
    let top = (bits >> 16) as u16;
    // Truncation moves toward zero: down for positives, up for negatives with dropped bits.
    if bits & 0xffff != 0 && x < 0.0 {
        top + 1
    } else {
        top
    }
}

/// The smallest bf16 at or above `x` (NaN stays a NaN).
#[inline(always)]
pub(crate) fn bf16_up(x: f32) -> u16 {
    let bits = x.to_bits();
    let top = (bits >> 16) as u16;
    if bits & 0xffff != 0 && x > 0.0 {
        top + 1
    } else {
        top
    }
}

/// The f32 value of bf16 bits (exact).
#[inline(always)]
pub(crate) fn bf16_value(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Folds key component `x` into a block's bounds `(lower, upper)`; a NaN changes nothing.
#[inline(always)]
pub(crate) fn widen_bounds(lower: &mut u16, upper: &mut u16, x: f32) {
    let (down, up) = (bf16_down(x), bf16_up(x));
    if bf16_value(down) < bf16_value(*lower) {
        *lower = down;
    }
    if bf16_value(up) > bf16_value(*upper) {
        *upper = up;
    }
}

/// `scores[β] = Σ_t s_t · (s_t ≥ 0 ? max_t[β] : min_t[β])` for β in `0..scores.len()`, the
/// upper bound of the logits of query `s` in block β: component t of block β is
/// `lower[t·stride + β]`, `upper[t·stride + β]`. Summed in increasing t, each product rounded
/// before its addition, so every tier gives the same bits.
pub(crate) fn bound_scores(
    kern: &AttentionKernels,
    query: &[f32],
    lower: &[u16],
    upper: &[u16],
    stride: usize,
    scores: &mut [f32],
) {
    scores.fill(0.0);
    // Blocks in chunks whose scores stay in L1 across the components.
    for c0 in (0..scores.len()).step_by(SCORE_CHUNK) {
        let n = SCORE_CHUNK.min(scores.len() - c0);
        let scores = &mut scores[c0..c0 + n];
        for (t, &qt) in query.iter().enumerate() {
            // The larger of s_t·min_t and s_t·max_t, without computing both.
            let side = if qt >= 0.0 { upper } else { lower };
            let at = t * stride + c0;
            (kern.add_scaled)(scores, &side[at..at + n], qt);
        }
    }
}

/// Blocks scored at a time: 4 KiB of scores.
const SCORE_CHUNK: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outward_rounding_brackets_the_value() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = f32::from_bits(state as u32);
            if !x.is_finite() {
                continue;
            }
            let (down, up) = (bf16_value(bf16_down(x)), bf16_value(bf16_up(x)));
            assert!(down <= x && x <= up, "{x:e}: [{down:e}, {up:e}]");
            // Adjacent bf16 values, or x itself.
            let gap = (i32::from(bf16_up(x)) - i32::from(bf16_down(x))).abs();
            assert!(gap <= 1, "{x:e}");
        }
        assert_eq!(bf16_value(bf16_up(f32::MAX)), f32::INFINITY);
        assert_eq!(bf16_value(bf16_down(-f32::MAX)), f32::NEG_INFINITY);
        assert_eq!(bf16_down(1.0), bf16_up(1.0));
    }
}
