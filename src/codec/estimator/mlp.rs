//! SwiGLU feed-forward of the estimator blocks.

use anyhow::Result;
use candle_core::{Tensor, D};

use super::flow_linear::FlowLinear;
use super::fused_ops::{fused_kernels_run, swiglu};
use crate::codec::params::Params;

#[derive(Clone)]
pub(super) struct Mlp {
    /// `gate` and `up` stacked, so both come out of one matmul.
    gate_up: FlowLinear,
    down: FlowLinear,
    hidden: usize,
}

impl Mlp {
    pub fn load(p: &Params) -> Result<Self> {
        let gate_up = FlowLinear::stacked(p, &["gate", "up"])?;
        Ok(Self {
            hidden: gate_up.out_dim() / 2,
            gate_up,
            down: FlowLinear::stacked(p, &["down"])?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate_up = self.gate_up.forward(x)?;
        if fused_kernels_run(&gate_up) {
            return self.down.forward(&swiglu(&gate_up)?);
        }
        let gate = gate_up.narrow(D::Minus1, 0, self.hidden)?;
        let up = gate_up.narrow(D::Minus1, self.hidden, self.hidden)?;
        self.down.forward(&(gate.silu()? * up)?)
    }
}
