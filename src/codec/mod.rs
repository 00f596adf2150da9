//! HeartCodec: HeartMuLa's audio codes (8 codebooks at 12.5 Hz) → 48 kHz stereo.
//!
//! Two stages, each usable offline or as a stream:
//! - `flow` (`FlowMatching`): codes → 25 Hz latents by flow matching over ~30 s windows;
//!   `FlowStream` runs it window by window as codes arrive.
//! - `scalar` (`ScalarModel`): latents → audio; `ScalarStream` decodes latent chunks with
//!   per-layer state and a 2-latent look-ahead.
//!
//! `detokenize` reproduces heartlib's offline `HeartCodec.detokenize`.

mod arch;
mod codes;
mod config;
mod detokenize;
mod error;
mod estimator;
mod euler;
mod flow;
mod flow_stream;
mod host;
mod latents;
mod noise;
mod params;
mod rates;
mod rvq;
mod scalar;
mod spec;
mod step_graphs;
#[cfg(test)]
mod testing;

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};

use crate::weights::{Loader, MatrixPrecision, Source, WeightStore};

pub use self::codes::{CodeFrames, CodeSanitizer};
pub use self::config::{
    CodecConfig, WindowGeometry, LATENTS_PER_CODE, OUTPUT_SAMPLE_RATE, REFERENCE_WINDOW_SECONDS,
};
pub use self::detokenize::{
    detokenize, flow_windows, join_windows, DetokenizeParams, Detokenized, FlowWindows, Join,
};
pub use self::error::CodecInputError;
pub use self::estimator::{
    fused_attention, gated_add, gated_add_rms_modulate, is_fp8_matrix, rms_modulate, swiglu,
    Estimator, NormAfter, RopeTables, TimeConditioning,
};
pub use self::euler::{Cancel, Cancelled, SolverParams};
pub use self::flow::FlowMatching;
pub use self::flow_stream::{
    FlowStream, FlowStreamConfig, SolvedWindow, StreamWindow, STREAM_CONTEXT_SECONDS,
    STREAM_FIRST_WINDOW_SECONDS, STREAM_WINDOW_SECONDS,
};
pub use self::noise::{GaussianNoise, NoiseSource, ReplayNoise};
pub use self::rates::Rates;
pub use self::rvq::ResidualVq;
pub use self::scalar::{ScalarModel, ScalarStream};
pub use self::spec::codec_spec;

/// The dtypes the two stages run in. The flow-matching transformer is compute-bound and
/// fine in bf16; the ScalarModel is cheap and the reference warns that bf16 degrades it, so
/// on a GPU it stays f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecPrecision {
    pub flow: DType,
    /// How the flow-matching blocks' matrices (attention and MLP, 91 % of the codec's
    /// weights) are stored: dense in `flow`, or FP8 codes decoded at each product.
    pub flow_matrices: MatrixPrecision,
    pub scalar: DType,
    /// The f32 ScalarModel's products on TF32 tensor cores (CUDA; nothing changes on the
    /// CPU). candle's switch for it is process-wide: every f32 product rounds its inputs to
    /// TF32, so it is refused where anything else computes in f32 (flow here, the LM in
    /// `engine`).
    pub tf32: bool,
}

impl CodecPrecision {
    pub fn uniform(dtype: DType) -> Self {
        Self {
            flow: dtype,
            flow_matrices: MatrixPrecision::Dense,
            scalar: dtype,
            tf32: false,
        }
    }

    /// Flow matching in `flow` (bf16 on a GPU by default); the ScalarModel always in f32.
    pub fn with_flow(flow: DType) -> Self {
        Self {
            flow,
            flow_matrices: MatrixPrecision::Dense,
            scalar: DType::F32,
            tf32: false,
        }
    }

    /// Turns TF32 products on for the process when asked (see [`Self::tf32`]).
    fn apply_tf32(&self) -> Result<()> {
        if !self.tf32 {
            return Ok(());
        }
        anyhow::ensure!(
            self.scalar == DType::F32 && self.flow != DType::F32,
            "TF32 decoder products need an f32 decoder and flow matching in bf16 (they would \
             round the f32 flow's products too): decoder {:?}, flow {:?}",
            self.scalar,
            self.flow
        );
        #[cfg(feature = "cuda")]
        candle_core::cuda_backend::set_gemm_reduced_precision_f32(true);
        Ok(())
    }
}

/// The codec: its config and its two stages.
#[derive(Clone)]
pub struct HeartCodec {
    pub config: CodecConfig,
    pub flow: FlowMatching,
    pub scalar: ScalarModel,
}

