//! `ScalarStream`: the ScalarModel decoder fed latent chunks of any size as the flow model
//! produces them, every layer keeping the history it needs so nothing is recomputed.
//!
//! The first conv is centred (kernel 5, padding 2): a latent's audio needs the 2 latents
//! after it. Those samples are held back until the latents arrive, or until `finish`
//! supplies the zero padding the one-shot decode ends with. Everything after it is causal.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use super::steps::{StatePool, StepLayout, StreamState};
use super::{ScalarModel, STEREO};
use crate::codec::latents::{check_finite, check_shape};

pub struct ScalarStream {
    /// `Some` until the stream is dropped, when a prepared state goes back to the pool.
    state: Option<StreamState>,
    pool: StatePool,
    layout: StepLayout,
    device: candle_core::Device,
    latents_in: usize,
    samples_out: usize,
    finished: bool,
}

impl ScalarStream {
    /// A stream on one of the model's prepared states if one is free, else on a fresh copy
    /// of its layers (decoded eagerly).
    pub(super) fn new(model: &ScalarModel) -> Result<Self> {
        let state = match model.states.take()? {
            Some(state) => state,
            None => StreamState {
                decoder: model.decoder.clone(),
                #[cfg(feature = "cuda")]
                captured: None,
            },
        };
        Ok(Self {
            state: Some(state),
            pool: model.states.clone(),
            layout: model.layout,
            device: model.device().clone(),
            latents_in: 0,
            samples_out: 0,
            finished: false,
        })
    }

    /// Decodes the next latents `(n, latent_dim)`, n ≥ 0. Returns the stereo PCM `(2, m)` f32
    /// that is now final: m / samples_per_latent = the latents whose look-ahead has arrived.
    pub fn push(&mut self, latents: &Tensor) -> Result<Tensor> {
        if self.finished {
            bail!("ScalarStream::push after finish: start a new stream for new audio");
        }
        check_shape(latents, STEREO * self.layout.latent_channels)?;
        let n = latents.dim(0)?;
        if n == 0 {
            return Ok(Tensor::zeros((STEREO, 0), DType::F32, latents.device())?);
        }
        check_finite(latents, self.latents_in)?;
        // From the flow model's device (or stream) to the decoder's: the copy runs on the
        // decoder's stream, so the producer's work must be complete first (its context may
        // not track cross-stream events: see `gpu::order_streams_manually`).
        if !latents.device().same_device(&self.device) {
            latents.device().synchronize()?;
        }
        let latents = &latents.to_device(&self.device)?;
        self.latents_in += n;
        let layout = self.layout;
        let pcm = self.state_mut()?.decode(&layout, latents)?;
        self.samples_out += pcm.dim(1)?;
        Ok(pcm)
    }

    /// Ends the stream: the audio of the held-back latents, decoded with zeros after them.
    pub fn finish(&mut self) -> Result<Tensor> {
        if self.finished {
            bail!("ScalarStream::finish called twice");
        }
        self.finished = true;
        let audio = self.state_mut()?.decoder.flush(STEREO)?;
        let pcm = audio.squeeze(1)?.to_dtype(DType::F32)?;
        self.samples_out += pcm.dim(1)?;
        Ok(pcm)
    }

    /// Latent frames pushed so far.
    pub fn latents_in(&self) -> usize {
        self.latents_in
    }

    /// Latent frames whose audio has been returned; `latents_in() - latents_out()` are held
    /// back for look-ahead.
    pub fn latents_out(&self) -> usize {
        self.samples_out / self.layout.samples_per_latent
    }

    /// Latents per step that replay a captured graph (on CUDA, after the warm-up), if any:
    /// pushes of this size run fastest.
    pub fn step_latents(&self) -> Option<usize> {
        self.state.as_ref().and_then(StreamState::step_latents)
    }

    fn state_mut(&mut self) -> Result<&mut StreamState> {
        self.state
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("ScalarStream used after its state was returned"))
    }
}

