//! The per-song LM stage: owns the caches and emits one frame (one token per codebook,
//! 80 ms of audio) per step.

use std::sync::Arc;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use super::config::GenConfig;
use super::kv_cache::KvCache;
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

pub struct FrameGenerator {
    model: Arc<HeartMuLa>,
    gen: GenConfig,
    sampling: SamplingParams,
    batch: usize,
    backbone_caches: Vec<KvCache>,
    decoder_caches: Vec<KvCache>,
    prompt: Prompt,
    previous: Option<Vec<u32>>,
    frames_done: usize,
    max_frames: usize,
    stop_at_eos: bool,
    finished: bool,
}

impl FrameGenerator {
    /// A generator of at most `max_frames` frames (frame 0 comes from the prompt). The
    /// backbone cache is sized for exactly this run: prompt plus frames.
    pub fn new(
        model: Arc<HeartMuLa>,
        gen: GenConfig,
        prompt: Prompt,
        sampling: SamplingParams,
        max_frames: usize,
        stop_at_eos: bool,
    ) -> Result<Self> {
        let config = &model.config;
        sampling.validate_for(config.audio_vocab_size)?;
        if max_frames == 0 {
            bail!("the requested length is 0 frames: ask for at least 0.08 s (one frame)");
        }
        // Frame k ≥ 1 is fed at position len − 1 + k, so the last frame needs len + max − 1 slots.
        let capacity = prompt.len() + max_frames - 1;
        let limit = config.backbone.max_seq_len;
        if capacity > limit {
            bail!(
                "the prompt ({} tokens) plus {max_frames} frames needs {capacity} positions, beyond the \
                 backbone's max_seq_len {limit}: shorten the lyrics or ask for at most {} s",
                prompt.len(),
                limit.saturating_sub(prompt.len()) as f64 * 0.08 + 0.08
            );
        }
        let batch = sampling.batch();
        let (backbone_caches, decoder_caches) = model.new_caches(batch, capacity)?;
        Ok(Self {
            model,
            gen,
            sampling,
            batch,
            backbone_caches,
            decoder_caches,
            prompt,
            previous: None,
            frames_done: 0,
            max_frames,
            stop_at_eos,
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
    pub fn next_frame_traced(&mut self) -> Result<Option<(Vec<u32>, FrameTrace)>> {
        Ok(self
            .step(true)?
            .map(|(f, t)| (f, t.expect("traced step records a trace"))))
    }

    fn step(&mut self, trace: bool) -> Result<Option<(Vec<u32>, Option<FrameTrace>)>> {
        if self.finished || self.frames_done >= self.max_frames {
            self.finished = true;
            return Ok(None);
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
        let (frame, frame_trace) = self.run_frame(&input, trace)?;
        // heartlib keeps frame 0 unconditionally and stops before any later frame holding a
        // token ≥ audio_eos_id.
        let is_eos = frame.iter().any(|&t| t >= self.gen.audio_eos_id);
        if self.stop_at_eos && self.frames_done > 0 && is_eos {
            self.finished = true;
            return Ok(None);
        }
        self.frames_done += 1;
        self.previous = Some(frame.clone());
        Ok(Some((frame, frame_trace)))
    }

    fn run_frame(&mut self, input: &Tensor, trace: bool) -> Result<(Vec<u32>, Option<FrameTrace>)> {
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
        Ok(self.sampling.sample(&rows, frame, codebook))
    }
}
