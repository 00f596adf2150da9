//! The hashes the engine keys things with: the splitmix64 finaliser, the counter-based hash
//! behind the LM sampler's exponential draws and the synthetic weights (`hash.cuh` is its
//! device twin, so the GPU draws the same numbers), and FNV-1a over bytes (a synthetic
//! tensor's name, the kernel cache's source and architecture).

/// The CUDA source of [`splitmix64`], for the device modules that draw from it.
#[cfg(feature = "cuda")]
pub const SPLITMIX64_CUDA: &str = include_str!("hash.cuh");

pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    /// The published FNV-1a 64-bit test vectors.
    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(super::fnv1a(*b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(super::fnv1a(*b"foobar"), 0x8594_4171_f739_67e8);
    }
}
