//! Direct access to single kernels of a chosen tier, for the tier-against-portable tests and
//! the kernel benchmarks. Not part of the stable API.

use crate::attention;
use crate::error::{Error, Result};
use crate::isa::Isa;

fn supported(isa: Isa) -> Result<Isa> {
    if isa.is_supported() {
        Ok(isa)
    } else {
        Err(Error::UnsupportedIsa { isa })
    }
}

/// In-place exp of values ≤ 0 with the given tier's kernel.
pub fn exp_in_place(isa: Isa, values: &mut [f32]) -> Result<()> {
    (attention::kernels(supported(isa)?).exp)(values);
    Ok(())
}
