//! The one driver of every vector tier's conversions: the tier's step over whole chunks of
//! `LANES` values, then the same step on a zero-padded copy of the tail, so every length
//! and any slice start run the step the exhaustive tests check.

/// One conversion of a tier: `LANES` values from `src` to `dst` per call.
pub(super) trait Step {
    type Src: Copy + Default;
    type Dst: Copy + Default;
    /// Values per step, at most [`MAX_LANES`].
    const LANES: usize;
    /// Converts `src[..LANES]` into `dst[..LANES]`.
    ///
    /// # Safety
    /// `src` is readable and `dst` writable for `LANES` values (any alignment), and the
    /// calling code enables the step's target features, which the CPU has.
    unsafe fn step(src: *const Self::Src, dst: *mut Self::Dst);
}

/// The widest step of any tier: the size of the tail's buffers.
pub(super) const MAX_LANES: usize = 16;

/// `dst[i] = S(src[i])` for every i; panics unless the lengths are equal.
///
/// # Safety
/// The calling code enables the target features of `S`, which the CPU has.
#[inline(always)]
pub(super) unsafe fn convert<S: Step>(src: &[S::Src], dst: &mut [S::Dst]) {
    const { assert!(S::LANES >= 1 && S::LANES <= MAX_LANES) };
    assert_eq!(src.len(), dst.len(), "conversion: length mismatch");
    let whole = src.len() - src.len() % S::LANES;
    let (src_body, src_tail) = src.split_at(whole);
    let (dst_body, dst_tail) = dst.split_at_mut(whole);
    for (s, d) in src_body
        .chunks_exact(S::LANES)
        .zip(dst_body.chunks_exact_mut(S::LANES))
    {
        // SAFETY: both chunks hold LANES values; the features are the caller's promise.
        unsafe { S::step(s.as_ptr(), d.as_mut_ptr()) }
    }
    if !src_tail.is_empty() {
        let mut s = [S::Src::default(); MAX_LANES];
        let mut d = [S::Dst::default(); MAX_LANES];
        s[..src_tail.len()].copy_from_slice(src_tail);
        // SAFETY: both buffers hold MAX_LANES ≥ LANES values; the features as above.
        unsafe { S::step(s.as_ptr(), d.as_mut_ptr()) }
        dst_tail.copy_from_slice(&d[..src_tail.len()]);
    }
}

/// Table entries `name: Step` of one tier: a `#[target_feature]` instance of [`convert`]
/// per step behind a safe function. Only the tier's kernel table refers to them, and
/// `super::kernels` hands that table out for a detected [`crate::simd::Tier`] only (and,
/// for steps needing F16C, only where F16C was detected).
macro_rules! convert_entries {
    ($features:literal, $($name:ident: $step:ty),+ $(,)?) => {$(
        pub(super) fn $name(
            src: &[<$step as super::generic::Step>::Src],
            dst: &mut [<$step as super::generic::Step>::Dst],
        ) {
            #[target_feature(enable = $features)]
            fn instance(
                src: &[<$step as super::generic::Step>::Src],
                dst: &mut [<$step as super::generic::Step>::Dst],
            ) {
                // SAFETY: this function enables the step's features.
                unsafe { super::generic::convert::<$step>(src, dst) }
            }
            // SAFETY: reachable only through the tier's kernel table, handed out only where
            // the CPU has these features (see `convert_entries`).
            unsafe { instance(src, dst) }
        }
    )+};
}
pub(super) use convert_entries;
