//! The per-song LM stage: owns the caches and emits one frame (one token per codebook,
//! 80 ms of audio) per step.
//!
//! Two ways to run a frame: on the host's schedule (candle ops, logits copied to the host and
//! sampled there; used on the CPU and whenever intermediate tensors are traced), or, on a GPU,
//! as a device-resident step captured once as a CUDA graph (`cuda::GpuFrameStep`).

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use super::config::{GenConfig, LmConfig};
use super::kv_cache::{KvCache, KvPrecision};
use super::model::HeartMuLa;
use super::prompt::Prompt;
use super::sampling::SamplingParams;

/// Intermediate tensors of one frame, for checking against the reference.
#[derive(Debug, Clone)]
pub struct FrameTrace {
    pub backbone_input: Tensor,
    /// The backbone's last hidden state (batch, dim).
    pub last_hidden: Tensor,
    pub c0_logits: Tensor,
    /// Decoder hidden state and logits for codebooks 1.., each (batch, ·).
    pub decoder_hidden: Vec<Tensor>,
    pub decoder_logits: Vec<Tensor>,
}

/// What a generator produces and when it stops.
#[derive(Debug, Clone, Copy)]
pub struct GenerationOptions {
    pub sampling: SamplingParams,
    /// At most this many frames (frame 0 comes from the prompt).
    pub max_frames: usize,
    /// Stop at the end-of-song token (heartlib's rule); otherwise run to `max_frames`.
    pub stop_at_eos: bool,
    /// How the backbone's KV cache is stored.
    pub kv: KvPrecision,
}

impl GenerationOptions {
    /// Checks the options against the model and returns the KV-cache positions the song
    /// needs: the prompt, then one position per frame after the first. With the length of a
    /// frame (`seconds_per_frame`, the codec's), a song too long is also said in seconds.
    pub fn check_fits(
        &self,
        prompt: &Prompt,
        config: &LmConfig,
        seconds_per_frame: Option<f64>,
    ) -> Result<usize> {
        self.sampling.validate_for(config.audio_vocab_size)?;
        let max_frames = self.max_frames;
        if max_frames == 0 {
            bail!("the requested length is 0 frames: ask for at least one frame");
        }
        // Frame k ≥ 1 is fed at position len − 1 + k, so the last frame needs len + max − 1 slots.
        let capacity = prompt.len() + max_frames - 1;
        let limit = config.backbone.max_seq_len;
        if capacity > limit {
            let fit = (limit + 1).saturating_sub(prompt.len());
            let at_most = match seconds_per_frame {
                Some(s) => format!("{:.2} s ({fit} frames)", fit as f64 * s),
                None => format!("{fit} frames"),
            };
            bail!(
                "the prompt ({} tokens) plus the {max_frames} frames asked for needs {capacity} \
                 positions, beyond the backbone's max_seq_len {limit}: shorten the lyrics or ask \
                 for at most {at_most}",
                prompt.len(),
            );
        }
        Ok(capacity)
    }
}

enum Steps {
    Host,
    #[cfg(feature = "cuda")]
    Gpu(Box<super::cuda::GpuFrameStep>),
}

pub struct FrameGenerator {
    model: Arc<HeartMuLa>,
    gen: GenConfig,
    options: GenerationOptions,
    batch: usize,
    backbone_caches: Vec<KvCache>,
    decoder_caches: Vec<KvCache>,
    prompt: Prompt,
    steps: Steps,
    previous: Option<Vec<u32>>,
    frames_done: usize,
    finished: bool,
}

impl FrameGenerator {
    /// The fastest generator for the model's device. The backbone cache is sized for
    /// exactly this run: prompt plus frames.
    pub fn new(
        model: Arc<HeartMuLa>,
        gen: GenConfig,
        prompt: Prompt,
        options: GenerationOptions,
    ) -> Result<Self> {
        let generator = Self::new_traced(model, gen, prompt, options)?;
        #[cfg(feature = "cuda")]
        let generator = generator.with_gpu_steps()?;
        Ok(generator)
    }

    /// On a GPU, frames after the first run as a captured device-resident step.
    #[cfg(feature = "cuda")]
    fn with_gpu_steps(mut self) -> Result<Self> {
        if self.model.device().is_cuda() {
            let sampling = self.options.sampling;
            let step = super::cuda::GpuFrameStep::new(
                &self.model,
                sampling,
                self.batch,
                self.prompt.len(),
            )?;
            self.steps = Steps::Gpu(Box::new(step));
        }
        Ok(self)
    }

    /// A generator that runs every frame on the host's schedule, so that
    /// [`next_frame_traced`](Self::next_frame_traced) can record intermediate tensors.
    pub fn new_traced(
        model: Arc<HeartMuLa>,
        gen: GenConfig,
        prompt: Prompt,
        options: GenerationOptions,
    ) -> Result<Self> {
        let capacity = options.check_fits(&prompt, &model.config, None)?;
        let batch = options.sampling.batch();
        let (backbone_caches, decoder_caches) = model.new_caches(batch, capacity, options.kv)?;
        Ok(Self {
            model,
            gen,
            options,
            batch,
            backbone_caches,
            decoder_caches,
            prompt,
            steps: Steps::Host,
            previous: None,
            frames_done: 0,
            finished: false,
        })
    }

