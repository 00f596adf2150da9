//! `ProjectLayer`: a kernel-3 conv over time (scaled by 3^-½), then a Linear.

use anyhow::Result;
use candle_core::{Module, Tensor};
use candle_nn::Linear;

use crate::codec::params::Params;

const KERNEL: usize = 3;

#[derive(Clone)]
pub(super) struct ProjectLayer {
    conv_weight: Tensor,
    /// `(1, out, 1)`: broadcast over batch and frames.
    conv_bias: Tensor,
    linear: Linear,
}

impl ProjectLayer {
    pub fn load(p: &Params) -> Result<Self> {
        let conv_weight = p.tensor("ffn_1.weight")?;
        let out = conv_weight.dim(0)?;
        Ok(Self {
            conv_weight,
            conv_bias: p.tensor("ffn_1.bias")?.reshape((1, out, 1))?,
            linear: p.linear("ffn_2", true)?,
        })
    }

    /// `(batch, frames, in)` → `(batch, frames, out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = x
            .transpose(1, 2)?
            .contiguous()?
            .conv1d(&self.conv_weight, KERNEL / 2, 1, 1, 1)?
            .broadcast_add(&self.conv_bias)?
            .transpose(1, 2)?;
        let h = (h * (KERNEL as f64).powf(-0.5))?;
        Ok(self.linear.forward(&h)?)
    }
}
