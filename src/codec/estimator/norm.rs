//! The estimator's normalisations.

use anyhow::Result;
use candle_core::{DType, Tensor, D};

/// `RMSNorm(dim, eps=1e-6)` of heartlib's transformer, op for op in the activation dtype:
/// `weight * (x * rsqrt(mean(x²) + eps))`.
#[derive(Clone)]
pub(super) struct RmsNorm {
    weight: Tensor,
}

const EPS: f64 = 1e-6;

impl RmsNorm {
    pub fn new(weight: Tensor) -> Self {
        Self { weight }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean_square = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv_rms = (mean_square + EPS)?.sqrt()?.recip()?;
        Ok(x.broadcast_mul(&inv_rms)?.broadcast_mul(&self.weight)?)
    }
}

/// `nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)`. torch computes the statistics in
/// f32 whatever the activation dtype; so does this (two-pass, no E[x²]−mean² cancellation).
pub(super) fn layer_norm(x: &Tensor) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(centered
        .broadcast_div(&(var + EPS)?.sqrt()?)?
        .to_dtype(dtype)?)
}

/// adaLN modulation `x * (1 + scale) + shift`, with `scale`/`shift` broadcast over frames
/// (and over the batch when every row shares one timestep).
pub(super) fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_mul(&scale.affine(1.0, 1.0)?)?
        .broadcast_add(shift)?)
}
