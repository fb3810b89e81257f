//! AVX-512F attention kernels: Q·Kᵀ in 12 × 32 register tiles (24 accumulators; per step
//! 2 loads of Kᵀ and 12 broadcasts feed 24 FMAs), P·V in 6 × 64 tiles (24 accumulators; a
//! 64-wide tile covers dv = 64 whole, so each P element is broadcast once and V streams from
//! L1); both shapes measured faster than 8 × 32 (docs/perf-notes.md). Calls of fewer than 24 queries take 8-row Q·Kᵀ tiles (fewer edge rows), and
//! value rows narrower than 64 (dv ≤ 48) 8 × 32 P·V tiles.
super::generic::attention_tier!(
    crate::simd::Avx512,
    [target_feature(enable = "avx512f,avx2,fma")],
    qk: (12, 2, qk_avx512_12x32, short: 8),
    pv: (6, 4, pv_avx512_6x64, narrow: (8, 2))
);

/// Writes the 16 × 16 block `rows[r][t0..t0 + 16]` transposed: coordinate t0 + c of the 16
/// rows lands in `dst[c·ldk..c·ldk + 16]`, in row order (the Kᵀ tile layout, see
/// `super::gather_keys`).
///
/// # Panics
/// If a row is shorter than t0 + 16 or `dst` shorter than 15·ldk + 16.
pub(crate) fn transpose16(rows: &[&[f32]; 16], t0: usize, dst: &mut [f32], ldk: usize) {
    assert!(
        rows.iter().all(|row| row.len() >= t0 + 16),
        "transpose16 rows"
    );
    assert!(dst.len() >= 15 * ldk + 16, "transpose16 destination");
    // SAFETY: extents asserted above; this table entry is only reachable for a CPU with
    // AVX-512F (`Isa::is_supported`, checked when the plan or call resolves its tier).
    unsafe { transpose16_impl(rows, t0, dst, ldk) }
}

#[target_feature(enable = "avx512f")]
unsafe fn transpose16_impl(rows: &[&[f32]; 16], t0: usize, dst: &mut [f32], ldk: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller checked that every row has 16 values from t0 and that `dst` holds
    // 16 rows of 16 values at stride ldk; unaligned loads and stores are allowed.
    unsafe {
        let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(rows[i].as_ptr().add(t0)));
        // Within each 128-bit lane k: pairs of rows interleaved by element, then by pairs, so
        // u[4g + c] holds rows 4g..4g+4 of columns c, c + 4, c + 8, c + 12 (lane k: 4k + c).
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let (a, b, c, d) = (r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]);
            let t0 = _mm512_castps_pd(_mm512_unpacklo_ps(a, b));
            let t1 = _mm512_castps_pd(_mm512_unpackhi_ps(a, b));
            let t2 = _mm512_castps_pd(_mm512_unpacklo_ps(c, d));
            let t3 = _mm512_castps_pd(_mm512_unpackhi_ps(c, d));
            u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
            u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
            u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
            u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
        }
        // Lanes 0 and 2 (0x88) or 1 and 3 (0xDD) of two row groups: v[8h + c] holds columns
        // c and c + 8 of rows 8h..8h+8, v[8h + 4 + c] columns c + 4 and c + 12.
        let mut v = [_mm512_setzero_ps(); 16];
        for h in 0..2 {
            for c in 0..4 {
                let (a, b) = (u[8 * h + c], u[8 * h + 4 + c]);
                v[8 * h + c] = _mm512_shuffle_f32x4::<0x88>(a, b);
                v[8 * h + 4 + c] = _mm512_shuffle_f32x4::<0xDD>(a, b);
            }
        }
        // Rows 0–7 and 8–15 joined: column c and column c + 8 of all 16 rows.
        let out = dst.as_mut_ptr();
        for c in 0..8 {
            let (a, b) = (v[c], v[8 + c]);
            _mm512_storeu_ps(out.add(c * ldk), _mm512_shuffle_f32x4::<0x88>(a, b));
            _mm512_storeu_ps(out.add((c + 8) * ldk), _mm512_shuffle_f32x4::<0xDD>(a, b));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn transpose16_moves_every_element() {
        if !crate::isa::Isa::Avx512.is_supported() {
            return;
        }
        let (d, ldk) = (37, 48);
        let rows: Vec<Vec<f32>> = (0..16)
            .map(|r| (0..d).map(|t| (r * 1000 + t) as f32).collect())
            .collect();
        let refs: [&[f32]; 16] = std::array::from_fn(|r| rows[r].as_slice());
        for t0 in [0, 5, d - 16] {
            let mut dst = vec![-1.0f32; 16 * ldk + 3];
            super::transpose16(&refs, t0, &mut dst[3..], ldk);
            for c in 0..16 {
                for r in 0..16 {
                    assert_eq!(dst[3 + c * ldk + r], rows[r][t0 + c], "t0={t0} c={c} r={r}");
                }
                // Nothing written between the 16-value runs.
                if c < 15 {
                    assert!(dst[3 + c * ldk + 16..3 + (c + 1) * ldk]
                        .iter()
                        .all(|&x| x == -1.0));
                }
            }
        }
    }
}
