//! The typed error of every fallible call (design §2). Nothing is written to the output when
//! an error is returned.

use crate::isa::Isa;
use std::fmt;

/// Why a call was refused.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A size that must be positive is zero (`what` names it).
    ZeroSize {
        /// The size's name.
        what: &'static str,
    },
    /// Two sizes that must agree do not.
    ShapeMismatch {
        /// The size that disagrees, and what it must equal.
        what: &'static str,
        /// The size it must have.
        expected: usize,
        /// The size it has.
        found: usize,
    },
    /// `batch · heads · seq_len · dim` (or an offset computed from strides) overflows `isize`.
    SizeOverflow {
        /// The view or offset that overflows.
        what: &'static str,
    },
    /// The strides of a view reach past the end of its buffer.
    OutOfBounds {
        /// The view.
        what: &'static str,
        /// Elements its sizes and strides reach.
        needed: usize,
        /// Elements its buffer holds.
        len: usize,
    },
    /// Rows of an output view overlap, so writes would alias.
    OverlappingOutput,
    /// The query heads are not a multiple of the key/value heads.
    HeadsNotDivisible {
        /// Query heads Hq.
        q_heads: usize,
        /// Key/value heads Hkv.
        kv_heads: usize,
    },
    /// A configuration field has an invalid value.
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What the field must be.
        reason: &'static str,
    },
    /// A caller-supplied projection matrix has the wrong length.
    ProjectionLength {
        /// `(head_dim + 2) · n_hashes`.
        expected: usize,
        /// The length given.
        found: usize,
    },
    /// The head dimension of the call differs from the plan's.
    HeadDimMismatch {
        /// The plan's head dim.
        plan: usize,
        /// The call's head dim.
        found: usize,
    },
    /// The requested instruction-set tier is not available on this CPU.
    UnsupportedIsa {
        /// The tier asked for.
        isa: Isa,
    },
    /// `SMYRF_ISA` names no known tier.
    UnknownIsa {
        /// The value of `SMYRF_ISA`.
        name: String,
    },
    /// A buffer could not be allocated or a thread pool could not be built.
    OutOfMemory {
        /// What could not be allocated.
        what: &'static str,
    },
    /// `config.window` (design §8) needs self-attention: as many queries as keys.
    WindowNeedsSelfAttention {
        /// Queries of the call.
        nq: usize,
        /// Keys of the call.
        nk: usize,
    },
    /// A key length is negative or above the call's key count.
    KeyLength {
        /// The batch element.
        batch: usize,
        /// Its length.
        length: i64,
        /// Keys of the call.
        nk: usize,
    },
    /// A head sink logit is NaN or +∞.
    HeadSink {
        /// The query head.
        head: usize,
        /// Its sink.
        value: f32,
    },
    /// A causal call's query positions start before every key: with the default offset
    /// `Nk − Nq`, more queries than keys.
    CausalOffset {
        /// Queries of the call.
        nq: usize,
        /// Keys of the call.
        nk: usize,
    },
    /// An option that needs another one: `query_offset` without `causal`.
    OptionNeeds {
        /// The option given.
        option: &'static str,
        /// The option it needs.
        needs: &'static str,
    },
    /// A causal call with the §8 blocks that have no causal form: selected keys
    /// (`n_selected`, which score every key) or mean-query sinks (which read every query).
    CausalBlocks,
    /// A caller workspace is smaller than the call needs.
    WorkspaceTooSmall {
        /// Bytes the call needs.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
    /// A KV-cache index append would shorten a sequence: positions are appended in order.
    IndexOrder {
        /// The batch element.
        batch: usize,
        /// The length asked for.
        length: usize,
        /// The keys already indexed.
        indexed: usize,
    },
    /// A KV-cache index append past the index's capacity.
    IndexCapacity {
        /// The batch element.
        batch: usize,
        /// The length asked for.
        length: usize,
        /// The keys per batch element the index holds.
        capacity: usize,
    },
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
            Error::KeyLength { batch, length, nk } => write!(
                f,
                "key_lengths[{batch}] = {length}: must be in 0..={nk} (the keys of the call)"
            ),
            Error::HeadSink { head, value } => write!(
                f,
                "head_sinks[{head}] = {value}: must be finite or -inf (no sink)"
            ),
            Error::CausalOffset { nq, nk } => write!(
                f,
                "causal: Nq = {nq} queries at the default offset Nk - Nq would sit before key 0 (Nk = {nk}); give query_offset"
            ),
            Error::OptionNeeds { option, needs } => write!(f, "{option} needs {needs}"),
            Error::CausalBlocks => write!(
                f,
                "causal attention takes neither selected keys (n_selected must be 0; key blocks, n_blocks, are the causal selection) nor mean-query sinks (sink_selection must be first)"
            ),
            Error::IndexOrder {
                batch,
                length,
                indexed,
            } => write!(
                f,
                "index lengths[{batch}] = {length} is below the {indexed} keys already indexed: positions are appended in order (reset the sequence to start over)"
            ),
            Error::IndexCapacity {
                batch,
                length,
                capacity,
            } => write!(
                f,
                "index lengths[{batch}] = {length} is past the index's capacity of {capacity} keys"
            ),
            Error::WorkspaceTooSmall { needed, given } => write!(
                f,
                "workspace holds {given} bytes but the call needs {needed}"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand used across the crate.
pub type Result<T> = std::result::Result<T, Error>;
