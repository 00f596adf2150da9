//! Architecture facts of HeartCodec that the config does not carry: fixed widths, the
//! decoder's dilations and layer layout. The weight-name spec and the layers both read them
//! from here.

use super::config::CodecConfig;

/// Flow timestep sinusoid width (`PixArtAlphaCombinedFlowEmbeddings.flow_t_size`).
pub const FLOW_T_SIZE: usize = 512;

/// Residual units of every ScalarModel block, with their dilations.
pub const RESIDUAL_DILATIONS: [usize; 5] = [1, 3, 5, 7, 9];

/// Hidden width of `LlamaMLP(dim, multiple_of=256)`: `int(2 * 4 * dim / 3)` rounded up to a
/// multiple of 256.
pub fn mlp_hidden_dim(dim: usize) -> usize {
    const MULTIPLE_OF: usize = 256;
    (2 * 4 * dim / 3).div_ceil(MULTIPLE_OF) * MULTIPLE_OF
}

/// Layer names of `ScalarModel.decoder` (relative to `scalar_model`): the look-ahead conv, one block per upsampling
/// factor, the PostProcessor when `num_samples > 1`, the output conv.
pub struct ScalarDecoderNames {
    pub look_ahead: String,
    pub blocks: Vec<String>,
    pub post: Option<String>,
    pub output: String,
}

impl ScalarDecoderNames {
    pub fn new(c: &CodecConfig) -> Self {
        let n = c.upsample_factors.len();
        let has_post = c.num_samples > 1;
        Self {
            look_ahead: "decoder.0".to_string(),
            blocks: (1..=n).map(|i| format!("decoder.{i}")).collect(),
            post: has_post.then(|| format!("decoder.{}", n + 1)),
            output: format!("decoder.{}", n + 1 + usize::from(has_post)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_width_matches_the_reference_rounding() {
        assert_eq!(mlp_hidden_dim(32), 256);
        assert_eq!(mlp_hidden_dim(1536), 4096);
        assert_eq!(mlp_hidden_dim(3072), 8192);
    }

    #[test]
    fn the_released_decoder_has_five_blocks_a_post_processor_and_an_output_conv() {
        let n = ScalarDecoderNames::new(&CodecConfig::default());
        assert_eq!(n.look_ahead, "decoder.0");
        assert_eq!(n.blocks.len(), 5);
        assert_eq!(n.post.as_deref(), Some("decoder.6"));
        assert_eq!(n.output, "decoder.7");
    }
}
