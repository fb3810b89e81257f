//! The element types of the tensor views in tests: values of each from f32, and f32 data
//! rounded through one, which is what the f32 path must see to match a call on that type.

use half::{bf16, f16};
use smyrf::{DType, Element};

/// An element type made from f32 values (rounded to nearest even by `half`), with its value
/// as f32 and its bits.
pub trait Elem: Element + Default {
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn bits(self) -> u32;
}

impl Elem for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn bits(self) -> u32 {
        self.to_bits()
    }
}

impl Elem for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn bits(self) -> u32 {
        self.to_bits().into()
    }
}

impl Elem for bf16 {
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn bits(self) -> u32 {
        self.to_bits().into()
    }
}

/// `x` as a buffer of `T`.
pub fn to<T: Elem>(x: &[f32]) -> Vec<T> {
    x.iter().map(|&v| T::from_f32(v)).collect()
}

/// `x` rounded to `T` and back.
pub fn round_to<T: Element>(x: &[f32]) -> Vec<f32> {
    match T::DTYPE {
        DType::F32 => x.to_vec(),
        DType::F16 => x.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
        DType::Bf16 => x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect(),
        _ => unreachable!("a new element type needs a case here"),
    }
}
