//! The frame step on a GPU with everything the step depends on kept on the device: the
//! backbone position and frame index live in a device buffer (`state`), the last frame's
//! tokens in another (`frame`), sampling happens on the device, and the fused kernels read
//! positions from memory. The step therefore has fixed shapes and no host↔device traffic, so
//! it is captured once as a CUDA graph and replayed for every frame; the host reads back only
//! the frame's tokens.

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::CudaGraph;
use candle_core::cuda_backend::WrapErr;
use candle_core::{DType, Device, Result, Tensor};

use super::kernels::{Kernels, RopeKv};
use crate::lm::kv_cache::KvCache;
use crate::lm::model::HeartMuLa;
use crate::lm::projection::Projection;
use crate::lm::sampling::SamplingParams;
use crate::lm::transformer::{last_position, LayerWeights, NormWeights, StackWeights};

pub struct GpuFrameStep {
    kernels: Arc<Kernels>,
    sampling: SamplingParams,
    batch: usize,
    /// u32 [backbone position of the next frame's input, index of the next frame].
    state: Tensor,
    /// u32 [codebooks]: the tokens of the last frame.
    frame: Tensor,
    /// u32 [1] each: the decoder position of call c (c = 0 feeds two positions, 0 and 1).
    decoder_positions: Vec<Tensor>,
    graph: Option<CudaGraph>,
}

impl GpuFrameStep {
    /// Prepares the step for a song whose prompt occupies `prompt_len` positions.
    pub fn new(
        model: &HeartMuLa,
        sampling: SamplingParams,
        batch: usize,
        prompt_len: usize,
    ) -> Result<Self> {
        let dev = model.device();
        let kernels = model.kernels().cloned().ok_or_else(|| {
            candle_core::Error::Msg("the GPU frame step needs a CUDA model".into())
        })?;
        let codebooks = model.config.audio_num_codebooks;
        let decoder_positions = (0..codebooks - 1)
            .map(|c| Tensor::new(&[if c == 0 { 0u32 } else { c as u32 + 1 }], dev))
            .collect::<Result<_>>()?;
        Ok(Self {
            kernels,
            sampling,
            batch,
            // Frame 0 comes from the prompt (positions 0..len); its tail runs with state
            // [len − 1, 0] and advances it to [len, 1], where frame 1's input goes.
            state: Tensor::new(&[prompt_len as u32 - 1, 0], dev)?,
            frame: Tensor::zeros(codebooks, DType::U32, dev)?,
            decoder_positions,
            graph: None,
        })
    }

    /// Frame 0: samples from the backbone's last hidden state over the prompt.
    pub fn first_frame(
        &mut self,
        model: &HeartMuLa,
        last_hidden: &Tensor,
        decoder_caches: &[KvCache],
    ) -> Result<Vec<u32>> {
        self.frame_tail(model, last_hidden, decoder_caches)?;
        self.frame.to_vec1()
    }

    /// Every later frame. The first call runs eagerly (loading kernels and filling candle's
    /// parameter cache); it is then captured and replayed.
    pub fn next_frame(
        &mut self,
        model: &HeartMuLa,
        backbone_caches: &[KvCache],
        decoder_caches: &[KvCache],
    ) -> Result<Vec<u32>> {
        let Device::Cuda(dev) = model.device() else {
            candle_core::bail!("the graph frame step needs a CUDA device");
        };
        let _cache = dev.enable_cuda_graph_htod_cache();
        match &self.graph {
            Some(graph) => graph.launch().w()?,
            None if crate::gpu::graphs_enabled("LM") => {
                let graph = crate::gpu::run_and_capture(model.device(), || {
                    self.record(model, backbone_caches, decoder_caches)
                })?;
                self.graph = Some(graph);
            }
            None => self.record(model, backbone_caches, decoder_caches)?,
        }
        // The one device→host copy of a frame: its tokens.
        self.frame.to_vec1()
    }

    /// Enqueues one whole frame: embed the last frame, one backbone step, then the tail.
    fn record(
        &self,
        model: &HeartMuLa,
        backbone_caches: &[KvCache],
        decoder_caches: &[KvCache],
    ) -> Result<()> {
        let config = &model.config;
        let ids = self
            .kernels
            .frame_ids(&self.frame, self.batch, config.audio_vocab_size)?;
        let weights = model.frame_weights();
        let embedded = weights.audio_embeddings.index_select(&ids, 0)?;
        let x = embedded
            .reshape((self.batch, config.audio_num_codebooks, ()))?
            .sum_keepdim(1)?;
        let h = self.transformer(&weights.backbone, &x, &self.state, backbone_caches)?;
        self.frame_tail(model, &h.squeeze(1)?, decoder_caches)
    }

