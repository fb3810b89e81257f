//! Each query's running result across the SMYRF rounds and the §8 blocks (design §1 step 6):
//! its output row, normalised, and the (max, sum) pair of its softmax so far, whose
//! log-sum-exp `max + ln(sum)` is taken once, at the end. Keeping the pair instead of the
//! log-sum-exp makes a merge cost one exp and no logarithm per row.

use crate::attention::{AttentionKernels, RowResult};
use crate::call::SharedSlice;

/// The (max, sum) pairs of one head's queries, shared by the tasks that merge into them.
pub(crate) struct Running<'a> {
    max: SharedSlice<'a>,
    sum: SharedSlice<'a>,
}

impl<'a> Running<'a> {
    /// Pairs over `max` and `sum` (one entry per query, same length), reset to "nothing
    /// merged yet": (−∞, 0).
    pub(crate) fn new(max: &'a mut [f32], sum: &'a mut [f32]) -> Running<'a> {
        assert_eq!(max.len(), sum.len(), "Running extents");
        max.fill(f32::NEG_INFINITY);
        sum.fill(0.0);
        Running {
            max: SharedSlice::new(max),
            sum: SharedSlice::new(sum),
        }
    }

    /// Merges `result` into query `qi`, whose output row is `row`. A result that saw no key
    /// (sum 0) contributes nothing; the first one that did is stored normalised (streamed
    /// when `stream` is set, see `ScaleStoreFn`), so `row` need not hold anything before;
    /// later ones go through the tier's merge.
    ///
    /// # Safety
    /// No other thread may use entry `qi` at the same time.
    #[inline(always)]
    pub(crate) unsafe fn merge(
        &self,
        kern: &AttentionKernels,
        qi: usize,
        row: &mut [f32],
        result: RowResult<'_>,
        stream: bool,
    ) {
        if result.sum == 0.0 {
            return;
        }
        // SAFETY: entry qi is this caller's alone (the contract).
        let (max, sum) = unsafe { (&mut self.max.range(qi, 1)[0], &mut self.sum.range(qi, 1)[0]) };
        if *max == f32::NEG_INFINITY {
            (kern.scale_store)(row, result.acc, result.inv_sum(), stream);
            (*max, *sum) = (result.max, result.sum);
        } else {
            (kern.merge)(row, max, sum, result.acc, result.max, result.sum);
        }
    }
}

/// `lse[i] = max[i] + ln(sum[i])`: −∞ for a query nothing reached.
pub(crate) fn log_sum_exp(max: &[f32], sum: &[f32], lse: &mut [f32]) {
    for ((lse, &max), &sum) in lse.iter_mut().zip(max).zip(sum) {
        *lse = max + sum.ln();
    }
}
