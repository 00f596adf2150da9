//! A tiny random-weight codec for unit tests (the synthetic tiny model's codec, which has
//! the reference-tiny fixture's dimensions).

use candle_core::{DType, Device};

use super::{CodecConfig, CodecPrecision, HeartCodec};

pub(crate) fn tiny_config() -> CodecConfig {
    CodecConfig::tiny()
}

pub(crate) fn tiny_codec() -> HeartCodec {
    let precision = CodecPrecision::uniform(DType::F32);
    HeartCodec::synthetic(tiny_config(), 7, &Device::Cpu, precision).unwrap()
}
