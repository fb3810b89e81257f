//! Bitwise comparison of f32 results: "the same" means the same bits, NaN payloads and the
//! sign of zero included.

/// Equal lengths and the same bits everywhere (NaN payloads included).
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The bit patterns of `x`, for comparing results with `assert_eq!`.
pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|x| x.to_bits()).collect()
}
