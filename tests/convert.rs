//! The f16 and bf16 conversion kernels of every tier this CPU has, against references
//! written here from the formats' definitions: a pattern's value decoded in f64, and
//! narrowing as the nearest value on the ladder of all representable values, the tie going
//! to the even pattern. The `half` crate is a second reference on non-NaN values. Every tier
//! also equals the portable tier bit for bit on every length up to 70 at several slice
//! offsets, and writes nothing outside its output.

mod common;
use common::Rng;
use smyrf::internals::{convert as cv, supported_tiers};
use smyrf::{Error, Isa};

/// A 16-bit float format: sign, `exponent_bits`, `mantissa_bits`, IEEE-style encoding.
#[derive(Clone, Copy, Debug)]
struct Format {
    name: &'static str,
    exponent_bits: u32,
    mantissa_bits: u32,
}

const F16: Format = Format {
    name: "f16",
    exponent_bits: 5,
    mantissa_bits: 10,
};
const BF16: Format = Format {
    name: "bf16",
    exponent_bits: 8,
    mantissa_bits: 7,
};

/// 2^k exactly, for k in f64's normal range.
fn pow2(k: i32) -> f64 {
    assert!((-1022..=1023).contains(&k));
    f64::from_bits(((k + 1023) as u64) << 52)
}

impl Format {
    fn bias(self) -> i32 {
        (1 << (self.exponent_bits - 1)) - 1
    }
    fn exponent_mask(self) -> u32 {
        (1 << self.exponent_bits) - 1
    }
    fn mantissa_mask(self) -> u32 {
        (1 << self.mantissa_bits) - 1
    }
    fn exponent(self, b: u16) -> u32 {
        (u32::from(b) >> self.mantissa_bits) & self.exponent_mask()
    }
    fn mantissa(self, b: u16) -> u32 {
        u32::from(b) & self.mantissa_mask()
    }
    fn quiet_bit(self) -> u16 {
        1 << (self.mantissa_bits - 1)
    }
    /// The pattern of +∞.
    fn infinity(self) -> u16 {
        (self.exponent_mask() << self.mantissa_bits) as u16
    }
    fn is_nan(self, b: u16) -> bool {
        self.exponent(b) == self.exponent_mask() && self.mantissa(b) != 0
    }
    /// The magnitude of a pattern read as finite: subnormal below exponent 1, normal from
    /// there, the exponent of ∞ included (the next power of two past the greatest value).
    fn magnitude(self, b: u16) -> f64 {
        let (e, m) = (self.exponent(b) as i32, f64::from(self.mantissa(b)));
        let scale = 1 - self.bias() - self.mantissa_bits as i32;
        if e == 0 {
            m * pow2(scale)
        } else {
            (pow2(self.mantissa_bits as i32) + m) * pow2(e - 1 + scale)
        }
    }
    /// The value of a non-NaN pattern.
    fn value(self, b: u16) -> f64 {
        assert!(!self.is_nan(b));
        let magnitude = if b & 0x7fff == self.infinity() {
            f64::INFINITY
        } else {
            self.magnitude(b & 0x7fff)
        };
        if b & 0x8000 != 0 {
            -magnitude
        } else {
            magnitude
        }
    }
    /// Every non-negative finite value in pattern order (increasing), then where ∞ stands
    /// for rounding: the pattern of ∞ read as a normal value.
    fn ladder(self) -> Vec<f64> {
        (0..=self.infinity()).map(|b| self.magnitude(b)).collect()
    }
}

/// The reference narrowing of `x`: the nearest rung of `ladder`, the tie to the even pattern,
/// past the last finite rung ∞; a NaN keeps its sign and its top payload bits, quiet.
fn narrow_reference(format: Format, ladder: &[f64], x: f32) -> u16 {
    let sign = ((x.to_bits() >> 16) & 0x8000) as u16;
    if x.is_nan() {
        let payload = (x.to_bits() & 0x7f_ffff) >> (23 - format.mantissa_bits);
        return sign | format.infinity() | format.quiet_bit() | payload as u16;
    }
    let a = f64::from(x).abs();
    let above = ladder.partition_point(|&v| v <= a);
    if above == ladder.len() {
        return sign | format.infinity();
    }
    let below = above - 1;
    // The midpoint of two rungs is exact in f64, and so is the comparison.
    let midpoint = (ladder[below] + ladder[above]) / 2.0;
    let pick = if a < midpoint {
        below
    } else if a > midpoint || below % 2 == 1 {
        above
    } else {
        below
    };
    sign | pick as u16
}

