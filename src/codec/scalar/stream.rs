//! `ScalarStream`: the ScalarModel decoder fed latent chunks of any size as the flow model
//! produces them, every layer keeping the history it needs so nothing is recomputed.
//!
//! The first conv is centred (kernel 5, padding 2): a latent's audio needs the 2 latents
//! after it. Those samples are held back until the latents arrive, or until `finish`
//! supplies the zero padding the one-shot decode ends with. Everything after it is causal.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use super::decoder::Decoder;
use super::quantize::quantize;
use super::{ScalarModel, STEREO};
use crate::codec::latents::{check_finite, check_shape};

pub struct ScalarStream {
    decoder: Decoder,
    latent_channels: usize,
    samples_per_latent: usize,
    dtype: DType,
    latents_in: usize,
    samples_out: usize,
    finished: bool,
}

impl ScalarStream {
    pub(super) fn new(model: &ScalarModel) -> Self {
        Self {
            decoder: model.decoder.clone(),
            latent_channels: model.latent_channels,
            samples_per_latent: model.samples_per_latent,
            dtype: model.dtype,
            latents_in: 0,
            samples_out: 0,
            finished: false,
        }
    }

    /// Decodes the next latents `(n, latent_dim)`, n ≥ 0. Returns the stereo PCM `(2, m)` f32
    /// that is now final: m / samples_per_latent = the latents whose look-ahead has arrived.
    pub fn push(&mut self, latents: &Tensor) -> Result<Tensor> {
        if self.finished {
            bail!("ScalarStream::push after finish: start a new stream for new audio");
        }
        check_shape(latents, STEREO * self.latent_channels)?;
        let n = latents.dim(0)?;
        if n == 0 {
            return Ok(Tensor::zeros((STEREO, 0), DType::F32, latents.device())?);
        }
        check_finite(latents, self.latents_in)?;
        self.latents_in += n;
        let stereo = self.stereo(&quantize(latents)?)?;
        let audio = self.decoder.step(&stereo)?;
        self.pcm(audio)
    }

    /// Ends the stream: the audio of the held-back latents, decoded with zeros after them.
    pub fn finish(&mut self) -> Result<Tensor> {
        if self.finished {
            bail!("ScalarStream::finish called twice");
        }
        self.finished = true;
        let audio = self.decoder.flush(STEREO)?;
        self.pcm(audio)
    }

    /// Latent frames pushed so far.
    pub fn latents_in(&self) -> usize {
        self.latents_in
    }

    /// Latent frames whose audio has been returned; `latents_in() - latents_out()` are held
    /// back for look-ahead.
    pub fn latents_out(&self) -> usize {
        self.samples_out / self.samples_per_latent
    }

    /// `(n, 2·C)` → `(2, C, n)` in the model dtype: channels `0..C` left, `C..2C` right.
    fn stereo(&self, latents: &Tensor) -> Result<Tensor> {
        let n = latents.dim(0)?;
        Ok(latents
            .reshape((n, STEREO, self.latent_channels))?
            .permute((1, 2, 0))?
            .contiguous()?
            .to_dtype(self.dtype)?)
    }

    /// `(2, 1, m)` decoder output → `(2, m)` f32 PCM.
    fn pcm(&mut self, audio: Tensor) -> Result<Tensor> {
        let pcm = audio.squeeze(1)?.to_dtype(DType::F32)?;
        self.samples_out += pcm.dim(1)?;
        Ok(pcm)
    }
}
