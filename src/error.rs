//! The typed error of every fallible call (design §2). Nothing is written to the output when
//! an error is returned.

use crate::isa::Isa;
use std::fmt;

/// Why a call was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// A size that must be positive is zero (`what` names it).
    ZeroSize { what: &'static str },
    /// Two sizes that must agree do not.
    ShapeMismatch {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    /// `batch · heads · seq_len · dim` (or an offset computed from strides) overflows `isize`.
    SizeOverflow { what: &'static str },
    /// The strides of a view reach past the end of its buffer.
    OutOfBounds {
        what: &'static str,
        needed: usize,
        len: usize,
    },
    /// Rows of an output view overlap, so writes would alias.
    OverlappingOutput,
    /// The query heads are not a multiple of the key/value heads.
    HeadsNotDivisible { q_heads: usize, kv_heads: usize },
    /// A configuration field has an invalid value.
    InvalidConfig {
        field: &'static str,
        reason: &'static str,
    },
    /// A caller-supplied projection matrix has the wrong length.
    ProjectionLength { expected: usize, found: usize },
    /// The head dimension of the call differs from the plan's.
    HeadDimMismatch { plan: usize, found: usize },
    /// The requested instruction-set tier is not available on this CPU.
    UnsupportedIsa { isa: Isa },
    /// `SMYRF_ISA` names no known tier.
    UnknownIsa { name: String },
    /// A buffer could not be allocated or a thread pool could not be built.
    OutOfMemory { what: &'static str },
    /// `config.window` (design §8) needs self-attention: as many queries as keys.
    WindowNeedsSelfAttention { nq: usize, nk: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ZeroSize { what } => write!(f, "{what} must be positive, got 0"),
            Error::ShapeMismatch { what, expected, found } => {
                write!(f, "{what}: expected {expected}, found {found}")
            }
            Error::SizeOverflow { what } => write!(f, "{what}: size overflows isize"),
            Error::OutOfBounds { what, needed, len } => write!(
                f,
                "{what}: sizes and strides reach element {needed} but the buffer holds {len}"
            ),
            Error::OverlappingOutput => {
                write!(f, "output view: rows overlap, so results would overwrite each other")
            }
            Error::HeadsNotDivisible { q_heads, kv_heads } => write!(
                f,
                "query heads ({q_heads}) must be a multiple of key/value heads ({kv_heads})"
            ),
            Error::InvalidConfig { field, reason } => write!(f, "config.{field}: {reason}"),
            Error::ProjectionLength { expected, found } => write!(
                f,
                "projection matrix must hold (head_dim + 2) * n_hashes = {expected} values, got {found}"
            ),
            Error::HeadDimMismatch { plan, found } => {
                write!(f, "plan was built for head dim {plan}, call has head dim {found}")
            }
            Error::UnsupportedIsa { isa } => {
                write!(f, "instruction set '{isa}' is not supported by this CPU")
            }
            Error::UnknownIsa { name } => write!(
                f,
                "SMYRF_ISA='{name}' names no tier (expected portable, avx2, avx512 or neon)"
            ),
            Error::OutOfMemory { what } => write!(f, "out of memory: {what}"),
            Error::WindowNeedsSelfAttention { nq, nk } => write!(
                f,
                "config.window needs self-attention (Nq == Nk), got Nq = {nq}, Nk = {nk}"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand used across the crate.
pub type Result<T> = std::result::Result<T, Error>;