fn widen(format: Format, isa: Isa, src: &[u16], dst: &mut [f32]) -> Result<(), Error> {
    match format.name {
        "f16" => cv::widen_f16(isa, src, dst),
        _ => cv::widen_bf16(isa, src, dst),
    }
}

fn narrow(format: Format, isa: Isa, src: &[f32], dst: &mut [u16]) -> Result<(), Error> {
    match format.name {
        "f16" => cv::narrow_f16(isa, src, dst),
        _ => cv::narrow_bf16(isa, src, dst),
    }
}

/// The `half` crate's narrowing, the second reference.
fn narrow_half(format: Format, x: f32) -> u16 {
    match format.name {
        "f16" => half::f16::from_f32(x).to_bits(),
        _ => half::bf16::from_f32(x).to_bits(),
    }
}

/// Fails with the first few differences between `got` and `want`, if any.
fn assert_same<T: PartialEq + std::fmt::LowerHex>(
    what: &str,
    inputs: &[impl std::fmt::LowerHex],
    got: &[T],
    want: &[T],
) {
    assert_eq!(got.len(), want.len());
    let bad: Vec<usize> = (0..got.len()).filter(|&i| got[i] != want[i]).collect();
    let shown: Vec<String> = bad
        .iter()
        .take(8)
        .map(|&i| {
            format!(
                "input {:#x}: got {:#x}, want {:#x}",
                inputs[i], got[i], want[i]
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} differ:\n{}",
        bad.len(),
        got.len(),
        shown.join("\n")
    );
}

/// Every tier narrows `inputs` as the reference does, and as `half` does on non-NaN values.
fn check_narrow(format: Format, inputs: &[f32], what: &str) {
    let ladder = format.ladder();
    let want: Vec<u16> = inputs
        .iter()
        .map(|&x| narrow_reference(format, &ladder, x))
        .collect();
    let bits: Vec<u32> = inputs.iter().map(|x| x.to_bits()).collect();
    let finite: Vec<usize> = (0..inputs.len()).filter(|&i| !inputs[i].is_nan()).collect();
    let by_half: Vec<u16> = finite
        .iter()
        .map(|&i| narrow_half(format, inputs[i]))
        .collect();
    let finite_bits: Vec<u32> = finite.iter().map(|&i| bits[i]).collect();
    let finite_want: Vec<u16> = finite.iter().map(|&i| want[i]).collect();
    assert_same(
        &format!(
            "{what}: the half crate against the reference ({})",
            format.name
        ),
        &finite_bits,
        &by_half,
        &finite_want,
    );
    for isa in supported_tiers() {
        let mut got = vec![0u16; inputs.len()];
        narrow(format, isa, inputs, &mut got).unwrap();
        assert_same(
            &format!("{what}: narrow {} on {isa}", format.name),
            &bits,
            &got,
            &want,
        );
    }
}

/// A tier `SMYRF_REQUIRE` names must be one the tests loop over, or they pass untested.
#[test]
fn required_tiers_are_present() {
    for isa in [Isa::Avx2, Isa::Avx512, Isa::Neon] {
        if !isa.is_supported() {
            common::require::unavailable(isa.name(), "this CPU lacks the tier");
        }
    }
}

/// The references agree with the formats' landmarks, so they can judge the kernels.
#[test]
fn references_know_the_formats() {
    assert_eq!(F16.value(0x3c00), 1.0);
    assert_eq!(F16.value(0x7bff), 65504.0);
    assert_eq!(F16.value(0x0001), pow2(-24));
    assert_eq!(F16.value(0x0400), pow2(-14));
    assert_eq!(F16.value(0xfc00), f64::NEG_INFINITY);
    assert_eq!(BF16.value(0x3f80), 1.0);
    assert_eq!(BF16.value(0x0001), pow2(-133));
    assert_eq!(BF16.value(0x7f7f), 255.0 * pow2(120));
    let (f16_ladder, bf16_ladder) = (F16.ladder(), BF16.ladder());
    assert_eq!(*f16_ladder.last().unwrap(), 65536.0);
    assert_eq!(*bf16_ladder.last().unwrap(), pow2(128));
    assert!(f16_ladder.windows(2).all(|w| w[0] < w[1]));
    assert!(bf16_ladder.windows(2).all(|w| w[0] < w[1]));
    let f16 = |x: f32| narrow_reference(F16, &f16_ladder, x);
    assert_eq!(f16(65519.996), 0x7bff);
    assert_eq!(f16(65520.0), 0x7c00);
    assert_eq!(f16(-65520.0), 0xfc00);
    assert_eq!(f16(pow2(-25) as f32), 0x0000);
    assert_eq!(f16(-(pow2(-25) as f32)), 0x8000);
    assert_eq!(f16(1.5 * pow2(-24) as f32), 0x0002);
    assert_eq!(f16(f32::from_bits(0x7f80_0001)), 0x7e00);
    assert_eq!(f16(f32::from_bits(0xffc0_2000)), 0xfe01);
    let bf16 = |x: f32| narrow_reference(BF16, &bf16_ladder, x);
    assert_eq!(bf16(f32::MAX), 0x7f80);
    assert_eq!(bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
    assert_eq!(bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
    assert_eq!(bf16(f32::from_bits(0x0000_8001)), 0x0001);
    assert_eq!(bf16(f32::from_bits(0xff80_0001)), 0xffc0);
}

/// All 65,536 f16 patterns: the exact value; a NaN stays a NaN of its sign, quiet, with
/// its payload in the top mantissa bits.
#[test]
fn widen_f16_every_pattern() {
    let src: Vec<u16> = (0..=u16::MAX).collect();
    for isa in supported_tiers() {
        let mut got = vec![0f32; src.len()];
        widen(F16, isa, &src, &mut got).unwrap();
        for (&b, &y) in src.iter().zip(&got) {
            let y = y.to_bits();
            if F16.is_nan(b) {
                assert!(f32::from_bits(y).is_nan(), "{isa}: {b:#06x} → {y:#010x}");
                assert_eq!(y >> 31, u32::from(b >> 15), "{isa}: sign of {b:#06x}");
                assert_ne!(y & 0x0040_0000, 0, "{isa}: {b:#06x} → {y:#010x} not quiet");
                assert_eq!(
                    (y >> 13) & 0x1ff,
                    u32::from(b) & 0x1ff,
                    "{isa}: payload of {b:#06x} → {y:#010x}"
                );
            } else {
                let want = (F16.value(b) as f32).to_bits();
                assert_eq!(y, want, "{isa}: {b:#06x}");
                assert_eq!(y, half::f16::from_bits(b).to_f32().to_bits(), "{isa}: half");
            }
        }
    }
}

/// All 65,536 bf16 patterns: `bits << 16`, which is the exact value for non-NaNs.
#[test]
fn widen_bf16_every_pattern() {
    let src: Vec<u16> = (0..=u16::MAX).collect();
    for isa in supported_tiers() {
        let mut got = vec![0f32; src.len()];
        widen(BF16, isa, &src, &mut got).unwrap();
        for (&b, &y) in src.iter().zip(&got) {
            let y = y.to_bits();
            assert_eq!(y, u32::from(b) << 16, "{isa}: {b:#06x}");
            if !BF16.is_nan(b) {
                assert_eq!(y, (BF16.value(b) as f32).to_bits(), "{isa}: {b:#06x}");
            }
        }
    }
}

/// Every finite pattern, both signs, widened and narrowed again comes back unchanged.
#[test]
fn narrow_round_trips_every_finite_value() {
    for format in [F16, BF16] {
        let patterns: Vec<u16> = (0..=u16::MAX).filter(|&b| !format.is_nan(b)).collect();
        let values: Vec<f32> = patterns.iter().map(|&b| format.value(b) as f32).collect();
        check_narrow(format, &values, "round trip");
        for isa in supported_tiers() {
            let mut got = vec![0u16; values.len()];
            narrow(format, isa, &values, &mut got).unwrap();
            assert_same(
                &format!("round trip {} on {isa}", format.name),
                &patterns,
                &got,
                &patterns,
            );
        }
    }
}

/// Every midpoint between neighbouring values (∞ standing past the greatest), and its f32
/// neighbours above and below, both signs: the tie goes to the even pattern, the
/// neighbours to the nearer value.
#[test]
fn narrow_midpoints_and_their_neighbours() {
    for format in [F16, BF16] {
        let ladder = format.ladder();
        let mut inputs = Vec::new();
        for (low, pair) in ladder.windows(2).enumerate() {
            let midpoint = (pair[0] + pair[1]) / 2.0;
            let m = midpoint as f32;
            assert_eq!(
                f64::from(m),
                midpoint,
                "{}: midpoint not in f32",
                format.name
            );
            let (below, above) = (
                f32::from_bits(m.to_bits() - 1),
                f32::from_bits(m.to_bits() + 1),
            );
            // What the reference must say, checked from the ladder's own order.
            let even = if low % 2 == 0 { low } else { low + 1 } as u16;
            let reference = |x: f32| narrow_reference(format, &ladder, x);
            assert_eq!(reference(m), even, "{}: tie at {m:e}", format.name);
            assert_eq!(reference(below), low as u16, "{}: below {m:e}", format.name);
            assert_eq!(
                reference(above),
                low as u16 + 1,
                "{}: above {m:e}",
                format.name
            );
            for x in [m, below, above] {
                inputs.extend([x, -x]);
            }
        }
        check_narrow(format, &inputs, "midpoints");
    }
}

/// The overflow thresholds and the special values, given with the patterns they must become.
#[test]
fn narrow_thresholds_and_specials() {
    let f16_cases: &[(u32, u16)] = &[
        (0x477f_e000, 0x7bff), // 65504, the greatest f16
        (0x477f_efff, 0x7bff), // just below 65520
        (0x477f_f000, 0x7c00), // 65520: the tie goes to the even ∞
        (0x477f_f001, 0x7c00),
        (0x4780_0000, 0x7c00), // 2^16
        (0x7f7f_ffff, 0x7c00), // f32::MAX
        (0xc77f_f000, 0xfc00),
        (0x7f80_0000, 0x7c00), // ±∞
        (0xff80_0000, 0xfc00),
        (0x0000_0000, 0x0000), // ±0
        (0x8000_0000, 0x8000),
        (0x0000_0001, 0x0000), // f32 subnormals: below 2^-25
        (0x807f_ffff, 0x8000),
        (0x3880_0000, 0x0400), // 2^-14, the least normal
        (0x387f_c000, 0x03ff), // the greatest subnormal
        (0x387f_f000, 0x0400), // rounds up into the normals
        (0x3380_0000, 0x0001), // 2^-24
        (0x3300_0000, 0x0000), // 2^-25: the tie goes to 0
        (0x3300_0001, 0x0001),
        (0xb300_0001, 0x8001),
    ];
    let bf16_cases: &[(u32, u16)] = &[
        (0x7f7f_0000, 0x7f7f), // the greatest bf16
        (0x7f7f_7fff, 0x7f7f),
        (0x7f7f_8000, 0x7f80), // the tie goes to the even ∞
        (0x7f7f_ffff, 0x7f80), // f32::MAX
        (0xff7f_8000, 0xff80),
        (0x7f80_0000, 0x7f80),
        (0xff80_0000, 0xff80),
        (0x0000_0000, 0x0000),
        (0x8000_0000, 0x8000),
        (0x0000_8000, 0x0000), // the tie between 0 and the least subnormal
        (0x0000_8001, 0x0001), // subnormals are kept, not flushed
        (0x0001_8000, 0x0002),
        (0x807f_ffff, 0x8080), // the greatest f32 subnormal rounds to the least normal
    ];
    for (format, cases) in [(F16, f16_cases), (BF16, bf16_cases)] {
        let inputs: Vec<f32> = cases.iter().map(|&(x, _)| f32::from_bits(x)).collect();
        let want: Vec<u16> = cases.iter().map(|&(_, b)| b).collect();
        let bits: Vec<u32> = cases.iter().map(|&(x, _)| x).collect();
        check_narrow(format, &inputs, "thresholds");
        for isa in supported_tiers() {
            let mut got = vec![0u16; inputs.len()];
            narrow(format, isa, &inputs, &mut got).unwrap();
            assert_same(
                &format!("thresholds {} on {isa}", format.name),
                &bits,
                &got,
                &want,
            );
        }
    }
}

/// NaNs, signalling and quiet, both signs, many payloads: a quiet NaN of the same sign with
/// the top payload bits, never ∞.
#[test]
fn narrow_nans() {
    let mut rng = Rng(0x5eed_4a4e);
    let mut inputs: Vec<f32> = [
        0x7f80_0001u32,
        0x7f80_1fff,
        0x7f80_2000,
        0x7f80_ffff,
        0x7f81_0000,
        0x7fa0_0000,
        0x7fbf_ffff,
        0x7fc0_0000,
        0x7fc0_0001,
        0x7fe0_0000,
        0x7fff_ffff,
    ]
    .iter()
    .flat_map(|&b| [f32::from_bits(b), f32::from_bits(b | 0x8000_0000)])
    .collect();
    for _ in 0..4096 {
        let payload = (rng.next_u32() & 0x7f_ffff).max(1);
        let sign = rng.next_u32() & 0x8000_0000;
        inputs.push(f32::from_bits(sign | 0x7f80_0000 | payload));
    }
    for format in [F16, BF16] {
        check_narrow(format, &inputs, "NaNs");
        for isa in supported_tiers() {
            let mut got = vec![0u16; inputs.len()];
            narrow(format, isa, &inputs, &mut got).unwrap();
            for (&x, &b) in inputs.iter().zip(&got) {
                let what = format!("{} on {isa}: {:#010x} → {b:#06x}", format.name, x.to_bits());
                assert!(format.is_nan(b), "{what}: not a NaN");
                assert_ne!(b & format.quiet_bit(), 0, "{what}: not quiet");
                assert_eq!(u32::from(b >> 15), x.to_bits() >> 31, "{what}: sign");
            }
        }
    }
}

/// The f32 values whose narrowing lands in or near the target's subnormal range, on a
/// mantissa grid: f32 exponents 100 to 114 for f16 (values from 2^-27 up to 2^-12), and
/// the f32 subnormals and the two lowest normal binades for bf16.
#[test]
fn narrow_subnormal_range() {
    for (format, exponents, stride) in [(F16, 100u32..=114, 113u32), (BF16, 0..=2, 29)] {
        let mut inputs = Vec::new();
        for e in exponents {
            for m in (0..0x80_0000).step_by(stride as usize) {
                let x = f32::from_bits((e << 23) | m);
                inputs.extend([x, -x]);
            }
        }
        check_narrow(format, &inputs, "subnormal range");
    }
}

/// About a million uniformly random f32 bit patterns (every binade, NaNs included).
#[test]
fn narrow_random_patterns() {
    let mut rng = Rng(0xc041_7e27);
    let inputs: Vec<f32> = (0..1 << 20)
        .map(|_| f32::from_bits(rng.next_u32()))
        .collect();
    for format in [F16, BF16] {
        check_narrow(format, &inputs, "random patterns");
    }
}

/// Values for the length and offset sweep: random patterns, specials and near-ties.
fn sweep_values(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| match rng.below(4) {
            0 => f32::from_bits(rng.next_u32()),
            1 => [
                0.0,
                -0.0,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                65520.0,
                1e-8,
            ][rng.below(7)],
            // Near an f16 or bf16 tie: few low bits set.
            2 => f32::from_bits((rng.next_u32() & 0xffff_e000) | [0x1000, 0x8000, 0][rng.below(3)]),
            _ => rng.symmetric(70000.0),
        })
        .collect()
}

/// Lengths 0 to 70 at several slice offsets: every tier equals the portable tier bit for
/// bit and leaves the rest of the buffer alone, for all four conversions.
#[test]
fn every_tier_equals_portable_on_every_length_and_offset() {
    const GUARD: usize = 9;
    const SENTINEL_16: u16 = 0xa5a5;
    const SENTINEL_32: u32 = 0xdead_beef;
    let mut rng = Rng(70);
    for len in 0..=70 {
        for offset in [0, 1, 2, 3, 5, 8] {
            let half_src: Vec<u16> = (0..offset + len).map(|_| rng.next_u32() as u16).collect();
            let float_src = sweep_values(&mut rng, offset + len);
            let half_src = &half_src[offset..];
            let float_src = &float_src[offset..];
            let run_widen = |format: Format, isa: Isa| {
                let mut buf = vec![f32::from_bits(SENTINEL_32); offset + len + GUARD];
                widen(format, isa, half_src, &mut buf[offset..offset + len]).unwrap();
                buf.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()
            };
            let run_narrow = |format: Format, isa: Isa| {
                let mut buf = vec![SENTINEL_16; offset + len + GUARD];
                narrow(format, isa, float_src, &mut buf[offset..offset + len]).unwrap();
                buf
            };
            for format in [F16, BF16] {
                let widened = run_widen(format, Isa::Portable);
                let narrowed = run_narrow(format, Isa::Portable);
                let outside = |i: usize| i < offset || i >= offset + len;
                assert!((0..widened.len())
                    .filter(|&i| outside(i))
                    .all(|i| widened[i] == SENTINEL_32 && narrowed[i] == SENTINEL_16));
                for isa in supported_tiers() {
                    let what = format!("{} on {isa}, length {len}, offset {offset}", format.name);
                    assert_eq!(run_widen(format, isa), widened, "widen {what}");
                    assert_eq!(run_narrow(format, isa), narrowed, "narrow {what}");
                }
            }
        }
    }
}

/// A tier the CPU lacks is refused, and nothing is written.
#[test]
fn a_missing_tier_is_refused() {
    for isa in Isa::ALL.into_iter().filter(|isa| !isa.is_supported()) {
        let (halves, floats) = ([0x3c00u16; 5], [1.0f32; 5]);
        let (mut wide, mut narrowed) = ([7.0f32; 5], [7u16; 5]);
        let refused = Error::UnsupportedIsa { isa };
        assert_eq!(cv::widen_f16(isa, &halves, &mut wide), Err(refused.clone()));
        assert_eq!(
            cv::widen_bf16(isa, &halves, &mut wide),
            Err(refused.clone())
        );
        assert_eq!(
            cv::narrow_f16(isa, &floats, &mut narrowed),
            Err(refused.clone())
        );
        assert_eq!(cv::narrow_bf16(isa, &floats, &mut narrowed), Err(refused));
        assert_eq!((wide, narrowed), ([7.0; 5], [7; 5]), "{isa} wrote");
    }
}

/// Unequal lengths are a caller bug: every tier's kernel panics.
#[test]
fn unequal_lengths_panic() {
    for isa in supported_tiers() {
        for format in [F16, BF16] {
            let widened = std::panic::catch_unwind(|| {
                widen(format, isa, &[0; 17], &mut [0.0; 16]).unwrap();
            });
            let narrowed = std::panic::catch_unwind(|| {
                narrow(format, isa, &[0.0; 16], &mut [0; 17]).unwrap();
            });
            assert!(
                widened.is_err() && narrowed.is_err(),
                "{} on {isa}",
                format.name
            );
        }
    }
}
