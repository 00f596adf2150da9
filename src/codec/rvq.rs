//! The residual VQ's decoding half: codes → `project_out(Σ_q embed_q[code_q])`
//! (vector-quantize-pytorch's `ResidualVQ.get_output_from_indices`).

use anyhow::Result;
use candle_core::{Module, Tensor};
use candle_nn::Linear;

use super::codes::CodeFrames;
use super::config::CodecConfig;
use super::params::Params;

#[derive(Clone)]
pub struct ResidualVq {
    /// All codebooks stacked: row `q * codebook_size + code` is entry `code` of codebook `q`,
    /// so one gather serves every quantizer.
    codebooks: Tensor,
    /// `None` when `codebook_dim == dim` (vector-quantize-pytorch then uses an identity).
    project_out: Option<Linear>,
    num_quantizers: usize,
    codebook_size: usize,
    codebook_dim: usize,
}

impl ResidualVq {
    pub(crate) fn load(p: &Params, c: &CodecConfig) -> Result<Self> {
        let codebooks = (0..c.num_quantizers)
            .map(|q| {
                p.tensor(&format!("layers.{q}._codebook.embed"))?
                    .squeeze(0)
                    .map_err(Into::into)
            })
            .collect::<Result<Vec<_>>>()?;
        let project_out = (c.codebook_dim != c.dim)
            .then(|| p.linear("project_out", true))
            .transpose()?;
        Ok(Self {
            codebooks: Tensor::cat(&codebooks, 0)?,
            project_out,
            num_quantizers: c.num_quantizers,
            codebook_size: c.codebook_size,
            codebook_dim: c.codebook_dim,
        })
    }

    /// `(frames, dim)` quantized features of the code frames.
    pub fn decode(&self, codes: &CodeFrames) -> Result<Tensor> {
        let rows: Vec<u32> = codes
            .as_slice()
            .iter()
            .enumerate()
            .map(|(i, &code)| ((i % self.num_quantizers) * self.codebook_size) as u32 + code)
            .collect();
        let rows = Tensor::new(rows, self.codebooks.device())?;
        let summed = self
            .codebooks
            .index_select(&rows, 0)?
            .reshape((codes.len(), self.num_quantizers, self.codebook_dim))?
            .sum(1)?;
        Ok(match &self.project_out {
            Some(p) => p.forward(&summed)?,
            None => summed,
        })
    }
}