    /// From the backbone's last hidden state (batch, dim): sample codebook 0, run the
    /// decoder for the other codebooks, then advance the state.
    fn frame_tail(
        &self,
        model: &HeartMuLa,
        last_hidden: &Tensor,
        decoder_caches: &[KvCache],
    ) -> Result<()> {
        let codebooks = model.config.audio_num_codebooks;
        let weights = model.frame_weights();
        let logits = model.codebook0_logits(last_hidden)?;
        let mut ids = self.sample(&logits, 0)?;
        let first = weights
            .audio_embeddings
            .index_select(&ids, 0)?
            .unsqueeze(1)?;
        let mut h = Tensor::cat(&[last_hidden.unsqueeze(1)?, first], 1)?;
        for (codebook, head) in (1..codebooks).zip(weights.audio_head) {
            let x = self.linear(&h, weights.projection, None)?;
            let pos = &self.decoder_positions[codebook - 1];
            let out = self.layers(&weights.decoder, &x, pos, decoder_caches)?;
            // The decoder's final norm happens in its head's product. (The first decoder
            // call has two positions: a narrowed view is not contiguous.)
            let logits = self.kernels.project_normed(
                &last_position(&out)?,
                &weights.decoder.norm,
                head,
                DType::F32,
            )?;
            ids = self.sample(&logits, codebook)?;
            if codebook + 1 < codebooks {
                h = weights
                    .audio_embeddings
                    .index_select(&ids, 0)?
                    .unsqueeze(1)?;
            }
        }
        self.kernels.advance(&self.state)
    }

    fn sample(&self, logits: &Tensor, codebook: usize) -> Result<Tensor> {
        let s = &self.sampling;
        self.kernels.sample(
            logits,
            s.cfg_scale,
            s.temperature,
            s.topk,
            s.seed,
            &self.state,
            codebook,
            &self.frame,
        )
    }

    /// `x · Wᵀ (+ residual)` in the model dtype.
    fn linear(&self, x: &Tensor, w: &Projection, residual: Option<&Tensor>) -> Result<Tensor> {
        self.kernels.project(x, w, residual, x.dtype())
    }

    /// `x` (batch, seq, dim) at positions `pos[0]..` through every layer and the final norm.
    fn transformer(
        &self,
        stack: &StackWeights,
        x: &Tensor,
        pos: &Tensor,
        caches: &[KvCache],
    ) -> Result<Tensor> {
        let h = self.layers(stack, x, pos, caches)?;
        self.norm(&h, &stack.norm)
    }

    /// [`transformer`](Self::transformer) without the final norm.
    fn layers(
        &self,
        stack: &StackWeights,
        x: &Tensor,
        pos: &Tensor,
        caches: &[KvCache],
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for (layer, cache) in stack.layers.iter().zip(caches) {
            h = self.layer(stack, layer, &h, pos, cache)?;
        }
        Ok(h)
    }

    fn norm(&self, x: &Tensor, norm: &NormWeights) -> Result<Tensor> {
        self.kernels.rms_norm(x, norm.scale, norm.eps)
    }

    fn layer(
        &self,
        stack: &StackWeights,
        layer: &LayerWeights,
        x: &Tensor,
        pos: &Tensor,
        cache: &KvCache,
    ) -> Result<Tensor> {
        let (cos, sin) = stack.rope;
        let rope = RopeKv {
            cos,
            sin,
            pos,
            cache: cache.buffers(),
            heads: layer.heads,
            kv_heads: layer.kv_heads,
        };
        let q = self
            .kernels
            .project_rope(x, &layer.attn_norm, layer.qkv, &rope)?;
        let a = self.kernels.attention(&q, rope.cache, pos)?;
        // Residuals are added inside the products that feed them.
        let x = self.linear(&a, layer.output, Some(x))?;
        let m = self
            .kernels
            .project_gate_up(&x, &layer.mlp_norm, layer.gate_up, x.dtype())?;
        self.linear(&m, layer.down, Some(&x))
    }
}
