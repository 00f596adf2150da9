//! heartlib's `ScalarModel`, decoding half: quantized latents (25 Hz) → 48 kHz audio. Stereo
//! is a batch of two: latent channels `0..C/2` decode to the left channel, `C/2..C` to the
//! right.

mod conv;
mod decoder;
mod ops;
mod quantize;
mod steps;
mod stream;

use anyhow::Result;
use candle_core::{Device, Tensor};

use self::decoder::Decoder;
use self::steps::{StatePool, StepLayout};
use super::config::CodecConfig;
use super::params::Params;

pub use self::stream::ScalarStream;

/// Latent frames per internal chunk of the one-shot `decode`. Decoding in chunks through the
/// stream state bounds the working memory (the last layers run at 48 kHz with `init_channel`
/// channels) without changing the result.
const DECODE_CHUNK_LATENTS: usize = 32;

/// Stereo as a batch: row 0 left, row 1 right.
const STEREO: usize = 2;

#[derive(Clone)]
pub struct ScalarModel {
    /// The decoder layers at stream position 0; a stream with no prepared state starts
    /// from a copy.
    decoder: Decoder,
    /// Stream states whose steady step is captured (on CUDA, after `prepare_steps`).
    states: StatePool,
    layout: StepLayout,
    look_ahead_latents: usize,
    device: Device,
}

impl ScalarModel {
    pub(crate) fn load(p: &Params, c: &CodecConfig) -> Result<Self> {
        Ok(Self {
            decoder: Decoder::load(p, c)?,
            states: StatePool::default(),
            layout: StepLayout {
                latent_channels: c.latent_hidden_dim,
                samples_per_latent: c.rates().samples_per_latent,
                dtype: p.dtype(),
            },
            look_ahead_latents: c.look_ahead_latents(),
            device: p.device().clone(),
        })
    }

    /// Where the decoder runs; latents from elsewhere are copied here.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Audio samples per latent frame (1920).
    pub fn samples_per_latent(&self) -> usize {
        self.layout.samples_per_latent
    }

    /// Latent frames a latent's audio waits for (2): see [`ScalarStream`].
    pub fn look_ahead_latents(&self) -> usize {
        self.look_ahead_latents
    }

    /// Width of one latent frame: both channels' latents side by side (256).
    pub fn latent_dim(&self) -> usize {
        STEREO * self.layout.latent_channels
    }

    /// A stateful decoder at the start of a latent stream: on a prepared state (its step
    /// captured) while one is free.
    pub fn stream(&self) -> Result<ScalarStream> {
        ScalarStream::new(self)
    }

    /// On CUDA, captures a decoder step of `latents` latents as a graph over a stream state
    /// kept for the next stream (unless one is kept already, or
    /// `HEARTSTREAM_DECODER_GRAPH=0`). Returns whether it captured one.
    pub fn prepare_steps(&self, latents: usize) -> Result<bool> {
        self.states
            .prepare(&self.decoder, self.layout, &self.device, latents)
    }

    /// Prepares the step the one-shot [`decode`](Self::decode) uses.
    pub fn prepare_decode(&self) -> Result<bool> {
        self.prepare_steps(DECODE_CHUNK_LATENTS)
    }

    /// `scalar_model.decode` of a whole latent sequence `(frames, latent_dim)`: stereo audio
    /// `(2, frames · samples_per_latent)` f32, zero-padded at both ends like the reference.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let mut stream = self.stream()?;
        let chunk = stream.step_latents().unwrap_or(DECODE_CHUNK_LATENTS);
        let frames = latents.dim(0)?;
        let mut parts = Vec::with_capacity(frames / chunk + 2);
        for start in (0..frames).step_by(chunk) {
            let n = chunk.min(frames - start);
            parts.push(stream.push(&latents.narrow(0, start, n)?)?);
        }
        parts.push(stream.finish()?);
        Ok(Tensor::cat(&parts, 1)?)
    }
}
