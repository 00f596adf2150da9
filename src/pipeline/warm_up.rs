//! One-time GPU costs paid while loading, not in the first seconds of a song: loading
//! kernel modules (candle's and ours), creating cuBLAS handles, the first graph capture.
//! A few throw-away frames and one small codec window do it.

use std::sync::Arc;

use anyhow::{anyhow, Result};

use crate::codec::{FlowStream, FlowStreamConfig, GaussianNoise, HeartCodec, LATENTS_PER_CODE};
use crate::lm::{FrameGenerator, GenConfig, GenerationOptions, HeartMuLa, Prompt};

/// Frames of the warm-up song: the prompt frame plus captured-step frames.
const LM_FRAMES: usize = 3;

pub fn warm_up_lm(
    model: &Arc<HeartMuLa>,
    gen: GenConfig,
    prompt: &Prompt,
    options: GenerationOptions,
) -> Result<()> {
    let options = GenerationOptions {
        max_frames: LM_FRAMES,
        stop_at_eos: false,
        ..options
    };
    let mut generator = FrameGenerator::new(model.clone(), gen, prompt.clone(), options)?;
    while generator.next_frame()?.is_some() {}
    Ok(())
}

/// What the codec's warm-up prepared.
#[derive(Debug, Clone, Copy, Default)]
pub struct CodecWarmUp {
    /// Flow-matching window shapes whose Euler step is prepared (captured on CUDA).
    pub window_shapes: usize,
    /// Whether the decoder's step of the run's size is captured.
    pub decoder_step_captured: bool,
}

/// Prepares (on CUDA: captures) the Euler step of every window shape the run's schedule
/// solves and the decoder step of `decode_latents` latents, then runs the solver on a short
/// window of zero codes and decodes the result.
pub fn warm_up_codec(
    codec: &HeartCodec,
    flow: &FlowStreamConfig,
    decode_latents: usize,
) -> Result<CodecWarmUp> {
    let window_shapes = codec
        .flow
        .prepare_windows(&flow.window_shapes(), &flow.solver)?;
    let decoder_step_captured = codec.scalar.prepare_steps(decode_latents)?;
    let latents = 4 * LATENTS_PER_CODE;
    let config = FlowStreamConfig {
        window_latents: 2 * latents,
        context_latents: latents,
        first_window_latents: latents,
        solver: flow.solver,
        pad_last_window: false,
    };
    let mut stream = FlowStream::new(codec, config, Box::new(GaussianNoise::new(0)))?;
    for _ in 0..latents / LATENTS_PER_CODE {
        stream.push(&vec![0; codec.config.num_quantizers])?;
    }
    let window = stream
        .next_window(true)?
        .ok_or_else(|| anyhow!("the warm-up window produced no latents"))?;
    let mut scalar = codec.scalar.stream()?;
    scalar.push(&window)?;
    scalar.finish()?.to_vec2::<f32>()?;
    Ok(CodecWarmUp {
        window_shapes,
        decoder_step_captured,
    })
}
