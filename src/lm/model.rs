//! HeartMuLa: a backbone that reads the token grid and predicts codebook 0 of each 80 ms
//! frame, and a small decoder that predicts codebooks 1.. of the same frame.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use super::config::LmConfig;
use super::kv_cache::{KvCache, KvPrecision};
use super::kv_fp8::KvCodec;
use super::projection::{tensor_bytes, MatrixPrecision, Projection};
use super::prompt::Prompt;
use super::spec::{lm_spec, TEXT_EMBEDDINGS};
use super::transformer::{last_position, Matrices, Transformer};
use crate::weights::{Loader, Source, WeightStore};

/// What the fused GPU frame step reads of the model besides its heads.
#[cfg(feature = "cuda")]
pub(super) struct FrameWeights<'a> {
    pub backbone: super::transformer::StackWeights<'a>,
    pub decoder: super::transformer::StackWeights<'a>,
    /// `(codebooks · audio vocabulary, dim)`: every codebook's embeddings, stacked.
    pub audio_embeddings: &'a Tensor,
    pub projection: &'a Projection,
    /// The heads of codebooks 1.. (vocab, decoder_dim) each.
    pub audio_head: &'a [Projection],
}

pub struct HeartMuLa {
    pub config: LmConfig,
    backbone: Transformer,
    decoder: Transformer,
    /// In host memory on every device: the prompt reads a few hundred of its 128 k rows once
    /// a song, and on a GPU it would hold 0.73 GiB (bf16) of memory for that.
    text_embeddings: Tensor,
    audio_embeddings: Tensor,
    unconditional_text_embedding: Tensor,
    muq_linear: Linear,
    projection: Projection,
    /// (vocab, backbone_dim). Logits are always accumulated and returned in f32: rounded to
    /// bf16 they lose enough precision to change which tokens get sampled.
    codebook0_head: Projection,
    /// Codebooks 1.. (vocab, decoder_dim) each: the checkpoint's (…, decoder_dim, vocab)
    /// transposed at load, so every head is a row-major (outputs, inputs) matrix.
    audio_head: Vec<Projection>,
    dtype: DType,
    precision: MatrixPrecision,
    #[cfg(feature = "cuda")]
    kernels: Option<std::sync::Arc<super::cuda::Kernels>>,
}

impl HeartMuLa {
    /// Loads `HeartMuLa-oss-3B/` (config.json + safetensors), converting weights to `dtype`
    /// (the matrices stored as `precision` says).
    pub fn load(
        dir: &Path,
        device: &Device,
        dtype: DType,
        precision: MatrixPrecision,
    ) -> Result<Self> {
        let config = LmConfig::from_file(&dir.join("config.json"))?;
        let store = WeightStore::open(dir)?;
        let m = Matrices { precision, dtype };
        Self::from_source(config, Source::Checkpoint(store), device, m)
    }

    /// Random weights of the given configuration, built in memory.
    pub fn synthetic(
        config: LmConfig,
        seed: u64,
        device: &Device,
        dtype: DType,
        precision: MatrixPrecision,
    ) -> Result<Self> {
        let m = Matrices { precision, dtype };
        Self::from_source(config, Source::Synthetic { seed }, device, m)
    }

