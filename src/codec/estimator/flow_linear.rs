//! The estimator's large products — the blocks' attention and MLP, and the adaLN time
//! embedding and modulation (together 97 % of the codec's weights) — with weights stored dense
//! or as FP8 codes with a scale per output channel (`--flow-precision fp8`). FP8 halves what
//! they hold on the GPU (1.3 GiB at full size); each product decodes its matrix to the flow
//! dtype just before multiplying — one pass over the matrix, freed after the product — so the
//! products themselves are cuBLAS's, as with dense weights. The time products (once per
//! window, a few rows of input) decode a slice of rows at a time: whole, the second stack's
//! modulation alone is 113 MB of bf16 at each window's start.

use anyhow::Result;
use candle_core::{DType, Module, Tensor, D};
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
        /// Rows decoded at once.
        slice_rows: usize,
    },
}

/// Rows of a time product's matrix decoded at once (a 3,072-wide slice is 25 MB in bf16).
const TIME_SLICE_ROWS: usize = 4096;

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
                    slice_rows: usize::MAX,
                }
            }
        })
    }

    /// A time product, `name` with its bias (`{name}.weight`, `{name}.bias`).
    pub fn time(p: &Params, name: &str) -> Result<Self> {
        Ok(match p.matrices() {
            MatrixPrecision::Dense => Self::Dense(p.linear(name, true)?),
            MatrixPrecision::Fp8 => {
                let p = p.at(name);
                Self::Fp8 {
                    weight: p.fp8("weight")?,
                    bias: Some(p.tensor("bias")?),
                    dtype: p.dtype(),
                    slice_rows: TIME_SLICE_ROWS,
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
                slice_rows,
            } => {
                let rows = weight.dims().0;
                let outputs = (0..rows)
                    .step_by(*slice_rows)
                    .map(|first| {
                        let w = weight.rows(first, (*slice_rows).min(rows - first))?;
                        Ok(Linear::new(w.dequantize(*dtype)?, None).forward(x)?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let y = Tensor::cat(&outputs, D::Minus1)?;
                match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                }
            }
        })
    }
}

/// Whether `name` (a HeartCodec tensor) is one of the matrices `--flow-precision fp8` stores
/// as FP8 (what the estimator loads as FP8), for the memory estimate.
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

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn a_product_decoded_a_slice_of_rows_at_a_time_equals_the_whole_product() {
        let (rows, cols) = (10, 24);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        let weight = Fp8Matrix::quantize(&values, cols, &Device::Cpu).unwrap();
        let bias = Tensor::arange(0f32, rows as f32, &Device::Cpu).unwrap();
        let x = Tensor::arange(0f32, (3 * cols) as f32, &Device::Cpu)
            .unwrap()
            .reshape((3, cols))
            .unwrap();
        let product = |slice_rows| {
            FlowLinear::Fp8 {
                weight: weight.clone(),
                bias: Some(bias.clone()),
                dtype: DType::F32,
                slice_rows,
            }
            .forward(&x)
            .unwrap()
        };
        let whole = product(usize::MAX);
        assert_eq!(whole.dims(), [3, rows]);
        // Slices of 4, 4 and 2 rows: the outputs' columns in order, the bias added once.
        let sliced = product(4);
        let want = x
            .matmul(&weight.dequantize(DType::F32).unwrap().t().unwrap())
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        for got in [&whole, &sliced] {
            let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-4, "{diff}");
        }
    }
}
