//! `LlamaTransformerBlock` with adaLN-single modulation.

use anyhow::Result;
use candle_core::Tensor;

use super::attention::Attention;
use super::fused_ops::{gated_add, gated_add_rms_modulate, rms_modulate, NormAfter};
use super::mlp::Mlp;
use super::norm::{modulate, RmsNorm};
use super::rope::Rope;
use crate::codec::params::Params;

/// A block's modulation `m`, `(1 or batch, 6, dim)`, is its learned table plus the stack's
/// timestep modulation (the stack adds them for all its blocks at once): parts 0–2 are the
/// shift, scale and gate of attention, 3–5 of the MLP.
#[derive(Clone)]
pub(super) struct Block {
    attn_norm: RmsNorm,
    attn: Attention,
    mlp_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    pub fn load(p: &Params, heads: usize, head_dim: usize) -> Result<Self> {
        Ok(Self {
            attn_norm: RmsNorm::new(p.tensor("attn_norm.weight")?),
            attn: Attention::load(&p.at("attn"), heads, head_dim)?,
            mlp_norm: RmsNorm::new(p.tensor("mlp_norm.weight")?),
            mlp: Mlp::load(&p.at("mlp"))?,
        })
    }

    /// The block with candle's ops, `m` its modulation.
    pub fn forward(&self, x: &Tensor, m: &Tensor, rope: &Rope) -> Result<Tensor> {
        let part = |i: usize| m.narrow(1, i, 1);
        let (shift_attn, scale_attn, gate_attn) = (part(0)?, part(1)?, part(2)?);
        let (shift_mlp, scale_mlp, gate_mlp) = (part(3)?, part(4)?, part(5)?);

        let h = modulate(&self.attn_norm.forward(x)?, &shift_attn, &scale_attn)?;
        let h = self.attn.forward(&h, rope)?;
        let x = (x + h.broadcast_mul(&gate_attn)?)?;

        let h = modulate(&self.mlp_norm.forward(&x)?, &shift_mlp, &scale_mlp)?;
        let h = self.mlp.forward(&h)?;
        Ok((x + h.broadcast_mul(&gate_mlp)?)?)
    }

    /// The input of this block's attention, its modulated norm of `x` (fused kernels).
    pub fn attention_input(&self, x: &Tensor, m: &Tensor) -> Result<Tensor> {
        Ok(rms_modulate(x, self.attn_norm.weight(), m, 0)?)
    }

    /// The block with fused kernels from `h`, its [`attention_input`](Self::attention_input)
    /// of `x`, and its modulation `m`. Returns the block's output and, given the next block
    /// and that block's modulation, the next block's attention input, made in the same pass
    /// as the last residual.
    pub fn forward_fused(
        &self,
        x: &Tensor,
        h: &Tensor,
        m: &Tensor,
        rope: &Rope,
        next: Option<(&Block, &Tensor)>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mlp_norm = NormAfter {
            weight: self.mlp_norm.weight(),
            m,
            part: 3,
        };
        let (x, h) = gated_add_rms_modulate(x, &self.attn.forward(h, rope)?, m, 2, mlp_norm)?;
        let out = self.mlp.forward(&h)?;
        let Some((block, m_next)) = next else {
            return Ok((gated_add(&x, &out, m, 5)?, None));
        };
        let next_norm = NormAfter {
            weight: block.attn_norm.weight(),
            m: m_next,
            part: 0,
        };
        let (x, h) = gated_add_rms_modulate(&x, &out, m, 5, next_norm)?;
        Ok((x, Some(h)))
    }
}