    pub fn frames_done(&self) -> usize {
        self.frames_done
    }

    /// The next frame, or `None` once the song has ended (EOS or the length limit).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u32>>> {
        Ok(self.step(false)?.map(|(frame, _)| frame))
    }

    /// Like [`next_frame`](Self::next_frame), also returning the frame's intermediate tensors.
    /// Needs host steps (a CPU model, or a generator from [`new_traced`](Self::new_traced)).
    pub fn next_frame_traced(&mut self) -> Result<Option<(Vec<u32>, FrameTrace)>> {
        if !matches!(self.steps, Steps::Host) {
            bail!("tracing needs host steps: build the generator with FrameGenerator::new_traced");
        }
        Ok(self
            .step(true)?
            .map(|(f, t)| (f, t.expect("a traced host step records a trace"))))
    }

    fn step(&mut self, trace: bool) -> Result<Option<(Vec<u32>, Option<FrameTrace>)>> {
        if self.finished || self.frames_done >= self.options.max_frames {
            self.finished = true;
            return Ok(None);
        }
        let (frame, frame_trace) = self.run_frame(trace)?;
        // heartlib keeps frame 0 unconditionally and stops before any later frame holding a
        // token ≥ audio_eos_id.
        let is_eos = frame.iter().any(|&t| t >= self.gen.audio_eos_id);
        if self.options.stop_at_eos && self.frames_done > 0 && is_eos {
            self.finished = true;
            return Ok(None);
        }
        self.frames_done += 1;
        self.previous = Some(frame.clone());
        Ok(Some((frame, frame_trace)))
    }

    fn run_frame(&mut self, trace: bool) -> Result<(Vec<u32>, Option<FrameTrace>)> {
        #[cfg(feature = "cuda")]
        if let Steps::Gpu(step) = &mut self.steps {
            let model = &self.model;
            let frame = if self.previous.is_none() {
                let input = model.prompt_embeddings(&self.prompt, self.batch)?;
                let last_hidden = model.backbone_step(&input, &mut self.backbone_caches)?;
                step.first_frame(model, &last_hidden, &self.decoder_caches)?
            } else {
                step.next_frame(model, &self.backbone_caches, &self.decoder_caches)?
            };
            return Ok((frame, None));
        }
        let input = match &self.previous {
            None => self.model.prompt_embeddings(&self.prompt, self.batch)?,
            Some(tokens) => {
                let rows: Vec<u32> = (0..self.batch)
                    .flat_map(|_| tokens.iter().copied())
                    .collect();
                let t = Tensor::from_vec(rows, (self.batch, tokens.len()), self.model.device())?;
                self.model.frame_embeddings(&t)?
            }
        };
        self.host_frame(&input, trace)
    }

    fn host_frame(
        &mut self,
        input: &Tensor,
        trace: bool,
    ) -> Result<(Vec<u32>, Option<FrameTrace>)> {
        let model = &self.model;
        let codebooks = model.config.audio_num_codebooks;
        let index = self.frames_done as u64;
        let last_hidden = model.backbone_step(input, &mut self.backbone_caches)?;
        let c0_logits = model.codebook0_logits(&last_hidden)?;
        let mut frame = vec![self.sample(&c0_logits, index, 0)?];

        for c in &mut self.decoder_caches {
            c.reset();
        }
        let mut decoder_hidden = Vec::with_capacity(codebooks - 1);
        let mut decoder_logits = Vec::with_capacity(codebooks - 1);
        let c0 = self.token_column(frame[0])?;
        let mut h = Tensor::cat(
            &[last_hidden.unsqueeze(1)?, model.audio_embedding(0, &c0)?],
            1,
        )?;
        for codebook in 1..codebooks {
            let hidden = model.decoder_step(&h, &mut self.decoder_caches)?;
            let logits = model.codebook_logits(codebook, &hidden)?;
            let token = self.sample(&logits, index, codebook)?;
            frame.push(token);
            if codebook + 1 < codebooks {
                h = model.audio_embedding(codebook, &self.token_column(token)?)?;
            }
            if trace {
                decoder_hidden.push(hidden);
                decoder_logits.push(logits);
            }
        }
        let frame_trace = trace.then(|| FrameTrace {
            backbone_input: input.clone(),
            last_hidden,
            c0_logits,
            decoder_hidden,
            decoder_logits,
        });
        Ok((frame, frame_trace))
    }

    /// The sampled token for every batch row (guidance writes it to both), as (batch,) u32.
    fn token_column(&self, token: u32) -> Result<Tensor> {
        Ok(Tensor::from_vec(
            vec![token; self.batch],
            self.batch,
            self.model.device(),
        )?)
    }

    fn sample(&self, logits: &Tensor, frame: u64, codebook: usize) -> Result<u32> {
        let rows: Vec<Vec<f32>> = logits.to_dtype(DType::F32)?.to_vec2()?;
        Ok(self.options.sampling.sample(&rows, frame, codebook))
    }
}
