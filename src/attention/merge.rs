//! The softmax merge arithmetic shared by the SMYRF round combine and dense attention: two
//! partial softmaxes kept as (max, sum) pairs, and a head sink joining a final result.

use super::exp::exp_nonpositive;
use super::AttentionKernels;

/// The weights of a round merge (the pipeline's `merge_row`): with top = max(run_max, max),
/// a = run_sum·e^(run_max − top), b = sum·e^(max − top) and total = a + b, returns
/// (a / total, e^(max − top) / total, top, total): the weight of the running row, the weight
/// of the unnormalised `acc`, and the merged (max, sum). One of the two exponentials is
/// e^0 = 1 and is not computed. `None` when neither max is finite (or one is NaN and the
/// other −∞): the row is left as it is.
#[inline(always)]
pub(crate) fn merge_weights(
    run_max: f32,
    run_sum: f32,
    max: f32,
    sum: f32,
) -> Option<(f32, f32, f32, f32)> {
    let top = run_max.max(max);
    if top == f32::NEG_INFINITY || top.is_nan() {
        return None;
    }
    let (e_old, e_new) = if run_max >= max {
        (1.0, exp_nonpositive(max - top))
    } else {
        (exp_nonpositive(run_max - top), 1.0)
    };
    let total = run_sum * e_old + sum * e_new;
    Some((run_sum * e_old / total, e_new / total, top, total))
}

/// The round merge (design §1 step 6): the log-sum-exp merge of a round's result into a
/// query's running result, kept as a (max, sum) pair (log-sum-exp `run_max + ln(run_sum)`),
/// with the round's result as its unnormalised row `acc` and its softmax's `max` and `sum`
/// (output `acc / sum`): `row = row·w_old + acc·w_new` by the tier's [`BlendFn`](super::BlendFn), one exp
/// and no logarithm per row. Rows with no finite max on either side are left as they are.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn merge_row(
    kern: &AttentionKernels,
    row: &mut [f32],
    run_max: &mut f32,
    run_sum: &mut f32,
    acc: &[f32],
    max: f32,
    sum: f32,
) {
    assert_eq!(row.len(), acc.len(), "merge extents");
    let Some((w_old, w_new, top, total)) = merge_weights(*run_max, *run_sum, max, sum) else {
        return;
    };
    (kern.blend)(row, acc, w_old, w_new);
    (*run_max, *run_sum) = (top, total);
}

/// Merges a head sink, a logit with no value, into a query's final result: the row is scaled
/// by the share of the softmax mass that is not the sink's, e^(lse − lse'), and the pair
/// becomes lse' = log(e^lse + e^sink). A query without keys keeps its zero row and gets
/// lse' = sink. −∞ is no sink. Plain f32 products: the same bits on every tier.
pub(crate) fn merge_sink(row: &mut [f32], run_max: &mut f32, run_sum: &mut f32, sink: f32) {
    if sink == f32::NEG_INFINITY {
        return;
    }
    if *run_sum == 0.0 {
        (*run_max, *run_sum) = (sink, 1.0);
        return;
    }
    let Some((w_old, _, top, total)) = merge_weights(*run_max, *run_sum, sink, 1.0) else {
        return;
    };
    for x in row.iter_mut() {
        *x *= w_old;
    }
    (*run_max, *run_sum) = (top, total);
}
