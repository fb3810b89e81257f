//! Steps 1–3 of design §1 for one (batch, head): squared norms, M over the valid keys, and
//! the R hashes of every query and valid key with the XBOX+ lift folded in (never
//! materialised).

use super::{HeadScratch, Plan};
use crate::alsh;
use crate::runtime::profile::{timed, Stage, StageTimer};
use crate::runtime::threads::{join_if, Par};
use crate::view::Rows;

impl Plan {
    /// Fills `s.q_norms`, `s.k_norms` and `s.hashes` (`R × Nq` query hashes, then `R × n'`
    /// key hashes, round after round) for the `nq` queries of `q` and the `valid` keys of the
    /// `nk` of `k`. The two sides run on two threads when `split` is set.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hash_sides(
        &self,
        q: Rows<'_>,
        nq: usize,
        k: Rows<'_>,
        nk: usize,
        valid: &[u32],
        split: Par<'_>,
        s: &mut HeadScratch,
    ) {
        let (d, rounds, nv) = (q.dim, self.config.n_hashes, valid.len());
        // Every key valid (no mask, or a mask of ones): the list is the identity, and the
        // kernel's contiguous-row path skips the index lookups.
        let key_ids = (nv < nk).then_some(valid);
        // Stage timers run inside the closures that may go to another thread, so that each
        // thread's time is counted.
        s.q_norms.resize(nq, 0.0);
        s.k_norms.resize(nv, 0.0);
        s.hashes.resize(rounds * (nq + nv), 0.0);
        let (q_hashes, k_hashes) = s.hashes.split_at_mut(rounds * nq);
        let a_t = &self.projections_t[..];
        let (project, cvt) = (self.alsh.project, self.loads.convert);
        let (q_norms, k_norms) = (&mut s.q_norms, &mut s.k_norms);
        let (q_stage, k_stage) = (&mut s.q_stage, &mut s.k_stage);
        join_if(
            split,
            || {
                timed(Stage::Projection, || {
                    alsh::project_rows(project, cvt, q, None, a_t, q_norms, q_hashes, q_stage)
                })
            },
            || {
                timed(Stage::Projection, || {
                    alsh::project_rows(project, cvt, k, key_ids, a_t, k_norms, k_hashes, k_stage)
                })
            },
        );
        let lift = StageTimer::start(Stage::Projection);
        let max_of = |xs: &[f32]| xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let m = max_of(&s.q_norms) + max_of(&s.k_norms);
        let width = d + 2;
        let lift_q = alsh::lift_column(alsh::Side::Query, d);
        let lift_k = alsh::lift_column(alsh::Side::Key, d);
        alsh::apply_lift(q_hashes, &s.q_norms, m, a_t, width, lift_q);
        alsh::apply_lift(k_hashes, &s.k_norms, m, a_t, width, lift_k);
        drop(lift);
    }
}
