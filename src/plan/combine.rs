//! Each query's running result across the SMYRF rounds and the §8 blocks (design §1 step 6):
//! its output row, normalised, and the (max, sum) pair of its softmax so far, whose
//! log-sum-exp `max + ln(sum)` is taken once, at the end. Keeping the pair instead of the
//! log-sum-exp makes a merge cost one exp and no logarithm per row.

pub(crate) use crate::attention::merge::{merge_row, merge_sink};
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

    /// Stores `result` as query `qi`'s first: its row `acc / sum` (streamed when `stream` is
    /// set, see `ScaleStoreFn`) and its (max, sum), whatever it holds. A result that saw no
    /// key gives the row NaN (0/0, as dense attention does) and leaves the pair empty, so a
    /// later result replaces it whole. The first round of the cluster pipeline stores every
    /// row this way: no output row is left as the caller's buffer held it.
    ///
    /// # Safety
    /// No other thread may use entry `qi` at the same time.
    #[inline(always)]
    pub(crate) unsafe fn store(
        &self,
        kern: &AttentionKernels,
        qi: usize,
        row: &mut [f32],
        result: RowResult<'_>,
        stream: bool,
    ) {
        (kern.scale_store)(row, result.acc, result.inv_sum(), stream);
        // SAFETY: entry qi is this caller's alone (the contract).
        unsafe {
            self.max.set(qi, result.max);
            self.sum.set(qi, result.sum);
        }
    }

    /// Merges `result` into query `qi`, whose output row is `row`. A result that saw no key
    /// (sum 0) contributes nothing; the first one that did is stored ([`Running::store`]),
    /// so `row` need not hold anything before; later ones go through the tier's merge.
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
    ) {
        if result.sum == 0.0 {
            return;
        }
        // SAFETY: entry qi is this caller's alone (the contract); the references end before
        // `store` takes the entry again.
        unsafe {
            let (max, sum) = (&mut self.max.range(qi, 1)[0], &mut self.sum.range(qi, 1)[0]);
            if *max != f32::NEG_INFINITY {
                merge_row(kern, row, max, sum, result.acc, result.max, result.sum);
                return;
            }
            self.store(kern, qi, row, result, false);
        }
    }
}

/// `lse[i] = max[i] + ln(sum[i])`: −∞ for a query nothing reached.
pub(crate) fn log_sum_exp(max: &[f32], sum: &[f32], lse: &mut [f32]) {
    for ((lse, &max), &sum) in lse.iter_mut().zip(max).zip(sum) {
        *lse = max + sum.ln();
    }
}
