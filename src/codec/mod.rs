//! HeartCodec: HeartMuLa's audio codes (8 codebooks at 12.5 Hz) → 48 kHz stereo.
//!
//! Two stages, each usable offline or as a stream:
//! - `flow` (`FlowMatching`): codes → 25 Hz latents by flow matching over ~30 s windows;
//!   `FlowStream` runs it window by window as codes arrive.
//! - `scalar` (`ScalarModel`): latents → audio; `ScalarStream` decodes latent chunks with
//!   per-layer state and a 2-latent look-ahead.
//!
//! `detokenize` reproduces heartlib's offline `HeartCodec.detokenize`.

mod codes;
mod config;
mod detokenize;
mod error;
mod estimator;
mod euler;
mod flow;
mod flow_stream;
mod latents;
mod noise;
mod params;
mod rvq;
mod scalar;
mod spec;
#[cfg(test)]
mod testing;

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};

use crate::weights::{Loader, Source, WeightStore};

pub use self::codes::CodeFrames;
pub use self::config::{CodecConfig, WindowGeometry, LATENTS_PER_CODE, REFERENCE_WINDOW_SECONDS};
pub use self::detokenize::{
    detokenize, flow_windows, join_windows, DetokenizeParams, Detokenized, FlowWindows, Join,
};
pub use self::error::CodecInputError;
pub use self::estimator::{Estimator, RopeTables, TimeConditioning};
pub use self::euler::SolverParams;
pub use self::flow::FlowMatching;
pub use self::flow_stream::{FlowStream, FlowStreamConfig, StreamWindow};
pub use self::noise::{GaussianNoise, NoiseSource, ReplayNoise};
pub use self::rvq::ResidualVq;
pub use self::scalar::{ScalarModel, ScalarStream};
pub use self::spec::codec_spec;

/// The codec: its config and its two stages.
#[derive(Clone)]
pub struct HeartCodec {
    pub config: CodecConfig,
    pub flow: FlowMatching,
    pub scalar: ScalarModel,
}

impl HeartCodec {
    /// Loads a heartlib HeartCodec folder (`config.json` + safetensors), validating every
    /// tensor name and shape first. Weight norm is folded into plain kernels here.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let config = CodecConfig::from_file(&dir.join("config.json"))?;
        let store = WeightStore::open(dir)?;
        let loader = Loader::new(Source::Checkpoint(store), codec_spec(&config), device)?;
        Self::build(config, &loader, dtype)
            .with_context(|| format!("loading HeartCodec from {}", dir.display()))
    }

    /// A codec of the given architecture with random weights (no checkpoint needed).
    pub fn synthetic(
        config: CodecConfig,
        seed: u64,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        config.validate()?;
        let loader = Loader::new(Source::Synthetic { seed }, codec_spec(&config), device)?;
        Self::build(config, &loader, dtype)
    }

    fn build(config: CodecConfig, loader: &Loader, dtype: DType) -> Result<Self> {
        let root = params::Params::new(loader, dtype);
        Ok(Self {
            flow: FlowMatching::load(&root.at("flow_matching"), &config)?,
            scalar: ScalarModel::load(&root.at("scalar_model"), &config)?,
            config,
        })
    }
}
