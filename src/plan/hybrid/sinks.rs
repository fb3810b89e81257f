//! Design §8 sink keys of a (batch, kv-head): the first valid positions, or the first one
//! and the valid keys best aligned with the mean query of the kv-head's query heads.

use super::{HeadBlocks, HybridScratch};
use crate::config::SinkSelection;
use crate::runtime::buffer::Buf;
use crate::sort::ordered_key;

impl HeadBlocks<'_> {
    /// Design §8 sinks: the first valid position and, per the selection, the next ones or
    /// the keys best aligned with the mean query; sorted by position.
    /// The query heads of one key/value head share the selection: a task that runs them one
    /// after the other selects once.
    pub(super) fn select_sinks(&self, s: &mut HybridScratch) {
        let kv_head = (self.b, self.h / self.group);
        if s.sinks_of == Some(kv_head) {
            return;
        }
        s.sinks_of = Some(kv_head);
        let valid = self.valid;
        let n = self.config.n_sinks.min(valid.len());
        s.sinks.clear();
        s.is_sink.clear();
        s.is_sink.resize(self.nk, false);
        if n == 0 {
            return;
        }
        match self.config.sink_selection {
            SinkSelection::First => s.sinks.extend_from_slice(&valid[..n]),
            SinkSelection::MeanQuery => {
                s.sinks.push(valid[0]);
                if n > 1 {
                    self.mean_query(&mut s.mean_query, &mut s.row);
                    let (mean, row) = (&s.mean_query, &mut s.row);
                    // One u64 per key: the score mapped to the sort's order-preserving
                    // integer (every NaN above +∞), inverted so that ascending keys are
                    // descending scores, then the position: a total order (ties go to the
                    // lower position), so the choice is deterministic and the selection
                    // compares integers.
                    s.scores.clear();
                    s.scores.extend(valid[1..].iter().map(|&j| {
                        let score = match self.k.row_f32(j as usize) {
                            Some(key) => dot(key, mean),
                            None => {
                                self.loads.convert.load(self.k.row(j as usize), row);
                                dot(row, mean)
                            }
                        };
                        (u64::from(!ordered_key(score)) << 32) | u64::from(j)
                    }));
                    let take = n - 1;
                    if take < s.scores.len() {
                        s.scores.select_nth_unstable(take);
                    }
                    s.sinks
                        .extend(s.scores[..take].iter().map(|&key| key as u32));
                    s.sinks.sort_unstable();
                }
            }
        }
        for &j in &s.sinks {
            s.is_sink[j as usize] = true;
        }
    }

    /// Mean of every query of the query heads that share this key/value head.
    fn mean_query(&self, mean: &mut Buf<f32>, row: &mut Buf<f32>) {
        let d = self.q.dim;
        mean.clear();
        mean.resize(d, 0.0);
        row.resize(d, 0.0);
        let first = self.h / self.group * self.group;
        for head in first..first + self.group {
            let rows = self.q_view.head_rows(self.b, head);
            for i in 0..self.nq {
                let query = match rows.row_f32(i) {
                    Some(query) => query,
                    None => {
                        self.loads.convert.load(rows.row(i), row);
                        &row[..]
                    }
                };
                for (m, &x) in mean.iter_mut().zip(query) {
                    *m += x;
                }
            }
        }
        let inv = 1.0 / (self.group * self.nq) as f32;
        for m in mean.iter_mut() {
            *m *= inv;
        }
    }
}

/// Dot product with eight partial sums, so it vectorises (a fixed order: deterministic).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for t in 0..8 {
            acc[t] += x[t] * y[t];
        }
    }
    acc.iter().sum::<f32>() + tail
}
