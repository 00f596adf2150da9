//! Captured decoder steps. An eager ScalarModel step launches ~500 small kernels (~14 ms
//! at 25 latents, most of it launch overhead, and far more while the LM keeps the GPU
//! busy). Once a stream's look-ahead is filled, every step of n latents has one shape and
//! touches only the layers' state buffers, so the step of the run's size is captured once
//! as a CUDA graph over one stream state, and streams reuse that state (reset to zeros)
//! and replay it. Steps of other sizes (a window's remainder, the first step, the flush)
//! run eagerly on the same buffers: the arithmetic is identical either way.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use super::decoder::Decoder;
use super::quantize::quantize;
use super::STEREO;

/// What a decoder step needs besides the layers: the input's layout and the model dtype.
#[derive(Debug, Clone, Copy)]
pub(super) struct StepLayout {
    pub latent_channels: usize,
    pub samples_per_latent: usize,
    pub dtype: DType,
}

impl StepLayout {
    /// One decoder step: latents `(n, 2·C)` → the stereo PCM `(2, m)` f32 that is final.
    pub fn decode(&self, decoder: &mut Decoder, latents: &Tensor) -> Result<Tensor> {
        let audio = decoder.step(&self.stereo(&quantize(latents)?)?)?;
        Ok(audio.squeeze(1)?.to_dtype(DType::F32)?)
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
}

/// A stream's decoder state, and on CUDA its steady step of one size captured over it.
pub(super) struct StreamState {
    pub decoder: Decoder,
    #[cfg(feature = "cuda")]
    pub captured: Option<CapturedStep>,
}

impl StreamState {
    /// Latents per replayed step, if a step is captured.
    pub fn step_latents(&self) -> Option<usize> {
        #[cfg(feature = "cuda")]
        if let Some(step) = &self.captured {
            return Some(step.latents);
        }
        None
    }

    /// Decodes `latents` (on the decoder's device) by replaying the captured step when it
    /// fits, else eagerly.
    pub fn decode(&mut self, layout: &StepLayout, latents: &Tensor) -> Result<Tensor> {
        let replay = self.step_latents() == Some(latents.dim(0)?) && self.decoder.is_steady();
        #[cfg(feature = "cuda")]
        if let Some(step) = self.captured.as_ref().filter(|_| replay) {
            return step.replay(latents);
        }
        debug_assert!(!replay, "a captured step is only kept with CUDA");
        layout.decode(&mut self.decoder, latents)
    }
}

/// Prepared stream states of one ScalarModel, shared by its clones: the warm-up prepares,
/// each stream takes one (or starts eagerly when none is left) and gives it back when it
/// ends.
#[derive(Clone, Default)]
pub(super) struct StatePool {
    inner: Arc<PoolInner>,
}

#[derive(Default)]
struct PoolInner {
    // Declared first, dropped first: the graphs go before the thread whose memory they read.
    states: Mutex<Vec<StreamState>>,
    #[cfg(feature = "cuda")]
    capturer: crate::gpu::CaptureThread,
}

impl StatePool {
    /// A prepared state at stream position 0, if one is free.
    pub fn take(&self) -> Result<Option<StreamState>> {
        let Some(mut state) = self.lock().pop() else {
            return Ok(None);
        };
        state.decoder.reset()?;
        Ok(Some(state))
    }

    /// Gives a stream's state back for the next stream; only states with a captured step
    /// are worth keeping (a fresh eager state is a cheap clone of the template).
    pub fn give_back(&self, state: StreamState) {
        if state.step_latents().is_some() {
            self.lock().push(state);
        }
    }

    /// Step sizes of the states in the pool.
    pub fn step_sizes(&self) -> Vec<usize> {
        self.lock()
            .iter()
            .filter_map(StreamState::step_latents)
            .collect()
    }

    /// Prepares a state whose step of `latents` latents is captured (on CUDA, unless
    /// `HEARTSTREAM_DECODER_GRAPH=0`), unless the pool has one. Returns whether it did.
    pub fn prepare(
        &self,
        template: &Decoder,
        layout: StepLayout,
        device: &Device,
        latents: usize,
    ) -> Result<bool> {
        if latents == 0 || self.step_sizes().contains(&latents) {
            return Ok(false);
        }
        #[cfg(feature = "cuda")]
        if device.is_cuda() && crate::gpu::graphs_enabled("DECODER") {
            let state = self.capture(template, layout, device, latents)?;
            self.lock().push(state);
            return Ok(true);
        }
        let _ = (template, layout, device);
        Ok(false)
    }

    #[cfg(feature = "cuda")]
    fn capture(
        &self,
        template: &Decoder,
        layout: StepLayout,
        device: &Device,
        latents: usize,
    ) -> Result<StreamState> {
        crate::gpu::order_streams_manually(device);
        let (template, device) = (template.clone(), device.clone());
        self.inner.capturer.run(move || {
            let mut decoder = template;
            let width = STEREO * layout.latent_channels;
            let input = Tensor::zeros((latents, width), DType::F32, &device)?;
            // One eager step makes the state buffers and fills the look-ahead: from here
            // on a step of `latents` latents always has the same shape.
            layout.decode(&mut decoder, &input)?;
            anyhow::ensure!(
                decoder.is_steady(),
                "a decoder step of {latents} latents leaves the look-ahead unfilled"
            );
            let samples = latents * layout.samples_per_latent;
            let output = Tensor::zeros((STEREO, samples), DType::F32, &device)?;
            let graph = crate::gpu::run_and_capture(&device, || {
                let pcm = layout
                    .decode(&mut decoder.clone(), &input)
                    .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))?;
                output.slice_set(&pcm, 0, 0)
            })?;
            Ok(StreamState {
                decoder,
                captured: Some(CapturedStep {
                    latents,
                    input,
                    output,
                    graph: graph.into(),
                }),
            })
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<StreamState>> {
        self.inner.states.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A steady decoder step of `latents` latents captured as a graph that reads `input` and
/// writes `output`, both buffers of its own.
#[cfg(feature = "cuda")]
pub(super) struct CapturedStep {
    latents: usize,
    input: Tensor,
    output: Tensor,
    graph: crate::gpu::SendGraph,
}

#[cfg(feature = "cuda")]
impl CapturedStep {
    fn replay(&self, latents: &Tensor) -> Result<Tensor> {
        let latents = latents.to_dtype(DType::F32)?.contiguous()?;
        self.input.slice_set(&latents, 0, 0)?;
        self.graph.launch()?;
        // The next replay overwrites `output`: hand out a copy (made after the graph, in
        // stream order).
        Ok(self.output.copy()?)
    }
}