    fn from_source(config: LmConfig, source: Source, device: &Device, m: Matrices) -> Result<Self> {
        let w = Loader::new(source, lm_spec(&config), device)?;
        let (dtype, precision) = (m.dtype, m.precision);
        let muq_linear = Linear::new(
            w.get("muq_linear.weight", dtype)?,
            Some(w.get("muq_linear.bias", dtype)?),
        );
        let model = Self {
            backbone: Transformer::load(&w, "backbone", &config.backbone, m)
                .context("loading the backbone")?,
            decoder: Transformer::load(&w, "decoder", &config.decoder, m)
                .context("loading the decoder")?,
            text_embeddings: w.get_on_host(TEXT_EMBEDDINGS, dtype)?,
            audio_embeddings: w.get("audio_embeddings.weight", dtype)?,
            unconditional_text_embedding: w.get("unconditional_text_embedding.weight", dtype)?,
            muq_linear,
            projection: Projection::load(&w, &["projection.weight"], precision, dtype)?,
            codebook0_head: Projection::load(&w, &["codebook0_head.weight"], precision, dtype)?,
            audio_head: Projection::load_heads(&w, "audio_head", precision, dtype)?,
            config,
            dtype,
            precision,
            #[cfg(feature = "cuda")]
            kernels: match device {
                Device::Cuda(_) => Some(std::sync::Arc::new(super::cuda::Kernels::load(device)?)),
                _ => None,
            },
        };
        // Checkpoint copies may still be running on the device's stream (`WeightStore::load`).
        device.synchronize()?;
        Ok(model)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn precision(&self) -> MatrixPrecision {
        self.precision
    }

    /// Bytes of its weights on its device (on a GPU, all but the text embeddings).
    pub fn weight_bytes(&self) -> u64 {
        let muq =
            tensor_bytes(self.muq_linear.weight()) + self.muq_linear.bias().map_or(0, tensor_bytes);
        let text = match self.device() {
            Device::Cpu => tensor_bytes(&self.text_embeddings),
            _ => 0,
        };
        self.backbone.weight_bytes()
            + self.decoder.weight_bytes()
            + text
            + tensor_bytes(&self.audio_embeddings)
            + tensor_bytes(&self.unconditional_text_embedding)
            + muq
            + self.projection.bytes()
            + self.codebook0_head.bytes()
            + self.audio_head.iter().map(Projection::bytes).sum::<u64>()
    }

    /// The view of the weights the fused GPU frame step reads.
    #[cfg(feature = "cuda")]
    pub(super) fn frame_weights(&self) -> FrameWeights<'_> {
        FrameWeights {
            backbone: self.backbone.weights(),
            decoder: self.decoder.weights(),
            audio_embeddings: &self.audio_embeddings,
            projection: &self.projection,
            audio_head: &self.audio_head,
        }
    }

    /// The fused kernels (on a CUDA device).
    #[cfg(feature = "cuda")]
    pub(super) fn kernels(&self) -> Option<&std::sync::Arc<super::cuda::Kernels>> {
        self.kernels.as_ref()
    }

    pub fn device(&self) -> &Device {
        self.audio_embeddings.device()
    }

    /// Caches for one song: the backbone's for `capacity` positions, stored as `kv` says,
    /// the decoder's (a frame's codebooks) in the model's dtype.
    pub fn new_caches(
        &self,
        batch: usize,
        capacity: usize,
        kv: KvPrecision,
    ) -> Result<(Vec<KvCache>, Vec<KvCache>)> {
        let codec = match kv {
            KvPrecision::Dense => None,
            KvPrecision::Fp8 => Some(self.kv_codec()),
        };
        Ok((
            self.backbone
                .new_caches(batch, capacity, self.dtype, codec.as_ref())?,
            self.decoder
                .new_caches(batch, self.config.audio_num_codebooks, self.dtype, None)?,
        ))
    }

    /// Where an FP8 cache of this model quantises: with its kernels on a GPU.
    fn kv_codec(&self) -> KvCodec {
        #[cfg(feature = "cuda")]
        if let Some(kernels) = &self.kernels {
            return KvCodec::on_gpu(kernels.clone());
        }
        KvCodec::default()
    }

