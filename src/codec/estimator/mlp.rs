//! SwiGLU feed-forward of the estimator blocks.

use anyhow::Result;
use candle_core::{Module, Tensor, D};
use candle_nn::Linear;

use crate::codec::params::Params;

/// Hidden width of `LlamaMLP(dim, multiple_of=256)`: `int(2 * 4 * dim / 3)` rounded up to a
/// multiple of 256.
pub(crate) fn mlp_hidden_dim(dim: usize) -> usize {
    const MULTIPLE_OF: usize = 256;
    (2 * 4 * dim / 3).div_ceil(MULTIPLE_OF) * MULTIPLE_OF
}

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
        let gate = gate_up.narrow(D::Minus1, 0, self.hidden)?;
        let up = gate_up.narrow(D::Minus1, self.hidden, self.hidden)?;
        Ok(self.down.forward(&(gate.silu()? * up)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_width_matches_the_reference_rounding() {
        assert_eq!(mlp_hidden_dim(32), 256);
        assert_eq!(mlp_hidden_dim(1536), 4096);
        assert_eq!(mlp_hidden_dim(3072), 8192);
    }
}
