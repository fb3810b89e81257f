//! The projection matrix is part of the contract (docs/design.md §1 step 3): the same seed
//! gives the same matrix, bit for bit, on every platform and in every release. These values
//! pin it; the suite also runs on aarch64 under qemu.

/// FNV-1a over the little-endian bytes of each value's bit pattern.
fn fnv1a(values: &[f32]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in values.iter().flat_map(|x| x.to_bits().to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[test]
fn small_matrices_are_pinned_value_by_value() {
    let cases: [(u64, [u32; 12]); 2] = [
        (
            0,
            [
                0xbe95ea50, 0xbf368f13, 0xbdd7b29f, 0xc01beed7, 0xbbdd1504, 0xbfa7095a, 0x3f97caca,
                0x3fa082ce, 0xbf21b0fe, 0xbea6aec2, 0xbf5c991e, 0xbff91e80,
            ],
        ),
        (
            12345,
            [
                0x3e38fa93, 0xbf477f83, 0xbfb411b5, 0xbf213817, 0xbed60e40, 0x3f2be50c, 0xbf935fd8,
                0x3f9aa49a, 0xbec8a237, 0x3f26c8bc, 0xbe0b9c3d, 0xbefce742,
            ],
        ),
    ];
    for (seed, expected) in cases {
        // (d + 2) × R = 6 × 2, row-major.
        let got: Vec<u32> = smyrf::gaussian_projections(seed, 4, 2)
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(got, expected, "seed {seed}");
    }
}

#[test]
fn large_matrices_are_pinned_by_hash() {
    // Large enough that the normal sampler takes its rare tail branches (|x| > 3).
    for (seed, d, rounds, expected) in [
        (7, 64, 8, 0x0bfb_f9b3_b0b0_a1a4u64),
        (1, 256, 16, 0xd117_b866_c86b_8c4d),
    ] {
        let a = smyrf::gaussian_projections(seed, d, rounds);
        assert_eq!(a.len(), (d + 2) * rounds);
        assert!(
            a.iter().any(|x| x.abs() > 3.0) || d < 256,
            "no tail value drawn"
        );
        assert_eq!(fnv1a(&a), expected, "seed {seed}, d {d}, R {rounds}");
    }
}

#[test]
fn a_plan_draws_the_pinned_matrix() {
    let plan = smyrf::Plan::new(smyrf::Config::default().seed(12345), 4).unwrap();
    assert_eq!(
        plan.projections(),
        &smyrf::gaussian_projections(12345, 4, 2)[..]
    );
}
