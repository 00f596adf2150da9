//! SwiGLU feed-forward of the estimator blocks.

use anyhow::Result;
use candle_core::{Module, Tensor, D};
use candle_nn::Linear;

use super::fused_ops::{fused_kernels_run, swiglu};
use crate::codec::params::Params;

#[derive(Clone)]
pub(super) struct Mlp {
    /// `gate` and `up` stacked, so both come out of one matmul.
    gate_up: Linear,
    down: Linear,
    hidden: usize,
}

impl Mlp {
    pub fn load(p: &Params) -> Result<Self> {
        let gate = p.tensor("gate.weight")?;
        let up = p.tensor("up.weight")?;
        let hidden = gate.dim(0)?;
        Ok(Self {
            gate_up: Linear::new(Tensor::cat(&[gate, up], 0)?, None),
            down: p.linear("down", false)?,
            hidden,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(x)?;
        if fused_kernels_run(&gate_up) {
            return Ok(self.down.forward(&swiglu(&gate_up)?)?);
        }
        let gate = gate_up.narrow(D::Minus1, 0, self.hidden)?;
        let up = gate_up.narrow(D::Minus1, self.hidden, self.hidden)?;
        Ok(self.down.forward(&(gate.silu()? * up)?)?)
    }
}
