//! A tiny random-weight codec for unit tests (the synthetic tiny model's codec, which has
//! the reference-tiny fixture's dimensions).

use candle_core::{DType, Device};

use super::{CodecConfig, CodecPrecision, HeartCodec};
use crate::models::{synthetic_codec_config, SyntheticSize};

pub(crate) fn tiny_config() -> CodecConfig {
    synthetic_codec_config(SyntheticSize::Tiny)
}

pub(crate) fn tiny_codec() -> HeartCodec {
    let precision = CodecPrecision::uniform(DType::F32);
    HeartCodec::synthetic(tiny_config(), 7, &Device::Cpu, precision).unwrap()
}
