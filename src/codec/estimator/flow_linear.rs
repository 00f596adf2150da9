//! The estimator's large products — the blocks' attention and MLP, and the adaLN modulation
//! of the flow time (together 97 % of the codec's weights) — with weights stored dense or as
//! FP8 codes with a scale per output channel (`--flow-precision fp8`). FP8 halves what they
//! hold on the GPU (1.3 GiB at full size); each product decodes its matrix to the flow dtype
//! just before multiplying — one pass over the matrix, freed after the product — so the
//! products themselves are cuBLAS's, as with dense weights.

use anyhow::Result;
use candle_core::{DType, Module, Tensor};
use candle_nn::Linear;

use crate::codec::params::Params;
use crate::weights::{Fp8Matrix, MatrixPrecision};

#[derive(Clone)]
pub(super) enum FlowLinear {
    Dense(Linear),
    Fp8 {
        weight: Fp8Matrix,
        bias: Option<Tensor>,
        dtype: DType,
    },
}

impl FlowLinear {
    /// The bias-free product of the matrices `names` (each `{name}.weight`, (out, in))
    /// stacked by rows — q, k and v; gate and up — so that one product makes all of them.
    pub fn stacked(p: &Params, names: &[&str]) -> Result<Self> {
        let weight = |name: &&str| format!("{name}.weight");
        Ok(match p.matrices() {
            MatrixPrecision::Dense => {
                let parts = names
                    .iter()
                    .map(|n| p.tensor(&weight(n)))
                    .collect::<Result<Vec<_>>>()?;
                Self::Dense(Linear::new(Tensor::cat(&parts, 0)?, None))
            }
            MatrixPrecision::Fp8 => {
                // A scale per row: stacking rows stacks codes and scales unchanged.
                let parts = names
                    .iter()
                    .map(|n| p.fp8(&weight(n)))
                    .collect::<Result<Vec<_>>>()?;
                Self::Fp8 {
                    weight: Fp8Matrix::cat(&parts)?,
                    bias: None,
                    dtype: p.dtype(),
                }
            }
        })
    }

    /// The product `name` with its bias (`{name}.weight`, `{name}.bias`).
    pub fn with_bias(p: &Params, name: &str) -> Result<Self> {
        Ok(match p.matrices() {
            MatrixPrecision::Dense => Self::Dense(p.linear(name, true)?),
            MatrixPrecision::Fp8 => {
                let p = p.at(name);
                Self::Fp8 {
                    weight: p.fp8("weight")?,
                    bias: Some(p.tensor("bias")?),
                    dtype: p.dtype(),
                }
            }
        })
    }

    /// Rows of the (stacked) matrix: outputs of the product.
    pub fn out_dim(&self) -> usize {
        match self {
            Self::Dense(l) => l.weight().dim(0).unwrap_or(0),
            Self::Fp8 { weight, .. } => weight.dims().0,
        }
    }

    /// `x (…, in)` → `(…, out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Dense(l) => l.forward(x)?,
            Self::Fp8 {
                weight,
                bias,
                dtype,
            } => Linear::new(weight.dequantize(*dtype)?, bias.clone()).forward(x)?,
        })
    }
}

/// Whether `name` (a HeartCodec tensor) is one of the matrices `--flow-precision fp8` stores
/// as FP8 (what [`FlowLinear`] loads in FP8), for the memory estimate.
pub fn is_fp8_matrix(name: &str) -> bool {
    const BLOCK_SUFFIXES: [&str; 7] = [
        ".attn.q_proj.weight",
        ".attn.k_proj.weight",
        ".attn.v_proj.weight",
        ".attn.o_proj.weight",
        ".mlp.gate.weight",
        ".mlp.up.weight",
        ".mlp.down.weight",
    ];
    const TIME_SUFFIXES: [&str; 2] = [".linear.weight", ".emb.timestep_embedder.linear_2.weight"];
    let Some(rest) = name.strip_prefix("flow_matching.estimator.") else {
        return false;
    };
    (rest.starts_with("transformer_blocks") && BLOCK_SUFFIXES.iter().any(|s| rest.ends_with(s)))
        || (rest.starts_with("adaln_single") && TIME_SUFFIXES.iter().any(|s| rest.ends_with(s)))
}
