//! Bidirectional multi-head self-attention with RoPE (no mask, scale 1/√head_dim).

use anyhow::Result;
use candle_core::Tensor;

use super::flow_linear::FlowLinear;
use super::fused_attention::{fused_attention, fused_attention_runs};
use super::rope::Rope;
use crate::codec::params::Params;

#[derive(Clone)]
pub(super) struct Attention {
    /// q, k and v projections stacked: one matmul for all three.
    qkv: FlowLinear,
    out: FlowLinear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn load(p: &Params, heads: usize, head_dim: usize) -> Result<Self> {
        Ok(Self {
            qkv: FlowLinear::stacked(p, &["q_proj", "k_proj", "v_proj"])?,
            out: FlowLinear::stacked(p, &["o_proj"])?,
            heads,
            head_dim,
        })
    }

    /// `(batch, frames, dim)` → `(batch, frames, dim)`.
    pub fn forward(&self, x: &Tensor, rope: &Rope) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let qkv = self.qkv.forward(x)?;
        if fused_attention_runs(&qkv, self.head_dim) {
            let (cos, sin) = rope.tables();
            return self
                .out
                .forward(&fused_attention(&qkv, cos, sin, self.heads)?);
        }
        // (3, batch, heads, frames, head_dim)
        let qkv = qkv
            .reshape((b, t, 3, self.heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let q = rope.apply(&qkv.get(0)?)?;
        let k = rope.apply(&qkv.get(1)?)?;
        let v = qkv.get(2)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let heads =
            probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, t, self.heads * self.head_dim))?;
        self.out.forward(&heads)
    }
}
