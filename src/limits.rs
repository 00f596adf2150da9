//! Range checks for configuration fields. The bounds are far beyond any released model but
//! keep every size computed from a config (weight shapes, products of factors) from
//! overflowing or asking for absurd allocations: a bad config.json gets a message naming the
//! field, not a panic or an abort.

use std::ops::RangeInclusive;

use anyhow::{bail, Result};

/// Largest width of any layer, embedding or head.
pub const MAX_WIDTH: usize = 1 << 16;
/// Largest vocabulary or codebook.
pub const MAX_VOCAB: usize = 1 << 22;
/// Largest count of layers, heads, codebooks or convolution stages.
pub const MAX_COUNT: usize = 256;
/// Largest kernel size or up/down-sampling factor.
pub const MAX_KERNEL: usize = 64;

/// `value` of `field` must lie in `range`.
pub fn check(field: &str, value: usize, range: RangeInclusive<usize>) -> Result<()> {
    if !range.contains(&value) {
        bail!(
            "{field} {value} is invalid: expected {} to {}",
            range.start(),
            range.end()
        );
    }
    Ok(())
}

/// Every element of the list `field` must lie in `range`, and the list hold 1..=MAX_COUNT.
pub fn check_all(field: &str, values: &[usize], range: RangeInclusive<usize>) -> Result<()> {
    if values.is_empty() || values.len() > MAX_COUNT || values.iter().any(|v| !range.contains(v)) {
        bail!(
            "{field} {values:?} is invalid: expected 1 to {MAX_COUNT} values from {} to {}",
            range.start(),
            range.end()
        );
    }
    Ok(())
}
