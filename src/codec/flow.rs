//! `FlowMatching`: codes → latents. The RVQ features of the codes, projected and upsampled
//! ×2 in time, condition an Euler solve of the estimator's velocity field from Gaussian noise;
//! an optional prefix of known latents (the previous window's tail) is kept in context.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use super::codes::CodeFrames;
use super::config::{CodecConfig, LATENTS_PER_CODE};
use super::estimator::Estimator;
use super::euler::{self, Cancel, SolverParams, StepShape};
use super::latents::{check_finite, check_shape};
use super::noise::NoiseSource;
use super::params::Params;
use super::rvq::ResidualVq;
use super::step_graphs::StepGraphs;

#[derive(Clone)]
pub struct FlowMatching {
    pub vq: ResidualVq,
    cond_feature_emb: Linear,
    /// `(1, dim)`: the condition of latent frames past `latent_length`.
    zero_cond: Tensor,
    pub estimator: Estimator,
    latent_dim: usize,
    device: Device,
    /// Asked between Euler steps (a stream's copy is cancelled with its run).
    cancel: Cancel,
    /// Prepared (on CUDA: captured) Euler steps, shared by every clone.
    steps: StepGraphs,
}

impl FlowMatching {
    pub(crate) fn load(p: &Params, c: &CodecConfig) -> Result<Self> {
        Ok(Self {
            vq: ResidualVq::load(&p.at("vq_embed"), c)?,
            cond_feature_emb: p.linear("cond_feature_emb", true)?,
            zero_cond: p.tensor("zero_cond_embedding1")?.unsqueeze(0)?,
            estimator: Estimator::load(&p.at("estimator"), c)?,
            latent_dim: c.out_channels,
            device: p.device().clone(),
            cancel: Cancel::default(),
            steps: StepGraphs::default(),
        })
    }

    /// Latent channels and code-condition width: the sizes of a step's buffers.
    fn step_dims(&self) -> (usize, usize) {
        (self.latent_dim, self.zero_cond.dim(1).unwrap_or(0))
    }

    /// Prepares the Euler step of windows of `frames` latents with `prefix` in-context
    /// latents solved with `params` (on CUDA, captured as a graph), so those windows start
    /// at once. Returns how many of the shapes were new.
    pub fn prepare_windows(
        &self,
        windows: &[(usize, usize)],
        params: &SolverParams,
    ) -> Result<usize> {
        let shapes: Vec<StepShape> = windows
            .iter()
            .map(|&(frames, prefix)| StepShape::new(frames, prefix, params))
            .collect();
        self.steps
            .prepare(&self.estimator, &shapes, self.step_dims())
    }

    /// The window shapes prepared so far, as `(frames, prefix)`.
    pub fn prepared_windows(&self) -> Vec<(usize, usize)> {
        let mut shapes: Vec<_> = self
            .steps
            .shapes()
            .iter()
            .map(|s| (s.frames, s.prefix))
            .collect();
        shapes.sort_unstable();
        shapes
    }

    /// Every later solve of this copy stops between Euler steps once `cancel` says so,
    /// failing with [`super::Cancelled`].
    pub fn set_cancel(&mut self, cancel: Cancel) {
        self.cancel = cancel;
    }

    /// Width of a latent frame (both stereo channels' latents side by side: 256).
    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `cond_feature_emb(vq(codes))`, `(frames, dim)`: one feature per code frame.
    pub fn cond_features(&self, codes: &CodeFrames) -> Result<Tensor> {
        Ok(self.cond_feature_emb.forward(&self.vq.decode(codes)?)?)
    }

    /// μ of every latent frame `(1, 2·frames, dim)`: the code features repeated ×2 in time
    /// (nearest), and `zero_cond_embedding1` from frame `conditioned` on.
    fn condition(&self, codes: &CodeFrames, conditioned: usize) -> Result<Tensor> {
        let features = self.cond_features(codes)?;
        let (frames, dim) = features.dims2()?;
        let latents = frames * LATENTS_PER_CODE;
        let mu = features
            .unsqueeze(1)?
            .broadcast_as((frames, LATENTS_PER_CODE, dim))?
            .reshape((latents, dim))?;
        let mu = if conditioned < latents {
            let tail = self.zero_cond.broadcast_as((latents - conditioned, dim))?;
            Tensor::cat(&[&mu.narrow(0, 0, conditioned)?, &tail], 0)?
        } else {
            mu
        };
        Ok(mu.unsqueeze(0)?)
    }

    /// heartlib's `inference_codes(..., scenario="other_seg")` for one sequence: latents
    /// `(2·codes, latent_dim)` f32 for `codes`. Frames below `latent_length` are conditioned on
    /// their codes; the first `incontext_length` frames are the in-context prefix, taken from
    /// `true_latents` (which must hold at least that many frames; the rest is never read).
    /// Draws the initial noise `(1, frames, latent_dim)` from `noise`.
    pub fn inference_codes(
        &self,
        codes: &CodeFrames,
        true_latents: &Tensor,
        latent_length: usize,
        incontext_length: usize,
        params: &SolverParams,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        codes.require_frames()?;
        let frames = codes.len() * LATENTS_PER_CODE;
        let prefix = incontext_length.min(frames);
        // The reference masks with `latent_masks > 0.5`: conditioned frames are those below
        // latent_length or inside the prefix.
        let mu = self.condition(codes, latent_length.max(prefix).min(frames))?;
        check_shape(true_latents, self.latent_dim)?;
        anyhow::ensure!(
            true_latents.dim(0)? >= prefix,
            "an in-context prefix of {prefix} latent frames needs true_latents of at least that many frames, got {}",
            true_latents.dim(0)?
        );
        let known = true_latents.narrow(0, 0, prefix)?;
        check_finite(&known, 0)?;
        let incontext = known
            .to_dtype(DType::F32)?
            .pad_with_zeros(0, 0, frames - prefix)?
            .unsqueeze(0)?;
        let x0 = noise.draw(&[1, frames, self.latent_dim], &self.device, DType::F32)?;
        let window = euler::Window {
            noise: &x0,
            incontext: &incontext,
            prefix,
            mu: &mu,
        };
        let shape = StepShape::new(frames, prefix, params);
        let latents =
            self.steps
                .with_runner(&self.estimator, shape, self.step_dims(), |runner| {
                    euler::solve(&self.estimator, &window, params, runner, &self.cancel)
                })?;
        Ok(latents.squeeze(0)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::codec::testing::tiny_codec;
    use crate::codec::{CodecInputError, GaussianNoise};

    #[test]
    fn non_finite_in_context_latents_are_rejected() {
        let codec = tiny_codec();
        let codes = CodeFrames::from_frames(&[[1u32; 8]; 3], &codec.config).unwrap();
        let mut prefix = vec![0f32; 2 * 256];
        prefix[256 + 5] = f32::NAN;
        let prefix = Tensor::from_vec(prefix, (2, 256), &Device::Cpu).unwrap();
        let params = SolverParams {
            num_steps: 1,
            guidance_scale: 1.25,
        };
        let err = codec
            .flow
            .inference_codes(&codes, &prefix, 6, 2, &params, &mut GaussianNoise::new(0))
            .unwrap_err();
        assert!(matches!(
            err.downcast_ref(),
            Some(CodecInputError::NonFiniteLatent {
                frame: 1,
                channel: 5,
                ..
            })
        ));
        // A prefix longer than the latents given is an error, not a panic.
        assert!(codec
            .flow
            .inference_codes(&codes, &prefix, 6, 4, &params, &mut GaussianNoise::new(0),)
            .is_err());
    }
}
