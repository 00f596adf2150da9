//! Which weights a run uses — a checkpoint folder or synthetic random weights — and loading
//! each model from that choice.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};

use crate::checkpoint::CheckpointLayout;
use crate::codec::{CodecConfig, CodecPrecision, HeartCodec, Placement};
use crate::lm::{GenConfig, HeartMuLa, LmConfig, MatrixPrecision, TextTokenizer};

/// Random weights for running without a checkpoint. They make noise, not music.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyntheticSize {
    /// Small models with the real architecture and timing: fast on a CPU.
    Tiny,
    /// The real HeartMuLa-oss-3B and HeartCodec-oss dimensions (needs a GPU to be fast).
    #[value(name = "3b")]
    Full3b,
}

#[derive(Debug, Clone)]
pub enum ModelChoice {
    Checkpoint(PathBuf),
    Synthetic { size: SyntheticSize, seed: u64 },
}

impl ModelChoice {
    /// Whether a song asked to stop at the end-of-song token does: random weights emit it by
    /// chance, so a synthetic model always runs to the length asked for.
    pub fn stops_at_eos(&self, requested: bool) -> bool {
        requested && !matches!(self, ModelChoice::Synthetic { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            ModelChoice::Checkpoint(dir) => dir.display().to_string(),
            ModelChoice::Synthetic {
                size: SyntheticSize::Tiny,
                ..
            } => "synthetic tiny (random weights)".into(),
            ModelChoice::Synthetic {
                size: SyntheticSize::Full3b,
                ..
            } => "synthetic 3b (random weights)".into(),
        }
    }
}

/// Everything the LM stage needs.
pub struct LmBundle {
    pub model: Arc<HeartMuLa>,
    pub tokenizer: TextTokenizer,
    pub gen: GenConfig,
    pub load_seconds: f64,
}

/// Loads the LM in `dtype`, its matrices stored as `matrices` says (its logits are always
/// computed in f32).
pub fn load_lm(
    choice: &ModelChoice,
    device: &Device,
    dtype: DType,
    matrices: MatrixPrecision,
) -> Result<LmBundle> {
    let start = Instant::now();
    let (model, tokenizer, gen) = match choice {
        ModelChoice::Checkpoint(root) => {
            let layout = CheckpointLayout::open(root)?;
            let gen = GenConfig::from_file(&layout.gen_config()?)?;
            let tokenizer = TextTokenizer::from_file(&layout.tokenizer()?)?;
            let dir = layout.lm_dir()?;
            let model = HeartMuLa::load(&dir, device, dtype, matrices)
                .with_context(|| format!("loading HeartMuLa from {}", dir.display()))?;
            (model, tokenizer, gen)
        }
        ModelChoice::Synthetic { size, seed } => {
            let (config, gen) = synthetic_lm(*size);
            let model = HeartMuLa::synthetic(config, *seed, device, dtype, matrices)?;
            (model, TextTokenizer::Bytes { offset: 0 }, gen)
        }
    };
    Ok(LmBundle {
        model: Arc::new(model),
        tokenizer,
        gen,
        load_seconds: start.elapsed().as_secs_f64(),
    })
}

/// The codec of a run: loaded from the checkpoint's `HeartCodec-oss/`, or synthetic, its
/// stages placed as `placement` says.
pub fn load_codec(
    choice: &ModelChoice,
    placement: impl Into<Placement>,
    precision: CodecPrecision,
) -> Result<(Arc<HeartCodec>, f64)> {
    let start = Instant::now();
    let codec = match choice {
        ModelChoice::Checkpoint(root) => {
            let dir = CheckpointLayout::open(root)?.codec_dir()?;
            HeartCodec::load(&dir, placement, precision)?
        }
        ModelChoice::Synthetic { size, seed } => {
            HeartCodec::synthetic(synthetic_codec_config(*size), *seed, placement, precision)?
        }
    };
    Ok((Arc::new(codec), start.elapsed().as_secs_f64()))
}

/// The LM's configuration alone (no weights read).
pub fn lm_config(choice: &ModelChoice) -> Result<LmConfig> {
    match choice {
        ModelChoice::Checkpoint(root) => {
            let dir = CheckpointLayout::open(root)?.lm_dir()?;
            LmConfig::from_file(&dir.join("config.json"))
        }
        ModelChoice::Synthetic { size, .. } => Ok(synthetic_lm(*size).0),
    }
}

/// The codec's configuration alone (no weights read), to check options against it early.
pub fn codec_config(choice: &ModelChoice) -> Result<CodecConfig> {
    match choice {
        ModelChoice::Checkpoint(root) => {
            let dir = CheckpointLayout::open(root)?.codec_dir()?;
            CodecConfig::from_file(&dir.join("config.json"))
        }
        ModelChoice::Synthetic { size, .. } => Ok(synthetic_codec_config(*size)),
    }
}

/// The codec configuration of a synthetic model: heartlib's defaults for 3b, the reference
/// fixture's dimensions for tiny.
pub fn synthetic_codec_config(size: SyntheticSize) -> CodecConfig {
    match size {
        SyntheticSize::Full3b => CodecConfig::default(),
        SyntheticSize::Tiny => CodecConfig::tiny(),
    }
}

/// The LM configuration and special ids of a synthetic model.
pub fn synthetic_lm(size: SyntheticSize) -> (LmConfig, GenConfig) {
    match size {
        SyntheticSize::Full3b => (LmConfig::oss_3b(), GenConfig::default()),
        SyntheticSize::Tiny => LmConfig::tiny(),
    }
}
