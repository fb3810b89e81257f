//! Helpers shared by the fuzz targets: a reader that turns the fuzzer's bytes into sizes,
//! choices and floats. Once the bytes run out every read returns zero, so any input, the
//! empty one included, decodes to some case: the fuzzer only ever explores, never fails to
//! parse.

/// The fuzzer's bytes, read front to back.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    /// The next byte, or 0 when the input is used up.
    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&first, rest)) => {
                self.bytes = rest;
                first
            }
            None => 0,
        }
    }

    pub fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// True with probability `n`/256, and false once the input is used up, so that short
    /// inputs take the common paths.
    pub fn rare(&mut self, n: u8) -> bool {
        self.byte() > u8::MAX - n
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }

    /// A value in `lo..=hi` (small ranges only: one byte decides it).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        debug_assert!(lo <= hi && hi - lo < 256);
        lo + self.byte() as usize % (hi - lo + 1)
    }

    /// One of `choices`.
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.byte() as usize % choices.len()]
    }

    /// Any f32 bit pattern: NaNs, infinities, subnormals and both zeros included.
    pub fn raw_f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }

    /// A small finite value, a multiple of 1/32 in [-4, 4).
    pub fn small_f32(&mut self) -> f32 {
        (self.byte() as i8) as f32 / 32.0
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Deterministic filler for buffers longer than the fuzzer's input: a multiplicative hash of
/// the index, mapped to a small finite value in [-1, 1].
pub fn filler(i: usize, salt: u32) -> f32 {
    let mut x = (i as u32)
        .wrapping_mul(2_654_435_761)
        .wrapping_add(salt.wrapping_mul(40_503));
    x ^= x >> 15;
    (x % 2001) as f32 / 1000.0 - 1.0
}
