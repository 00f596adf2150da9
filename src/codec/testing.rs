//! A tiny random-weight codec for unit tests (the reference-tiny fixture's dimensions).

use candle_core::{DType, Device};

use super::{CodecConfig, HeartCodec};

pub(crate) fn tiny_config() -> CodecConfig {
    CodecConfig {
        dim: 64,
        codebook_size: 512,
        codebook_dim: 8,
        attention_head_dim: 16,
        num_attention_heads: 2,
        num_layers: 2,
        num_layers_2: 1,
        in_channels: 576,
        init_channel: 3,
        ..CodecConfig::default()
    }
}

pub(crate) fn tiny_codec() -> HeartCodec {
    HeartCodec::synthetic(tiny_config(), 7, &Device::Cpu, DType::F32).unwrap()
}
