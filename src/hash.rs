//! The splitmix64 finaliser: the counter-based hash behind the LM sampler's exponential draws
//! and the synthetic weights. `hash.cuh` is its device twin, so the GPU draws the same numbers.

/// The CUDA source of [`splitmix64`], for the device modules that draw from it.
#[cfg(feature = "cuda")]
pub const SPLITMIX64_CUDA: &str = include_str!("hash.cuh");

pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