impl Drop for ScalarStream {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.pool.give_back(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use proptest::prelude::*;

    use crate::codec::testing::tiny_codec;
    use crate::codec::CodecInputError;

    use super::*;

    fn latents(frames: usize, seed: u64) -> Tensor {
        let v: Vec<f32> = (0..frames * 256)
            .map(|i| ((i as f32 * 0.61 + seed as f32) * 1.7).sin() * 0.8)
            .collect();
        Tensor::from_vec(v, (frames, 256), &Device::Cpu).unwrap()
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        if a.elem_count() == 0 {
            return 0.0;
        }
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn any_chunking_decodes_like_one_shot(
            frames in 0usize..14,
            cuts in proptest::collection::vec(0usize..14, 0..6),
            seed in 0u64..1000,
        ) {
            let scalar = &tiny_codec().scalar;
            let x = latents(frames, seed);
            let one_shot = scalar.decode(&x).unwrap();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(frames)).collect();
            cuts.push(0);
            cuts.push(frames);
            cuts.sort_unstable();
            let mut stream = scalar.stream().unwrap();
            let mut parts = Vec::new();
            for pair in cuts.windows(2) {
                parts.push(stream.push(&x.narrow(0, pair[0], pair[1] - pair[0]).unwrap()).unwrap());
                // Audio trails the input by exactly the look-ahead.
                prop_assert_eq!(stream.latents_out(), stream.latents_in().saturating_sub(scalar.look_ahead_latents()));
            }
            parts.push(stream.finish().unwrap());
            let streamed = Tensor::cat(&parts, 1).unwrap();
            prop_assert_eq!(streamed.dims(), &[2, frames * scalar.samples_per_latent()][..]);
            prop_assert!(max_diff(&streamed, &one_shot) <= 1e-5);
        }
    }

    /// A state put back to stream position 0 (what a prepared state goes through between
    /// streams) decodes like a fresh copy of the layers, and keeps its buffers.
    #[test]
    fn a_reset_decoder_decodes_like_a_fresh_one() {
        let scalar = tiny_codec().scalar;
        let layout = scalar.layout;
        let mut used = scalar.decoder.clone();
        layout.decode(&mut used, &latents(7, 3)).unwrap();
        assert!(used.is_steady());
        used.reset().unwrap();
        assert!(!used.is_steady(), "the look-ahead starts empty again");
        let mut fresh = scalar.decoder.clone();
        for (n, seed) in [(1, 4), (5, 5), (3, 6)] {
            let x = latents(n, seed);
            let (a, b) = (
                layout.decode(&mut used, &x).unwrap(),
                layout.decode(&mut fresh, &x).unwrap(),
            );
            assert_eq!(a.dims(), b.dims());
            assert_eq!(max_diff(&a, &b), 0.0, "step of {n}");
        }
        assert_eq!(
            max_diff(&used.flush(STEREO).unwrap(), &fresh.flush(STEREO).unwrap()),
            0.0
        );
    }

    #[test]
    fn non_finite_latents_are_errors_naming_the_frame() {
        let scalar = tiny_codec().scalar;
        let mut stream = scalar.stream().unwrap();
        stream.push(&latents(3, 1)).unwrap();
        let mut v = vec![0.1f32; 2 * 256];
        v[256 + 130] = f32::INFINITY;
        let bad = Tensor::from_vec(v, (2, 256), &Device::Cpu).unwrap();
        let err = stream.push(&bad).unwrap_err();
        assert_eq!(
            err.downcast_ref::<CodecInputError>(),
            Some(&CodecInputError::NonFiniteLatent {
                frame: 4,
                channel: 130,
                value: f32::INFINITY
            })
        );
        assert!(scalar.decode(&bad).is_err());
        let err = stream
            .push(&latents(2, 1).narrow(1, 0, 128).unwrap())
            .unwrap_err();
        assert!(
            matches!(
                err.downcast_ref(),
                Some(CodecInputError::LatentShape { .. })
            ),
            "{err}"
        );
        stream.finish().unwrap();
        assert!(stream.push(&latents(1, 1)).is_err(), "push after finish");
    }
}
