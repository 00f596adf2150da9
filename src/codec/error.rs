//! Bad input to the codec, reported with where it is and what was expected.

/// Input the codec refuses instead of decoding garbage (or panicking). The language model
/// can emit special ids (audio EOS, padding) at or above the codebook size: they must be cut
/// from the code stream before decoding, and land here if they are not.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecInputError {
    #[error("no code frames to decode: at least one frame of {num_codebooks} codes is needed")]
    NoCodes { num_codebooks: usize },

    #[error("code frame {frame} has {found} codes, expected one per codebook ({expected})")]
    WrongCodebookCount {
        frame: usize,
        found: usize,
        expected: usize,
    },

    #[error(
        "code {value} in frame {frame}, codebook {codebook} is not a codebook entry \
         (codebook size {codebook_size}); special tokens such as audio EOS must not reach the codec"
    )]
    CodeOutOfRange {
        frame: usize,
        codebook: usize,
        value: u32,
        codebook_size: usize,
    },

    #[error("latents have shape {found:?}, expected (frames, {channels})")]
    LatentShape { found: Vec<usize>, channels: usize },

    #[error("latent value {value} at frame {frame}, channel {channel} is not finite")]
    NonFiniteLatent {
        frame: usize,
        channel: usize,
        value: f32,
    },
}