/// Where the codec's two stages run: flow matching on `flow`, the ScalarModel on `scalar`
/// (e.g. a CUDA stream of its own, so decoding never queues behind flow matching).
#[derive(Debug, Clone)]
pub struct Placement {
    pub flow: Device,
    pub scalar: Device,
}

impl From<&Device> for Placement {
    /// Both stages on `device`.
    fn from(device: &Device) -> Self {
        Self {
            flow: device.clone(),
            scalar: device.clone(),
        }
    }
}

impl HeartCodec {
    /// Loads a heartlib HeartCodec folder (`config.json` + safetensors), validating every
    /// tensor name and shape first. Weight norm is folded into plain kernels here.
    pub fn load(
        dir: &Path,
        placement: impl Into<Placement>,
        precision: CodecPrecision,
    ) -> Result<Self> {
        let placement = placement.into();
        let config = CodecConfig::from_file(&dir.join("config.json"))?;
        let store = WeightStore::open(dir)?;
        let loader = Loader::new(
            Source::Checkpoint(store),
            codec_spec(&config),
            &placement.flow,
        )?;
        Self::build(config, &loader, &placement.scalar, precision)
            .with_context(|| format!("loading HeartCodec from {}", dir.display()))
    }

    /// A codec of the given architecture with random weights (no checkpoint needed).
    pub fn synthetic(
        config: CodecConfig,
        seed: u64,
        placement: impl Into<Placement>,
        precision: CodecPrecision,
    ) -> Result<Self> {
        let placement = placement.into();
        config.validate()?;
        let loader = Loader::new(
            Source::Synthetic { seed },
            codec_spec(&config),
            &placement.flow,
        )?;
        Self::build(config, &loader, &placement.scalar, precision)
    }

    fn build(
        config: CodecConfig,
        loader: &Loader,
        scalar_device: &Device,
        precision: CodecPrecision,
    ) -> Result<Self> {
        precision.apply_tf32()?;
        let flow = params::Params::new(loader, precision.flow)
            .with_matrices(precision.flow_matrices)
            .at("flow_matching");
        let scalar = params::Params::new(loader, precision.scalar)
            .on(scalar_device)
            .at("scalar_model");
        let codec = Self {
            flow: FlowMatching::load(&flow, &config)?,
            scalar: ScalarModel::load(&scalar, &config)?,
            config,
        };
        // Checkpoint copies may still be running on the loader's stream (`WeightStore::load`).
        loader.device().synchronize()?;
        Ok(codec)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Tensor;

    use super::testing::tiny_config;
    use super::*;

    fn relative_error(a: &Tensor, b: &Tensor) -> f32 {
        let norm = |t: &Tensor| {
            t.sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .sqrt()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        norm(&(a - b).unwrap()) / norm(b)
    }

    #[test]
    fn tf32_products_are_refused_beside_an_f32_flow() {
        let precision = CodecPrecision {
            tf32: true,
            ..CodecPrecision::uniform(DType::F32)
        };
        let err = HeartCodec::synthetic(tiny_config(), 7, &Device::Cpu, precision)
            .err()
            .expect("TF32 products with an f32 flow must be refused");
        assert!(err.to_string().contains("TF32"), "{err}");
    }

    /// The same weights in bf16 compute the same function to bf16 precision.
    #[test]
    fn bf16_decodes_like_f32() {
        let run = |dtype| {
            let precision = CodecPrecision::uniform(dtype);
            let codec = HeartCodec::synthetic(tiny_config(), 7, &Device::Cpu, precision).unwrap();
            let codes =
                CodeFrames::from_frames(&[[3u32, 1, 4, 1, 5, 9, 2, 6]; 6], &codec.config).unwrap();
            let prefix =
                Tensor::zeros((0, codec.flow.latent_dim()), DType::F32, &Device::Cpu).unwrap();
            let params = SolverParams {
                num_steps: 2,
                guidance_scale: 1.25,
            };
            let latents = codec
                .flow
                .inference_codes(&codes, &prefix, 12, 0, &params, &mut GaussianNoise::new(1))
                .unwrap();
            let audio = codec.scalar.decode(&latents).unwrap();
            (latents, audio)
        };
        let (latents, audio) = run(DType::F32);
        let (latents16, audio16) = run(DType::BF16);
        assert_eq!(
            (latents16.dtype(), audio16.dtype()),
            (DType::F32, DType::F32)
        );
        assert_eq!(audio16.dims(), audio.dims());
        let (e_latents, e_audio) = (
            relative_error(&latents16, &latents),
            relative_error(&audio16, &audio),
        );
        println!("bf16 vs f32 relative error: latents {e_latents:.2e}, audio {e_audio:.2e}");
        assert!(
            e_latents < 0.05 && e_audio < 0.1,
            "latents {e_latents}, audio {e_audio}"
        );
    }
}
