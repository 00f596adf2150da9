//! `LlamaTransformerBlock` with adaLN-single modulation.

use anyhow::Result;
use candle_core::Tensor;

use super::attention::Attention;
use super::fused_ops::{fused_kernels_run, gated_add, rms_modulate, MAX_NORM_WIDTH};
use super::mlp::Mlp;
use super::norm::{modulate, RmsNorm};
use super::rope::Rope;
use crate::codec::params::Params;

#[derive(Clone)]
pub(super) struct Block {
    /// `(1, 6, dim)` learned offsets added to the timestep modulation.
    scale_shift_table: Tensor,
    attn_norm: RmsNorm,
    attn: Attention,
    mlp_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    pub fn load(p: &Params, heads: usize, head_dim: usize) -> Result<Self> {
        Ok(Self {
            scale_shift_table: p.tensor("scale_shift_table")?.unsqueeze(0)?,
            attn_norm: RmsNorm::new(p.tensor("attn_norm.weight")?),
            attn: Attention::load(&p.at("attn"), heads, head_dim)?,
            mlp_norm: RmsNorm::new(p.tensor("mlp_norm.weight")?),
            mlp: Mlp::load(&p.at("mlp"))?,
        })
    }

    /// `modulation`: `(1 or batch, 6, dim)` from the stack's timestep conditioning.
    pub fn forward(&self, x: &Tensor, modulation: &Tensor, rope: &Rope) -> Result<Tensor> {
        let m = self.scale_shift_table.broadcast_add(modulation)?;
        if fused_kernels_run(x) && x.dim(2)? <= MAX_NORM_WIDTH {
            return self.forward_fused(x, &m, rope);
        }
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

    /// The same block with each chain of small ops in one kernel: `m` `(1 or batch, 6,
    /// dim)` holds shift, scale, gate of attention (parts 0–2) and of the MLP (3–5).
    fn forward_fused(&self, x: &Tensor, m: &Tensor, rope: &Rope) -> Result<Tensor> {
        let h = rms_modulate(x, self.attn_norm.weight(), m, 0)?;
        let x = gated_add(x, &self.attn.forward(&h, rope)?, m, 2)?;
        let h = rms_modulate(&x, self.mlp_norm.weight(), m, 3)?;
        Ok(gated_add(&x, &self.mlp.forward(&h)?, m, 5)?)
    }
}
