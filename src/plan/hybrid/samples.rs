//! Round 0 of the §8 pipeline: per group of consecutive queries of a round-0 cluster, one
//! attention call over the sinks, the cluster's keys and unbiased residual samples drawn from
//! the rest, deterministic for a seed whatever the thread count.

use super::window::drop_window_columns;
use super::{sample_group, FusedBlock, HeadBlocks, HybridScratch, SAMPLE_BATCH, SAMPLE_KEYS};
use crate::attention;
use crate::plan::combine::Running;
use crate::runtime::buffer::Buf;
use crate::runtime::threads::for_each_index_with;
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

impl HeadBlocks<'_> {
    /// Round 0 with the sinks and the residual samples (design §8): per group of
    /// `sample_group` consecutive queries of a round-0 cluster, `n_samples` keys drawn
    /// without replacement from the candidates outside that cluster, their logits raised by
    /// ln(n_eligible / n_drawn). Without samples a group is the whole cluster.
    pub(super) fn round_zero(&self, s: &mut HybridScratch, running: &Running<'_>) {
        let sampling = self.config.n_samples > 0;
        let group_size = if sampling {
            sample_group(self.config)
        } else {
            usize::MAX
        };
        self.build_round(0, group_size, s);
        s.block_keys.clear();
        s.blocks.clear();
        let groups = s.group_cluster.len();
        let (mut n, mut log_weight) = (0, 0.0);
        for g in 0..groups {
            let c = s.group_cluster[g];
            if sampling && (g == 0 || s.group_cluster[g - 1] != c) {
                // First group of cluster c: the keys its samples are drawn from.
                s.eligible.clear();
                let key_cluster = &s.key_cluster;
                s.eligible.extend(
                    s.candidates
                        .iter()
                        .copied()
                        .filter(|&j| key_cluster[j as usize] != c),
                );
                n = self.config.n_samples.min(s.eligible.len());
                log_weight = if n > 0 {
                    (s.eligible.len() as f64 / n as f64).ln() as f32
                } else {
                    0.0
                };
            }
            let k0 = s.block_keys.len();
            s.block_keys.extend_from_slice(&s.sinks);
            let k1 = s.block_keys.len();
            let c = c as usize;
            s.block_keys
                .extend_from_slice(&s.cluster_keys[s.cluster_bounds[c]..s.cluster_bounds[c + 1]]);
            let k2 = s.block_keys.len();
            if n > 0 {
                draw_samples_into(
                    sample_seed(self.config.seed, self.b, self.h, g),
                    &mut s.eligible,
                    n,
                    &mut s.swaps,
                    &mut s.block_keys,
                );
                // By position, so the hook finds each query's window as one run.
                s.block_keys[k2..].sort_unstable();
            }
            s.blocks.push(FusedBlock {
                group: g,
                k0,
                k1,
                k2,
                k3: s.block_keys.len(),
                log_weight,
                pad: 0,
            });
            if s.blocks.len() == SAMPLE_BATCH || s.block_keys.len() >= SAMPLE_KEYS {
                self.run_round_zero_batch(s, running);
                s.block_keys.clear();
                s.blocks.clear();
            }
        }
        self.run_round_zero_batch(s, running);
    }

    fn run_round_zero_batch(&self, s: &HybridScratch, running: &Running<'_>) {
        let (half, window) = (self.half(), self.config.window > 0);
        let selected = (self.config.n_selected > 0).then(|| s.selected());
        for_each_index_with(self.parallel, s.blocks.len(), self.tiles, |tiles, i| {
            let block = s.blocks[i];
            let keys = &s.block_keys[block.k0..block.k3];
            let g = block.group;
            let members = &s.group_members[s.group_bounds[g]..s.group_bounds[g + 1]];
            let adjust = |q_ids: &[u32], at: usize, k_ids: &[u32], s: &mut [f32], ldk: usize| {
                // `at`: where this key tile starts in `keys`, to split its columns into
                // sinks, cluster keys and samples.
                let n = k_ids.len();
                let local = |x: usize| (x - block.k0).saturating_sub(at).min(n);
                let (c0, c1) = (local(block.k1), local(block.k2));
                if block.log_weight != 0.0 && c1 < n {
                    for row in s.chunks_exact_mut(ldk) {
                        for x in &mut row[c1..n] {
                            *x += block.log_weight;
                        }
                    }
                }
                if window {
                    drop_window_columns(q_ids, &k_ids[c0..c1], c0, s, ldk, half);
                    drop_window_columns(q_ids, &k_ids[c1..n], c1, s, ldk, half);
                }
                if let Some(selected) = &selected {
                    selected.drop_columns(q_ids, &k_ids[c0..c1], c0, s, ldk);
                    selected.drop_columns(q_ids, &k_ids[c1..n], c1, s, ldk);
                }
            };
            let needs_hook = window || selected.is_some() || block.log_weight != 0.0;
            self.block(
                tiles,
                members,
                keys,
                needs_hook.then_some(&adjust as attention::TileAdjust<'_>),
                running,
            );
        });
    }
}

/// SplitMix64's finaliser: spreads every input bit over the output.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of the sample draw of one group: a hash of (seed, b, h, group) kept apart from the
/// projection stream of the same seed.
pub(crate) fn sample_seed(seed: u64, b: usize, h: usize, group: usize) -> u64 {
    const DOMAIN: u64 = 0x5A4D_5952_465F_5338; // "SMYRF_S8"
    let mut x = mix64(seed ^ DOMAIN);
    for part in [b, h, group] {
        x = mix64(x ^ part as u64);
    }
    x
}

/// Uniform integer in `[0, n)`, n ≥ 1, without bias (Lemire's multiply-and-reject).
fn below(rng: &mut Xoshiro256PlusPlus, n: u64) -> u64 {
    let mut m = rng.next_u64() as u128 * n as u128;
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u64) < threshold {
            m = rng.next_u64() as u128 * n as u128;
        }
    }
    (m >> 64) as u64
}

/// Appends `n ≤ eligible.len()` distinct entries of `eligible`, drawn uniformly without
/// replacement by a partial Fisher–Yates shuffle from Xoshiro256++ seeded with `seed`.
/// `eligible` is restored to its order afterwards (the swaps are undone), so every draw
/// depends only on its seed and the eligible list, never on earlier draws.
pub(crate) fn draw_samples_into(
    seed: u64,
    eligible: &mut [u32],
    n: usize,
    swaps: &mut Buf<u32>,
    out: &mut Buf<u32>,
) {
    let len = eligible.len();
    let n = n.min(len);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    swaps.clear();
    for t in 0..n {
        let j = t + below(&mut rng, (len - t) as u64) as usize;
        eligible.swap(t, j);
        swaps.push(j as u32);
    }
    out.extend_from_slice(&eligible[..n]);
    for (t, &j) in swaps.iter().enumerate().rev() {
        eligible.swap(t, j as usize);
    }
}