    /// Backbone input of the prompt, (batch, len, dim). Row 0 is conditional; with CFG row 1
    /// is unconditional: its text embedding is `unconditional_text_embedding` everywhere.
    /// The muq slot holds `muq_linear(0)` (no reference audio) in the conditional row.
    pub fn prompt_embeddings(&self, prompt: &Prompt, batch: usize) -> Result<Tensor> {
        let dev = self.device();
        let ids = Tensor::new(prompt.text.as_slice(), &Device::Cpu)?;
        let text = self.text_embeddings.index_select(&ids, 0)?.to_device(dev)?;
        let muq_in = Tensor::zeros((1, self.config.muq_dim), self.dtype, dev)?;
        let muq = self.muq_linear.forward(&muq_in)?;
        let (len, row) = (prompt.len(), prompt.muq_row);
        let cond = Tensor::cat(
            &[
                text.narrow(0, 0, row)?,
                muq,
                text.narrow(0, row + 1, len - row - 1)?,
            ],
            0,
        )?;
        let mut rows = vec![cond];
        if batch == 2 {
            rows.push(
                self.unconditional_text_embedding
                    .broadcast_as(rows[0].shape())?
                    .contiguous()?,
            );
        }
        Ok(Tensor::stack(&rows, 0)?)
    }

    /// Backbone input of a frame step, (batch, 1, dim): the sum of the previous frame's
    /// audio embeddings (`tokens` is (batch, codebooks) u32; the text column is masked out).
    pub fn frame_embeddings(&self, tokens: &Tensor) -> Result<Tensor> {
        let (batch, codebooks) = tokens.dims2()?;
        let offsets = Tensor::arange(0u32, codebooks as u32, tokens.device())?
            .affine(self.config.audio_vocab_size as f64, 0.0)?;
        let ids = tokens.broadcast_add(&offsets)?.flatten_all()?;
        let emb = self.audio_embeddings.index_select(&ids, 0)?;
        Ok(emb.reshape((batch, codebooks, ()))?.sum_keepdim(1)?)
    }

    /// Runs the backbone over `h` and returns the hidden state of the last position.
    pub fn backbone_step(&self, h: &Tensor, caches: &mut [KvCache]) -> Result<Tensor> {
        Ok(last_position(&self.backbone.forward(h, caches)?)?)
    }

    /// All positions of the backbone output (for inspection of the prompt step).
    pub fn backbone_forward(&self, h: &Tensor, caches: &mut [KvCache]) -> Result<Tensor> {
        Ok(self.backbone.forward(h, caches)?)
    }

    /// Codebook-0 logits (batch, vocab) in f32 from the backbone's last hidden state.
    pub fn codebook0_logits(&self, last_hidden: &Tensor) -> candle_core::Result<Tensor> {
        self.head_logits(last_hidden, &self.codebook0_head)
    }

    /// `hidden · headᵀ` with f32 accumulation and f32 output.
    fn head_logits(&self, hidden: &Tensor, head: &Projection) -> candle_core::Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let Some(k) = &self.kernels {
            return k.project(&hidden.contiguous()?, head, None, DType::F32);
        }
        hidden
            .to_dtype(DType::F32)?
            .matmul(&head.weight(DType::F32)?.t()?)
    }

    /// Embedding of `tokens` (batch,) of `codebook`, shaped (batch, 1, dim).
    pub fn audio_embedding(&self, codebook: usize, tokens: &Tensor) -> Result<Tensor> {
        let ids = tokens.affine(1.0, (codebook * self.config.audio_vocab_size) as f64)?;
        Ok(self.audio_embeddings.index_select(&ids, 0)?.unsqueeze(1)?)
    }

    /// One decoder call: projects `h` (batch, seq, backbone_dim) and returns the decoder's
    /// last hidden state (batch, decoder_dim).
    pub fn decoder_step(&self, h: &Tensor, caches: &mut [KvCache]) -> Result<Tensor> {
        let x = self.projection.forward(h)?;
        Ok(last_position(&self.decoder.forward(&x, caches)?)?)
    }

    /// Logits (batch, vocab) in f32 of `codebook` ≥ 1 from the decoder's hidden state.
    pub fn codebook_logits(
        &self,
        codebook: usize,
        decoder_hidden: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let head = self.audio_head.get(codebook - 1).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "codebook {codebook}: the model has {} codebooks",
                self.config.audio_num_codebooks
            ))
        })?;
        self.head_logits(decoder_hidden, head)
    }
}
